"""`manage.py reap_sandboxes [--idle-seconds N]`: kill the sandboxes of idle threads.

A thread keeps its sandbox warm between runs; one unused for SANDBOX_IDLE_SECONDS (and with
no run in progress) has it killed here, which frees the sandbox server. Nothing is lost: the
thread's files and packages are in the database and come back with its next sandbox. Run it
periodically (cron, a systemd timer); sandboxes also expire on their own timeout.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from execution.services.tool_executor import reap_idle_sandboxes


class Command(BaseCommand):
    help = "Kill the sandboxes of threads idle for longer than SANDBOX_IDLE_SECONDS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--idle-seconds",
            type=int,
            default=None,
            help="Idle time before a sandbox is killed (default: SANDBOX_IDLE_SECONDS).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        released = reap_idle_sandboxes(idle_seconds=options["idle_seconds"])
        self.stdout.write(f"released {len(released)} sandbox(es)")
        for thread_id in released:
            self.stdout.write(f"  thread {thread_id}")
