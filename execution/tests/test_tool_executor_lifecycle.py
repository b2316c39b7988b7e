"""Sandbox lifecycle around the ToolExecutor: idle sandboxes reaped by `reap_sandboxes`,
interrupted runs recovered by `recover_executions`, and a cancel that arrives through the
database (as from another server process)."""

from __future__ import annotations

import datetime as dt
import io
import time
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from e2b import NotFoundException

from execution.caller import Caller
from execution.models import Execution, Thread
from execution.sandbox.e2b import E2BBackend, client_options
from execution.services.sandbox_sessions import sessions
from execution.services.tool_executor import ToolExecutor

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(120)]


@pytest.mark.django_db
def test_reap_sandboxes_kills_idle_sandboxes_and_the_next_run_gets_a_new_one(
    alice: Any, sandboxd: Any
) -> None:
    idle = Thread.objects.create(owner=alice, title="idle")
    busy = Thread.objects.create(owner=alice, title="recent")
    for thread in (idle, busy):
        ToolExecutor().execute_code(
            code="v = 1", language="python", caller=Caller(user=alice), thread=thread
        )
    Thread.objects.filter(pk=idle.pk).update(last_used_at=timezone.now() - dt.timedelta(hours=2))
    idle.refresh_from_db()
    old_sandbox = idle.sandbox_id

    out = io.StringIO()
    call_command("reap_sandboxes", "--idle-seconds", "3600", stdout=out)

    assert "released 1 sandbox(es)" in out.getvalue()
    idle.refresh_from_db()
    busy.refresh_from_db()
    assert idle.sandbox_id == "" and busy.sandbox_id
    with pytest.raises(NotFoundException):
        sessions.call(E2BBackend().sdk_class.connect(old_sandbox))
    again = ToolExecutor().execute_code(
        code="print('fresh')", language="python", caller=Caller(user=alice), thread=idle
    )
    assert again.stdout == "fresh\n"


@pytest.mark.django_db
def test_recover_executions_marks_only_unfinished_runs_error(alice: Any) -> None:
    thread = Thread.objects.create(owner=alice)
    make = lambda status: Execution.objects.create(  # noqa: E731
        thread=thread, user=alice, language="python", code="x", status=status, last_seq=3
    )
    queued, running, done = make("queued"), make("running"), make("succeeded")

    out = io.StringIO()
    call_command("recover_executions", stdout=out)

    assert "marked 2 interrupted execution(s)" in out.getvalue()
    for row in (queued, running):
        row.refresh_from_db()
        assert (row.status, row.error["code"], row.last_seq) == ("error", "server_restarted", 4)
        assert row.finished_at is not None
    done.refresh_from_db()
    assert done.status == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_a_cancel_recorded_in_the_database_reaches_a_run_of_this_process(
    alice: Any, sandboxd: Any
) -> None:
    thread = Thread.objects.create(owner=alice)
    executor = ToolExecutor()
    execution = executor.start_execution(
        code="import time\nprint('started', flush=True)\ntime.sleep(30)",
        language="python",
        caller=Caller(user=alice),
        thread=thread,
    )
    deadline = time.monotonic() + 30
    while Execution.objects.get(pk=execution.pk).stdout != "started\n":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    # What cancel_execution does in another server process: only the flag, in the database.
    Execution.objects.filter(pk=execution.pk).update(cancel_requested=True)

    assert executor.wait_for(execution.id, 10)
    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert execution.duration_ms is not None and execution.duration_ms < 10_000


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_runs_of_a_thread_share_one_new_sandbox(alice: Any, sandboxd: Any) -> None:
    thread = Thread.objects.create(owner=alice)
    executor = ToolExecutor()
    caller = Caller(user=alice)
    runs = [
        executor.start_execution(
            code=f"print({n})", language="python", caller=caller, thread=thread
        )
        for n in range(3)
    ]
    for run in runs:
        assert executor.wait_for(run.id, 60)

    finished = [Execution.objects.get(pk=run.pk) for run in runs]
    assert [(e.status, e.stdout) for e in finished] == [("succeeded", f"{n}\n") for n in range(3)]
    assert len({e.details["sandbox_id"] for e in finished}) == 1
    assert sum("restored" in e.details for e in finished) == 1  # created exactly once
    thread.refresh_from_db()
    assert thread.sandbox_id == finished[0].details["sandbox_id"]


@pytest.mark.django_db
def test_a_used_sandbox_is_kept_alive_past_its_original_timeout(
    alice: Any, sandboxd: Any, settings: Any
) -> None:
    settings.SANDBOX_TIMEOUT_SECONDS = 6
    thread = Thread.objects.create(owner=alice)
    caller = Caller(user=alice)
    first = ToolExecutor().execute_code(
        code="kept = 1", language="python", caller=caller, thread=thread
    )

    for _ in range(4):  # 8 s of use, longer than the 6 s the sandbox was created with
        time.sleep(2)
        run = ToolExecutor().execute_code(
            code="print(kept)", language="python", caller=caller, thread=thread
        )
        assert (run.status, run.stdout) == ("succeeded", "1\n")
    assert run.details["sandbox_id"] == first.details["sandbox_id"]


def test_without_an_e2b_key_the_sdk_talks_to_sandboxd_and_with_one_to_e2b(settings: Any) -> None:
    settings.E2B_API_KEY = ""
    settings.SANDBOXD_URL = "http://127.0.0.1:4999"
    settings.SANDBOXD_API_KEY = "local-key"
    assert client_options() == {
        "api_key": "local-key",
        "api_url": "http://127.0.0.1:4999",
        "sandbox_url": "http://127.0.0.1:4999",
    }
    settings.E2B_API_KEY = "e2b_test"
    settings.E2B_DOMAIN = "e2b.example.test"
    assert client_options() == {"api_key": "e2b_test", "domain": "e2b.example.test"}
    bound = E2BBackend().sdk_class._bound_api_params
    assert (bound["api_key"], bound["domain"]) == ("e2b_test", "e2b.example.test")
    assert "api_url" not in bound and "sandbox_url" not in bound
