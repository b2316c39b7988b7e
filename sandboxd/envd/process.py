"""envd's ``process.Process`` service: run commands in a sandbox and stream their output.

Each started process gets a pump task that reads its events from the jail once and fans them
out to every subscribed stream (the ``Start`` stream that launched it and any ``Connect``
streams). A PTY command runs under a relay inside the sandbox (``sandboxd.envd.pty``); its
output is reported as terminal output. A client closing its stream only unsubscribes: the SDK
documents ``CommandHandle.disconnect()`` as "the command is not killed", and background
commands rely on it. Output produced while nobody listens is dropped, like envd does. Subscriber
queues are bounded and the pump waits for them, so a slow client slows the process down
(its pipe fills) instead of growing the server's memory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import signal as signals
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.process import process_pb
from protobuf import Oneof

from sandboxd.envd.errors import JAIL_ERRORS, SANDBOX_USER, connect_error, wrong_user
from sandboxd.envd.pty import input_frame, relay_argv, resize_frame

if TYPE_CHECKING:
    from connectrpc.request import RequestContext

    from sandboxd.jail import Jail, JailProcess, ProcEvent

log = logging.getLogger(__name__)

# How often a stream carries a keepalive event when nothing else happens. The SDK asks for
# one every 50 s (Keepalive-Ping-Interval); we honour its value within these bounds.
DEFAULT_KEEPALIVE_SECONDS = 30.0
MIN_KEEPALIVE_SECONDS = 1.0
MAX_KEEPALIVE_SECONDS = 60.0
# Output chunks buffered per subscriber before the process is made to wait.
SUBSCRIBER_QUEUE_CHUNKS = 64

_SIGNALS = {
    process_pb.Signal.SIGKILL: signals.SIGKILL,
    process_pb.Signal.SIGTERM: signals.SIGTERM,
}


def request_user(ctx: RequestContext[Any, Any]) -> str:
    """The user an envd call runs as: the SDK sends ``Authorization: Basic base64(user:)``
    (and nothing for the default user). Raises ``ConnectError(INVALID_ARGUMENT)`` when the
    header is malformed."""
    header = ctx.request_headers.get("authorization")
    if not header:
        return SANDBOX_USER
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        raise ConnectError(Code.INVALID_ARGUMENT, "Authorization must be Basic base64(user:)")
    try:
        user = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        raise ConnectError(Code.INVALID_ARGUMENT, "Authorization is not valid base64") from None
    return user or SANDBOX_USER


@dataclass
class ManagedProcess:
    """A process started through envd, with its subscribers and, once it ended, its end."""

    pid: int
    tag: str | None
    config: process_pb.ProcessConfig
    handle: JailProcess
    stdin_open: bool
    pty: bool = False  # runs under sandboxd.envd.pty's relay: output is terminal output
    subscribers: set[asyncio.Queue[process_pb.ProcessEvent | None]] = field(default_factory=set)
    pump: asyncio.Task[None] | None = None

    def subscribe(self) -> asyncio.Queue[process_pb.ProcessEvent | None]:
        """A queue that receives every event from now on, then ``None`` at the end."""
        queue: asyncio.Queue[process_pb.ProcessEvent | None] = asyncio.Queue(
            SUBSCRIBER_QUEUE_CHUNKS
        )
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[process_pb.ProcessEvent | None]) -> None:
        """Stop delivering to ``queue``; draining it releases a pump blocked on it."""
        self.subscribers.discard(queue)
        while not queue.empty():
            queue.get_nowait()


def _end_event(event: ProcEvent) -> process_pb.ProcessEvent:
    """envd's end event: Go's ``ProcessState`` semantics (exit code -1 when signalled)."""
    if event.signal is not None:
        name = signals.Signals(event.signal).name.removeprefix("SIG").lower()
        if event.signal == signals.SIGKILL:
            name = "killed"
        status = f"signal: {name}"
        if event.oom_killed:
            status += " (out of memory)"
        end = process_pb.ProcessEvent.EndEvent(
            exit_code=-1, exited=False, status=status, error=status
        )
    else:
        code = event.exit_code if event.exit_code is not None else -1
        status = f"exit status {code}"
        if event.oom_killed:
            status += " (out of memory)"
        end = process_pb.ProcessEvent.EndEvent(
            exit_code=code,
            exited=True,
            status=status,
            error=status if code != 0 else None,
        )
    return process_pb.ProcessEvent(event=Oneof("end", end))


def _data_event(event: ProcEvent, *, pty: bool) -> process_pb.ProcessEvent:
    kind = "pty" if pty and event.kind == "stdout" else event.kind
    data = process_pb.ProcessEvent.DataEvent(output=Oneof(kind, event.data))
    return process_pb.ProcessEvent(event=Oneof("data", data))


def _start_event(pid: int) -> process_pb.ProcessEvent:
    start = process_pb.ProcessEvent.StartEvent(pid=pid)
    return process_pb.ProcessEvent(event=Oneof("start", start))


_KEEPALIVE = process_pb.ProcessEvent(event=Oneof("keepalive", process_pb.ProcessEvent.KeepAlive()))


def _keepalive_seconds(ctx: RequestContext[Any, Any]) -> float:
    raw = ctx.request_headers.get("keepalive-ping-interval")
    try:
        seconds = float(raw) if raw else DEFAULT_KEEPALIVE_SECONDS
    except ValueError:
        seconds = DEFAULT_KEEPALIVE_SECONDS
    return min(max(seconds, MIN_KEEPALIVE_SECONDS), MAX_KEEPALIVE_SECONDS)


class ProcessTable:
    """The envd-started processes of one sandbox, by pid (live ones only)."""

    def __init__(self, jail: Jail, base_envs: Mapping[str, str]) -> None:
        self._jail = jail
        self._base_envs = dict(base_envs)
        self._processes: dict[int, ManagedProcess] = {}
        # Every pump still running, including ones past their process's exit that are
        # still delivering its end to slow readers.
        self._pumps: set[asyncio.Task[None]] = set()

    def set_base_envs(self, envs: Mapping[str, str]) -> None:
        """Sandbox-level variables (create's ``envVars``) under every command's own envs."""
        self._base_envs = dict(envs)

    def live(self) -> list[ManagedProcess]:
        return list(self._processes.values())

    def select(self, selector: process_pb.ProcessSelector | None) -> ManagedProcess:
        """The process a selector names (by pid or tag); ``ConnectError(NOT_FOUND)`` if none."""
        match selector.selector if selector is not None else None:
            case Oneof(field="pid", value=pid):
                found = self._processes.get(pid)
                if found is not None:
                    return found
                raise ConnectError(Code.NOT_FOUND, f"process with pid {pid} not found")
            case Oneof(field="tag", value=tag):
                for process in self._processes.values():
                    if process.tag == tag:
                        return process
                raise ConnectError(Code.NOT_FOUND, f"process with tag {tag!r} not found")
        raise ConnectError(Code.INVALID_ARGUMENT, "a process selector (pid or tag) is required")

    async def start(
        self, request: process_pb.StartRequest, user: str
    ) -> tuple[ManagedProcess, asyncio.Queue[process_pb.ProcessEvent | None]]:
        """Spawn the requested process and subscribe the caller before any output flows."""
        config = request.process or process_pb.ProcessConfig()
        if not config.cmd:
            raise ConnectError(Code.INVALID_ARGUMENT, "process.cmd is required")
        envs = {**self._base_envs, **dict(config.envs)}
        cwd = config.cwd if config.has_field("cwd") and config.cwd else "/home/user"
        tag = request.tag if request.has_field("tag") else None
        stdin = bool(request.stdin) if request.has_field("stdin") else False
        argv = [config.cmd, *config.args]
        terminal = request.pty if request.has_field("pty") else None
        if terminal is not None:
            size = terminal.size or process_pb.PTY.Size()
            argv = relay_argv(argv, rows=size.rows, cols=size.cols)
            stdin = True  # the relay's stdin carries the terminal's input and resizes
        try:
            handle = await self._jail.spawn(
                argv, envs=envs, cwd=cwd, stdin=stdin, tag=tag, user=user
            )
        except JAIL_ERRORS as error:
            raise connect_error(error) from None
        process = ManagedProcess(
            pid=handle.pid,
            tag=tag,
            config=config,
            handle=handle,
            stdin_open=stdin,
            pty=terminal is not None,
        )
        queue = process.subscribe()
        self._processes[process.pid] = process
        process.pump = asyncio.create_task(self._pump(process), name=f"envd-pump-{process.pid}")
        self._pumps.add(process.pump)
        process.pump.add_done_callback(self._pumps.discard)
        return process, queue

    async def _pump(self, process: ManagedProcess) -> None:
        """Read the process's events once and hand each to every current subscriber."""
        end: process_pb.ProcessEvent | None = None
        try:
            async for event in process.handle.events():
                if event.kind == "exit":
                    # A process ended by its sandbox's destruction has no exit status to
                    # report; without an end event the stream fails as unavailable, and the
                    # SDK's health probe then says the sandbox is gone.
                    if self._jail.alive:
                        end = _end_event(event)
                    break
                message = _data_event(event, pty=process.pty)
                for queue in list(process.subscribers):
                    await queue.put(message)
        except asyncio.CancelledError:
            # The server is closing the sandbox: end every stream now, output or not.
            self._processes.pop(process.pid, None)
            for queue in list(process.subscribers):
                while queue.full():
                    queue.get_nowait()
                queue.put_nowait(None)
            raise
        except Exception:
            log.exception("reading events of process %s failed", process.pid)
        self._processes.pop(process.pid, None)
        # Deliver the end after all the output, waiting for slow readers like any output
        # (a reader that leaves empties its queue, which releases these puts).
        for queue in list(process.subscribers):
            if end is not None:
                await queue.put(end)
            await queue.put(None)

    async def close(self) -> None:
        """Stop every pump (the jail's destruction has already ended the processes)."""
        pumps = list(self._pumps)
        for pump in pumps:
            pump.cancel()
        for pump in pumps:
            with contextlib.suppress(asyncio.CancelledError):
                await pump


async def follow(
    process: ManagedProcess,
    queue: asyncio.Queue[process_pb.ProcessEvent | None],
    keepalive_seconds: float,
) -> AsyncIterator[process_pb.ProcessEvent]:
    """The events of one subscription: start first, then data/keepalive, then end.

    Raises ``ConnectError(UNAVAILABLE)`` when the process vanished without an end event (its
    sandbox was killed), so the SDK probes the sandbox and reports it as not running.
    """
    try:
        yield _start_event(process.pid)
        ended = False
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), keepalive_seconds)
            except TimeoutError:
                yield _KEEPALIVE
                continue
            if event is None:
                break
            if event.event is not None and event.event.field == "end":
                ended = True
            yield event
        if not ended:
            raise ConnectError(
                Code.UNAVAILABLE, f"process {process.pid} ended without an exit status"
            )
    finally:
        process.unsubscribe(queue)


