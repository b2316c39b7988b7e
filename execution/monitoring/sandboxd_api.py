"""Django's direct calls to sandboxd's own routes (health, metrics, per-sandbox usage).

Runs go through the e2b SDK; these routes are sandboxd's extensions and its health, read with
one shared HTTP client: creating a client per call builds a TLS context each time (about
20 ms, 100 ms on a loaded machine; bench/bench_dashboard.py found it), even for plain HTTP.
"""

from __future__ import annotations

import asyncio
import weakref

import httpx
from django.conf import settings

TIMEOUT_SECONDS = 2.0

_client = httpx.Client(timeout=TIMEOUT_SECONDS)
# An async client belongs to one event loop: one per loop (in practice the service portal's).
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def _url(path: str) -> str:
    return f"{settings.SANDBOXD_URL.rstrip('/')}{path}"


def sandboxd_request(method: str, path: str, *, timeout: float | None = None) -> httpx.Response:
    """`method` `path` on SANDBOXD_URL with our API key; raises httpx.HTTPError."""
    return _client.request(
        method,
        _url(path),
        headers={"X-API-KEY": settings.SANDBOXD_API_KEY},
        timeout=timeout or TIMEOUT_SECONDS,
    )


async def sandboxd_request_async(method: str, path: str) -> httpx.Response:
    """`sandboxd_request` for async code (the runs' event loop); raises httpx.HTTPError."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = httpx.AsyncClient(timeout=TIMEOUT_SECONDS)
    return await client.request(
        method,
        _url(path),
        headers={"X-API-KEY": settings.SANDBOXD_API_KEY},
    )
