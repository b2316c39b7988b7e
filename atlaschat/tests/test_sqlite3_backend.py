"""The SQLite backend's health check: a kept connection whose database file was moved,
replaced or deleted is unusable (Django then opens a new one, or fails to)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.db import connections
from django.db.backends.sqlite3.base import DatabaseWrapper as DjangoSQLite

from atlaschat.sqlite3_backend.base import DatabaseWrapper


@pytest.fixture
def wrapper(tmp_path: Path, django_db_blocker: Any) -> Any:
    settings = {
        **connections["default"].settings_dict,
        "ENGINE": "atlaschat.sqlite3_backend",
        "NAME": str(tmp_path / "db.sqlite3"),
        "OPTIONS": {},
        "TEST": {},
    }
    database = DatabaseWrapper(settings, alias="health-check-test")
    with django_db_blocker.unblock():  # a database of its own, not the test database
        database.ensure_connection()
        yield database
        database.close()


def test_it_is_djangos_sqlite_backend() -> None:
    assert issubclass(DatabaseWrapper, DjangoSQLite)


def test_a_connection_to_the_file_still_at_its_path_is_usable(wrapper: Any) -> None:
    with wrapper.cursor() as cursor:
        cursor.execute("CREATE TABLE t (x)")
    assert wrapper.is_usable()


@pytest.mark.parametrize("change", ["moved", "replaced", "deleted"])
def test_a_connection_whose_file_changed_under_it_is_not(wrapper: Any, change: str) -> None:
    path = Path(wrapper.settings_dict["NAME"])
    if change == "moved":
        path.rename(path.with_name("aside.sqlite3"))
        path.mkdir()
    elif change == "replaced":
        path.rename(path.with_name("aside.sqlite3"))
        path.write_bytes(b"")
    else:
        path.unlink()

    assert not wrapper.is_usable()
