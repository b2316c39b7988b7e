"""The workspace's needs of the sandbox contract, decided through the in-memory sandbox: an
input() answered from the page, an install's log stored while it runs, and the terminal
socket over the contract's PTY."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from accounts.testing import bearer_headers_for
from atlaschat.asgi import application
from execution.caller import Caller
from execution.models import Execution, PackageInstall, Source, TerminalSession, Thread
from execution.sandbox.base import CommandResult, OutputCallback
from execution.sandbox.memory import MemoryBackend, MemoryRun, MemorySandbox
from execution.services.errors import ToolError
from execution.services.tool_executor import ToolExecutor
from execution.stream import StreamCursor

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

Status = Execution.Status
ORIGIN = (b"origin", b"http://localhost")


def until(condition: Callable[[], Any], limit: float = 30.0) -> Any:
    """Wait for `condition()` to hold (re-checked every 20 ms, at most `limit` seconds)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("the condition never held")


@pytest.fixture
def page_caller(alice: Any, memory_sandboxes: MemoryBackend) -> Caller:
    """A person in the workspace page: runs from it may call input()."""
    return Caller(user=alice, source=Source.BROWSER)


async def ask_name(r: MemoryRun) -> None:
    r.stdout("start\n")
    name = await r.input("Name: ")
    if name is not None:
        r.stdout(f"hello {name}\n")


def test_a_page_run_waits_in_input_and_the_answer_reaches_the_code(
    page_caller: Caller, thread: Thread, alice: Any, memory_sandboxes: MemoryBackend
) -> None:
    memory_sandboxes.script = ask_name
    executor = ToolExecutor()
    execution = executor.start_execution(
        code="input()", language="python", caller=page_caller, thread=thread
    )

    def waiting() -> dict[str, Any] | None:
        row = Execution.objects.get(pk=execution.pk)
        return (row.details or {}).get("input_request")

    asked = until(waiting)
    assert (asked["prompt"], asked["password"]) == ("Name: ", False)
    # A page that reloads now is asked again.
    row = Execution.objects.get(pk=execution.pk)
    frames = StreamCursor(str(row.id)).catch_up(row)
    assert [f["prompt"] for f in frames if f["type"] == "input_request"] == ["Name: "]

    executor.send_run_input(execution_id=execution.id, value="Ada", user=alice)
    assert executor.wait_for(execution.id, 30)

    row = Execution.objects.get(pk=execution.pk)
    assert row.status == Status.SUCCEEDED
    assert row.stdout == "start\nName: Ada\nhello Ada\n"
    assert "input_request" not in row.details  # answered: nothing waits any more
    pieces = row.ordered_output()
    assert {piece.kind for piece in pieces} == {"stdout"}
    assert "".join(piece.text for piece in pieces) == row.stdout


