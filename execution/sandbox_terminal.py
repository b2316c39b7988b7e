"""The workspace's terminal: a shell in a thread's sandbox, over `ws/threads/<uuid>/terminal/`.

The shell is a PTY started through the sandbox contract (`Sandbox.open_terminal`; the e2b
backend uses the SDK's `sandbox.pty`), so it works against sandboxd and E2B's cloud alike. The
socket has the same checks as the thread's own socket: the origin (AllowedHostsOriginValidator
in atlaschat.asgi), an authenticated user (4401 otherwise) and an ownership-scoped look-up of
the thread (another user's thread is 4404, and the attempt is audited). Each terminal is a
TerminalSession row: who, which thread and sandbox, from where, when it started and ended and
why. Keystrokes are not recorded.

Frames, JSON text both ways:
* client → server: `{"type": "input", "data": "<text>"}`, `{"type": "resize", "cols", "rows"}`;
* server → client: `{"type": "ready"}`, `{"type": "output", "data": "<text>"}`,
  `{"type": "exit"}`, `{"type": "error", "error": {"code", "message"}}`.

Sandbox calls run on the service portal (execution.services.runtime), so every terminal call
is submitted there; the terminal's output callback runs there too and hands its bytes to this
socket's loop through a bounded buffer.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from execution.caller import Caller
from execution.consumers import (
    CLOSE_NOT_FOUND,
    CLOSE_OVER_LIMIT,
    CLOSE_UNAUTHENTICATED,
    authenticated_user,
)
from execution.models import Source, TerminalSession, Thread
from execution.sandbox.base import Sandbox, SandboxError, Terminal
from execution.selectors import thread_get_owned
from execution.services.errors import ToolError
from execution.services.quotas import acquire_websocket_slot, release_websocket_slot
from execution.services.runtime import service_portal
from execution.services.sandbox_sessions import sessions
from execution.services.validation import WORKSPACE_ROOT
from execution.throttling import audit_throttled

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Output not yet sent to the browser, at most; beyond it the oldest is dropped (and said).
MAX_PENDING_OUTPUT_BYTES = 1024 * 1024
# A client frame larger than this is refused (a paste of a few pages is far below it).
MAX_INPUT_FRAME_CHARS = 64 * 1024
MAX_COLS, MAX_ROWS = 500, 200


class OutputBuffer:
    """Bytes from the PTY (written on the service loop) waiting to be sent on the socket's
    loop; bounded by MAX_PENDING_OUTPUT_BYTES."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.data = bytearray()
        self.dropped = 0
        self.ready = asyncio.Event()

    def put(self, chunk: bytes) -> None:
        with self.lock:
            self.data += chunk
            excess = len(self.data) - MAX_PENDING_OUTPUT_BYTES
            if excess > 0:
                del self.data[:excess]
                self.dropped += excess
        self.loop.call_soon_threadsafe(self.ready.set)

    def take(self) -> tuple[bytes, int]:
        with self.lock:
            data, dropped = bytes(self.data), self.dropped
            self.data.clear()
            self.dropped = 0
            self.ready.clear()
        return data, dropped


