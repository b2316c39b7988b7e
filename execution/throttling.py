"""The one adapter from a rate limit or a cap to a refusal: 429, an integer Retry-After.

REST views (through DRF's throttles and the API's exception handler), pages, websocket
frames, agent tool calls and the MCP server all refuse through `throttled_error` /
`check_rate`, so a client sees the same 429 whatever door it used: code `throttled`, a
`Retry-After` header of whole seconds (at least 1) and the same number in
`details.retry_after`. The per-user counters are DRF's (Django's cache), shared between the
doors: a user gets no more runs by switching from REST to a websocket or to MCP.
"""

from __future__ import annotations

import math
from typing import Any

from rest_framework.throttling import SimpleRateThrottle

from execution.audit import audit_refusal
from execution.caller import Caller
from execution.models import SecurityEvent
from execution.services.errors import ToolError


def retry_after_seconds(wait: float | None) -> int:
    """A throttle's wait as whole seconds a client can sleep: at least 1."""
    return max(1, math.ceil(wait or 1))


def refusal_429(code: str, message: str, retry_after: int, **details: Any) -> ToolError:
    """A 429 ToolError in the one shape: Retry-After header and `details.retry_after`."""
    return ToolError(
        code,
        message,
        429,
        {"retry_after": retry_after, **details},
        kind=SecurityEvent.Kind.QUOTA,
        headers={"Retry-After": str(retry_after)},
    )


def throttled_error(wait: float | None) -> ToolError:
    """The refusal of a request over its rate limit."""
    seconds = retry_after_seconds(wait)
    return refusal_429("throttled", f"Too many requests; try again in {seconds} s.", seconds)


class _ThrottleSubject:
    """What DRF's user throttles read of a request, for callers outside DRF."""

    def __init__(self, caller: Caller) -> None:
        self.user = caller.user
        self.META = {"REMOTE_ADDR": caller.client_ip or ""}


def check_rate(*, throttle_class: type[SimpleRateThrottle], caller: Caller) -> None:
    """Count one request of `caller` against `throttle_class`'s rate; raise the audited
    429 `throttled` when over it."""
    throttle = throttle_class()
    if throttle.allow_request(_ThrottleSubject(caller), None):  # type: ignore[arg-type]
        return
    error = throttled_error(throttle.wait())
    audit_throttled(caller, error)
    raise error


def audit_throttled(caller: Caller, error: ToolError) -> None:
    """Record a 429 refusal (aggregated per window like every refusal)."""
    audit_refusal(
        caller=caller,
        kind=SecurityEvent.Kind.QUOTA,
        code=error.code,
        message=error.message,
        details=error.details,
    )
