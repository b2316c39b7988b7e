"""The client's exceptions: every refusal of the API becomes one, carrying the API's own code.

AtlasChat answers every error as `{"error": {"code", "message", "details"}}` with a matching
HTTP status (and `Retry-After` on 429 and 503). `error_from_response` turns such an answer into
the exception class of its status, so callers can catch broadly (`AtlasChatError`), by kind
(`NotFoundError`, `RateLimitError`, …) or branch on `.code` (`"path_traversal"`,
`"tool_not_allowed"`, …), which is the stable part. Fields the server adds later are kept in
`.details` and `.body`, never an error here.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed


class AtlasChatError(Exception):
    """An error answer of the API (or of the thread websocket).

    `code` is the API's stable code, `status` the HTTP status (None for a websocket error
    frame), `details` the facts it gave (limits, fields, ids), `retry_after` the seconds
    from `Retry-After` when the server sent one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if status is None else f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details = details or {}
        self.retry_after = retry_after
        self.body = body


class InvalidRequestError(AtlasChatError):
    """400: the request was refused by validation or policy (`path_traversal`, …)."""


class AuthenticationError(AtlasChatError):
    """401: no, bad or expired credentials (and the refresh token could not renew them)."""


class PermissionDeniedError(AtlasChatError):
    """403: e.g. `tool_not_allowed`, `agent_inactive`."""


class NotFoundError(AtlasChatError):
    """404: no such object of yours (another user's is "not found" too)."""


class ConflictError(AtlasChatError):
    """409: e.g. `execution_not_cancellable`."""


class PayloadTooLargeError(AtlasChatError):
    """413: `code_too_large`, `file_too_large`, `request_too_large`."""


class RateLimitError(AtlasChatError):
    """429: `throttled`, `concurrency_limit_user`, `concurrency_limit_global`; see
    `retry_after`."""


class ServerError(AtlasChatError):
    """5xx: `internal_error`, or an answer that was not the API's error shape."""


class ServiceUnavailableError(ServerError):
    """503: `sandbox_unavailable`, `sandbox_lost`; nothing stored is lost, retry later."""


class StreamError(AtlasChatError):
    """A websocket refusal: an error frame (`unsupported_language`, `token_expired`, …) or
    the server closing the socket (4401 not authenticated, 4404 not found)."""


_BY_STATUS: dict[int, type[AtlasChatError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_class_for(status: int) -> type[AtlasChatError]:
    """The exception class of an HTTP error status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else AtlasChatError


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare here, and not worth guessing


def error_from_response(response: httpx.Response) -> AtlasChatError:
    """The exception for an error answer (status >= 400).

    An answer that is not the API's shape (a proxy's HTML page, simplejwt's own body) still
    becomes the class of its status, with the code `http_<status>` or simplejwt's `code`.
    """
    body: Any
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code = error["code"]
        message = str(error.get("message") or code)
        details = error.get("details") if isinstance(error.get("details"), dict) else {}
    elif isinstance(body, dict) and isinstance(body.get("code"), str):
        code = body["code"]
        message = str(body.get("detail") or code)
        details = {}
    else:
        code = f"http_{response.status_code}"
        message = (response.text or response.reason_phrase)[:500]
        details = {}
    return error_class_for(response.status_code)(
        code,
        message,
        status=response.status_code,
        details=details,
        retry_after=_retry_after(response),
        body=body,
    )


def error_from_frame(frame: dict[str, Any]) -> StreamError:
    """The exception for a websocket error frame `{"type": "error", "error": {…}}`."""
    error = frame.get("error")
    if not isinstance(error, dict):
        error = {}
    details = error.get("details")
    if not isinstance(details, dict):
        details = {}
    retry = details.get("retry_after")
    try:
        retry_after = float(retry) if retry is not None else None
    except (TypeError, ValueError):
        retry_after = None
    code = str(error.get("code") or "stream_error")
    return StreamError(
        code,
        str(error.get("message") or code),
        details=details,
        retry_after=retry_after,
        body=frame,
    )


# The close codes the server uses to refuse a socket (see the README's websocket protocol).
CLOSE_CODES = {4401: "not_authenticated", 4404: "not_found"}


def error_from_close(closed: ConnectionClosed) -> StreamError:
    """The exception for a socket the server closed before the run was over (4401: not
    authenticated, 4404: no such thread or execution of yours)."""
    code = closed.rcvd.code if closed.rcvd else None
    reason = closed.rcvd.reason if closed.rcvd else ""
    return StreamError(
        CLOSE_CODES.get(code or 0, "connection_closed"),
        reason or f"The server closed the socket (code {code}).",
        details={"close_code": code},
    )
