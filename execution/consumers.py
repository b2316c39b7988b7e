"""Websocket consumers of the execution app: the live output of a thread and of one run.

Two routes (see `execution.routing` and the README's "Websocket protocol"):

* `ws/threads/<uuid>/` (`ThreadConsumer`): the client sends
  `{"type": "execute", "code", "language", "timeout"?}`,
  `{"type": "cancel", "execution_id"}` or `{"type": "input", "execution_id", "value"}` (the
  answer to a run's `input_request` event); the server forwards every live event of the
  thread's executions (`execution`, `status`, `stdout`, `stderr`, `result`, `error`,
  `input_request`, `done`), whichever client started them.
* `ws/executions/<uuid>/` (`ExecutionConsumer`): replays what the row stores, then
  follows the live events until `done`, then closes.

Both require an authenticated `scope["user"]` (set by `accounts.middleware` from the
session cookie or a bearer JWT) and reach their object through an ownership-scoped
query. The socket is accepted before a refusal so the client sees a precise close
code (a refused handshake would only be an HTTP 403): 4401 when not authenticated,
4404 when the thread or execution does not exist for this user (another user's
object is "not found", never "forbidden"). Origins are checked before any of this by
`AllowedHostsOriginValidator` in `atlaschat.asgi`.

A request the server cannot honour never closes the socket: it answers with a frame
`{"type": "error", "error": {"code", "message", "details"}}` (no `execution_id`, which
tells it apart from a run's `error` event). Codes are stable: `invalid_json`,
`invalid_message`, `unknown_type`, `execution_not_found`, `throttled`, `internal_error`,
plus every `ToolError` code of the execution service (validation, quotas, sandbox
availability). Runs share the REST API's per-user rate limit and concurrency caps.

A socket opened with a JWT lives longer than its access token: once the token expires,
the next request or event closes the socket with `token_expired` and 4401.

Live events reach a socket through the channel layer, which may drop messages for a client
that falls far behind. Nothing is lost for that: the service stores each event's effect
before publishing it, and a `StreamCursor` per execution sends, from the row, whatever a
socket missed (a seq jump, a run first met midway, a `done` that never came).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from channels.db import DatabaseSyncToAsync
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone
from redis.exceptions import TimeoutError as RedisTimeoutError
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from accounts.middleware import authorization_header
from execution.api.throttles import ExecuteRateThrottle
from execution.caller import Caller
from execution.models import Execution, Source, Thread
from execution.monitoring import metrics
from execution.selectors import execution_get_owned, thread_get_owned
from execution.services.errors import ToolError
from execution.services.events import execution_group, thread_group
from execution.services.quotas import acquire_websocket_slot, release_websocket_slot
from execution.services.tool_executor import ToolExecutor
from execution.stream import (
    CancelRequest,
    ExecuteRequest,
    InputRequest,
    ProtocolError,
    StreamCursor,
    error_frame,
    parse_thread_message,
)
from execution.throttling import audit_throttled, check_rate

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Application close codes (4000-4999 are ours by RFC 6455), mirroring the HTTP statuses.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
# The user has WEBSOCKET_USER_LIMIT sockets open already (the 429 of websockets).
CLOSE_OVER_LIMIT = 4429


def authenticated_user(scope: dict[str, Any]) -> AbstractBaseUser | None:
    """Return the scope's user when authenticated, else None."""
    user = scope.get("user")
    return user if user is not None and user.is_authenticated else None


def token_expiry(scope: dict[str, Any]) -> datetime | None:
    """When the access token a socket was opened with expires; None for a session socket.

    The middleware has already validated the token; reading it again gives its `exp`. A
    token that no longer validates counts as expired now.
    """
    if scope.get("auth_method") != "jwt":
        return None
    header = authorization_header(scope)
    authentication = JWTAuthentication()
    try:
        raw_token = authentication.get_raw_token(header) if header else None
        if raw_token is None:
            return timezone.now()
        token = authentication.get_validated_token(raw_token)
    except (InvalidToken, TokenError):
        return timezone.now()
    return datetime.fromtimestamp(int(token["exp"]), tz=UTC)


