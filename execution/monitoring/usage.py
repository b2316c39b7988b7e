"""What one run cost in its sandbox: CPU time and peak memory, read through sandboxd.

sandboxd serves each sandbox's cgroup readings at `/sandboxes/{id}/usage` (sandboxd/metrics.py):
CPU time is cumulative, so the run's share is the difference of a reading taken just before
the run (which also resets the memory peak to the current usage) and one just after. The
sandbox serves one run at a time (the thread's lock), so nothing else of ours runs in it
meanwhile; its kernels' idle work is the only noise, well under a millisecond per second.

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

from execution.monitoring.sandboxd_api import sandboxd_request

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


def _reading(sandbox_id: str, *, reset: bool) -> dict[str, Any] | None:
    path = f"/sandboxes/{sandbox_id}/usage" + ("/reset" if reset else "")
    try:
        response = sandboxd_request("POST" if reset else "GET", path)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        # The run itself is unaffected; its cost is just not known.
        logger.warning("usage of sandbox %s not read: %s", sandbox_id, exc)
        return None


def not_measurable() -> str:
    """Why runs cannot be measured with the configured sandboxes ("" when they can)."""
    if settings.SANDBOX_BACKEND != SANDBOXD_BACKEND:
        return f"not measured: {settings.SANDBOX_BACKEND} gives no usage readings"
    if settings.E2B_API_KEY:
        return NOT_MEASURED_ON_E2B
    return ""


class RunUsageMeter:
    """`start()` before a run, `stop()` after it, on the same sandbox."""

    def __init__(self, sandbox_id: str) -> None:
        self.sandbox_id = sandbox_id
        self._before: dict[str, Any] | None = None

    def start(self) -> None:
        if not not_measurable():
            self._before = _reading(self.sandbox_id, reset=True)

    def stop(self, *, sandbox_id: str | None = None) -> RunUsage:
        """The run's usage. `sandbox_id`: the sandbox the run ended in, if it was replaced
        during the run (then its share cannot be told apart: unknown)."""
        reason = not_measurable()
        if reason:
            return RunUsage(note=reason)
        if sandbox_id is not None and sandbox_id != self.sandbox_id:
            return RunUsage(note="not measured: the sandbox was replaced during the run")
        before = self._before
        after = _reading(self.sandbox_id, reset=False) if before is not None else None
        if before is None or after is None:
            return RunUsage(note="not measured: sandboxd did not give a reading")
        cpu_before, cpu_after = before.get("cpuSeconds"), after.get("cpuSeconds")
        cpu_ms = (
            max(0, round((cpu_after - cpu_before) * 1000))
            if isinstance(cpu_before, int | float) and isinstance(cpu_after, int | float)
            else None
        )
        peak = after.get("memoryPeakBytes")
        note = ""
        if after.get("peakSince") != "reset":
            note = "memory peak is the sandbox's since it started (this kernel cannot reset it)"
        return RunUsage(
            cpu_time_ms=cpu_ms,
            memory_peak_bytes=peak if isinstance(peak, int) else None,
            note=note,
        )
