"""Fair use by design: the per-user and global caps, decided here and nowhere else.

* **Runs in flight** (`check_run_concurrency`): executions `queued` or `running` in the
  database, per user (EXECUTION_USER_CONCURRENCY) and in all (EXECUTION_GLOBAL_CONCURRENCY).
  The count and the insert of the new run share one transaction that is serialised for run
  admission: SQLite's IMMEDIATE transactions take the write lock at BEGIN; on PostgreSQL a
  transaction-scoped advisory lock does the same. So two requests racing for the last slot
  cannot both get it, whatever the number of server processes.
* **Live sandboxes** (`sandbox_admission`): threads that hold a sandbox, per user
  (SANDBOX_USER_LIMIT) and in all (SANDBOX_GLOBAL_LIMIT, the sandbox server's capacity). A
  thread that needs a new sandbox at a cap gets the slot of the oldest idle one (no run in
  flight; the owner's own first), which the caller releases first; with none idle the
  request is refused. Admissions are serialised (a process lock and, on PostgreSQL, a
  session advisory lock across processes) from the count until the new sandbox id is
  stored. With EXECUTION_GLOBAL_CONCURRENCY no larger than SANDBOX_GLOBAL_LIMIT, a run that
  needs a sandbox always finds an idle one to take over.
* **Open websockets** (`acquire_websocket_slot`): per user and server process
  (WEBSOCKET_USER_LIMIT). A socket is held by one process, so its count lives and dies
  with that process: nothing stale to reclaim after a crash.

A user at a cap is refused with 429 and an integer Retry-After (execution/throttling.py),
never a 503: the service is healthy, the user has used their share. Defaults agree with
sandboxd's capacity (its max_sandboxes, 16): at most 16 runs in flight and 16 sandboxes in
all, each user at most 4 runs and 4 sandboxes.
"""

from __future__ import annotations

import threading
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection
from django.db.models import Count, Q

from execution.models import Execution, Thread
from execution.services.errors import ToolError
from execution.throttling import refusal_429

ACTIVE_STATUSES = (Execution.Status.QUEUED, Execution.Status.RUNNING)
# Advisory-lock keys (PostgreSQL): one for run admission, one space per user for sandboxes.
_RUN_ADMISSION_KEY = zlib.crc32(b"atlaschat:run-admission")
_SANDBOX_ADMISSION_KEY = zlib.crc32(b"atlaschat:sandbox-admission")


def _quota_error(code: str, message: str, limit: int) -> ToolError:
    return refusal_429(code, message, settings.EXECUTION_CONCURRENCY_RETRY_AFTER, limit=limit)


# --- runs in flight -----------------------------------------------------------------------


def _serialise_run_admission() -> None:
    # SQLite: the surrounding IMMEDIATE transaction already holds the write lock.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_RUN_ADMISSION_KEY])


