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

    async def receive() -> dict[str, Any]:
        nonlocal body_done
        if body_done:
            # Nothing more will arrive; a disconnect shows up as the handler's cancellation.
            await asyncio.Future()
        chunk = await request.content.readany()
        if not chunk or request.content.at_eof():
            body_done = True
        return {"type": "http.request", "body": chunk, "more_body": not body_done}

    response: web.StreamResponse | None = None
    finished = False
    expired = False

    async def send(message: dict[str, Any]) -> None:
        nonlocal response, finished
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
    except Exception as error:
        if isinstance(error, ConnectError) and error.code == Code.CANCELED:
            # connectrpc turns the handler's cancellation (the client went away) into this
            # error; hand aiohttp back the cancellation it started.
            raise asyncio.CancelledError from error
        log.exception("envd RPC %s failed", request.path)
        if response is None or not response.prepared:
            return web.json_response({"code": "internal", "message": "internal error"}, status=500)
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


async def _run_until(
    call: Awaitable[None], seconds: float, *, on_expiry: Callable[[], None]
) -> bool:
    """Run `call`; when `seconds` pass first, call `on_expiry`, cancel it and return False.
    The client's own cancellation reaches it too."""
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
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
