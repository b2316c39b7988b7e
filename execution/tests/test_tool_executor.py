"""The ToolExecutor against a real sandboxd through the real e2b SDK: runs in each language,
state between runs, errors, timeouts, cancel, output caps, file sync, packages, events and the
audit of refusals."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from e2b import NotFoundException

from execution.caller import Caller
from execution.models import (
    Agent,
    Execution,
    PackageInstall,
    SecurityEvent,
    Thread,
    WorkspaceFile,
)
from execution.services.errors import ToolError
from execution.services.events import execution_group, thread_group
from execution.services.tool_executor import ToolExecutor

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(180)]

Status = Execution.Status


@pytest.fixture
def thread(alice: Any, sandboxd: Any) -> Thread:
    return Thread.objects.create(owner=alice, title="executor tests")


@pytest.fixture
def caller(alice: Any) -> Caller:
    return Caller(user=alice, client_ip="127.0.0.1")


def run(
    caller: Caller, thread: Thread | None, code: str, language: str = "python", **kwargs: Any
) -> Execution:
    return ToolExecutor().execute_code(
        code=code, language=language, caller=caller, thread=thread, **kwargs
    )


def wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


# --- runs in each language ----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("language", "code", "stdout"),
    [
        ("python", "print('hello from python', 6 * 7)", "hello from python 42\n"),
        (
            "javascript",
            "console.log('hello from js', [1, 2].map(x => x * 2).join(','))",
            "hello from js 2,4\n",
        ),
        ("typescript", "const n: number = 40; console.log(`ts ${n + 2}`)", "ts 42\n"),
        ("bash", 'echo "bash $((6 * 7))"', "bash 42\n"),
    ],
)
def test_it_runs_code_in_each_language_and_stores_its_output(
    caller: Caller, thread: Thread, language: str, code: str, stdout: str
) -> None:
    execution = run(caller, thread, code, language)

    assert execution.status == Status.SUCCEEDED
    assert execution.stdout == stdout
    assert execution.exit_code == 0
    assert execution.started_at and execution.finished_at and execution.duration_ms is not None
    stored = Execution.objects.get(pk=execution.pk)
    assert (stored.status, stored.stdout, stored.language) == (Status.SUCCEEDED, stdout, language)


@pytest.mark.django_db
def test_it_keeps_state_between_runs_of_the_same_thread(caller: Caller, thread: Thread) -> None:
    run(caller, thread, "counter = 41")
    second = run(caller, thread, "counter += 1\nprint(counter)")
    run(caller, thread, "let greeting = 'hi'", "javascript")
    third = run(caller, thread, "console.log(greeting + ' again')", "javascript")

    assert second.stdout == "42\n"
    assert third.stdout == "hi again\n"


@pytest.mark.django_db
def test_it_starts_a_new_thread_when_none_is_given(alice: Any, sandboxd: Any) -> None:
    execution = run(Caller(user=alice), None, "print('new thread')")

    assert execution.status == Status.SUCCEEDED
    assert execution.thread.owner == alice
    assert execution.thread.sandbox_id


@pytest.mark.django_db
def test_it_stores_rich_results_of_the_last_expression(caller: Caller, thread: Thread) -> None:
    execution = run(caller, thread, "x = 20\nx + 22")

    assert execution.results == [{"text": "42", "is_main_result": True}]


@pytest.mark.django_db
def test_it_returns_a_matplotlib_figure_as_a_png_result(caller: Caller, thread: Thread) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"
    execution = run(caller, thread, code)

    assert execution.status == Status.SUCCEEDED
    pngs = [r["png"] for r in execution.results if "png" in r]
    assert pngs and pngs[0].startswith("iVBORw0KGgo")  # base64 of the PNG signature


# --- errors -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_marks_a_user_exception_failed_with_its_name_value_and_traceback(
    caller: Caller,
    thread: Thread,
) -> None:
    execution = run(caller, thread, "print('before')\n1 / 0")

    assert execution.status == Status.FAILED
    assert execution.stdout == "before\n"
    assert execution.error["name"] == "ZeroDivisionError"
    assert execution.error["value"] == "division by zero"
    assert "1 / 0" in execution.error["traceback"]
    assert execution.exit_code == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("language", "code", "name"),
    [
        ("python", "def broken(:\n    pass", "SyntaxError"),
        ("javascript", "const = 1;", "SyntaxError"),
        ("javascript", "throw new TypeError('bad type')", "TypeError"),
    ],
)
def test_it_marks_syntax_and_runtime_errors_failed(
    caller: Caller, thread: Thread, language: str, code: str, name: str
) -> None:
    execution = run(caller, thread, code, language)

    assert execution.status == Status.FAILED
    assert execution.error["name"] == name


@pytest.mark.django_db
def test_it_marks_a_failing_bash_command_failed(caller: Caller, thread: Thread) -> None:
    execution = run(caller, thread, "echo partial; exit 3", "bash")

    assert execution.status == Status.FAILED
    assert execution.stdout == "partial\n"
    assert execution.exit_code == 3


@pytest.mark.django_db
def test_it_times_out_a_run_and_the_thread_keeps_working(caller: Caller, thread: Thread) -> None:
    run(caller, thread, "kept = 'still here'")
    started = time.monotonic()
    execution = run(
        caller, thread, "import time\nprint('start', flush=True)\ntime.sleep(30)", timeout=1.5
    )
    elapsed = time.monotonic() - started

    assert execution.status == Status.TIMED_OUT
    assert execution.error["code"] == "execution_timeout"
    assert execution.stdout == "start\n"
    assert elapsed < 15
    after = run(caller, thread, "print(kept)")
    assert (after.status, after.stdout) == (Status.SUCCEEDED, "still here\n")


@pytest.mark.django_db
def test_it_flags_output_over_the_cap_truncated_and_stores_no_more(
    caller: Caller, thread: Thread, settings: Any
) -> None:
    settings.EXECUTION_MAX_OUTPUT_BYTES = 2000
    execution = run(caller, thread, "for i in range(2000):\n    print('line', i)")

    assert execution.status == Status.SUCCEEDED
    assert execution.truncated is True
    assert len(execution.stdout.encode()) == 2000
    assert execution.stdout.startswith("line 0\nline 1\n")


# --- events -------------------------------------------------------------------------------


def drain(channel: str, *, quiet_seconds: float = 0.5) -> list[dict[str, Any]]:
    """Every event waiting on `channel`, until none comes for `quiet_seconds`.

    Works on any channel layer (in-memory or Redis): it only uses the layer's public API.
    """
    layer = get_channel_layer()

    async def collect() -> list[dict[str, Any]]:
        events = []
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), quiet_seconds)
            except TimeoutError:
                return events
            events.extend(message["events"] if "events" in message else [message["event"]])

    return async_to_sync(collect)()


@pytest.mark.django_db
def test_it_publishes_each_event_once_in_order_to_the_thread_and_execution_groups(
    caller: Caller, thread: Thread
) -> None:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(thread_group(thread.id), channel)

    execution = run(caller, thread, "print('a')\nimport sys\nprint('b', file=sys.stderr)\n1 + 1")
    events = drain(channel)

    assert [e["seq"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "execution",
        "status",
        "stdout",
        "stderr",
        "result",
        "done",
    ]
    assert events[0] == {
        "type": "execution", "execution_id": str(execution.id), "thread_id": str(thread.id),
        "status": "queued", "language": "python", "seq": 0,
    }  # fmt: skip
    assert events[1]["status"] == "running"
    assert events[2]["text"] == "a\n" and events[3]["text"] == "b\n"
    assert events[4]["result"] == {"text": "2", "is_main_result": True}
    done = events[5]
    assert (done["status"], done["truncated"], done["exit_code"]) == ("succeeded", False, 0)
    assert done["duration_ms"] == execution.duration_ms
    assert execution.last_seq == done["seq"]

    other = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(execution_group(execution.id), other)
    assert drain(other) == []  # nothing is sent after done


# --- cancel -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_cancels_a_running_execution_and_the_kernel_state_survives(
    caller: Caller, thread: Thread, alice: Any
) -> None:
    run(caller, thread, "survivor = 'alive'")
    executor = ToolExecutor()
    execution = executor.start_execution(
        code="import time\nfor i in range(300):\n    print(i, flush=True)\n    time.sleep(0.05)",
        language="python",
        caller=caller,
        thread=thread,
    )
    wait_until(lambda: "3\n" in Execution.objects.get(pk=execution.pk).stdout)

    cancelled = executor.cancel_execution(execution_id=execution.id, user=alice)

    assert cancelled.status == Status.CANCELLED
    assert cancelled.finished_at is not None
    printed = cancelled.stdout.split()
    assert 3 <= len(printed) < 300
    time.sleep(0.3)
    assert Execution.objects.get(pk=execution.pk).stdout == cancelled.stdout  # it stopped
    after = run(caller, thread, "print(survivor)")
    assert after.stdout == "alive\n"


@pytest.mark.django_db(transaction=True)
def test_it_cancels_a_queued_execution_before_it_runs(
    caller: Caller, thread: Thread, alice: Any
) -> None:
    executor = ToolExecutor()
    first = executor.start_execution(
        code="import time\ntime.sleep(3)", language="python", caller=caller, thread=thread
    )
    second = executor.start_execution(
        code="print('never')", language="python", caller=caller, thread=thread
    )

    cancelled = executor.cancel_execution(execution_id=second.id, user=alice)

    assert cancelled.status == Status.CANCELLED
    assert executor.wait_for(first.id, 30)
    time.sleep(0.5)
    second.refresh_from_db()
    assert (second.status, second.stdout, second.started_at) == (Status.CANCELLED, "", None)


@pytest.mark.django_db
def test_it_refuses_to_cancel_a_finished_execution_with_409(
    caller: Caller, thread: Thread, alice: Any
) -> None:
    execution = run(caller, thread, "1")
    with pytest.raises(ToolError) as info:
        ToolExecutor().cancel_execution(execution_id=execution.id, user=alice)
    assert (info.value.code, info.value.status) == ("execution_not_cancellable", 409)


@pytest.mark.django_db
def test_it_answers_404_when_cancelling_another_users_execution(
    caller: Caller, thread: Thread, charlie: Any
) -> None:
    execution = run(caller, thread, "1")
    with pytest.raises(ToolError) as info:
        ToolExecutor().cancel_execution(execution_id=execution.id, user=charlie)
    assert (info.value.code, info.value.status) == ("execution_not_found", 404)


# --- refusals and quotas ------------------------------------------------------------------


@pytest.mark.django_db
def test_it_records_a_rejected_execution_and_a_security_event_for_a_refused_run(
    caller: Caller, thread: Thread
) -> None:
    with pytest.raises(ToolError) as info:
        run(caller, thread, "puts 1", "ruby")

    assert info.value.code == "unsupported_language"
    rejected = Execution.objects.get(pk=info.value.details["execution_id"])
    assert (rejected.status, rejected.thread, rejected.code) == (Status.REJECTED, thread, "puts 1")
    assert rejected.error["code"] == "unsupported_language"
    event = SecurityEvent.objects.get(execution=rejected)
    assert (event.kind, event.code, event.client_ip) == (
        "validation",
        "unsupported_language",
        "127.0.0.1",
    )


@pytest.mark.django_db
def test_it_refuses_code_matching_a_configured_dangerous_pattern(
    caller: Caller, thread: Thread, settings: Any
) -> None:
    settings.EXECUTION_DANGEROUS_PATTERNS = [r"\bos\.system\("]
    with pytest.raises(ToolError) as info:
        run(caller, thread, "import os\nos.system('id')")
    assert info.value.code == "dangerous_pattern"
    assert SecurityEvent.objects.filter(code="dangerous_pattern").count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_answers_429_with_retry_after_at_the_users_concurrency_cap(
    caller: Caller, thread: Thread, settings: Any, alice: Any
) -> None:
    settings.EXECUTION_USER_CONCURRENCY = 1
    executor = ToolExecutor()
    running = executor.start_execution(
        code="import time\ntime.sleep(2)", language="python", caller=caller, thread=thread
    )

    with pytest.raises(ToolError) as info:
        executor.start_execution(code="print(1)", language="python", caller=caller, thread=thread)

    assert (info.value.code, info.value.status) == ("concurrency_limit_user", 429)
    assert info.value.headers["Retry-After"] == str(settings.EXECUTION_CONCURRENCY_RETRY_AFTER)
    assert SecurityEvent.objects.filter(kind="quota", code="concurrency_limit_user").exists()
    assert executor.wait_for(running.id, 30)
    assert run(caller, thread, "print('free again')").status == Status.SUCCEEDED


@pytest.mark.django_db
def test_it_refuses_a_tool_the_agent_is_not_allowed_with_403(alice: Any, thread: Thread) -> None:
    agent = Agent.objects.create(owner=alice, name="reader", allowed_tools=["read_file"])
    caller = Caller(user=alice, agent=agent, source="agent")

    with pytest.raises(ToolError) as info:
        run(caller, thread, "print(1)")

    assert (info.value.code, info.value.status) == ("tool_not_allowed", 403)
    event = SecurityEvent.objects.get(code="tool_not_allowed")
    assert (event.kind, event.agent) == ("authorization", agent)
    assert not Execution.objects.filter(thread=thread).exists()


@pytest.mark.django_db
def test_it_records_the_agent_of_an_allowed_run(alice: Any, thread: Thread) -> None:
    agent = Agent.objects.create(owner=alice, name="coder", allowed_tools=["execute_code"])
    caller = Caller(user=alice, agent=agent, source="agent")

    execution = run(caller, thread, "print('by agent')")

    assert (execution.agent, execution.source, execution.status) == (
        agent,
        "agent",
        Status.SUCCEEDED,
    )


# --- files --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_writes_a_file_code_can_read_and_reads_a_file_code_wrote(
    caller: Caller, thread: Thread
) -> None:
    executor = ToolExecutor()
    row = executor.write_file(
        file_path="data/input.txt", content="from the user", caller=caller, thread=thread
    )
    assert (row.path, row.size, row.written_by) == ("data/input.txt", 13, "user")

    execution = run(
        caller,
        thread,
        "print(open('data/input.txt').read())\n"
        "import os\nos.makedirs('out', exist_ok=True)\n"
        "open('out/result.bin', 'wb').write(bytes(range(256)))",
    )
    assert execution.stdout == "from the user\n"

    path, content = executor.read_file(
        file_path="/home/user/out/result.bin", caller=caller, thread=thread
    )
    assert (path, content) == ("out/result.bin", bytes(range(256)))
    synced = WorkspaceFile.objects.get(thread=thread, path="out/result.bin")
    assert (synced.written_by, synced.size) == ("code", 256)
    assert execution.details["file_sync"]["created"] == ["out/result.bin"]


@pytest.mark.django_db
def test_it_syncs_changes_and_deletions_by_code_and_skips_hidden_files(
    caller: Caller, thread: Thread
) -> None:
    executor = ToolExecutor()
    run(caller, thread, "print('warm')")  # the thread has a sandbox: writes go through to it
    executor.write_file(file_path="keep.txt", content="v1", caller=caller, thread=thread)
    executor.write_file(file_path="gone.txt", content="bye", caller=caller, thread=thread)

    execution = run(
        caller,
        thread,
        "import os\nopen('keep.txt', 'w').write('v2 from code')\nos.remove('gone.txt')\n"
        "os.makedirs('.cache', exist_ok=True)\nopen('.cache/x', 'w').write('tool state')",
    )

    report = execution.details["file_sync"]
    assert (report["updated"], report["deleted"]) == (["keep.txt"], ["gone.txt"])
    keep = WorkspaceFile.objects.get(thread=thread, path="keep.txt")
    assert (keep.read_content(), keep.written_by) == (b"v2 from code", "code")
    assert sorted(WorkspaceFile.objects.filter(thread=thread).values_list("path", flat=True)) == [
        "keep.txt"
    ]


@pytest.mark.django_db
def test_it_syncs_a_same_size_change_made_right_after_a_write(
    caller: Caller, thread: Thread
) -> None:
    run(caller, thread, "print('warm')")
    ToolExecutor().write_file(file_path="same.txt", content="aaaa", caller=caller, thread=thread)

    execution = run(caller, thread, "open('same.txt', 'w').write('bbbb')")

    assert execution.details["file_sync"]["updated"] == ["same.txt"]
    assert WorkspaceFile.objects.get(thread=thread, path="same.txt").read_content() == b"bbbb"
    # And a run that changes nothing leaves it alone.
    assert run(caller, thread, "print(1)").details["file_sync"]["updated"] == []


@pytest.mark.django_db
def test_it_reports_files_over_the_sync_limits_instead_of_dropping_them_silently(
    caller: Caller, thread: Thread, settings: Any
) -> None:
    settings.EXECUTION_MAX_FILE_BYTES = 1000
    settings.EXECUTION_SYNC_MAX_FILES = 2
    execution = run(
        caller,
        thread,
        "open('big.bin', 'wb').write(b'x' * 5000)\n"
        "for i in range(3):\n    open(f'small{i}.txt', 'w').write(str(i))",
    )

    skipped = {s["path"]: s["reason"] for s in execution.details["file_sync"]["skipped"]}
    assert skipped == {"big.bin": "file_too_large", "small2.txt": "too_many_files"}
    assert sorted(WorkspaceFile.objects.filter(thread=thread).values_list("path", flat=True)) == [
        "small0.txt", "small1.txt",
    ]  # fmt: skip
    # A file left out of sync can still be read straight from the sandbox when small enough.
    settings.EXECUTION_MAX_FILE_BYTES = 10_000
    assert (
        ToolExecutor().read_file(file_path="big.bin", caller=caller, thread=thread)[1]
        == b"x" * 5000
    )


@pytest.mark.django_db
def test_it_deletes_a_file_from_the_database_and_the_sandbox(
    caller: Caller, thread: Thread
) -> None:
    executor = ToolExecutor()
    run(caller, thread, "open('note.txt', 'w').write('n')")
    executor.delete_file(file_path="note.txt", caller=caller, thread=thread)

    assert not WorkspaceFile.objects.filter(thread=thread, path="note.txt").exists()
    assert run(caller, thread, "import os\nprint(os.path.exists('note.txt'))").stdout == "False\n"
    with pytest.raises(ToolError) as info:
        executor.read_file(file_path="note.txt", caller=caller, thread=thread)
    assert (info.value.code, info.value.status) == ("file_not_found", 404)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("../../etc/passwd", "path_traversal"),
        ("/etc/shadow", "path_system"),
        ("run.exe", "path_suspicious_extension"),
    ],
)
def test_it_refuses_bad_paths_and_audits_them(
    caller: Caller, thread: Thread, path: str, code: str
) -> None:
    with pytest.raises(ToolError) as info:
        ToolExecutor().write_file(file_path=path, content="x", caller=caller, thread=thread)
    assert info.value.code == code
    assert SecurityEvent.objects.get(code=code).details["path"] == path


@pytest.mark.django_db
def test_it_refuses_a_file_over_the_size_limit_with_413(
    caller: Caller, thread: Thread, settings: Any
) -> None:
    settings.EXECUTION_MAX_FILE_BYTES = 10
    with pytest.raises(ToolError) as info:
        ToolExecutor().write_file(
            file_path="big.txt", content="x" * 11, caller=caller, thread=thread
        )
    assert (info.value.code, info.value.status) == ("file_too_large", 413)


# --- packages -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_installs_a_real_pip_package_that_code_can_then_import(
    caller: Caller, thread: Thread
) -> None:
    install = ToolExecutor().install_packages(
        packages=["six==1.17.0"], language="python", caller=caller, thread=thread
    )

    assert install.status == PackageInstall.Status.SUCCEEDED, install.log
    assert "Successfully installed six-1.17.0" in install.log
    execution = run(caller, thread, "import six\nprint(six.__version__)")
    assert execution.stdout == "1.17.0\n"


@pytest.mark.django_db
def test_it_installs_a_real_npm_package_that_javascript_can_require(
    caller: Caller, thread: Thread
) -> None:
    install = ToolExecutor().install_packages(
        packages=["left-pad@1.3.0"], language="javascript", caller=caller, thread=thread
    )

    assert install.status == PackageInstall.Status.SUCCEEDED, install.log
    execution = run(caller, thread, "console.log(require('left-pad')('7', 3, '0'))", "javascript")
    assert execution.stdout == "007\n"


@pytest.mark.django_db
def test_it_stores_a_failed_install_with_the_installers_log(caller: Caller, thread: Thread) -> None:
    name = f"atlaschat-no-such-package-{uuid.uuid4().hex[:8]}"
    install = ToolExecutor().install_packages(
        packages=[name], language="python", caller=caller, thread=thread
    )

    assert install.status == PackageInstall.Status.FAILED
    assert name in install.log


@pytest.mark.django_db
def test_it_refuses_a_package_url_stores_a_rejected_install_and_audits_it(
    caller: Caller, thread: Thread
) -> None:
    with pytest.raises(ToolError) as info:
        ToolExecutor().install_packages(
            packages=["git+https://github.com/psf/requests"],
            language="python",
            caller=caller,
            thread=thread,
        )
    assert info.value.code == "package_spec_url"
    install = PackageInstall.objects.get(thread=thread)
    assert install.status == PackageInstall.Status.REJECTED
    assert SecurityEvent.objects.filter(code="package_spec_url").exists()


# --- threads ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_deleting_a_thread_kills_its_sandbox_and_keeps_the_history(
    caller: Caller, thread: Thread, alice: Any
) -> None:
    from execution.sandbox.e2b import E2BBackend
    from execution.services.sandbox_sessions import sessions

    execution = run(caller, thread, "print(1)")
    sandbox_id = Thread.objects.get(pk=thread.pk).sandbox_id

    ToolExecutor().delete_thread(thread=thread, user=alice)

    assert not Thread.objects.filter(pk=thread.pk).exists()
    assert Execution.objects.get(pk=execution.pk).thread is None
    with pytest.raises(NotFoundException):
        sessions.call(E2BBackend().sdk_class.connect(sandbox_id))


@pytest.mark.django_db
def test_a_stored_file_the_sandbox_cannot_hold_is_skipped_and_reported_not_fatal(
    caller: Caller, thread: Thread
) -> None:
    # Stored before validation refused such pairs: a file `a`, and `a/b` under it.
    for path, data in (("a", b"file a"), ("a/b", b"cannot be"), ("ok.txt", b"fine")):
        WorkspaceFile(thread=thread, path=path).set_content(data)
    first = ToolExecutor().execute_code(
        code="print(open('ok.txt').read(), open('a').read())",
        language="python",
        caller=caller,
        thread=thread,
    )
    assert (first.status, first.stdout) == ("succeeded", "fine file a\n")
    failures = first.details["restored"]["failures"]
    assert [failure["path"] for failure in failures] == ["a/b"]
    # The thread keeps working: the next run needs no restore and succeeds too.
    second = ToolExecutor().execute_code(
        code="print(2)", language="python", caller=caller, thread=thread
    )
    assert (second.status, second.stdout) == ("succeeded", "2\n")