def test_an_api_run_cannot_wait_for_input_and_fails_at_once(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    memory_sandboxes.script = ask_name
    execution = ToolExecutor().execute_code(
        code="input()", language="python", caller=caller, thread=thread
    )

    assert execution.status == Status.FAILED
    assert execution.error["name"] == "StdinNotImplementedError"
    assert memory_sandboxes.live()[0].waiting == {}


def test_an_answer_when_no_input_is_awaited_is_refused_409(
    page_caller: Caller, thread: Thread, alice: Any, memory_sandboxes: MemoryBackend
) -> None:
    release = threading.Event()

    async def busy(r: MemoryRun) -> None:
        await r.until(release)

    memory_sandboxes.script = busy
    executor = ToolExecutor()
    execution = executor.start_execution(
        code="busy()", language="python", caller=page_caller, thread=thread
    )
    until(lambda: Execution.objects.filter(pk=execution.pk, status=Status.RUNNING).exists())
    try:
        with pytest.raises(ToolError) as refused:
            executor.send_run_input(execution_id=execution.id, value="Ada", user=alice)
        assert (refused.value.status, refused.value.code) == (409, "no_input_requested")
    finally:
        release.set()
    assert executor.wait_for(execution.id, 30)


def test_an_installs_log_is_stored_while_it_runs_and_whole_when_it_ends(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    release = threading.Event()

    async def slow_install(argv: list[str], on_output: OutputCallback) -> CommandResult:
        on_output("Collecting numpy\n")
        if not await asyncio.to_thread(release.wait, 30):
            raise AssertionError("the test never released the install")
        on_output("Successfully installed numpy\n")
        return CommandResult(0, "Collecting numpy\nSuccessfully installed numpy\n", "")

    memory_sandboxes.command_script = slow_install
    done: list[PackageInstall] = []

    def install() -> None:
        try:
            done.append(
                ToolExecutor().install_packages(
                    packages=["numpy"], language="python", caller=caller, thread=thread
                )
            )
        finally:
            connections.close_all()  # this thread's own connection

    worker = threading.Thread(target=install)
    worker.start()
    try:
        running = until(
            lambda: PackageInstall.objects.filter(
                thread=thread, status=PackageInstall.Status.RUNNING, log__contains="Collecting"
            ).first()
        )
        assert "Successfully" not in running.log
    finally:
        release.set()
        worker.join(30)
    (install,) = done
    assert install.status == PackageInstall.Status.SUCCEEDED
    assert install.log.endswith("Collecting numpy\nSuccessfully installed numpy\n")


@pytest.fixture
async def terminal_socket(thread: Thread, alice: Any, memory_sandboxes: MemoryBackend) -> Any:
    token = (await sync_to_async(bearer_headers_for)(alice))["Authorization"]
    communicator = WebsocketCommunicator(
        application,
        f"/ws/threads/{thread.id}/terminal/",
        headers=[ORIGIN, (b"authorization", token.encode())],
    )
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    assert await communicator.receive_json_from(timeout=10) == {"type": "ready"}
    yield communicator
    await communicator.disconnect()
    await sync_to_async(connections.close_all)()


def only_terminal(backend: MemoryBackend) -> Any:
    (sandbox,) = backend.live()
    assert isinstance(sandbox, MemorySandbox)
    (terminal,) = sandbox.terminals
    return terminal


async def test_the_terminal_passes_keystrokes_and_sizes_and_a_close_kills_the_shell(
    terminal_socket: WebsocketCommunicator, memory_sandboxes: MemoryBackend
) -> None:
    await terminal_socket.send_json_to({"type": "resize", "cols": 9999, "rows": 40})
    await terminal_socket.send_json_to({"type": "input", "data": "echo é\n"})
    # The memory terminal echoes as a tty does: the keystrokes come back as output.
    assert await terminal_socket.receive_json_from(timeout=10) == {
        "type": "output",
        "data": "echo é\n",
    }
    terminal = only_terminal(memory_sandboxes)
    assert terminal.size == (500, 40)  # columns capped at MAX_COLS
    assert terminal.typed == ["echo é\n".encode()]

    await terminal_socket.disconnect()
    record = await TerminalSession.objects.aget()
    assert (record.end_reason, record.sandbox_id) == (
        "closed",
        memory_sandboxes.live()[0].sandbox_id,
    )
    assert terminal.killed


async def test_a_shell_that_exits_by_itself_ends_the_terminal_as_exited(
    terminal_socket: WebsocketCommunicator, memory_sandboxes: MemoryBackend
) -> None:
    only_terminal(memory_sandboxes).exit(0)
    assert await terminal_socket.receive_json_from(timeout=10) == {"type": "exit"}
    record = await TerminalSession.objects.aget()
    assert record.end_reason == "exited" and record.ended_at is not None


async def test_a_page_that_reloads_while_input_waits_gets_each_line_once(
    page_caller: Caller, thread: Thread, alice: Any, memory_sandboxes: MemoryBackend
) -> None:
    memory_sandboxes.script = ask_name
    executor = ToolExecutor()
    execution = await sync_to_async(executor.start_execution)(
        code="input()", language="python", caller=page_caller, thread=thread
    )
    token = (await sync_to_async(bearer_headers_for)(alice))["Authorization"]
    # The reloaded page follows the run on its own socket, as workspace.js does.
    socket = WebsocketCommunicator(
        application,
        f"/ws/executions/{execution.id}/",
        headers=[ORIGIN, (b"authorization", token.encode())],
    )
    connected, _ = await socket.connect(timeout=10)
    assert connected
    frames: list[dict[str, Any]] = []
    try:
        while not any(f["type"] == "input_request" for f in frames):
            frames.append(await socket.receive_json_from(timeout=20))
        await sync_to_async(executor.send_run_input)(
            execution_id=execution.id, value="Ada", user=alice
        )
        while frames[-1]["type"] != "done":
            frames.append(await socket.receive_json_from(timeout=20))
    finally:
        await socket.disconnect()
        await sync_to_async(connections.close_all)()
    printed = "".join(f["text"] for f in frames if f["type"] == "stdout")
    assert printed == "start\nName: Ada\nhello Ada\n"
    assert [f["type"] for f in frames].count("input_request") == 1
