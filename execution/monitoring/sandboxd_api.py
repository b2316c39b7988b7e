"""Django's direct calls to sandboxd's own routes (health, metrics, per-sandbox usage).

Runs go through the e2b SDK; these routes are sandboxd's extensions and its health, read with
one shared HTTP client: creating a client per call builds a TLS context each time (about
20 ms, 100 ms on a loaded machine; bench/bench_dashboard.py found it), even for plain HTTP.
"""

from __future__ import annotations

import httpx
from django.conf import settings

TIMEOUT_SECONDS = 2.0

_client = httpx.Client(timeout=TIMEOUT_SECONDS)


def sandboxd_request(method: str, path: str, *, timeout: float | None = None) -> httpx.Response:
    """`method` `path` on SANDBOXD_URL with our API key; raises httpx.HTTPError."""
    return _client.request(
        method,
        f"{settings.SANDBOXD_URL.rstrip('/')}{path}",
        headers={"X-API-KEY": settings.SANDBOXD_API_KEY},
        timeout=timeout or TIMEOUT_SECONDS,
    )
