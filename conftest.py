"""Shared fixtures: the three named users of every authorization test, a staff member, and
API clients that authenticate them.

* alice   - owns the objects under test
* bob     - another ordinary user (e.g. a second owner)
* charlie - must see nothing of alice's: every access is a 404 (or an empty list)
* staff   - is_staff, not a superuser: may read the admin audit views

All share the password `accounts.testing.TEST_PASSWORD`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.hashers import make_password
from playwright.sync_api import Browser, sync_playwright
from rest_framework.test import APIClient

from accounts.testing import TEST_PASSWORD, jwt_client_for


def pytest_configure(config: pytest.Config) -> None:
    # WhiteNoise warns once per process that STATIC_ROOT does not exist; tests never run
    # collectstatic (templates only build static URLs), so the warning is noise there.
    config.addinivalue_line("filterwarnings", "ignore:No directory at:UserWarning")
    # Persistent connections (CONN_MAX_AGE, set from DATABASE_URL) would stay open in the
    # worker threads of database_sync_to_async after a test, and PostgreSQL refuses to drop
    # the test database while they do. Tests close each connection when its work is done.
    from django.conf import settings

    for database in settings.DATABASES.values():
        database["CONN_MAX_AGE"] = 0


@pytest.fixture(scope="session")
def test_password_hash() -> str:
    """The hash of TEST_PASSWORD, computed once: argon2 is slow on purpose, tests need not be."""
    return make_password(TEST_PASSWORD)


@pytest.fixture
def make_user(
    db: None, django_user_model: type[AbstractBaseUser], test_password_hash: str
) -> Callable[..., AbstractBaseUser]:
    """Return a factory: make_user("name", is_staff=…) creates a user with TEST_PASSWORD."""

    def create(username: str, **extra: object) -> AbstractBaseUser:
        return django_user_model.objects.create(
            username=username,
            email=f"{username}@example.test",
            password=test_password_hash,
            **extra,
        )

    return create


@pytest.fixture
def alice(make_user: Callable[..., AbstractBaseUser]) -> AbstractBaseUser:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[..., AbstractBaseUser]) -> AbstractBaseUser:
    return make_user("bob")


@pytest.fixture
def charlie(make_user: Callable[..., AbstractBaseUser]) -> AbstractBaseUser:
    return make_user("charlie")


@pytest.fixture
def staff(make_user: Callable[..., AbstractBaseUser]) -> AbstractBaseUser:
    return make_user("staff", is_staff=True)


@pytest.fixture
def api_client() -> APIClient:
    """An API client that sends no credentials."""
    return APIClient()


@pytest.fixture
def jwt_client() -> Callable[[AbstractBaseUser], APIClient]:
    """Return a factory: jwt_client(alice) is an APIClient sending alice's access token."""
    return jwt_client_for


# Debian's Chromium (scripts/system-packages.sh test installs it); Playwright drives it.
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """A headless Chromium for the tests marked `browser`, shared by one test module.

    Playwright's sync API keeps an asyncio loop running in the main thread while it is
    started, and Django then refuses ORM calls there (SynchronousOnlyOperation) although
    the test's own code is plain synchronous code. So the browser lives only as long as its
    module, and only for that time DJANGO_ALLOW_ASYNC_UNSAFE lets the test's ORM calls
    through; every other test keeps Django's check.
    """
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/system-packages.sh test`")
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        # --no-sandbox: Chromium's own sandbox cannot start as root (CI runs as root); the
        # pages it loads are our own, served from loopback.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()