class PatientChannelLayer:
    """The channel layer, with a `receive` that outlasts a Redis read timing out.

    redis-py (>= 6) gives every read a 5 s socket timeout by default, exactly as long as
    channels_redis blocks in BZPOPMIN waiting for a message, so on a busy machine an idle
    socket's wait can end in `redis.exceptions.TimeoutError`, which would close it with
    1011. channels_redis keeps a backup of what it pops, so reading again loses nothing
    (and any event that still went missing is caught up from the row).
    """

    def __init__(self, layer: Any) -> None:
        self.layer = layer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.layer, name)

    async def receive(self, channel: str) -> dict[str, Any]:
        while True:
            try:
                return await self.layer.receive(channel)
            except RedisTimeoutError:
                logger.debug("channel layer read timed out on %s; reading again", channel)


# The database work of every socket of this process runs on these few threads, so sockets
# hold no database connection each: at most WEBSOCKET_DB_THREADS connections however many
# sockets are open (an idle socket holds none), and a slow query holds up only its thread.
_db_threads = ThreadPoolExecutor(
    max_workers=settings.WEBSOCKET_DB_THREADS, thread_name_prefix="websocket-db"
)


def on_db_threads(func: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """`func` as a coroutine run on the sockets' database threads (channels' connection
    housekeeping before and after, as database_sync_to_async does)."""
    return DatabaseSyncToAsync(func, thread_sensitive=False, executor=_db_threads)


class OwnedWebsocketConsumer(AsyncWebsocketConsumer):
    """Common ground: the per-user socket cap, JSON frames, refusals, and live events
    forwarded through a `StreamCursor` per execution so that none is lost or repeated."""

    # Every so often a socket re-reads the rows of the runs it follows and are not over: an
    # event the channel layer dropped at the end of a run (a full channel drops silently)
    # would otherwise leave the client waiting for a `done` that never comes.
    check_interval: float = 5.0
    # Finished cursors kept (to drop late duplicates) before the oldest are forgotten.
    max_cursors: int = 500

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.cursors: dict[str, StreamCursor] = {}
        self.groups_joined: list[str] = []
        self.watcher: asyncio.Task[None] | None = None
        self.slot_user_id: int | None = None
        metrics.websocket_opened()
        try:
            await super().__call__(scope, receive, send)
        finally:
            metrics.websocket_closed()
            await self._stop_watching()
            if self.slot_user_id is not None:
                release_websocket_slot(self.slot_user_id)

    async def admit(self, user: AbstractBaseUser) -> bool:
        """Take one of the user's open-socket slots (quotas.py); when they are all taken,
        audit the refusal, close with 4429 and return False."""
        try:
            acquire_websocket_slot(user.pk)
        except ToolError as error:
            await on_db_threads(audit_throttled)(
                Caller.from_scope({**self.scope, "user": user}), error
            )
            await self.refuse(CLOSE_OVER_LIMIT)
            return False
        self.slot_user_id = user.pk
        return True

    @property
    def caller(self) -> Caller:
        """Who is on this socket (user, client IP; source browser for a session socket, the
        workspace page, and websocket for a program's JWT socket)."""
        source = Source.BROWSER if self.scope.get("auth_method") == "session" else Source.WEBSOCKET
        return Caller.from_scope({**self.scope, "user": self.user}, source=source)

    @property
    def channel_layer(self) -> Any:
        return self._channel_layer

    @channel_layer.setter
    def channel_layer(self, layer: Any) -> None:
        # channels sets the layer (and binds its `receive`) when the socket starts.
        self._channel_layer = None if layer is None else PatientChannelLayer(layer)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Live events need no database: skip channels' per-message connection housekeeping,
        # a hop to this socket's sync thread. With that hop a burst of output outran the
        # socket, its channel filled up, and the layer dropped events.
        kind = message.get("type")
        if kind == "execution.events":  # a batch, in order (services/events.py)
            for event in message["events"]:
                await self.execution_event({"type": "execution.event", "event": event})
            return
        if kind == "execution.event":
            await self.execution_event(message)
            return
        await super().dispatch(message)

    async def refuse(self, code: int) -> None:
        """Accept then close with an application code the client can act on."""
        await self.accept()
        await self.close(code=code)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame, separators=(",", ":")))

    async def join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.append(group)

    async def disconnect(self, code: int) -> None:
        await self._stop_watching()
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)

    # --- live events --------------------------------------------------------------------

    def cursor_for(self, execution_id: str) -> StreamCursor | None:
        """The cursor of an execution this socket shows (None: ignore its events)."""
        cursor = self.cursors.get(execution_id)
        if cursor is None:
            cursor = self.cursors[execution_id] = StreamCursor(execution_id)
            self._forget_old_cursors()
        return cursor

    async def execution_event(self, message: dict[str, Any]) -> None:
        """A live event published by the execution service: send it exactly once, in order,
        catching up from the row first if events before it never arrived."""
        event = message["event"]
        cursor = self.cursor_for(str(event.get("execution_id")))
        if cursor is None or cursor.done:
            return
        verdict = cursor.classify(event)
        if verdict == "gap":
            await self.catch_up([cursor])
            verdict = cursor.classify(event)
        if verdict == "duplicate" or cursor.done:
            return
        cursor.advance(event)
        await self.send_frame(event)
        if cursor.done:
            await self.execution_finished(cursor)

    async def catch_up(self, cursors: list[StreamCursor]) -> None:
        """Send, from the rows, what these cursors have not sent yet."""
        rows = await self._load_rows([cursor.execution_id for cursor in cursors])
        for cursor in cursors:
            row = rows.get(cursor.execution_id)
            if row is None:
                continue
            for frame in cursor.catch_up(row):
                await self.send_frame(frame)
            if cursor.done:
                await self.execution_finished(cursor)

    async def execution_finished(self, cursor: StreamCursor) -> None:
        """Called once the `done` of an execution has been sent."""

    async def execution_check(self, message: dict[str, Any]) -> None:
        """The periodic check (see `check_interval`), queued behind the live events."""
        pending = [cursor for cursor in self.cursors.values() if not cursor.done]
        if pending:
            await self.catch_up(pending)

    def start_watching(self) -> None:
        self.watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            if any(not cursor.done for cursor in self.cursors.values()):
                # Through the socket's own channel, so the check runs between events, never
                # in the middle of one.
                with contextlib.suppress(Exception):
                    await self.channel_layer.send(self.channel_name, {"type": "execution.check"})

    async def _stop_watching(self) -> None:
        watcher, self.watcher = self.watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def _forget_old_cursors(self) -> None:
        finished = [key for key, cursor in self.cursors.items() if cursor.done]
        for key in finished[: max(0, len(self.cursors) - self.max_cursors)]:
            del self.cursors[key]

    @on_db_threads
    def _load_rows(self, execution_ids: list[str]) -> dict[str, Execution]:
        rows = Execution.objects.filter(id__in=execution_ids, user=self.user)
        return {str(row.id): row for row in rows}


