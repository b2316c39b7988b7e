"""`manage.py ensure_admin`: make sure an administrator account exists.

Run by `make run` at every start. The first time it creates a superuser with a random
password and prints it once, with where to log in; afterwards it only says that the
account exists and how to reset its password. There is never a fixed or default password.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction


class Command(BaseCommand):
    help = "Create the admin account with a random password printed once, unless it exists."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin", help="account name (default: admin)")
        parser.add_argument(
            "--url",
            default="http://127.0.0.1:8000/",
            help="the site's address, to say where to log in",
        )

    def handle(self, *args: Any, username: str, url: str, **options: Any) -> None:
        user_model = get_user_model()
        login_url = url.rstrip("/") + "/accounts/login/"
        reset_command = f".venv/bin/python manage.py changepassword {username}"
        with transaction.atomic():
            user = user_model.objects.select_for_update().filter(username=username).first()
            if user is not None and user.is_superuser and user.is_active:
                self.stdout.write(
                    f"The admin account {username!r} exists; log in at {login_url}. "
                    f"Forgot its password? Set a new one with: {reset_command}"
                )
                return
            if user is not None:
                # Never promote (or re-enable) an existing account silently: someone may have
                # taken the name on purpose. Say what to do and leave it as it is.
                self.stderr.write(
                    self.style.WARNING(
                        f"An account {username!r} exists but is not an active superuser, so "
                        "there may be no administrator. Create one with: .venv/bin/python "
                        "manage.py createsuperuser (or pass --username NAME)"
                    )
                )
                return
            # 16 random bytes, URL-safe: typed once, then changed or kept in a password manager.
            password = secrets.token_urlsafe(16)
            user_model.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(
            self.style.SUCCESS("Created the admin account. This password is shown only once:")
        )
        self.stdout.write(f"    log in at  {login_url}")
        self.stdout.write(f"    username   {username}")
        self.stdout.write(f"    password   {password}")
        self.stdout.write(f"Change it later with: {reset_command}")
