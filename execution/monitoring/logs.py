"""Logs an operator can use: with LOG_FORMAT=json, one JSON object per line, and one line per
request and per run carrying its ids (request, user, thread, execution, sandbox), its duration
and its outcome. Plain text (the default) keeps the usual `LEVEL logger: message` lines.

The ids travel as `extra` fields of the log record (`logger.info(..., extra={...})`); the
JSON formatter writes every field in LOG_FIELDS that a record carries.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

request_logger = logging.getLogger("atlaschat.request")

LOG_FIELDS = (
    "event",
    "request_id",
    "method",
    "path",
    "status",
    "user_id",
    "thread_id",
    "execution_id",
    "sandbox_id",
    "agent_id",
    "language",
    "source",
    "duration_ms",
    "outcome",
    "cpu_time_ms",
    "memory_peak_bytes",
)
REQUEST_ID_HEADER = "X-Request-ID"
# A request id sent by a proxy is kept when it looks like one (no log injection through it).
MAX_REQUEST_ID_LENGTH = 64


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the LOG_FIELDS it has, and
    the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in LOG_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _request_id(request: HttpRequest) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    if 0 < len(given) <= MAX_REQUEST_ID_LENGTH and all(c.isalnum() or c in "-_." for c in given):
        return given
    return uuid.uuid4().hex


class RequestLogMiddleware:
    """Gives each request an id (kept from X-Request-ID or made, sent back in the response)
    and, with LOG_FORMAT=json, logs one line for it when it is answered."""

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self.__acall__(request)
        started = time.monotonic()
        request.request_id = _request_id(request)  # type: ignore[attr-defined]
        response = self.get_response(request)
        return self._done(request, response, started)  # type: ignore[arg-type]

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.monotonic()
        request.request_id = _request_id(request)  # type: ignore[attr-defined]
        response = await self.get_response(request)  # type: ignore[misc]
        return self._done(request, response, started)

    def _done(
        self, request: HttpRequest, response: HttpResponseBase, started: float
    ) -> HttpResponseBase:
        request_id: str = request.request_id  # type: ignore[attr-defined]
        response[REQUEST_ID_HEADER] = request_id
        if settings.LOG_FORMAT == "json":
            user = getattr(request, "user", None)
            kwargs = request.resolver_match.kwargs if request.resolver_match else {}
            thread_id = kwargs.get("thread_id") or kwargs.get("thread_pk")
            status = response.status_code
            request_logger.info(
                "%s %s %s",
                request.method,
                request.path,
                status,
                extra={
                    "event": "request",
                    "request_id": request_id,
                    "method": request.method,
                    "path": request.path[:300],
                    "status": status,
                    "user_id": user.pk if user is not None and user.is_authenticated else None,
                    "thread_id": thread_id,
                    "execution_id": kwargs.get("execution_id"),
                    "duration_ms": round((time.monotonic() - started) * 1000, 1),
                    "outcome": "ok" if status < 400 else "refused" if status < 500 else "error",
                },
            )
        return response
