"""The staff dashboard's reads: what the fleet did over the last hour, day or week.

Everything is aggregated in the database, in a handful of GROUP BY queries over the window
(Execution.created_at is indexed), so the page costs the same with 100 000 executions as with
100 (`make bench` measures it: bench/bench_dashboard.py):

* runs per bucket by status, with CPU time and the highest peak memory per bucket;
* durations per bucket counted into the bands of the run-duration histogram, from which p50
  and p95 are interpolated per bucket as Prometheus's histogram_quantile does (SQLite has no
  percentile function); the window's exact p50/p95 come from two ordered look-ups;
* refusals by kind and code, and the busiest users and agents.

Live sandboxes and their CPU and memory come from sandboxd's own /metrics (sandboxd_metrics),
read at page load; on E2B's cloud that part says it is not available.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings
from django.db.models import Case, Count, IntegerField, Max, Q, QuerySet, Sum, Value, When
from django.db.models.functions import TruncHour, TruncMinute
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from execution.models import Execution, SecurityEvent
from execution.monitoring.metrics import DURATION_BUCKETS

Status = Execution.Status


@dataclass(frozen=True)
class Window:
    """A dashboard range: its length and the width of one chart bucket."""

    name: str
    length: dt.timedelta
    bucket: dt.timedelta


WINDOWS = {
    "hour": Window("hour", dt.timedelta(hours=1), dt.timedelta(minutes=1)),
    "day": Window("day", dt.timedelta(days=1), dt.timedelta(hours=1)),
    "week": Window("week", dt.timedelta(days=7), dt.timedelta(hours=1)),
}
TOP_N = 10
# Duration bands in ms: the run-duration histogram's bounds, and +Inf.
BAND_BOUNDS_MS = tuple(int(seconds * 1000) for seconds in DURATION_BUCKETS)
SANDBOXD_TIMEOUT_SECONDS = 2.0


def _bucket_start(moment: dt.datetime, window: Window) -> dt.datetime:
    moment = moment.astimezone(dt.UTC)
    if window.bucket == dt.timedelta(minutes=1):
        return moment.replace(second=0, microsecond=0)
    return moment.replace(minute=0, second=0, microsecond=0)


def _trunc(window: Window) -> Any:
    truncate = TruncMinute if window.bucket == dt.timedelta(minutes=1) else TruncHour
    return truncate("created_at", tzinfo=dt.UTC)


def _band_expression() -> Case:
    """The index of the duration band a run falls in (len(BAND_BOUNDS_MS): above them all)."""
    return Case(
        *(When(duration_ms__lte=bound, then=Value(i)) for i, bound in enumerate(BAND_BOUNDS_MS)),
        default=Value(len(BAND_BOUNDS_MS)),
        output_field=IntegerField(),
    )


def quantile_from_bands(counts: list[int], q: float) -> float | None:
    """The q-quantile (ms) of durations counted into bands, interpolated linearly in the band
    it falls in; the last (open) band answers its lower bound."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            lower = BAND_BOUNDS_MS[index - 1] if index > 0 else 0
            if index >= len(BAND_BOUNDS_MS):
                return float(lower)
            upper = BAND_BOUNDS_MS[index]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return float(BAND_BOUNDS_MS[-1])


def _exact_quantile(durations: QuerySet[Execution], count: int, q: float) -> int | None:
    if count == 0:
        return None
    offset = min(count - 1, int(q * count))
    return durations.order_by("duration_ms").values_list("duration_ms", flat=True)[offset]