def check_run_concurrency(user: AbstractBaseUser) -> None:
    """Raise ToolError 429 (`concurrency_limit_user` or `concurrency_limit_global`) when a new
    run of `user` would exceed EXECUTION_USER_CONCURRENCY or EXECUTION_GLOBAL_CONCURRENCY.

    Call inside the transaction that inserts the run: it holds the admission lock until
    that transaction ends, so the count it reads is still true at the insert.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("check_run_concurrency must run in the transaction of the insert")
    _serialise_run_admission()
    counts = Execution.objects.filter(status__in=ACTIVE_STATUSES).aggregate(
        everyone=Count("pk"), mine=Count("pk", filter=Q(user=user))
    )
    user_limit = settings.EXECUTION_USER_CONCURRENCY
    if counts["mine"] >= user_limit:
        raise _quota_error(
            "concurrency_limit_user",
            f"You already have {user_limit} runs in progress; wait for one to finish.",
            user_limit,
        )
    global_limit = settings.EXECUTION_GLOBAL_CONCURRENCY
    if counts["everyone"] >= global_limit:
        raise _quota_error(
            "concurrency_limit_global",
            "The server is running as many programs as it allows; try again shortly.",
            global_limit,
        )


# --- live sandboxes -------------------------------------------------------------------------

# One admission at a time: a process lock and, on PostgreSQL, a session advisory lock across
# processes, held from the count until the new sandbox's id is stored on its thread.
_admission_lock = threading.Lock()


@contextmanager
def _across_processes() -> Iterator[None]:
    if connection.vendor != "postgresql":
        yield  # the embedded default is one server process: the process lock is enough
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [_SANDBOX_ADMISSION_KEY])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_SANDBOX_ADMISSION_KEY])


def sandbox_holders(owner_id: int | None = None) -> list[tuple[Thread, bool]]:
    """Threads that hold a sandbox (of one owner, or everyone's), least recently used first,
    each with whether it is busy (a run of it is queued or running)."""
    rows = Thread.objects.exclude(sandbox_id="")
    if owner_id is not None:
        rows = rows.filter(owner_id=owner_id)
    holders = list(rows.order_by("last_used_at", "created_at"))
    busy = set(
        Execution.objects.filter(thread__in=holders, status__in=ACTIVE_STATUSES).values_list(
            "thread_id", flat=True
        )
    )
    return [(row, row.pk in busy) for row in holders]


def _to_release(holders: list[tuple[Thread, bool]], limit: int, chosen: list[Thread]) -> int:
    """Add to `chosen` the oldest idle holders needed to leave room for one more under
    `limit`; return how many more it would have needed (0: it fits)."""
    remaining = [(t, busy) for t, busy in holders if t not in chosen]
    excess = len(remaining) + 1 - limit
    for held, busy in remaining:
        if excess <= 0:
            break
        if not busy:
            chosen.append(held)
            excess -= 1
    return max(0, excess)


@contextmanager
def sandbox_admission(thread: Thread) -> Iterator[list[Thread]]:
    """Admit a new sandbox for `thread`: yields the threads whose sandboxes the caller must
    release first (empty when there is room): the owner's oldest idle ones beyond
    SANDBOX_USER_LIMIT, then anyone's oldest idle ones beyond SANDBOX_GLOBAL_LIMIT (the
    sandbox server's capacity, so a new thread gets a sandbox instead of the server's
    refusal). Raises ToolError 429 `sandbox_limit_user` / `sandbox_limit_global` when the
    cap is reached and every sandbox under it is running code.

    Hold the context until the new sandbox id is stored on the thread: admissions wait for
    each other, so the counts stay true.
    """
    with _admission_lock, _across_processes():
        everyone = [(t, busy) for t, busy in sandbox_holders() if t.pk != thread.pk]
        mine = [(t, busy) for t, busy in everyone if t.owner_id == thread.owner_id]
        chosen: list[Thread] = []
        if _to_release(mine, settings.SANDBOX_USER_LIMIT, chosen):
            raise sandbox_limit_reached()
        if _to_release(everyone, settings.SANDBOX_GLOBAL_LIMIT, chosen):
            raise sandbox_limit_reached(everyone_s=True)
        yield chosen


def sandbox_limit_reached(*, everyone_s: bool = False) -> ToolError:
    """The refusal of a new sandbox at a cap with no idle sandbox to release."""
    if everyone_s:
        limit = settings.SANDBOX_GLOBAL_LIMIT
        return _quota_error(
            "sandbox_limit_global",
            "Every sandbox the server can hold is running code; try again shortly.",
            limit,
        )
    limit = settings.SANDBOX_USER_LIMIT
    return _quota_error(
        "sandbox_limit_user",
        f"You already have {limit} live sandboxes, all busy; wait for a run to finish or "
        "delete a thread.",
        limit,
    )


# --- open websockets ------------------------------------------------------------------------

_open_sockets: Counter[int] = Counter()
_open_sockets_guard = threading.Lock()


def acquire_websocket_slot(user_id: int) -> None:
    """Take one of the user's WEBSOCKET_USER_LIMIT sockets in this process; raise ToolError
    429 `websocket_limit_user` when they are all taken. Pair with release_websocket_slot."""
    limit = settings.WEBSOCKET_USER_LIMIT
    with _open_sockets_guard:
        if _open_sockets[user_id] >= limit:
            raise _quota_error(
                "websocket_limit_user",
                f"You already have {limit} sockets open; close one first.",
                limit,
            )
        _open_sockets[user_id] += 1


def release_websocket_slot(user_id: int) -> None:
    """Give back a slot taken by acquire_websocket_slot."""
    with _open_sockets_guard:
        _open_sockets[user_id] -= 1
        if _open_sockets[user_id] <= 0:
            del _open_sockets[user_id]


def open_websockets(user_id: int) -> int:
    """How many sockets the user holds in this process (for tests and metrics)."""
    with _open_sockets_guard:
        return _open_sockets[user_id]
