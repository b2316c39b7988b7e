"""`manage.py recover_executions`: run once when the server starts, before it serves.

An execution that is still `queued` or `running` in the database when a server starts was
being run by a process that is gone (crash, kill, reboot): nothing will ever finish it. It is
marked `error` with the code `server_restarted`, so the history tells the truth and the
concurrency caps (which count active runs) are not held by ghosts.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from execution.services.runs import mark_interrupted_executions


class Command(BaseCommand):
    help = "Mark executions left queued or running by a stopped server as `error`."

    def handle(self, *args: Any, **options: Any) -> None:
        count = mark_interrupted_executions()
        self.stdout.write(f"marked {count} interrupted execution(s) as error")