class TerminalConsumer(AsyncWebsocketConsumer):
    """`ws/threads/<uuid>/terminal/`: one shell in the thread's sandbox per socket."""

    terminal: Terminal | None = None
    record: TerminalSession | None = None
    counted = False

    async def connect(self) -> None:
        user = authenticated_user(self.scope)
        if user is None:
            await self._refuse(CLOSE_UNAUTHENTICATED)
            return
        self.user = user
        # A terminal is one of the user's open sockets (WEBSOCKET_USER_LIMIT), as any other.
        try:
            acquire_websocket_slot(user.pk)
        except ToolError as error:
            await database_sync_to_async(audit_throttled)(self.caller, error)
            await self._refuse(CLOSE_OVER_LIMIT)
            return
        self.counted = True
        thread_id = self.scope["url_route"]["kwargs"]["thread_id"]
        thread = await self._owned_thread(thread_id)
        if thread is None:
            await self._refuse(CLOSE_NOT_FOUND)
            return
        self.thread = thread
        self.loop = asyncio.get_running_loop()
        self.output = OutputBuffer(self.loop)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        await self.accept()
        self.starting = asyncio.ensure_future(self._start())

    async def _start(self) -> None:
        try:
            sandbox = await database_sync_to_async(self._sandbox)()
        except ToolError as error:
            await self._send_error(error.code, error.message)
            await self.close(code=1011)
            return
        except SandboxError as exc:  # the sandbox vanished while it was being got
            logger.warning("terminal in thread %s found no sandbox: %s", self.thread.id, exc)
            await self._send_error("terminal_unavailable", "The sandbox could not be reached.")
            await self.close(code=1011)
            return
        self.sandbox = sandbox
        self.record = await database_sync_to_async(TerminalSession.objects.create)(
            user=self.user,
            thread=self.thread,
            sandbox_id=sandbox.sandbox_id,
            client_ip=self.caller.client_ip,
        )
        try:
            terminal = await self._on_service_portal(
                sandbox.open_terminal(
                    cols=80, rows=24, cwd=WORKSPACE_ROOT, on_output=self.output.put
                )
            )
        except SandboxError as exc:
            logger.warning("terminal in thread %s failed to start: %s", self.thread.id, exc)
            await self._end(f"failed: {type(exc).__name__}")
            await self._send_error("terminal_unavailable", "The sandbox could not start a shell.")
            await self.close(code=1011)
            return
        self.terminal = terminal
        await self.send(json.dumps({"type": "ready"}))
        self.pump = asyncio.ensure_future(self._pump())
        self.waiter = asyncio.ensure_future(self._wait_for_exit(terminal))

    async def _pump(self) -> None:
        """Send the PTY's output as it comes, decoded as UTF-8 across chunk boundaries."""
        while True:
            await self.output.ready.wait()
            data, dropped = self.output.take()
            text = self.decoder.decode(data)
            if dropped:
                text = f"\r\n[{dropped} bytes of output dropped: the browser fell behind]\r\n{text}"
            if text:
                await self.send(json.dumps({"type": "output", "data": text}))

    async def _wait_for_exit(self, terminal: Terminal) -> None:
        with contextlib.suppress(SandboxError):
            await self._on_service_portal(terminal.wait())
        await asyncio.sleep(0)  # let the last output reach the pump
        data, _ = self.output.take()
        if data:
            await self.send(json.dumps({"type": "output", "data": self.decoder.decode(data)}))
        await self._end("exited")
        await self.send(json.dumps({"type": "exit"}))
        await self.close(code=1000)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        terminal = self.terminal
        if terminal is None:
            return  # not started (or refused): nothing to send to
        if text_data is None or len(text_data) > MAX_INPUT_FRAME_CHARS:
            await self._send_error("invalid_message", "Send JSON text frames of at most 64 KiB.")
            return
        try:
            message = json.loads(text_data)
            kind = message["type"]
        except (ValueError, KeyError, TypeError):
            await self._send_error("invalid_json", "A frame must be a JSON object with a type.")
            return
        if kind == "input" and isinstance(message.get("data"), str):
            data = message["data"].encode("utf-8")
            await self._on_service_portal(terminal.send(data))
        elif kind == "resize":
            cols, rows = message.get("cols"), message.get("rows")
            if not (isinstance(cols, int) and isinstance(rows, int)):
                await self._send_error("invalid_message", "resize needs integer cols and rows.")
                return
            await self._on_service_portal(
                terminal.resize(cols=max(1, min(cols, MAX_COLS)), rows=max(1, min(rows, MAX_ROWS)))
            )
        else:
            await self._send_error("unknown_type", "Send input or resize frames.")

    async def disconnect(self, code: int) -> None:
        tasks = ("starting", "pump", "waiter")
        for task in (getattr(self, name, None) for name in tasks):
            if task is not None:
                task.cancel()
        terminal = self.terminal
        if terminal is not None and self.record is not None and self.record.ended_at is None:
            # Recorded before the kill: the shell's exit is this close, not its own.
            await self._end("closed")
            with contextlib.suppress(SandboxError):
                await self._on_service_portal(terminal.kill())
        if self.counted:
            release_websocket_slot(self.user.pk)
            self.counted = False

    # --- helpers ---------------------------------------------------------------------------

    def _sandbox(self) -> Sandbox:
        """The thread's sandbox: the one it has (even while a run holds the thread), else a
        new one with its files and packages restored. Raises ToolError (503)."""
        return sessions.current_sandbox(self.thread) or sessions.get_or_create(self.thread).sandbox

    @staticmethod
    async def _on_service_portal(coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(service_portal().submit(coro))

    @property
    def caller(self) -> Caller:
        """Who is on this socket: a person in the workspace page."""
        return Caller.from_scope({**self.scope, "user": self.user}, source=Source.BROWSER)

    async def _end(self, reason: str) -> None:
        record = self.record
        if record is None or record.ended_at is not None:
            return
        record.ended_at, record.end_reason = timezone.now(), reason[:200]
        await database_sync_to_async(record.save)(update_fields=["ended_at", "end_reason"])

    async def _send_error(self, code: str, message: str) -> None:
        await self.send(json.dumps({"type": "error", "error": {"code": code, "message": message}}))

    async def _refuse(self, code: int) -> None:
        # Accepted first, so the browser sees the precise close code (as the thread socket).
        await self.accept()
        await self.close(code=code)

    @database_sync_to_async
    def _owned_thread(self, thread_id: uuid.UUID) -> Thread | None:
        # The one selector of threads: another user's is "not found", and audited.
        try:
            return thread_get_owned(caller=self.caller, thread_id=thread_id)
        except ToolError:
            return None
