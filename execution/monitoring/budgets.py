"""Daily budgets per user: runs and sandbox CPU seconds per UTC day (README, "Monitoring").

USER_DAILY_RUNS and USER_DAILY_CPU_SECONDS set the site's defaults (0: no limit); a
UserBudget row, edited in the admin, overrides either for one user. A run is refused with
429 `daily_run_budget` / `daily_cpu_budget` once the day's budget is spent, with the time it
resets (the next UTC midnight) in the message, in `details.resets_at` and as Retry-After.

What counts: every run created today that was not refused (a refused run never ran), and
the CPU time measured in their sandboxes (Execution.cpu_time_ms). The CPU budget is checked
before a run, so the run that crosses it finishes; the ones after it are refused. Runs in
flight count as runs at once and as CPU when they end.

The check runs in the same transaction as the concurrency caps and the insert of the run
(execution/services/tool_executor.py), with the same slack on PostgreSQL (quotas.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Count, Sum
from django.utils import timezone

from execution.models import Execution, UserBudget
from execution.services.errors import ToolError


@dataclass(frozen=True)
class DailyUsage:
    """A user's use today and their limits (None: no limit), and when the day resets."""

    runs: int
    cpu_seconds: float
    runs_limit: int | None
    cpu_seconds_limit: int | None
    resets_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "runs_limit": self.runs_limit,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "cpu_seconds_limit": self.cpu_seconds_limit,
            "resets_at": self.resets_at.isoformat().replace("+00:00", "Z"),
        }


def day_bounds(now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The UTC day containing `now`: (its midnight, the next midnight)."""
    start = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + dt.timedelta(days=1)


def limits_for(user: User) -> tuple[int | None, int | None]:
    """(runs per day, CPU seconds per day) for `user`; None where there is no limit."""
    runs, cpu = settings.USER_DAILY_RUNS, settings.USER_DAILY_CPU_SECONDS
    own = UserBudget.objects.filter(user=user).values("daily_runs", "daily_cpu_seconds").first()
    if own is not None:
        if own["daily_runs"] is not None:
            runs = own["daily_runs"]
        if own["daily_cpu_seconds"] is not None:
            cpu = own["daily_cpu_seconds"]
    return (runs or None), (cpu or None)


def daily_usage(user: User, *, now: dt.datetime | None = None) -> DailyUsage:
    start, resets_at = day_bounds(now or timezone.now())
    totals = (
        Execution.objects.filter(user=user, created_at__gte=start)
        .exclude(status=Execution.Status.REJECTED)
        .aggregate(runs=Count("pk"), cpu_ms=Sum("cpu_time_ms"))
    )
    runs_limit, cpu_limit = limits_for(user)
    return DailyUsage(
        runs=totals["runs"],
        cpu_seconds=(totals["cpu_ms"] or 0) / 1000,
        runs_limit=runs_limit,
        cpu_seconds_limit=cpu_limit,
        resets_at=resets_at,
    )


def _budget_error(code: str, message: str, usage: DailyUsage, limit: int, used: float) -> ToolError:
    now = timezone.now()
    retry_after = max(1, int((usage.resets_at - now).total_seconds()) + 1)
    resets = usage.resets_at.strftime("%Y-%m-%d %H:%M UTC")
    return ToolError(
        code,
        f"{message} It resets at {resets} (in {dt.timedelta(seconds=retry_after)}).",
        429,
        {"limit": limit, "used": used, "resets_at": usage.as_dict()["resets_at"]},
        kind="quota",
        headers={"Retry-After": str(retry_after)},
    )


def check_daily_budget(user: User) -> None:
    """Raise ToolError 429 when `user` has spent today's runs or CPU seconds."""
    if not (settings.USER_DAILY_RUNS or settings.USER_DAILY_CPU_SECONDS) and not (
        UserBudget.objects.filter(user=user).exists()
    ):
        return  # no budget anywhere: no counting either
    usage = daily_usage(user)
    if usage.runs_limit is not None and usage.runs >= usage.runs_limit:
        raise _budget_error(
            "daily_run_budget",
            f"You have used all {usage.runs_limit} runs of your daily budget.",
            usage,
            usage.runs_limit,
            usage.runs,
        )
    if usage.cpu_seconds_limit is not None and usage.cpu_seconds >= usage.cpu_seconds_limit:
        raise _budget_error(
            "daily_cpu_budget",
            f"You have used all {usage.cpu_seconds_limit} CPU seconds of your daily budget.",
            usage,
            usage.cpu_seconds_limit,
            round(usage.cpu_seconds, 3),
        )
