"""Concurrency caps on runs (DESIGN.md layer 3): refuse with 429 and Retry-After, never queue
without bound.

The count is of executions that are `queued` or `running` in the database, so the caps hold
across server processes. With SQLite's IMMEDIATE transactions (settings) the count and the
insert of the new execution happen under one write lock; on PostgreSQL two requests racing
for the last slot may both get it, which overshoots a cap by at most the number of racing
processes: an acceptable slack for a limit that protects capacity, not security.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Count, Q

from execution.models import Execution
from execution.services.errors import ToolError

ACTIVE_STATUSES = (Execution.Status.QUEUED, Execution.Status.RUNNING)


def _quota_error(code: str, message: str, limit: int) -> ToolError:
    retry_after = settings.EXECUTION_CONCURRENCY_RETRY_AFTER
    return ToolError(
        code,
        message,
        429,
        {"limit": limit, "retry_after": retry_after},
        kind="quota",
        headers={"Retry-After": str(retry_after)},
    )


def check_run_concurrency(user: AbstractBaseUser) -> None:
    """Raise ToolError 429 (`concurrency_limit_user` or `concurrency_limit_global`) when a new
    run of `user` would exceed EXECUTION_USER_CONCURRENCY or EXECUTION_GLOBAL_CONCURRENCY."""
    counts = Execution.objects.filter(status__in=ACTIVE_STATUSES).aggregate(
        everyone=Count("pk"), mine=Count("pk", filter=Q(user=user))
    )
    user_limit = settings.EXECUTION_USER_CONCURRENCY
    if counts["mine"] >= user_limit:
        raise _quota_error(
            "concurrency_limit_user",
            f"You already have {user_limit} runs in progress; wait for one to finish.",
            user_limit,
        )
    global_limit = settings.EXECUTION_GLOBAL_CONCURRENCY
    if counts["everyone"] >= global_limit:
        raise _quota_error(
            "concurrency_limit_global",
            "The server is running as many programs as it allows; try again shortly.",
            global_limit,
        )
