from __future__ import annotations

from django.apps import AppConfig


class ExecutionConfig(AppConfig):
    name = "execution"
    verbose_name = "Code execution"

    def ready(self) -> None:
        # Metrics counted from saved rows (execution/monitoring/signals.py).
        from execution.monitoring import signals  # noqa: F401
