"""/healthz on a real daphne server whose database stops answering, then comes back.

Under SQLite (the embedded default) the database file is replaced by a directory, which
SQLite cannot open; under PostgreSQL the database stops taking connections and the server's
open ones are ended. Either way the server must answer 503, stay up, and answer 200 again
once the database is back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connections

from execution.tests.live import LiveStack, live_stack

pytestmark = pytest.mark.timeout(120)

# Nothing here reaches a sandbox: the server is only told where one would be.
NO_SANDBOXD = "http://127.0.0.1:9"


@contextlib.contextmanager
def database_down(stack: LiveStack) -> Iterator[None]:
    """The live database unreachable for the servers until the block ends."""
    settings = connections[stack.database.alias].settings_dict
    if "sqlite3" in settings["ENGINE"]:
        path = Path(settings["NAME"])
        aside = path.with_name(path.name + ".aside")
        path.rename(aside)
        path.mkdir()
        try:
            yield
        finally:
            path.rmdir()
            aside.rename(path)
        return
    name = settings["NAME"]
    connections[stack.database.alias].close()  # this process's own, reopened when needed
    with connections["default"]._nodb_cursor() as cursor:
        cursor.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
        )
    try:
        yield
    finally:
        with connections["default"]._nodb_cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def stack(django_db_setup: None, django_db_blocker: Any, tmp_path: Path) -> Iterator[LiveStack]:
    with (
        django_db_blocker.unblock(),
        live_stack(tmp_path, sandboxd_url=NO_SANDBOXD, sandboxd_api_key="unused") as stack,
    ):
        yield stack


def test_healthz_answers_503_while_the_database_is_down_and_200_when_it_is_back(
    stack: LiveStack, django_db_blocker: Any
) -> None:
    url = f"{stack.server.http_url}/healthz"
    assert httpx.get(url).json() == {"status": "ok", "database": "ok"}

    with django_db_blocker.unblock(), database_down(stack):
        # Twice: the first request may find an open connection and fail on it; the second
        # must fail to connect at all.
        for _ in range(2):
            down = httpx.get(url)
            assert down.status_code == 503
            assert down.json() == {"status": "unavailable", "database": "unreachable"}
            assert "no-cache" in down.headers["Cache-Control"]
        assert stack.server.process.poll() is None

    back = httpx.get(url)
    assert back.status_code == 200
    assert back.json() == {"status": "ok", "database": "ok"}
