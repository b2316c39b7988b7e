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
from django.contrib.auth import get_user_model
from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    F,
    Func,
    IntegerField,
    Max,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from execution.models import Agent, Execution, SecurityEvent
from execution.monitoring.metrics import DURATION_BUCKETS
from execution.monitoring.sandboxd_api import sandboxd_request

Status = Execution.Status
User = get_user_model()


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
# Runs whose duration counts in the percentiles: those that ran to an end in the sandbox.
TIMED_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT)
# Duration bands in ms: the run-duration histogram's bounds, and +Inf.
BAND_BOUNDS_MS = tuple(int(seconds * 1000) for seconds in DURATION_BUCKETS)


class EpochBucket(Func):
    """`created_at` as a whole number of `seconds`-long buckets since the epoch.

    Computed by the database's own date functions (SQLite's strftime, PostgreSQL's extract):
    Django's Trunc on SQLite calls a Python function for every row, which was most of the
    week's page time with 100 000 rows (bench/bench_dashboard.py).
    """

    output_field = BigIntegerField()

    def __init__(self, expression: Any, seconds: int) -> None:
        super().__init__(expression, Value(seconds))

    def _parts(self, compiler: Any) -> tuple[str, list[Any], int]:
        column, seconds = self.get_source_expressions()
        column_sql, params = compiler.compile(column)
        return column_sql, list(params), int(seconds.value)

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        column_sql, params, seconds = self._parts(compiler)
        # '%%s': a literal % in SQL that Django passes through its parameter formatting.
        return f"(CAST(strftime('%%s', {column_sql}) AS INTEGER) / {seconds})", params

    def as_sql(
        self,
        compiler: Any,
        connection: Any,
        function: str | None = None,
        template: str | None = None,
        arg_joiner: str | None = None,
        **extra_context: Any,
    ) -> Any:
        column_sql, params, seconds = self._parts(compiler)
        return f"CAST(FLOOR(EXTRACT(EPOCH FROM {column_sql}) / {seconds}) AS BIGINT)", params


def _bucket_number(moment: dt.datetime, window: Window) -> int:
    return int(moment.timestamp()) // int(window.bucket.total_seconds())


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


def _rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