def fleet_summary(window: Window, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Every number and series of the dashboard for `window`, JSON-ready."""
    now = now or timezone.now()
    since = now - window.length
    runs = Execution.objects.filter(created_at__gte=since)
    bucket = _trunc(window)

    labels: list[dt.datetime] = []
    start = _bucket_start(since, window)
    while start <= now:
        labels.append(start)
        start += window.bucket
    index = {moment: i for i, moment in enumerate(labels)}
    size = len(labels)
    series: dict[str, list[float]] = {
        name: [0] * size
        for name in ("total", "succeeded", "failed", "timed_out", "error", "other", "cpu_seconds")
    }
    series["memory_peak_mb"] = [0] * size

    per_bucket = (
        runs.annotate(bucket=bucket)
        .values("bucket", "status")
        .annotate(n=Count("pk"), cpu=Sum("cpu_time_ms"), peak=Max("memory_peak_bytes"))
    )
    totals: dict[str, int] = defaultdict(int)
    for row in per_bucket:
        i = index.get(_bucket_start(row["bucket"], window))
        status = row["status"]
        totals[status] += row["n"]
        if i is None:
            continue
        key = status if status in series else "other"
        series[key][i] += row["n"]
        series["total"][i] += row["n"]
        series["cpu_seconds"][i] += (row["cpu"] or 0) / 1000
        series["memory_peak_mb"][i] = max(
            series["memory_peak_mb"][i], (row["peak"] or 0) / (1024 * 1024)
        )

    bands: dict[int, list[int]] = defaultdict(lambda: [0] * (len(BAND_BOUNDS_MS) + 1))
    timed = runs.filter(duration_ms__isnull=False)
    for row in (
        timed.annotate(bucket=bucket, band=_band_expression())
        .values("bucket", "band")
        .annotate(n=Count("pk"))
    ):
        i = index.get(_bucket_start(row["bucket"], window))
        if i is not None:
            bands[i][row["band"]] += row["n"]
    p50 = [quantile_from_bands(bands[i], 0.5) if i in bands else None for i in range(size)]
    p95 = [quantile_from_bands(bands[i], 0.95) if i in bands else None for i in range(size)]

    finished = sum(totals.values()) - totals.get(Status.QUEUED, 0) - totals.get(Status.RUNNING, 0)
    timed_count = sum(sum(counts) for counts in bands.values())
    minutes = window.bucket.total_seconds() / 60

    # The audit folds repeats of a refusal into one row with a count (execution/audit.py).
    refusals = list(
        SecurityEvent.objects.filter(Q(last_seen_at__gte=since) | Q(created_at__gte=since))
        .values("kind", "code")
        .annotate(n=Sum("count"))
        .order_by("-n", "kind", "code")[: TOP_N * 2]
    )
    users = list(
        runs.values("user__username")
        .annotate(runs=Count("pk"), cpu_ms=Sum("cpu_time_ms"), failed=_failed_count())
        .order_by("-runs", "user__username")[:TOP_N]
    )
    agents = list(
        runs.filter(agent__isnull=False)
        .values("agent__name", "agent__owner__username")
        .annotate(runs=Count("pk"), cpu_ms=Sum("cpu_time_ms"), failed=_failed_count())
        .order_by("-runs", "agent__name")[:TOP_N]
    )
    return {
        "window": window.name,
        "since": since.isoformat(),
        "bucket_minutes": minutes,
        "labels": [moment.isoformat() for moment in labels],
        "series": {
            **series,
            "runs_per_minute": [n / minutes for n in series["total"]],
            "p50_ms": p50,
            "p95_ms": p95,
            "failure_rate": _rates(series["failed"], series["total"]),
            "timeout_rate": _rates(series["timed_out"], series["total"]),
        },
        "totals": {
            "runs": sum(totals.values()),
            "by_status": dict(sorted(totals.items())),
            "failure_rate": _rate(totals.get(Status.FAILED, 0), finished),
            "timeout_rate": _rate(totals.get(Status.TIMED_OUT, 0), finished),
            "error_rate": _rate(totals.get(Status.ERROR, 0), finished),
            "p50_ms": _exact_quantile(timed, timed_count, 0.5),
            "p95_ms": _exact_quantile(timed, timed_count, 0.95),
            "cpu_seconds": round(sum(series["cpu_seconds"]), 3),
            "runs_per_minute": round(
                sum(series["total"]) / (window.length.total_seconds() / 60), 2
            ),
        },
        "refusals": refusals,
        "busiest_users": users,
        "busiest_agents": agents,
    }


def _failed_count() -> Count:
    return Count("pk", filter=Q(status__in=(Status.FAILED, Status.TIMED_OUT, Status.ERROR)))


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _rates(parts: list[float], wholes: list[float]) -> list[float | None]:
    return [(p / w if w else None) for p, w in zip(parts, wholes, strict=True)]


def sandboxd_metrics() -> dict[str, Any]:
    """Live sandboxes, pooled ones, and each live sandbox's CPU and memory, from sandboxd's
    /metrics; {"available": False, "reason": …} when it cannot be read."""
    if settings.E2B_API_KEY:
        return {
            "available": False,
            "reason": "E2B's cloud: see E2B's dashboard for its sandboxes",
        }
    try:
        response = httpx.get(
            f"{settings.SANDBOXD_URL.rstrip('/')}/metrics",
            headers={"X-API-KEY": settings.SANDBOXD_API_KEY},
            timeout=SANDBOXD_TIMEOUT_SECONDS,
        )
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return {"available": False, "reason": f"sandboxd's /metrics: {type(exc).__name__}"}
    live = pooled = oom = 0.0
    sandboxes: dict[str, dict[str, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "sandboxd_sandboxes_live":
                live = sample.value
            elif sample.name == "sandboxd_sandboxes_pooled":
                pooled = sample.value
            elif sample.name == "sandboxd_oom_kills_total":
                oom = sample.value
            elif sample.name == "sandboxd_sandbox_cpu_seconds_total":
                sandboxes[sample.labels["sandbox_id"]]["cpu_seconds"] = round(sample.value, 2)
            elif sample.name == "sandboxd_sandbox_memory_bytes":
                sandboxes[sample.labels["sandbox_id"]]["memory_mb"] = round(
                    sample.value / (1024 * 1024), 1
                )
    ordered = sorted(
        ({"sandbox_id": key, **values} for key, values in sandboxes.items()),
        key=lambda row: row.get("memory_mb", 0),
        reverse=True,
    )
    return {
        "available": True,
        "live": int(live),
        "pooled": int(pooled),
        "oom_kills": int(oom),
        "sandboxes": ordered[: TOP_N * 2],
    }