class ProcessService:
    """``process.Process`` for one sandbox (connectrpc calls these with decoded messages)."""

    def __init__(self, table: ProcessTable) -> None:
        self._table = table

    async def start(
        self, request: process_pb.StartRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[process_pb.StartResponse]:
        user = request_user(ctx)
        refusal = wrong_user(user, "commands")
        if refusal:
            raise ConnectError(Code.PERMISSION_DENIED, refusal)
        process, queue = await self._table.start(request, user)
        async for event in follow(process, queue, _keepalive_seconds(ctx)):
            yield process_pb.StartResponse(event=event)

    async def connect(
        self, request: process_pb.ConnectRequest, ctx: RequestContext[Any, Any]
    ) -> AsyncIterator[process_pb.ConnectResponse]:
        process = self._table.select(request.process)
        queue = process.subscribe()
        async for event in follow(process, queue, _keepalive_seconds(ctx)):
            yield process_pb.ConnectResponse(event=event)

    async def list(
        self, request: process_pb.ListRequest, ctx: RequestContext[Any, Any]
    ) -> process_pb.ListResponse:
        return process_pb.ListResponse(
            processes=[
                process_pb.ProcessInfo(config=process.config, pid=process.pid, tag=process.tag)
                for process in self._table.live()
            ]
        )

    async def send_signal(
        self, request: process_pb.SendSignalRequest, ctx: RequestContext[Any, Any]
    ) -> process_pb.SendSignalResponse:
        process = self._table.select(request.process)
        number = _SIGNALS.get(request.signal)
        if number is None:
            raise ConnectError(Code.INVALID_ARGUMENT, "signal must be SIGTERM or SIGKILL")
        try:
            await process.handle.signal(number)
        except JAIL_ERRORS as error:
            raise connect_error(error) from None
        return process_pb.SendSignalResponse()

    async def send_input(
        self, request: process_pb.SendInputRequest, ctx: RequestContext[Any, Any]
    ) -> process_pb.SendInputResponse:
        process = self._table.select(request.process)
        await _write_input(process, request.input)
        return process_pb.SendInputResponse()

    async def stream_input(
        self,
        request: AsyncIterator[process_pb.StreamInputRequest],
        ctx: RequestContext[Any, Any],
    ) -> process_pb.StreamInputResponse:
        process: ManagedProcess | None = None
        async for message in request:
            match message.event:
                case Oneof(field="start", value=start):
                    process = self._table.select(start.process)
                case Oneof(field="data", value=data):
                    if process is None:
                        raise ConnectError(
                            Code.INVALID_ARGUMENT, "the stream must start with a start event"
                        )
                    await _write_input(process, data.input)
        return process_pb.StreamInputResponse()

    async def close_stdin(
        self, request: process_pb.CloseStdinRequest, ctx: RequestContext[Any, Any]
    ) -> process_pb.CloseStdinResponse:
        process = self._table.select(request.process)
        if process.pty:
            raise ConnectError(
                Code.FAILED_PRECONDITION, "a PTY has no stdin to close: send Ctrl+D (0x04)"
            )
        if not process.stdin_open:
            raise ConnectError(
                Code.FAILED_PRECONDITION, f"process {process.pid} was not started with stdin"
            )
        try:
            await process.handle.close_stdin()
        except JAIL_ERRORS as error:
            raise connect_error(error) from None
        process.stdin_open = False
        return process_pb.CloseStdinResponse()

    async def update(
        self, request: process_pb.UpdateRequest, ctx: RequestContext[Any, Any]
    ) -> process_pb.UpdateResponse:
        """Resize a PTY (the only update there is)."""
        process = self._table.select(request.process)
        if not process.pty:
            raise ConnectError(Code.FAILED_PRECONDITION, f"process {process.pid} has no PTY")
        size = (request.pty.size if request.pty else None) or process_pb.PTY.Size()
        if not size.rows or not size.cols:
            raise ConnectError(Code.INVALID_ARGUMENT, "pty.size needs rows and cols")
        try:
            await process.handle.write_stdin(resize_frame(size.rows, size.cols))
        except JAIL_ERRORS as error:
            raise connect_error(error) from None
        return process_pb.UpdateResponse()


async def _write_input(process: ManagedProcess, data: process_pb.ProcessInput | None) -> None:
    """Send input to a process: its stdin, or, for a PTY, the terminal (either field)."""
    match data.input if data is not None else None:
        case Oneof(field="stdin" | "pty" as field, value=payload):
            if field == "pty" and not process.pty:
                raise ConnectError(Code.FAILED_PRECONDITION, f"process {process.pid} has no PTY")
            if not process.stdin_open:
                raise ConnectError(
                    Code.FAILED_PRECONDITION,
                    f"process {process.pid} has no open stdin (start it with stdin=True)",
                )
            chunk = input_frame(payload) if process.pty else payload
            try:
                await process.handle.write_stdin(chunk)
            except JAIL_ERRORS as error:
                raise connect_error(error) from None
        case _:
            raise ConnectError(Code.INVALID_ARGUMENT, "input.stdin or input.pty is required")
