"""A run's decisions, through the in-memory sandbox: statuses, output caps, refusals, quotas,
ownership, cancel, and recovery when the sandbox is lost or its server down."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from execution.caller import Caller
from execution.models import Execution, PackageInstall, SecurityEvent, Thread, WorkspaceFile
from execution.sandbox.base import ResultData
from execution.sandbox.memory import MemoryBackend, MemoryRun
from execution.services.errors import ToolError
from execution.services.tool_executor import ToolExecutor
from execution.stream import FRAME_TEXT_CHARS, StreamCursor, result_size

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

Status = Execution.Status


def run(caller: Caller, thread: Thread | None, code: str = "print(1)", **kwargs: Any) -> Execution:
    return ToolExecutor().execute_code(
        code=code, language="python", caller=caller, thread=thread, **kwargs
    )


def test_a_run_stores_its_output_and_succeeds(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    async def script(r: MemoryRun) -> None:
        r.stdout("hello\n")
        r.stderr("careful\n")
        r.result({"text": "42", "is_main_result": True})

    memory_sandboxes.script = script
    execution = run(caller, thread)

    assert (execution.status, execution.exit_code) == (Status.SUCCEEDED, 0)
    assert (execution.stdout, execution.stderr) == ("hello\n", "careful\n")
    assert execution.results == [{"text": "42", "is_main_result": True}]
    assert execution.last_seq == 5  # execution, status, stdout, stderr, result; done is 6th
    assert execution.details["sandbox_id"] == memory_sandboxes.live()[0].sandbox_id


def test_a_code_error_fails_the_run_with_exit_code_1(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    async def script(r: MemoryRun) -> None:
        r.error("ValueError", "nope", "Traceback …")

    memory_sandboxes.script = script
    execution = run(caller, thread)

    assert (execution.status, execution.exit_code) == (Status.FAILED, 1)
    assert execution.error == {"name": "ValueError", "value": "nope", "traceback": "Traceback …"}


def test_a_run_past_its_time_limit_is_timed_out_and_the_next_run_works(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    async def sleeper(r: MemoryRun) -> None:
        await asyncio.sleep(30)

    memory_sandboxes.script = sleeper
    execution = run(caller, thread, timeout=1)
    assert execution.status == Status.TIMED_OUT
    assert execution.error["code"] == "execution_timeout"

    memory_sandboxes.script = lambda r: asyncio.sleep(0)
    assert run(caller, thread).status == Status.SUCCEEDED


def test_a_5_mb_line_is_stored_capped_and_flagged_and_replays_in_frames(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend, settings: Any
) -> None:
    async def flood(r: MemoryRun) -> None:
        r.stdout("x" * (5 * 1024 * 1024) + "\n")

    memory_sandboxes.script = flood
    execution = run(caller, thread)

    assert execution.status == Status.SUCCEEDED and execution.truncated
    assert len(execution.stdout) == settings.EXECUTION_MAX_OUTPUT_BYTES
    # One event per frame-sized piece: the row's last_seq counts them.
    pieces = -(-settings.EXECUTION_MAX_OUTPUT_BYTES // FRAME_TEXT_CHARS)
    assert execution.last_seq == 2 + pieces
    frames = StreamCursor(str(execution.id)).catch_up(execution)
    assert max(len(f.get("text", "")) for f in frames) <= FRAME_TEXT_CHARS
    assert frames[-1]["type"] == "done" and frames[-1]["truncated"] is True


def test_a_result_over_the_runs_result_budget_is_stored_as_a_stated_placeholder(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend, settings: Any
) -> None:
    settings.EXECUTION_MAX_RESULT_BYTES = 1024 * 1024

    chart: ResultData = {"png": "A" * 2_000_000, "text": "<Figure>", "is_main_result": False}
    size = result_size(dict(chart))

    async def plot(r: MemoryRun) -> None:
        r.result(chart)

    memory_sandboxes.script = plot
    execution = run(caller, thread)

    (result,) = execution.results
    assert result["omitted"] == {"mime_types": ["text/plain", "image/png"], "size": size}
    assert "image/png" in result["text"] and f"{size} bytes" in result["text"]
    assert execution.status == Status.SUCCEEDED and execution.truncated


def test_a_refused_run_is_stored_rejected_with_a_security_event(
    caller: Caller, thread: Thread
) -> None:
    with pytest.raises(ToolError) as refused:
        ToolExecutor().execute_code(code="1", language="cobol", caller=caller, thread=thread)

    assert refused.value.code == "unsupported_language"
    rejected = Execution.objects.get(pk=refused.value.details["execution_id"])
    assert rejected.status == Status.REJECTED
    assert SecurityEvent.objects.get(execution=rejected).code == "unsupported_language"


def test_another_users_thread_is_not_found(
    charlie: Any, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    with pytest.raises(ToolError) as refused:
        run(Caller(user=charlie), thread)

    assert (refused.value.status, refused.value.code) == (404, "thread_not_found")
    assert not Execution.objects.filter(thread=thread).exists()
    assert memory_sandboxes.sandboxes == {}


def test_a_user_at_the_concurrency_cap_gets_429_and_a_slot_frees_when_a_run_ends(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend, settings: Any
) -> None:
    settings.EXECUTION_USER_CONCURRENCY = 1
    release = threading.Event()

    async def blocked(r: MemoryRun) -> None:
        await r.until(release)

    memory_sandboxes.script = blocked
    executor = ToolExecutor()
    first = executor.start_execution(code="1", language="python", caller=caller, thread=thread)
    with pytest.raises(ToolError) as refused:
        executor.start_execution(code="2", language="python", caller=caller, thread=thread)
    assert (refused.value.status, refused.value.code) == (429, "concurrency_limit_user")
    assert refused.value.headers["Retry-After"] == str(settings.EXECUTION_CONCURRENCY_RETRY_AFTER)

    release.set()
    assert executor.wait_for(first.id, 30)
    assert Execution.objects.get(pk=first.pk).status == Status.SUCCEEDED
    assert run(caller, thread).status == Status.SUCCEEDED


def test_a_cancel_ends_a_running_run_cancelled(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    started = threading.Event()

    async def endless(r: MemoryRun) -> None:
        started.set()
        await asyncio.sleep(60)

    memory_sandboxes.script = endless
    executor = ToolExecutor()
    execution = executor.start_execution(code="1", language="python", caller=caller, thread=thread)
    assert started.wait(30)
    cancelled = executor.cancel_execution(execution_id=execution.id, user=caller.account)

    assert cancelled.status == Status.CANCELLED
    with pytest.raises(ToolError) as again:
        executor.cancel_execution(execution_id=execution.id, user=caller.account)
    assert (again.value.status, again.value.code) == (409, "execution_not_cancellable")


def test_files_code_writes_are_synced_back_to_the_thread(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    async def writer(r: MemoryRun) -> None:
        r.write_file("/home/user/out/report.txt", b"done")
        r.write_file("/home/user/.cache/skip", b"tool state")

    memory_sandboxes.script = writer
    execution = run(caller, thread)

    assert execution.details["file_sync"]["created"] == ["out/report.txt"]
    stored = WorkspaceFile.objects.get(thread=thread)
    assert (stored.path, stored.read_content(), stored.written_by) == (
        "out/report.txt", b"done", WorkspaceFile.WrittenBy.CODE,
    )  # fmt: skip


def test_a_lost_sandbox_is_replaced_with_the_threads_files_and_packages_restored(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    executor = ToolExecutor()
    first = run(caller, thread)
    executor.write_file(file_path="data.csv", content="a,b\n", caller=caller, thread=thread)
    install = executor.install_packages(
        packages=["requests==2.32.3"], language="python", caller=caller, thread=thread
    )
    assert install.status == PackageInstall.Status.SUCCEEDED
    memory_sandboxes.lose(first.details["sandbox_id"])

    second = run(caller, thread)

    assert second.status == Status.SUCCEEDED
    assert second.details["recreated"] is True
    new = memory_sandboxes.sandboxes[second.details["sandbox_id"]]
    assert new.sandbox_id != first.details["sandbox_id"]
    assert new.files["/home/user/data.csv"][0] == b"a,b\n"
    assert second.details["restored"] == {
        "files": 1,
        "packages": ["requests==2.32.3"],
        "failures": [],
    }
    (argv,) = new.commands
    assert argv[:4] == ["python3", "-m", "pip", "install"] and argv[-2:] == [
        "--",
        "requests==2.32.3",
    ]
    thread.refresh_from_db()
    assert thread.sandbox_id == new.sandbox_id


def test_a_sandbox_that_dies_during_the_run_ends_it_sandbox_lost_and_the_next_run_recovers(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    async def dies(r: MemoryRun) -> None:
        r.stdout("partial\n")
        r.sandbox.alive = False

    memory_sandboxes.script = dies
    lost = run(caller, thread)
    assert (lost.status, lost.error["code"], lost.stdout) == (
        Status.ERROR,
        "sandbox_lost",
        "partial\n",
    )

    memory_sandboxes.script = lambda r: asyncio.sleep(0)
    again = run(caller, thread)
    assert again.status == Status.SUCCEEDED
    assert again.details["sandbox_id"] != lost.details["sandbox_id"]


def test_an_unreachable_sandbox_server_ends_the_run_in_error_with_sandbox_unavailable(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    memory_sandboxes.unavailable = True
    execution = run(caller, thread)

    assert (execution.status, execution.error["code"]) == (Status.ERROR, "sandbox_unavailable")


def test_an_install_against_an_unreachable_server_is_stored_failed_and_answers_503(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    memory_sandboxes.unavailable = True
    with pytest.raises(ToolError) as refused:
        ToolExecutor().install_packages(
            packages=["numpy"], language="python", caller=caller, thread=thread
        )

    assert (refused.value.status, refused.value.code) == (503, "sandbox_unavailable")
    install = PackageInstall.objects.get(thread=thread)
    assert install.status == PackageInstall.Status.FAILED


def test_a_new_thread_runs_in_the_sandboxs_default_context_of_each_language(
    alice: Any, memory_sandboxes: MemoryBackend
) -> None:
    caller = Caller(user=alice)
    first = run(caller, None)
    thread = Thread.objects.get(pk=first.thread_id)
    ToolExecutor().execute_code(
        code="console.log(1)", language="javascript", caller=caller, thread=thread
    )

    (sandbox,) = memory_sandboxes.sandboxes.values()
    assert sandbox.runs == [("python", "print(1)"), ("javascript", "console.log(1)")]


def test_the_execution_a_waited_run_returns_is_what_the_database_stores(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    async def everything(r: MemoryRun) -> None:
        r.stdout("out\n")
        r.stderr("err\n")
        r.result({"text": "1", "is_main_result": True})
        r.error("KeyError", "'k'")

    memory_sandboxes.script = everything
    returned = run(caller, thread)
    stored = Execution.objects.get(pk=returned.pk)

    fields = (
        "status", "stdout", "stderr", "results", "error", "exit_code", "truncated", "last_seq",
        "details", "started_at", "finished_at", "duration_ms", "output_order", "cpu_time_ms",
        "memory_peak_bytes",
    )  # fmt: skip
    assert {f: getattr(returned, f) for f in fields} == {f: getattr(stored, f) for f in fields}
    assert (stored.status, stored.stdout) == (Status.FAILED, "out\n")
