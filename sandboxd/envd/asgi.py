"""Serve an ASGI application (connectrpc's Connect server) from an aiohttp handler.

envd's RPC services are served by the ``connectrpc`` server that the ``e2b`` package's
generated ``*_connect`` modules are built for, so framing, codecs, compression, deadlines and
error bodies follow the Connect protocol exactly as the SDK's own client expects. aiohttp is
not an ASGI server, so this module adapts one request: the request body becomes ``receive``
events and ``send`` events become an ``aiohttp.web.StreamResponse``.

The server runs with ``handler_cancellation=True``: when the client goes away, aiohttp cancels
the handler task, which cancels the ASGI application mid-stream (connectrpc then closes the
service's stream generator, so its ``finally`` blocks run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiohttp import web
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from multidict import CIMultiDict

log = logging.getLogger(__name__)

# Nesting a JSON request message may have. envd's messages are a few levels deep; the JSON
# parser behind protobuf-py's from_json is native and recursive, and a body of 100 000 "["
# overflowed its stack and killed the whole server (found by tests/test_fuzz_http.py).
MAX_JSON_DEPTH = 64
_JSON_STRUCTURE = bytes(range(256)).translate(None, b'[]{}"\\')


def too_deep() -> ConnectError:
    """The error for a JSON request message nested deeper than MAX_JSON_DEPTH (connectrpc
    answers it as it stands: 400 for a unary call, the stream's end for a streaming one)."""
    return ConnectError(Code.INVALID_ARGUMENT, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


class JsonDepthGuard:
    """Follows the JSON of a request body chunk by chunk and raises ``too_deep()`` past
    MAX_JSON_DEPTH, before the parser sees it.

    `enveloped`: Connect's streaming framing (a flags byte and a 4-byte length before each
    message), whose binary prefixes are skipped and each message checked on its own.
    """

    def __init__(self, *, enveloped: bool) -> None:
        self._enveloped = enveloped
        self._prefix = bytearray()  # the envelope header being read
        self._left = 0  # bytes of the current enveloped message still to come
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            if not self._enveloped:
                self._scan(bytes(view))
                return
            if self._left == 0:
                take = min(5 - len(self._prefix), len(view))
                self._prefix += view[:take]
                view = view[take:]
                if len(self._prefix) == 5:
                    self._left = int.from_bytes(self._prefix[1:5], "big")
                    self._prefix.clear()
                    self._depth, self._in_string, self._escaped = 0, False, False
                continue
            take = min(self._left, len(view))
            self._scan(bytes(view[:take]))
            self._left -= take
            view = view[take:]

    def _scan(self, data: bytes) -> None:
        # Only the structural bytes matter; most chunks have few of them.
        for byte in data.translate(None, _JSON_STRUCTURE):
            if self._escaped:
                self._escaped = False
            elif self._in_string:
                if byte == 0x5C:  # backslash
                    self._escaped = True
                elif byte == 0x22:
                    self._in_string = False
            elif byte == 0x22:
                self._in_string = True
            elif byte in (0x5B, 0x7B):
                self._depth += 1
                if self._depth > MAX_JSON_DEPTH:
                    raise too_deep()
            else:
                self._depth -= 1


# What decoding a malformed request message raises (protobuf-py: ValueError for bad binary,
# JSON or UTF-8; TypeError for JSON of the wrong shape).
UNDECODABLE = (ValueError, TypeError, RecursionError)

AsgiApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[dict[str, Any]]],
        Callable[[dict[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


async def serve_asgi(app: AsgiApp, request: web.Request) -> web.StreamResponse:
    """Run ``app`` for ``request`` and return the (already sent) response.

    Raises nothing for errors the application reported itself (Connect errors become
    responses); an application crash before any byte was sent becomes a plain 500.
    """
    peer = request.transport.get_extra_info("peername") if request.transport else None
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode("latin-1"),
        "query_string": request.query_string.encode("latin-1"),
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.raw_headers],
        "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
        "server": None,
        "extensions": {},
    }
    body_done = False
    content_type = request.headers.get("Content-Type", "").lower()
    guard = (
        JsonDepthGuard(enveloped=content_type.startswith("application/connect+"))
        if "json" in content_type
        else None
    )

    async def receive() -> dict[str, Any]:
        nonlocal body_done
        if body_done:
            # Nothing more will arrive; a disconnect shows up as the handler's cancellation.
            await asyncio.Future()
        chunk = await request.content.readany()
        if guard is not None:
            guard.feed(chunk)
        if not chunk or request.content.at_eof():
            body_done = True
        return {"type": "http.request", "body": chunk, "more_body": not body_done}

    response: web.StreamResponse | None = None
    finished = False
    # A complete unary answer with a 5xx is held until the application returns: connectrpc
    # answers a request message it cannot decode with "unknown" (500) and then raises the
    # decoding error, which is the client's fault and becomes a 400 below.
    held: tuple[web.StreamResponse, bytes] | None = None
    expired = False

    async def send(message: dict[str, Any]) -> None:
        nonlocal response, finished, held
        if expired:
            return  # past the deadline: the answer is deadline_exceeded, nothing else
        kind = message["type"]
        if kind == "http.response.start":
            headers: CIMultiDict[str] = CIMultiDict()
            for name, value in message.get("headers", ()):
                headers.add(name.decode("latin-1"), value.decode("latin-1"))
            response = web.StreamResponse(status=message["status"], headers=headers)
        elif kind == "http.response.body":
            if response is None or finished:
                return
            if request.transport is None or request.transport.is_closing():
                # The client is gone (a closed stream is normal: a disconnected command,
                # an SDK timeout); there is nobody to write the rest to.
                finished = True
                return
            body: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            if not response.prepared and not more and response.status >= 500:
                held = (response, body)
                finished = True
                return
            if not response.prepared:
                if not more:
                    # A complete unary answer: send it with a length, not chunked.
                    response.content_length = len(body)
                await response.prepare(request)
            if body:
                await response.write(body)
            if not more:
                finished = True
                await response.write_eof()

    def expire() -> None:
        nonlocal expired
        expired = True

    deadline = _deadline_seconds(request)
    try:
        if deadline is None:
            await app(scope, receive, send)
        elif not await _run_until(app(scope, receive, send), deadline, on_expiry=expire):
            return await _deadline_exceeded(request, response, finished=finished)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except UNDECODABLE as error:
        if response is not None and response.prepared:
            raise
        log.info("envd RPC %s: undecodable request (%s)", request.path, type(error).__name__)
        return web.json_response(
            {"code": "invalid_argument", "message": "the request message could not be decoded"},
            status=400,
        )
    except Exception as error:
        if isinstance(error, ConnectError) and error.code == Code.CANCELED:
            # connectrpc turns the handler's cancellation (the client went away) into this
            # error; hand aiohttp back the cancellation it started.
            raise asyncio.CancelledError from error
        if isinstance(error, ConnectError) and error.code == Code.INVALID_ARGUMENT:
            # Raised by the JSON guard while connectrpc read the body; it answered already.
            log.info("envd RPC %s: %s", request.path, error.message)
            if response is not None:
                return response
        log.exception("envd RPC %s failed", request.path)
        if response is None or not response.prepared:
            return web.json_response({"code": "internal", "message": "internal error"}, status=500)
    if held is not None:
        response, body = held
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        return response
    if response is None:
        return web.json_response({"code": "internal", "message": "no response"}, status=500)
    if not finished and response.prepared:
        await response.write_eof()
    return response


# Connect's deadline header: at most 10 digits of milliseconds (the protocol's own limit).
_TIMEOUT_HEADER = "Connect-Timeout-Ms"
_END_STREAM = 0x02


def _deadline_seconds(request: web.Request) -> float | None:
    """The client's deadline from ``Connect-Timeout-Ms``; ``None`` when absent or malformed
    (connectrpc itself answers a malformed one with ``invalid_argument``)."""
    value = request.headers.get(_TIMEOUT_HEADER, "")
    if not value or len(value) > 10 or not value.isascii() or not value.isdigit():
        return None
    return int(value) / 1000


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


async def _run_until(
    call: Awaitable[None], seconds: float, *, on_expiry: Callable[[], None]
) -> bool:
    """Run `call`; when `seconds` pass first, call `on_expiry`, cancel it and return False.
    The client's own cancellation reaches it too."""
    task = asyncio.ensure_future(call)
    # A task cancelled with its client may end in connectrpc's own error: collect it here.
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        # Its end (connectrpc's "Request was cancelled") is expected: retrieve it, or asyncio
        # logs "Task exception was never retrieved" with a traceback.
        task.add_done_callback(_retrieve)
        raise
    if done:
        task.result()
        return True
    on_expiry()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    return False


async def _deadline_exceeded(
    request: web.Request, response: web.StreamResponse | None, *, finished: bool
) -> web.StreamResponse:
    """End a call whose deadline passed as Connect does: a stream gets an end-of-stream
    envelope with ``deadline_exceeded`` (the async SDK raises its TimeoutException on it,
    and relies on it: it sets no deadline of its own on streams); a unary call that has not
    answered yet gets the error as its body, HTTP 504."""
    error = {"code": "deadline_exceeded", "message": "the request's deadline was exceeded"}
    streaming = request.content_type.startswith("application/connect+")
    if response is not None and response.prepared:
        if (
            not finished
            and streaming
            and not (request.transport is None or request.transport.is_closing())
        ):
            payload = json.dumps({"error": error}).encode()
            with contextlib.suppress(ConnectionError):
                await response.write(struct.pack(">BI", _END_STREAM, len(payload)) + payload)
                await response.write_eof()
        return response
    if streaming:
        payload = json.dumps({"error": error}).encode()
        return web.Response(
            status=200,
            content_type=request.content_type,
            body=struct.pack(">BI", _END_STREAM, len(payload)) + payload,
        )
    return web.json_response(error, status=504)
