"""`manage.py recover_executions`: recover the work of server processes that are gone.

Run once when the server starts, before it serves (scripts/run.sh): an execution or package
install still `queued` or `running` whose worker is dead (its lease ran out, or its process on
this host no longer exists) or unknown was being run by a process that is gone (crash, kill,
reboot): nothing will ever finish it. Executions become `error` with the code
`server_restarted`, installs `failed`, so the history tells the truth and the caps are not held
by ghosts. Work of live workers (another server process on the same database) is left alone;
while servers run, each of them does the same at every heartbeat (execution/services/workers.py).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from execution.services.workers import recover_dead_workers


class Command(BaseCommand):
    help = "Mark executions and installs left unfinished by stopped server processes."

    def handle(self, *args: Any, **options: Any) -> None:
        recovery = recover_dead_workers(include_unowned=True)
        self.stdout.write(
            f"marked {recovery.executions} interrupted execution(s) as error and "
            f"{recovery.installs} interrupted install(s) as failed"
        )