class ThreadConsumer(OwnedWebsocketConsumer):
    """`ws/threads/<uuid>/`: run code in a thread and watch every run of it live."""

    async def connect(self) -> None:
        user = authenticated_user(self.scope)
        if user is None:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        if not await self.admit(user):
            return
        self.user = user
        thread = await self._get_thread(self.scope["url_route"]["kwargs"]["thread_id"])
        if thread is None:
            await self.refuse(CLOSE_NOT_FOUND)
            return
        self.user = user
        self.thread = thread
        self.expires_at = await on_db_threads(token_expiry)(self.scope)
        self.expired = False
        # Join before accepting: once the client sees the handshake, no event is missed.
        await self.join(thread_group(thread.id))
        await self.accept()
        self.start_watching()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not hasattr(self, "thread"):
            return  # a frame that raced a refusal: the socket is closing
        if await self._closed_for_expiry():
            return
        try:
            request = parse_thread_message(text_data, bytes_data)
            if isinstance(request, ExecuteRequest):
                await self._execute(request)
            elif isinstance(request, InputRequest):
                await self._send_input(request)
            else:
                await self._cancel(request)
        except ProtocolError as exc:
            await self.send_frame(error_frame(exc.code, exc.message, exc.details))
        except ToolError as exc:
            await self.send_frame({"type": "error", "error": exc.as_dict()})
        except Exception:
            # The socket outlives any one request: log it and tell the client, don't crash.
            logger.exception("websocket request on thread %s failed", self.thread.id)
            await self.send_frame(
                error_frame("internal_error", "The request failed on the server; try again.")
            )

    async def execution_event(self, message: dict[str, Any]) -> None:
        """Any run of the thread, whoever started it; a run first seen mid-way (this socket
        opened while it ran) is caught up from its row."""
        if not hasattr(self, "thread") or await self._closed_for_expiry():
            return
        await super().execution_event(message)

    async def _closed_for_expiry(self) -> bool:
        """Close the socket once its access token has expired; True when it did.

        A socket outlives the short-lived token it was opened with; checking before every
        request and event means nothing is run or shown on an expired token. (Session
        sockets are not re-checked: the session's own expiry is days, not minutes.)
        """
        if self.expired:
            return True  # already closing: drop what still arrives
        if self.expires_at is None or timezone.now() < self.expires_at:
            return False
        self.expired = True
        await self.send_frame(
            error_frame(
                "token_expired",
                "The access token of this socket has expired; reconnect with a fresh one.",
            )
        )
        await self.close(code=CLOSE_UNAUTHENTICATED)
        return True

    async def _execute(self, request: ExecuteRequest) -> None:
        # start_execution validates, creates the row and publishes the "execution" event,
        # then returns while the run proceeds in the service's own worker; its events
        # reach this socket through the thread group joined at connect.
        await on_db_threads(self._start_execution)(request)

    def _start_execution(self, request: ExecuteRequest) -> Execution:
        # The REST execute throttle, same counter: no more runs by switching doors.
        check_rate(throttle_class=ExecuteRateThrottle, caller=self.caller)
        return ToolExecutor().start_execution(
            code=request.code,
            language=request.language,
            caller=self.caller,
            thread=self.thread,
            timeout=request.timeout,
        )

    async def _send_input(self, request: InputRequest) -> None:
        await on_db_threads(self._send_run_input)(request)

    def _send_run_input(self, request: InputRequest) -> None:
        # Only runs of this thread, as for cancel.
        execution_get_owned(
            caller=self.caller, execution_id=request.execution_id, thread=self.thread
        )
        ToolExecutor().send_run_input(
            execution_id=request.execution_id, value=request.value, user=self.caller.account
        )

    async def _cancel(self, request: CancelRequest) -> None:
        await on_db_threads(self._cancel_execution)(request)

    def _cancel_execution(self, request: CancelRequest) -> None:
        # Only runs of this thread: a socket is a view of one thread, and its client
        # would never see the `done` of a run elsewhere (another user's run is audited).
        execution_get_owned(
            caller=self.caller, execution_id=request.execution_id, thread=self.thread
        )
        ToolExecutor().cancel_execution(execution_id=request.execution_id, user=self.caller.account)

    @on_db_threads
    def _get_thread(self, thread_id: uuid.UUID) -> Thread | None:
        try:
            return thread_get_owned(caller=self.caller, thread_id=thread_id)
        except ToolError:
            return None


