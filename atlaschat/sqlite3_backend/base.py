"""Django's SQLite backend, whose connections know which file they opened.

Request threads are pooled and keep their connection (atlaschat/request_threads.py,
CONN_MAX_AGE). An SQLite connection holds its file open: if the database file is moved,
replaced or deleted while the server runs (a restore from a backup, a mistake), a kept
connection would go on reading and writing the old, unlinked file, and the health check
would report a database that no longer exists as fine. Django checks a kept connection with
`is_usable()` before a request uses it (CONN_HEALTH_CHECKS); here that check compares the
file now at the database's path with the one the connection opened (device and inode), so
every kept connection is replaced, or fails to reopen, on the request after the change.
"""

from __future__ import annotations

import os
from typing import Any

from django.db.backends.sqlite3 import base


def _identity(name: object) -> tuple[int, int] | None:
    """(device, inode) of the regular file at `name`, None when there is none."""
    try:
        status = os.stat(str(name))
    except OSError:
        return None
    return (status.st_dev, status.st_ino) if os.path.isfile(str(name)) else None


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        self.opened_file = None if self.is_in_memory_db() else _identity(conn_params["database"])
        return connection

    def is_usable(self) -> bool:
        if self.is_in_memory_db():
            return True
        opened = getattr(self, "opened_file", None)
        return opened is not None and _identity(self.settings_dict["NAME"]) == opened
