"""What one run cost in its sandbox: CPU time and peak memory, read through sandboxd.

The runner names each run to sandboxd (`run_id`, the execution's id, in the sandbox
contract's run_code); sandboxd notes the sandbox's cgroup CPU time and resets its memory peak
when the run starts, reads both when it ends, and serves the difference at
`/sandboxes/{id}/runs/{run_id}/usage` (sandboxd/prometheus.py). One call after the run reads
it, on the runs' event loop beside the workspace listing, off the request thread. The sandbox
serves one run at a time (the thread's lock), so nothing else of ours runs in it meanwhile;
its kernels' idle work is the only noise, well under a millisecond per second.

E2B's cloud has no such route: its `get_metrics` gives CPU percentages and memory sampled
every few seconds, which cannot attribute CPU time or a peak to a run of a second. There the
fields stay empty and the run's details say why (`usage_note`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
from django.conf import settings

from execution.monitoring.sandboxd_api import sandboxd_request_async

logger = logging.getLogger(__name__)

# The production backend (execution/sandbox/e2b.py): sandboxd, or E2B's cloud when keyed.
SANDBOXD_BACKEND = "execution.sandbox.e2b.E2BBackend"
NOT_MEASURED_ON_E2B = (
    "not measured: E2B's cloud reports CPU and memory only as samples every few seconds, "
    "not per run"
)


@dataclass(frozen=True)
class RunUsage:
    """A run's CPU time (ms) and peak memory (bytes); None where unknown, `note` says why."""

    cpu_time_ms: int | None = None
    memory_peak_bytes: int | None = None
    note: str = ""

    def as_fields(self) -> dict[str, Any]:
        return {"cpu_time_ms": self.cpu_time_ms, "memory_peak_bytes": self.memory_peak_bytes}


def not_measurable() -> str:
    """Why runs cannot be measured with the configured sandboxes ("" when they can)."""
    if settings.SANDBOX_BACKEND != SANDBOXD_BACKEND:
        return f"not measured: {settings.SANDBOX_BACKEND} gives no usage readings"
    if settings.E2B_API_KEY:
        return NOT_MEASURED_ON_E2B
    return ""


async def read_run_usage(sandbox_id: str, run_id: str) -> RunUsage:
    """The usage sandboxd measured for run `run_id` in `sandbox_id` (so far, if it still
    runs); never raises: what cannot be read is a note."""
    reason = not_measurable()
    if reason:
        return RunUsage(note=reason)
    try:
        response = await sandboxd_request_async(
            "GET", f"/sandboxes/{sandbox_id}/runs/{run_id}/usage"
        )
        if response.status_code == 404:
            return RunUsage(note="not measured: sandboxd has no reading of this run")
        response.raise_for_status()
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        # The run itself is unaffected; its cost is just not known.
        logger.warning("usage of run %s in sandbox %s not read: %s", run_id, sandbox_id, exc)
        return RunUsage(note="not measured: sandboxd did not give a reading")
    cpu, peak = body.get("cpuSeconds"), body.get("memoryPeakBytes")
    note = ""
    if body.get("peakSince") != "reset":
        note = "memory peak is the sandbox's since it started (this kernel cannot reset it)"
    return RunUsage(
        cpu_time_ms=max(0, round(cpu * 1000)) if isinstance(cpu, int | float) else None,
        memory_peak_bytes=peak if isinstance(peak, int) else None,
        note=note,
    )
