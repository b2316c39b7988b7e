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
import logging
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

    async def send(message: dict[str, Any]) -> None:
        nonlocal response, finished
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

    try:
        await app(scope, receive, send)
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
