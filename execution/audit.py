"""The audit trail of refusals: one function writes every SecurityEvent, bounded.

Every refusal an entry point or a service makes (validation, authorization, quota) is
recorded through `audit_refusal`, in one shape. The trail cannot be flooded: a refusal
repeating one already recorded in the last SECURITY_EVENT_WINDOW_SECONDS (same kind, code,
user, agent, source, client IP and thread) adds one to that row's `count` and moves its
`last_seen_at`, instead of adding a row. So a socket sending a thousand bad frames costs one
row per window, and the admin still shows how many there were.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from execution.models import Execution, SecurityEvent, Thread
from execution.monitoring import metrics

if TYPE_CHECKING:
    from execution.caller import Caller

logger = logging.getLogger(__name__)


def audit_refusal(
    *,
    caller: Caller,
    kind: str,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    thread: Thread | None = None,
    execution: Execution | None = None,
) -> SecurityEvent:
    """Record one refusal and return its row (a fresh one, or the window's row counted up).

    A thread or execution deleted while the refusal was being recorded (a refusal racing a
    thread delete) does not fail the request: the row is stored without the link, and the
    id stays in `details`.
    """
    metrics.record_refusal(kind=kind, code=code[:64])
    now = timezone.now()
    user = caller.authenticated_user
    details = dict(details or {})
    if caller.where:
        details.setdefault("path", caller.where)
    key: dict[str, Any] = {
        "kind": kind,
        "code": code[:64],
        "user": user,
        "agent": caller.agent,
        "source": caller.source,
        "client_ip": caller.client_ip,
        "thread_id": thread.pk if thread is not None else None,
    }
    window = dt.timedelta(seconds=settings.SECURITY_EVENT_WINDOW_SECONDS)
    # One statement, so the write path stays short under SQLite's single writer. A repeat
    # counts up the window's row even when it names another (refused) run: the row keeps
    # the first one's link, and the runs themselves are in the history.
    recent = SecurityEvent.objects.filter(**key, created_at__gte=now - window).order_by(
        "-created_at"
    )[:1]
    counted = SecurityEvent.objects.filter(pk__in=recent.values("pk")).update(
        count=F("count") + 1, last_seen_at=now
    )
    if counted:
        found = SecurityEvent.objects.filter(**key).order_by("-created_at").first()
        if found is not None:  # else it was deleted meanwhile: record this one afresh
            return found
    row = SecurityEvent(
        **key, execution=execution, message=message, details=details, last_seen_at=now
    )
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        # The thread or execution went away between the refusal and this insert.
        logger.info("audit: %s recorded without its deleted thread/execution", code)
        if thread is not None:
            details.setdefault("thread_id", str(thread.pk))
        if execution is not None:
            details.setdefault("execution_id", str(execution.pk))
        row = SecurityEvent(
            **{**key, "thread_id": None}, message=message, details=details, last_seen_at=now
        )
        row.save()
    return row
