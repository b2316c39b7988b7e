from __future__ import annotations

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self) -> None:
        # Connects the lock-out audit receiver (see lockout.py).
        from accounts import lockout  # noqa: F401
