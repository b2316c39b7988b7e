"""Password guessing is limited by django-axes, per account and per client IP.

Every door that checks a password goes through `django.contrib.auth.authenticate` with the
request: the JWT token endpoint, the login page and the admin's login. django-axes counts
the failures (AXES_* settings: LOGIN_FAILURE_LIMIT failures for one username, or from one
IP, lock that username or IP out for LOGIN_LOCKOUT_MINUTES), stores them in its own
tables (one row per username and IP, counted up, so guessing cannot grow the database
without bound) and refuses a locked-out attempt before any password is hashed, so guessing
is no cheap way to load the server either. A lock-out is answered 429 with Retry-After
(the API's error shape under /api/) and audited once per window as a quota SecurityEvent
`login_locked_out`.
"""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.conf import settings
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse

from execution.audit import audit_refusal
from execution.caller import Caller
from execution.models import SecurityEvent, Source
from execution.services.errors import ToolError

LOCKED_OUT_CODE = "login_locked_out"


def lockout_seconds() -> int:
    """How long a lock-out lasts, in whole seconds (the Retry-After)."""
    return max(1, int(settings.AXES_COOLOFF_TIME.total_seconds()))


def lockout_error() -> ToolError:
    """The refusal of a login attempt while locked out: 429 with Retry-After."""
    seconds = lockout_seconds()
    return ToolError(
        LOCKED_OUT_CODE,
        f"Too many failed logins for this account or from this address; try again in "
        f"{seconds // 60 or 1} minute(s).",
        429,
        {"retry_after": seconds},
        kind=SecurityEvent.Kind.QUOTA,
        headers={"Retry-After": str(seconds)},
    )


def lockout_response(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the response to a locked-out login attempt."""
    error = lockout_error()
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"error": error.as_dict()}, status=error.status)
    else:
        response = HttpResponse(error.message, status=error.status, content_type="text/plain")
    for name, value in error.headers.items():
        response[name] = value
    return response


@receiver(user_locked_out)
def audit_lockout(sender: Any, request: Any, username: str | None, **kwargs: Any) -> None:
    """Record a lock-out (repeats within the audit window count up on one row)."""
    path = str(getattr(request, "path", ""))
    caller = Caller.from_request(
        request, source=Source.API if path.startswith("/api/") else Source.BROWSER
    )
    error = lockout_error()
    audit_refusal(
        caller=caller,
        kind=SecurityEvent.Kind.QUOTA,
        code=error.code,
        message=error.message,
        details={"username": (username or "")[:150]},
    )
