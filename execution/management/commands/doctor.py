"""`manage.py doctor`: can this installation run code? Each part checked, with what to do."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from execution.monitoring import health


class Command(BaseCommand):
    help = (
        "Check the database, the channel layer, the sandbox backend (reachable, key accepted), "
        "a sandbox created with print(1) run in it, and the package indexes reachable from a "
        "sandbox. Exits 1 naming the parts that fail."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--quick",
            action="store_true",
            help="only what /readyz checks (no sandbox is created)",
        )

    def handle(self, *args: Any, quick: bool = False, **options: Any) -> None:
        checks = health.READINESS_CHECKS if quick else health.DOCTOR_CHECKS
        results = health.run_checks(checks)
        for result in results:
            if result.ok:
                line = f"ok    {result.name}" + (f": {result.detail}" if result.detail else "")
                self.stdout.write(self.style.SUCCESS(line))
            else:
                self.stdout.write(self.style.ERROR(f"FAIL  {result.name}: {result.problem}"))
                self.stdout.write(f"      what to do: {result.fix}")
        failing = [result.name for result in results if not result.ok]
        if failing:
            raise CommandError(f"not ready: {', '.join(failing)}", returncode=1)
        self.stdout.write("everything works")