class ExecutionConsumer(OwnedWebsocketConsumer):
    """`ws/executions/<uuid>/`: what a run has done so far, then its live events until done."""

    async def connect(self) -> None:
        user = authenticated_user(self.scope)
        if user is None:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        if not await self.admit(user):
            return
        self.user = user
        execution_id = str(self.scope["url_route"]["kwargs"]["execution_id"])
        # Join the group FIRST, then read the row. The service stores each event's effect
        # and its seq in the row before publishing it, so every event newer than what the
        # row shows is published after this join and reaches us: no gap. Events the row
        # already holds come in with seq <= last_seq and are dropped: no duplicate.
        await self.join(execution_group(execution_id))
        rows = await self._load_owned_row(execution_id)
        if execution_id not in rows:
            await self.refuse(CLOSE_NOT_FOUND)
            return
        await self.accept()
        cursor = self.cursors[execution_id] = StreamCursor(execution_id)
        for frame in cursor.catch_up(rows[execution_id]):
            await self.send_frame(frame)
        if cursor.done:
            await self.execution_finished(cursor)
        else:
            self.start_watching()

    @on_db_threads
    def _load_owned_row(self, execution_id: str) -> dict[str, Execution]:
        # Through the selector, so another user's run is audited like everywhere else.
        try:
            row = execution_get_owned(caller=self.caller, execution_id=execution_id)
        except ToolError:
            return {}
        return {str(row.id): row}

    def cursor_for(self, execution_id: str) -> StreamCursor | None:
        return self.cursors.get(execution_id)  # only the one execution of the URL

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send_frame(
            error_frame(
                "unknown_type",
                "This socket only streams an execution; send requests on ws/threads/<id>/.",
            )
        )

    async def execution_finished(self, cursor: StreamCursor) -> None:
        await self.close(code=1000)