def fleet_summary(window: Window, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Every number and series of the dashboard for `window`, JSON-ready."""
    now = now or timezone.now()
    since = now - window.length
    # Both ends of the window: with a closed range SQLite reads the dashboard index (it
    # covers every column used, counted with COUNT(*)); with `>=` alone it scanned another.
    runs = Execution.objects.filter(created_at__gte=since, created_at__lte=now)
    bucket_seconds = int(window.bucket.total_seconds())
    first = _bucket_number(since, window)
    size = _bucket_number(now, window) - first + 1
    labels = [dt.datetime.fromtimestamp((first + i) * bucket_seconds, dt.UTC) for i in range(size)]
    series: dict[str, list[float]] = {
        name: [0] * size
        for name in ("total", "succeeded", "failed", "timed_out", "error", "other", "cpu_seconds")
    }
    series["memory_peak_mb"] = [0] * size
    bands: dict[int, list[int]] = defaultdict(lambda: [0] * (len(BAND_BOUNDS_MS) + 1))
    totals: dict[str, int] = defaultdict(int)

    # One scan of the window (the dashboard index covers it): counts per bucket, status and
    # duration band, with CPU time and the highest peak.
    for row in (
        runs.annotate(bucket=EpochBucket("created_at", bucket_seconds), band=_band_expression())
        .values("bucket", "status", "band")
        .annotate(n=Count("*"), cpu=Sum("cpu_time_ms"), peak=Max("memory_peak_bytes"))
        .order_by()
    ):
        status, n = row["status"], row["n"]
        totals[status] += n
        i = row["bucket"] - first
        if not 0 <= i < size:
            continue
        series[status if status in series else "other"][i] += n
        series["total"][i] += n
        series["cpu_seconds"][i] += (row["cpu"] or 0) / 1000
        peak_mb = (row["peak"] or 0) / (1024 * 1024)
        series["memory_peak_mb"][i] = max(series["memory_peak_mb"][i], peak_mb)
        if status in TIMED_STATUSES:
            bands[i][row["band"]] += n
    p50 = [quantile_from_bands(bands[i], 0.5) if i in bands else None for i in range(size)]
    p95 = [quantile_from_bands(bands[i], 0.95) if i in bands else None for i in range(size)]

    finished = sum(totals.values()) - totals.get(Status.QUEUED, 0) - totals.get(Status.RUNNING, 0)
    # The window's p50/p95 from the same bands, summed (an ORDER BY over the window's rows
    # cost more than everything else together on SQLite, which sorts them by a table scan).
    window_bands = [sum(column) for column in zip(*bands.values(), strict=True)] or [0]
    minutes = window.bucket.total_seconds() / 60

    # The audit folds repeats of a refusal into one row with a count (execution/audit.py).
    refusals = list(
        SecurityEvent.objects.filter(Q(last_seen_at__gte=since) | Q(created_at__gte=since))
        .values("kind", "code")
        .annotate(n=Sum("count"))
        .order_by("-n", "kind", "code")[: TOP_N * 2]
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
            "p50_ms": _rounded(quantile_from_bands(window_bands, 0.5)),
            "p95_ms": _rounded(quantile_from_bands(window_bands, 0.95)),
            "cpu_seconds": round(sum(series["cpu_seconds"]), 3),
            "runs_per_minute": round(
                sum(series["total"]) / (window.length.total_seconds() / 60), 2
            ),
        },
        "refusals": refusals,
        "busiest_users": _busiest(
            runs, "user", User.objects.values("pk", user__username=F("username"))
        ),
        "busiest_agents": _busiest(
            runs.filter(agent__isnull=False),
            "agent",
            Agent.objects.values(
                "pk", agent__name=F("name"), agent__owner__username=F("owner__username")
            ),
        ),
    }


def _busiest(
    runs: QuerySet[Execution],
    key: str,
    names: QuerySet[Any, Any],
) -> list[dict[str, Any]]:
    """The TOP_N users (or agents) with the most runs, each row with the `names` row (a
    values() queryset with "pk") of its key: grouped by id over the index, then names looked
    up for those few only (a join per row cost as much as the grouping)."""
    # Grouped by `key + 0`, not the column: grouping by the column itself makes SQLite walk
    # that column's index in order and fetch every row from the table; the expression makes
    # it read the window from the dashboard index alone and sort the few groups.
    # (Agents have UUID keys, and few runs: their own index serves them.)
    group = F(f"{key}_id") + 0 if key == "user" else F(f"{key}_id")
    top: list[dict[str, Any]] = [
        dict(row)
        for row in runs.annotate(group=group)
        .values("group")
        .annotate(runs=Count("*"), cpu_ms=Sum("cpu_time_ms"), failed=_failed_count())
        .order_by("-runs", "group")[:TOP_N]
    ]
    found: dict[Any, dict[str, Any]] = {
        row["pk"]: dict(row) for row in names.filter(pk__in=[r["group"] for r in top])
    }
    busiest = []
    for row in top:
        named = {k: v for k, v in found.get(row.pop("group"), {}).items() if k != "pk"}
        busiest.append({**named, **row})
    return busiest


def _failed_count() -> Count:
    return Count("status", filter=Q(status__in=(Status.FAILED, Status.TIMED_OUT, Status.ERROR)))


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
        response = sandboxd_request("GET", "/metrics")
        response.raise_for_status()
    except httpx.HTTPError as exc:
        return {"available": False, "reason": f"sandboxd's /metrics: {type(exc).__name__}"}
    live = pooled = oom = 0.0
    sandboxes: dict[str, dict[str, Any]] = defaultdict(dict)
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
        key=lambda row: float(row.get("memory_mb", 0)),
        reverse=True,
    )
    return {
        "available": True,
        "live": int(live),
        "pooled": int(pooled),
        "oom_kills": int(oom),
        "sandboxes": ordered[: TOP_N * 2],
    }
