"""Workers (server processes that run executions and installs), their leases, and the recovery
of the work of workers that are gone — safe with several workers on one database.

Each process that runs work is a `Worker` row whose `heartbeat_at` it refreshes every
EXECUTION_WORKER_HEARTBEAT_SECONDS from the service portal (runtime.py); the executions and
installs it starts carry its id. A worker is dead when its lease ran out (no heartbeat for
EXECUTION_WORKER_LEASE_SECONDS) or, on this host, when its process no longer exists (found at
once, without waiting for the lease). Every live worker recovers the dead ones' work at each
heartbeat; `manage.py recover_executions` does it at start-up, and also takes work that names
no worker (rows from before workers were recorded).

Recovering means: a queued or running execution becomes `error` (`server_restarted`, its
output so far kept; sockets following it see the final status at their next check), a queued
or running install becomes `failed` (so the packages page stops polling it).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass

import anyio
import anyio.to_thread
from django.conf import settings
from django.db import connection
from django.db.models import F, Q
from django.utils import timezone

from execution.models import Execution, PackageInstall, Worker
from execution.services.runtime import service_portal

logger = logging.getLogger(__name__)

ACTIVE_RUNS = (Execution.Status.QUEUED, Execution.Status.RUNNING)
ACTIVE_INSTALLS = (PackageInstall.Status.QUEUED, PackageInstall.Status.RUNNING)
# A dead worker's row is kept this long after its last heartbeat (its id names past work).
FORGET_DEAD_AFTER = dt.timedelta(days=1)

_lock = threading.Lock()
_worker_id: uuid.UUID | None = None
_worker_pid: int | None = None


@dataclass(frozen=True)
class Recovery:
    """How many executions and installs of dead workers one recovery marked."""

    executions: int = 0
    installs: int = 0


def current_worker_id() -> uuid.UUID:
    """This process's worker id: registered (first heartbeat) on first use, with its
    heartbeat loop started on the service portal; again after a fork."""
    global _worker_id, _worker_pid
    with _lock:
        if _worker_id is not None and _worker_pid == os.getpid():
            return _worker_id
        _worker_id, _worker_pid = uuid.uuid4(), os.getpid()
        worker_id = _worker_id
    heartbeat(worker_id)
    service_portal().submit(_heartbeat_loop(worker_id))
    return worker_id


def heartbeat(worker_id: uuid.UUID) -> None:
    """Renew the lease of `worker_id` (creating its row if it has none)."""
    Worker.objects.update_or_create(
        id=worker_id,
        defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "heartbeat_at": timezone.now(),
        },
    )


async def _heartbeat_loop(worker_id: uuid.UUID) -> None:
    while True:
        await anyio.sleep(settings.EXECUTION_WORKER_HEARTBEAT_SECONDS)
        try:
            await anyio.to_thread.run_sync(_beat_and_recover, worker_id)
        except Exception:
            # The database may be briefly away: the next beat tries again; the lease is
            # several beats long.
            logger.exception("worker heartbeat failed")


def _beat_and_recover(worker_id: uuid.UUID) -> None:
    try:
        heartbeat(worker_id)
        recovery = recover_dead_workers()
        if recovery.executions or recovery.installs:
            logger.warning(
                "recovered %d execution(s) and %d install(s) of stopped workers",
                recovery.executions, recovery.installs,
            )  # fmt: skip
    finally:
        # anyio's worker threads outlive this call: do not leave a connection in one.
        connection.close()


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def live_worker_ids() -> set[uuid.UUID]:
    """The workers holding a lease whose process (on this host) still exists."""
    cutoff = timezone.now() - dt.timedelta(seconds=settings.EXECUTION_WORKER_LEASE_SECONDS)
    host, me = socket.gethostname(), os.getpid()
    live = set()
    for worker_id, hostname, pid in Worker.objects.filter(heartbeat_at__gte=cutoff).values_list(
        "id", "hostname", "pid"
    ):
        reused_pid = pid == me and worker_id != _worker_id  # ours now, after a restart
        if hostname == host and (reused_pid or not _process_exists(pid)):
            continue  # its process is gone
        live.add(worker_id)
    if _worker_id is not None and _worker_pid == me:
        live.add(_worker_id)
    return live


def recover_dead_workers(
    *, include_unowned: bool = False, reason: str = "The server process running it stopped."
) -> Recovery:
    """Mark the active executions and installs of dead workers (see the module docstring);
    with `include_unowned`, also those that name no worker. Returns how many were marked."""
    live = live_worker_ids()
    orphaned = Q(worker_id__isnull=False) & ~Q(worker_id__in=live)
    if include_unowned:
        orphaned |= Q(worker_id__isnull=True)
    now = timezone.now()
    error = {"name": "SandboxError", "value": reason, "traceback": "", "code": "server_restarted"}
    executions = 0
    for pk, status in Execution.objects.filter(orphaned, status__in=ACTIVE_RUNS).values_list(
        "pk", "status"
    ):
        # Conditional on the status read: a run that finished meanwhile is left alone.
        executions += Execution.objects.filter(pk=pk, status=status).update(
            status=Execution.Status.ERROR, error=error, finished_at=now,
            last_seq=F("last_seq") + 1,
        )  # fmt: skip
    installs = 0
    for install in PackageInstall.objects.filter(orphaned, status__in=ACTIVE_INSTALLS):
        installs += PackageInstall.objects.filter(pk=install.pk, status=install.status).update(
            status=PackageInstall.Status.FAILED,
            log=f"{install.log}\nworker_stopped: {reason}".lstrip("\n"),
            finished_at=now,
        )
    Worker.objects.exclude(id__in=live).filter(heartbeat_at__lt=now - FORGET_DEAD_AFTER).delete()
    return Recovery(executions=executions, installs=installs)
