"""Recovery with several workers: only the work of a dead worker is marked, never a live one's."""

from __future__ import annotations

import datetime as dt
import io
import socket
import subprocess
import threading
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from execution.caller import Caller
from execution.models import Execution, PackageInstall, Thread, Worker
from execution.sandbox.memory import MemoryBackend, MemoryRun
from execution.services.tool_executor import ToolExecutor
from execution.services.workers import Recovery, current_worker_id, recover_dead_workers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

Status = Execution.Status


def worker(*, hostname: str = "other-host", pid: int = 4242, silent_for: float = 0) -> Worker:
    return Worker.objects.create(
        hostname=hostname, pid=pid, heartbeat_at=timezone.now() - dt.timedelta(seconds=silent_for)
    )


def work_of(owner: Worker, thread: Thread, alice: Any) -> tuple[Execution, PackageInstall]:
    run = Execution.objects.create(
        thread=thread, user=alice, language="python", code="work()", status=Status.RUNNING,
        stdout="partial\n", last_seq=3, worker_id=owner.id,
    )  # fmt: skip
    install = PackageInstall.objects.create(
        thread=thread, user=alice, language="python", packages=["six"],
        status=PackageInstall.Status.RUNNING, worker_id=owner.id,
    )  # fmt: skip
    return run, install


def test_recovery_marks_only_a_dead_workers_runs_and_installs_and_the_live_run_completes(
    caller: Caller,
    thread: Thread,
    alice: Any,
    memory_sandboxes: MemoryBackend,
    settings: Any,
) -> None:
    started, release = threading.Event(), threading.Event()

    async def long_run(r: MemoryRun) -> None:
        started.set()
        await r.until(release)
        r.stdout("finished\n")

    memory_sandboxes.script = long_run
    executor = ToolExecutor()
    ours = executor.start_execution(code="long()", language="python", caller=caller, thread=thread)
    assert started.wait(30)
    # A worker that stopped mid-run (its heartbeat ended past the lease) and one that is alive.
    stopped = worker(silent_for=settings.EXECUTION_WORKER_LEASE_SECONDS + 5)
    alive = worker(pid=4243)
    dead_run, dead_install = work_of(stopped, thread, alice)
    live_run, live_install = work_of(alive, thread, alice)

    assert recover_dead_workers() == Recovery(executions=1, installs=1)

    dead_run.refresh_from_db()
    assert (dead_run.status, dead_run.error["code"], dead_run.stdout) == (
        Status.ERROR, "server_restarted", "partial\n",
    )  # fmt: skip
    assert dead_run.last_seq == 4 and dead_run.finished_at is not None
    dead_install.refresh_from_db()
    assert dead_install.status == PackageInstall.Status.FAILED
    assert "worker_stopped" in dead_install.log
    for row in (live_run, live_install):
        row.refresh_from_db()
        assert row.status == "running"
    assert Execution.objects.get(pk=ours.pk).status == Status.RUNNING

    release.set()
    assert executor.wait_for(ours.id, 30)
    finished = Execution.objects.get(pk=ours.pk)
    assert (finished.status, finished.stdout) == (Status.SUCCEEDED, "finished\n")
    assert finished.worker_id == current_worker_id()


def test_a_worker_on_this_host_whose_process_is_gone_is_dead_before_its_lease_ends(
    thread: Thread, alice: Any, memory_sandboxes: MemoryBackend
) -> None:
    process = subprocess.Popen(["true"])  # a process that has exited
    process.wait()
    crashed = worker(hostname=socket.gethostname(), pid=process.pid)
    run, install = work_of(crashed, thread, alice)

    assert recover_dead_workers() == Recovery(executions=1, installs=1)
    run.refresh_from_db()
    install.refresh_from_db()
    assert (run.status, install.status) == (Status.ERROR, PackageInstall.Status.FAILED)


def test_recover_executions_at_start_up_also_takes_work_that_names_no_worker(
    thread: Thread, alice: Any, memory_sandboxes: MemoryBackend
) -> None:
    unowned = Execution.objects.create(
        thread=thread, user=alice, language="python", code="x", status=Status.QUEUED
    )
    alive = worker(pid=4243)
    live_run, _ = work_of(alive, thread, alice)
    done = Execution.objects.create(
        thread=thread, user=alice, language="python", code="x", status=Status.SUCCEEDED
    )

    out = io.StringIO()
    call_command("recover_executions", stdout=out)

    assert (
        "marked 1 interrupted execution(s) as error and 0 interrupted install(s)" in out.getvalue()
    )
    unowned.refresh_from_db()
    live_run.refresh_from_db()
    done.refresh_from_db()
    assert (unowned.status, live_run.status, done.status) == ("error", "running", "succeeded")
