"""The one oversized-body check of the HTTP entry points (REST, agent tool calls, MCP).

A body holding a file is at most 4/3 of it (base64 in JSON) plus the JSON around it: a body
larger than that is refused with 413 `request_too_large` (audited) before it is read into
memory. Django's own DATA_UPLOAD_MAX_MEMORY_SIZE is set to the same bound (settings).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from execution.audit import audit_refusal
from execution.caller import Caller
from execution.models import SecurityEvent
from execution.services.errors import ToolError

# Room for the JSON around a base64 file (keys, path, thread id, agent id).
ENVELOPE_BYTES = 64 * 1024


def max_body_bytes() -> int:
    """The largest request body accepted, in bytes (read from settings on each call)."""
    return settings.EXECUTION_MAX_FILE_BYTES * 4 // 3 + ENVELOPE_BYTES


def declared_length(meta: dict[str, Any]) -> int:
    """The request's Content-Length (0 when absent or not a number)."""
    try:
        return max(0, int(meta.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


def refuse_oversized_body(request: Any, *, caller: Caller) -> None:
    """Raise ToolError 413 `request_too_large` (audited) when the declared body is larger
    than `max_body_bytes()`."""
    length = declared_length(request.META)
    limit = max_body_bytes()
    if length <= limit:
        return
    error = ToolError(
        "request_too_large",
        f"The request is {length} bytes; at most {limit} bytes are accepted "
        f"(files at most {settings.EXECUTION_MAX_FILE_BYTES} bytes).",
        413,
        {"size": length, "limit": limit},
        kind=SecurityEvent.Kind.VALIDATION,
    )
    audit_refusal(
        caller=caller,
        kind=SecurityEvent.Kind.VALIDATION,
        code=error.code,
        message=error.message,
        details=error.details,
    )
    raise error
