"""Password guessing is locked out per account and per client IP (django-axes), at every
door that checks a password, with a 429 and one audit row; the right password works again
once the lock-out is over, and other people are not affected."""

from __future__ import annotations

from typing import Any

import pytest
import time_machine
from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.testing import TEST_PASSWORD
from execution.models import SecurityEvent

pytestmark = pytest.mark.django_db

LIMIT = 3


@pytest.fixture(autouse=True)
def low_limit(settings: Any) -> None:
    settings.AXES_FAILURE_LIMIT = LIMIT


def token(username: str, password: str, ip: str = "10.0.0.1") -> Any:
    return APIClient().post(
        "/api/auth/token/",
        {"username": username, "password": password},
        format="json",
        REMOTE_ADDR=ip,
    )


def form_login(path: str, username: str, password: str, ip: str = "10.0.0.1") -> Any:
    return Client().post(path, {"username": username, "password": password}, REMOTE_ADDR=ip)


def test_guessing_an_accounts_password_at_the_token_endpoint_is_locked_out_with_429(
    alice: AbstractBaseUser, bob: AbstractBaseUser
) -> None:
    answers = [token("alice", "wrong").status_code for _ in range(LIMIT)]
    # The failure that reaches the limit is the first one refused as locked out.
    assert answers == [401] * (LIMIT - 1) + [429]
    # Locked: even the right password is refused, before it is checked.
    locked = token("alice", TEST_PASSWORD)
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "login_locked_out"
    assert int(locked["Retry-After"]) > 0
    # Per account, from any address.
    assert token("alice", TEST_PASSWORD, ip="10.9.9.9").status_code == 429
    # Another account from another address is not affected.
    assert token("bob", TEST_PASSWORD, ip="10.0.0.2").status_code == 200
    # Audited, once per window however often it is refused.
    events = SecurityEvent.objects.filter(code="login_locked_out")
    assert events.count() >= 1
    assert events.first().details["username"] == "alice"


def test_guessing_across_accounts_from_one_address_locks_that_address_out(
    alice: AbstractBaseUser, bob: AbstractBaseUser, charlie: AbstractBaseUser
) -> None:
    for name in ("alice", "bob", "charlie"):
        token(name, "wrong", ip="10.6.6.6")
    assert token("staffer", "anything", ip="10.6.6.6").status_code == 429
    # The accounts themselves were guessed once each: from elsewhere they still log in.
    assert token("alice", TEST_PASSWORD, ip="10.0.0.7").status_code == 200


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_the_login_page_and_the_admin_login_are_locked_out_too(
    alice: AbstractBaseUser, path: str
) -> None:
    answers = [form_login(path, "alice", "wrong").status_code for _ in range(LIMIT)]
    assert answers == [200] * (LIMIT - 1) + [429]  # the form with its error, then locked
    locked = form_login(path, "alice", TEST_PASSWORD)
    assert locked.status_code == 429
    assert "Retry-After" in locked
    assert SecurityEvent.objects.filter(code="login_locked_out", source="browser").exists()


def test_the_right_password_works_again_once_the_lock_out_is_over(
    alice: AbstractBaseUser, settings: Any
) -> None:
    for _ in range(LIMIT):
        token("alice", "wrong")
    assert token("alice", TEST_PASSWORD).status_code == 429
    with time_machine.travel(timezone.now() + settings.AXES_COOLOFF_TIME * 2):
        assert token("alice", TEST_PASSWORD).status_code == 200
