"""Middleware of the project itself (the Content-Security-Policy one is in atlaschat/csp.py)."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase


class SynchronousStack:
    """Makes Django run the middleware stack in one thread under ASGI; keep it last.

    Under daphne Django builds an asynchronous stack, and each of Django's own middleware
    (``MiddlewareMixin``) then moves to a worker thread and back for its ``process_request``,
    and again for its ``process_response``: 15 thread switches for one API request with the
    stack in settings. This middleware is synchronous only, so Django adapts the stack once,
    at the top, and everything below runs in the request's thread: 6 switches. The views are
    synchronous (DRF) anyway; websockets and the MCP endpoint do not pass through here.
    ``make bench`` measures the difference (``GET /api/auth/me/`` row of bench_execution).
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)
