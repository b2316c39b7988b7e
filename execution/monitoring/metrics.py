"""The Django side's Prometheus metrics, correct across several web worker processes.

prometheus_client's multiprocess mode: every process writes its samples to memory-mapped
files in PROMETHEUS_MULTIPROC_DIR and `/metrics` (any worker) merges them, so a Prometheus
server scrapes the whole site as one target. `scripts/run.sh` creates that directory empty
at each start (files left by stopped processes would count twice), and the test settings
point it at a fresh temporary directory. Without it (a bare `daphne` started by hand) each
process serves only its own counts; the README says so.

Which value is fed from where, so that each event is counted once:

* runs by status, language and source, run duration and queue wait, the sandbox backend's
  errors: `record_run_finished`, called once when a run reaches its final status (the run
  path) and, for runs refused before they started, from the Execution row's creation;
* 429s by reason and security events by kind: in execution/audit.py's `audit_refusal`, which
  records every refusal (every 429 is a refusal of kind `quota`); counted per refusal, also
  when the audit folds repeats into one row;
* installs by outcome: from each PackageInstall reaching a final status;
* websocket connections open, sandbox sessions created, reconnected and restored: the
  small hooks named after them, called by the consumers and the sandbox sessions.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Runs last from milliseconds (a warm print) to EXECUTION_MAX_TIMEOUT (300 s by default).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Codes of infra errors that mean the sandbox backend failed (execution/services/runs.py).
BACKEND_ERROR_CODES = frozenset({"sandbox_unavailable", "sandbox_lost", "sandbox_rate_limited"})

RUNS = Counter(
    "atlaschat_runs",
    "Runs that reached a final status, by status, language and source",
    ["status", "language", "source"],
)
RUN_DURATION = Histogram(
    "atlaschat_run_duration_seconds",
    "Time from a run's start to its end in the sandbox, by language",
    ["language"],
    buckets=DURATION_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "atlaschat_run_queue_wait_seconds",
    "Time a run waited between its request and its start (thread lock, sandbox, context)",
    buckets=WAIT_BUCKETS,
)
REFUSALS_429 = Counter(
    "atlaschat_refusals_429",
    "Requests refused with 429, by reason (the error code: throttled, concurrency_limit_*, "
    "daily_*_budget, …)",
    ["reason"],
)
SECURITY_EVENTS = Counter(
    "atlaschat_security_events",
    "Refused requests recorded for the audit, by kind (validation, authorization, quota)",
    ["kind"],
)
INSTALLS = Counter(
    "atlaschat_package_installs",
    "Package installs that reached a final status, by language and outcome",
    ["language", "outcome"],
)
WEBSOCKETS_OPEN = Gauge(
    "atlaschat_websocket_connections_open",
    "Websocket connections open now (summed over the live worker processes)",
    multiprocess_mode="livesum",
)
SANDBOX_SESSIONS = Counter(
    "atlaschat_sandbox_sessions",
    "Thread sandboxes taken into use, by how (created new, reconnected to, restored: created "
    "for a thread that had one before, its files and packages put back)",
    ["outcome"],
)
BACKEND_ERRORS = Counter(
    "atlaschat_sandbox_backend_errors",
    "Runs that ended because the sandbox backend failed, by error code",
    ["code"],
)


def record_run_finished(
    *,
    status: str,
    language: str,
    source: str,
    duration_ms: int | None = None,
    queue_wait_seconds: float | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    """Count one run that reached its final `status` (call exactly once per run)."""
    RUNS.labels(status, language or "unknown", source).inc()
    if duration_ms is not None:
        RUN_DURATION.labels(language or "unknown").observe(duration_ms / 1000)
    if queue_wait_seconds is not None:
        QUEUE_WAIT.observe(max(0.0, queue_wait_seconds))
    code = (error or {}).get("code")
    if isinstance(code, str) and code in BACKEND_ERROR_CODES:
        BACKEND_ERRORS.labels(code).inc()


def record_refusal(*, kind: str, code: str) -> None:
    """Count one refusal recorded for the audit (and, for quota refusals, one 429)."""
    SECURITY_EVENTS.labels(kind).inc()
    if kind == "quota":
        REFUSALS_429.labels(code).inc()


def record_install_finished(*, language: str, outcome: str) -> None:
    INSTALLS.labels(language, outcome).inc()


def record_sandbox_session(outcome: str) -> None:
    """`outcome`: created, reconnected or restored."""
    SANDBOX_SESSIONS.labels(outcome).inc()


def websocket_opened() -> None:
    WEBSOCKETS_OPEN.inc()


def websocket_closed() -> None:
    WEBSOCKETS_OPEN.dec()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition() -> tuple[bytes, str]:
    """(body, content type) of a scrape: every live and past worker's samples merged when
    multiprocess mode is on, else this process's own."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Drop a stopped worker's live gauges (its counters stay, as Prometheus expects)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid)
