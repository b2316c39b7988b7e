"""`manage.py ensure_admin`: an admin account with a random password, printed once."""

from __future__ import annotations

import re
from collections.abc import Callable
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def run_ensure_admin(*args: str, stderr: StringIO | None = None) -> str:
    out = StringIO()
    call_command("ensure_admin", *args, stdout=out, stderr=stderr or StringIO())
    return out.getvalue()


def printed_password(output: str) -> str:
    match = re.search(r"^\s+password\s+(\S+)$", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def test_it_creates_a_superuser_and_prints_a_working_password() -> None:
    output = run_ensure_admin("--url", "http://127.0.0.1:8123/")
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff and admin.is_active
    assert admin.check_password(printed_password(output))
    assert "http://127.0.0.1:8123/accounts/login/" in output
    assert "shown only once" in output


def test_each_new_install_gets_a_different_password() -> None:
    first = printed_password(run_ensure_admin())
    get_user_model().objects.all().delete()
    second = printed_password(run_ensure_admin())
    assert first != second
    assert len(first) >= 16


def test_when_the_admin_exists_it_says_so_and_how_to_reset_it() -> None:
    password = printed_password(run_ensure_admin())
    output = run_ensure_admin()
    assert "exists" in output
    assert "manage.py changepassword admin" in output
    assert password not in output
    # Nothing was changed: the first password still works and there is one admin.
    admin = get_user_model().objects.get(username="admin")
    assert admin.check_password(password)
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


def test_another_username_can_be_chosen() -> None:
    output = run_ensure_admin("--username", "root")
    assert get_user_model().objects.get(username="root").check_password(printed_password(output))


def test_an_ordinary_account_called_admin_is_left_alone_with_a_warning(
    make_user: Callable[..., AbstractBaseUser],
) -> None:
    make_user("admin")
    errors = StringIO()
    output = run_ensure_admin(stderr=errors)
    assert output == ""
    assert "not an active superuser" in errors.getvalue()
    assert "createsuperuser" in errors.getvalue()
    admin = get_user_model().objects.get(username="admin")
    assert not admin.is_superuser and not admin.is_staff
