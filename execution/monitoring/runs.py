"""What happens when a run reaches its final status: its metrics and its log line."""

from __future__ import annotations

import logging

from execution.models import Execution
from execution.monitoring import metrics

run_logger = logging.getLogger("atlaschat.run")


def run_finished(execution: Execution) -> None:
    """Count `execution` (now final) in the metrics and log one line for it. Call once."""
    wait = (
        (execution.started_at - execution.created_at).total_seconds()
        if execution.started_at and execution.created_at
        else None
    )
    metrics.record_run_finished(
        status=execution.status,
        language=execution.language,
        source=execution.source,
        duration_ms=execution.duration_ms,
        queue_wait_seconds=wait,
        error=execution.error,
    )
    details = execution.details or {}
    run_logger.info(
        "run %s %s in %s ms",
        execution.id,
        execution.status,
        execution.duration_ms,
        extra={
            "event": "run",
            "execution_id": execution.id,
            "user_id": execution.user_id,
            "thread_id": execution.thread_id,
            "agent_id": execution.agent_id,
            "sandbox_id": details.get("sandbox_id"),
            "language": execution.language,
            "source": execution.source,
            "duration_ms": execution.duration_ms,
            "outcome": execution.status,
            "cpu_time_ms": execution.cpu_time_ms,
            "memory_peak_bytes": execution.memory_peak_bytes,
        },
    )
