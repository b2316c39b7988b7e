"""The staff dashboard with 100 000 executions in the database: does it load in under 1 s?

An SQLite file (the embedded default) and, when PostgreSQL answers on 127.0.0.1:5432, a
scratch PostgreSQL database are seeded with 100 000 executions spread over the last week
(60 users, 6 agents, every status, durations, CPU times and peaks) and 5 000 refusals. Then,
interleaved in one loop so that the machine's load hits both alike:

* candidate: `GET /staff/dashboard/?range=hour|day|week` as staff, through Django's whole
  stack (middleware, view, template), in this process;
* baseline: `GET /admin/execution/execution/`, the admin's list of the same table (a page
  staff already use, one COUNT and one page of rows).

Each row reports p50/p95 and the share of the time spent in SQL (from a query wrapper), which
says where the time goes. The sandboxd part of the page is measured against an address where
nothing listens (a refused connection costs well under a millisecond); the target is for the
database part, which grows with the table. `main()` prints the table and writes
`bench/results/dashboard.json`.

Where the time went (profiled with cProfile and per-query timings on this data): the first
version took 8.7 s for the week on SQLite. Django's `TruncHour` is a Python function SQLite
calls for every row (2.2 s per scan, two scans); the aggregates read the wide rows through
non-covering indexes (`COUNT(id)` needs the UUID column; SQLite preferred the status index);
exact percentiles sorted the window by a table scan (2 s); the busiest users joined auth_user
per row; and each call to sandboxd built an httpx client with its TLS context (~100 ms under
load). Now: epoch arithmetic in SQL, one scan over a covering index with `COUNT(*)` and a
closed range, percentiles from the duration bands, names fetched for the top ten only, one
shared client.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "dashboard.json"

EXECUTIONS = 100_000
REFUSALS = 5_000
USERS = 60
AGENTS = 6
ROUNDS = 15
WARMUP = 2
TARGET_MS = 1000
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/atlaschat_bench_dashboard"
# Statuses in proportions a busy site might see.
STATUS_WEIGHTS = {
    "succeeded": 80,
    "failed": 12,
    "timed_out": 3,
    "error": 1,
    "cancelled": 1,
    "rejected": 3,
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def postgres_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        return False
    return True


def _setup_django(var_dir: Path, database_url: str | None) -> None:
    sys.path.insert(0, str(ROOT))
    for name in ("DATABASE_URL", "REDIS_URL", "E2B_API_KEY", "PROMETHEUS_MULTIPROC_DIR"):
        os.environ.pop(name, None)
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    os.environ["ATLASCHAT_VAR_DIR"] = str(var_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "atlaschat.settings"
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    # Nothing listens there: the live-sandbox panel answers "not available" at once.
    os.environ["SANDBOXD_URL"] = "http://127.0.0.1:9"
    os.environ["ALLOWED_HOSTS"] = "testserver"
    import django

    django.setup()


def seed() -> Any:
    """Fill the database; return the staff user."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from execution.models import Agent, Execution, SecurityEvent, Thread

    rng = random.Random(16)
    user_model = get_user_model()
    staff = user_model.objects.create(username="bench-staff", is_staff=True)
    users = user_model.objects.bulk_create(
        [user_model(username=f"user{n:03}") for n in range(USERS)]
    )
    threads = Thread.objects.bulk_create([Thread(owner=u, title="bench") for u in users])
    agents = Agent.objects.bulk_create(
        [
            Agent(owner=users[n], name=f"agent{n}", allowed_tools=["execute_code"])
            for n in range(AGENTS)
        ]
    )
    now = timezone.now()
    statuses = list(STATUS_WEIGHTS)
    weights = list(STATUS_WEIGHTS.values())
    batch: list[Execution] = []
    for n in range(EXECUTIONS):
        index = rng.randrange(USERS)
        status = rng.choices(statuses, weights)[0]
        ran = status != "rejected"
        duration = int(rng.lognormvariate(4, 1.2)) if ran else None
        batch.append(
            Execution(
                thread=threads[index], user=users[index],
                agent=agents[index] if index < AGENTS and n % 3 == 0 else None,
                language=rng.choice(["python", "javascript", "typescript", "bash"]),
                code="print(1)", status=status, duration_ms=duration,
                cpu_time_ms=(duration // 2 if duration else None),
                memory_peak_bytes=(rng.randrange(40, 400) << 20) if ran else None,
            )
        )  # fmt: skip
        if len(batch) == 5000:
            Execution.objects.bulk_create(batch)
            batch = []
    Execution.objects.bulk_create(batch)
    # created_at is auto_now_add: spread the rows over the week afterwards, in one UPDATE
    # per slice of ids (uniformly: each slice gets its own minutes).
    ids = list(Execution.objects.values_list("pk", flat=True))
    rng.shuffle(ids)
    week_minutes = 7 * 24 * 60
    per_minute: dict[int, list[Any]] = {}
    for position, pk in enumerate(ids):
        per_minute.setdefault(position * week_minutes // len(ids), []).append(pk)
    for minute, pks in per_minute.items():
        Execution.objects.filter(pk__in=pks).update(
            created_at=now - dt.timedelta(minutes=minute, seconds=rng.randrange(60))
        )
    SecurityEvent.objects.bulk_create(
        [
            SecurityEvent(
                kind=rng.choice(["validation", "authorization", "quota"]),
                code=rng.choice(["throttled", "dangerous_pattern", "daily_run_budget"]),
                message="bench",
                user=rng.choice(users),
                last_seen_at=now,
            )
            for _ in range(REFUSALS)
        ]
    )
    return staff


@contextmanager
def sql_timer() -> Iterator[list[float]]:
    """Seconds spent executing SQL while inside (summed into the yielded one-item list)."""
    from django.db import connection

    spent = [0.0]

    def wrapper(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            spent[0] += time.perf_counter() - started

    with connection.execute_wrapper(wrapper):
        yield spent


def measure(staff: Any) -> dict[str, dict[str, float]]:
    from django.test import Client

    client = Client()
    client.force_login(staff)
    pages = {
        "dashboard, last hour": "/staff/dashboard/?range=hour",
        "dashboard, last day": "/staff/dashboard/?range=day",
        "dashboard, last week": "/staff/dashboard/?range=week",
        "baseline: admin execution list": "/admin/execution/execution/",
    }
    totals: dict[str, list[float]] = {name: [] for name in pages}
    sql: dict[str, list[float]] = {name: [] for name in pages}
    for round_ in range(WARMUP + ROUNDS):
        for name, url in pages.items():  # interleaved: each round visits every page
            with sql_timer() as spent:
                started = time.perf_counter()
                response = client.get(url)
                elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code}")
            if round_ >= WARMUP:
                totals[name].append(elapsed * 1000)
                sql[name].append(spent[0] * 1000)
    baseline = statistics.median(totals["baseline: admin execution list"])
    return {
        name: {
            "n": len(values),
            "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(percentile(values, 0.95), 1),
            "sql_share": round(statistics.median(sql[name]) / statistics.median(values), 2),
            "vs_baseline": round(statistics.median(values) / baseline, 2),
        }
        for name, values in totals.items()
    }


def run_on(database: str) -> dict[str, Any]:
    """Seed and measure in a fresh process's Django; `database` is "sqlite" or "postgresql"."""
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from django.db import transaction

    started = time.perf_counter()
    with transaction.atomic():
        staff = seed()
    seeded_s = time.perf_counter() - started
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    rows = measure(staff)
    return {"database": database, "seed_seconds": round(seeded_s, 1), "rows": rows}


def render(result: dict[str, Any]) -> str:
    lines = [
        f"\n{result['database']}: {EXECUTIONS} executions, {REFUSALS} refusals "
        f"(seeded in {result['seed_seconds']} s), {ROUNDS} interleaved rounds",
        f"{'page':<34}{'p50 ms':>9}{'p95 ms':>9}{'SQL share':>11}{'vs baseline':>13}",
    ]
    for name, row in result["rows"].items():
        lines.append(
            f"{name:<34}{row['p50_ms']:>9}{row['p95_ms']:>9}{row['sql_share']:>11}"
            f"{row['vs_baseline']:>12}x"
        )
    week = result["rows"]["dashboard, last week"]["p95_ms"]
    verdict = "met" if week < TARGET_MS else "MISSED"
    lines.append(f"target: the week's page under {TARGET_MS} ms at p95: {verdict} ({week} ms)")
    return "\n".join(lines)


def _child(database: str, out: Path) -> None:
    """Run one database's bench in this (fresh) process; write its result to `out`."""
    with tempfile.TemporaryDirectory(prefix="atlaschat-bench-dashboard-") as tmp:
        url = None
        if database == "postgresql":
            url = POSTGRES_URL
            _create_postgres_database()
        try:
            _setup_django(Path(tmp), url)
            out.write_text(json.dumps(run_on(database)))
        finally:
            if url:
                from django.db import connections

                connections.close_all()
                _drop_postgres_database()


def _admin_connection() -> Any:
    import psycopg

    return psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True)


def _create_postgres_database() -> None:
    with _admin_connection() as admin:
        admin.execute("DROP DATABASE IF EXISTS atlaschat_bench_dashboard")
        admin.execute("CREATE DATABASE atlaschat_bench_dashboard")


def _drop_postgres_database() -> None:
    with _admin_connection() as admin:
        admin.execute("DROP DATABASE IF EXISTS atlaschat_bench_dashboard")


def main() -> None:
    """Each database in a process of its own (Django is configured once per process)."""
    import subprocess

    databases = ["sqlite"] + (["postgresql"] if postgres_answers() else [])
    results: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for database in databases:
            out = Path(tmp) / f"{database}.json"
            subprocess.run(
                [sys.executable, __file__, "--child", database, str(out)], check=True, cwd=ROOT
            )
            result = json.loads(out.read_text())
            print(render(result))
            results.append(result)
    machine = {
        "cpus": os.cpu_count(),
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
    }
    print(
        f"\n{machine['cpus']} CPUs, load average {machine['load_average_1min_before']} before "
        f"and {machine['load_average_1min_after']} after"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"results": results, "machine": machine}, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
