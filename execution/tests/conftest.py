"""Fixtures for tests that need a real sandboxd (shared by the API, executor and websocket tests).

* `sandboxd_server` (session): one real sandboxd started with `sandboxd.testing.running_sandboxd`
  on a free loopback port, with its own state directory and a random API key.
* `sandboxd` (function): the same server, with Django's SANDBOXD_URL / SANDBOXD_API_KEY pointed
  at it (and E2B_API_KEY cleared, so the SDK never leaves this machine) for the test.
* `sandbox_settings` (function): the same overrides without the `db` fixture, for tests that
  manage the database themselves.
* `live` (module): daphne in front of a live database holding alice and charlie
  (`live.LiveUsers`), on the session's sandboxd, for a module's tests over real sockets.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execution.tests.live import LiveUsers, live_users_stack
from sandboxd.testing import RunningSandboxd, running_sandboxd


def make_state_dir(prefix: str) -> Path:
    """A fresh directory under /tmp the sandbox uids can traverse (0755)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(path, 0o755)  # noqa: S103 - sandbox uids must traverse it; it holds no secrets
    return path


@pytest.fixture(scope="session")
def sandboxd_server() -> Iterator[RunningSandboxd]:
    """A real sandboxd for the whole test session."""
    state_dir = make_state_dir("atlaschat-test-sandboxd-")
    try:
        with running_sandboxd(state_dir=state_dir, api_key=secrets.token_hex(16)) as server:
            yield server
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def point_settings_at(settings: Any, server: RunningSandboxd) -> None:
    """Make the execution services use `server` (and forget sandboxes cached for another)."""
    from execution.services.sandbox_sessions import sessions

    settings.E2B_API_KEY = ""
    settings.SANDBOXD_URL = server.url
    settings.SANDBOXD_API_KEY = server.api_key
    sessions.forget_all()


@pytest.fixture
def sandbox_settings(settings: Any, sandboxd_server: RunningSandboxd) -> Iterator[RunningSandboxd]:
    """Settings pointed at the session's sandboxd for one test."""
    point_settings_at(settings, sandboxd_server)
    yield sandboxd_server


@pytest.fixture
def sandboxd(sandbox_settings: RunningSandboxd) -> Iterator[RunningSandboxd]:
    """The session's sandboxd, with settings pointed at it, for one test; the sandboxes the
    test's threads got are killed afterwards so they do not pile up on the server."""
    from execution.services.sandbox_sessions import sessions

    yield sandbox_settings
    sessions.forget_all(kill=True)


@pytest.fixture(scope="module")
def live(
    django_db_setup: None,
    django_db_blocker: Any,
    sandboxd_server: RunningSandboxd,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[LiveUsers]:
    name = request.module.__name__.rpartition(".")[2]
    with (
        django_db_blocker.unblock(),
        live_users_stack(tmp_path_factory.mktemp(name), sandboxd_server) as users,
    ):
        yield users
