"""The one error type of the execution services: a stable code, a message, an HTTP status.

Every refusal or failure that a caller can act on is a `ToolError`. The REST API renders it as
`{"error": {"code", "message", "details"}}` with `status`; the websocket consumer sends the same
object in a `{"type": "error", "error": {...}}` frame. Codes are part of the public contract:
clients branch on them, so a code is never renamed, only added.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from execution.models import Execution

# Seconds a client is told to wait after a sandbox failure (the service retries on its own).
SANDBOX_RETRY_AFTER = 5
# An address inside an exception's text (sandboxd's internal URL, a host:port): never shown.
_INTERNAL_ADDRESS = re.compile(r"\b(?:https?|wss?)://\S+|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")


class ToolError(Exception):
    """A request the execution services refused or could not carry out.

    `code` is a stable snake_case string, `message` a sentence a person can act on, `status`
    the HTTP status that fits, `details` JSON-serialisable facts (offending value, limit, …).
    `kind` says which audit category a refusal belongs to ("validation", "authorization",
    "quota") or is None for failures that are not refusals (sandbox down, not found, …).
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int = 400,
        details: dict[str, Any] | None = None,
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details or {}
        self.kind = kind
        # Extra HTTP headers the API should send (e.g. Retry-After for 429).
        self.headers = headers or {}

    def as_dict(self) -> dict[str, Any]:
        """The `{"code", "message", "details"}` object sent to clients."""
        return {"code": self.code, "message": self.message, "details": self.details}

    def __repr__(self) -> str:
        return f"ToolError({self.code!r}, {self.message!r}, status={self.status})"


class ValidationRejected(ToolError):
    """A policy rule (validation.py) refused the input: 400 (413 for sizes), audited."""

    def __init__(
        self, code: str, message: str, details: dict[str, Any] | None = None, status: int = 400
    ) -> None:
        super().__init__(code, message, status, details, kind="validation")


def not_found(what: str, code: str | None = None) -> ToolError:
    """A 404 for an object that does not exist or belongs to someone else (never a 403)."""
    return ToolError(code or f"{what}_not_found", f"No such {what.replace('_', ' ')}.", 404)


def public_reason(reason: str) -> str:
    """`reason` (an exception's text) as a client may see it: internal addresses removed."""
    return _INTERNAL_ADDRESS.sub("<sandbox service>", reason)[:500]


def sandbox_unavailable(reason: str) -> ToolError:
    """A 503: the sandbox server cannot be reached or failed; nothing the user sent is lost."""
    return ToolError(
        "sandbox_unavailable",
        "The sandbox service is unavailable right now; try again in a moment.",
        503,
        {"reason": public_reason(reason)},
        headers={"Retry-After": str(SANDBOX_RETRY_AFTER)},
    )


def execution_failure(execution: Execution) -> ToolError:
    """The one mapping of a run that ended `error` (the sandbox failed, not the code) to what
    a waiting caller gets: 503 with the run's own code and message and a Retry-After."""
    error = execution.error_data or {}
    return ToolError(
        error.get("code") or "sandbox_unavailable",
        error.get("value") or error.get("message") or "The sandbox service failed.",
        503,
        {
            "execution_id": str(execution.id),
            "thread_id": str(execution.thread_id),
            "reason": public_reason(execution.details_data.get("reason", "")),
        },
        headers={"Retry-After": str(SANDBOX_RETRY_AFTER)},
    )
