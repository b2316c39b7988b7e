"""Sandbox metrics as E2B's API reports them (``Sandbox.get_metrics()``), from the cgroup.

Each sandbox handed to a client has a ``MetricsRecorder`` that samples every
``SAMPLE_SECONDS`` (E2B samples every 5 s) into a bounded ring of ``KEPT_SAMPLES``:

* CPU: the cgroup's CPU time (v2 ``cpu.stat`` ``usage_usec``, v1 ``cpuacct.usage`` where
  cpuacct shares the cpu hierarchy) over the wall time since the previous sample, as a
  percentage of the sandbox's CPU quota. Where the cgroup has no CPU counter (v1 with cpuacct
  mounted apart, as on Debian's hybrid layout), the sum of user+system time, own and reaped
  children's, of every process in the cgroup: every exited process is reaped by one of them
  (the agent is init), so that sum counts each process once. ``cpuCount`` is the quota rounded
  up.
* Memory: the cgroup's usage less its inactive file cache (what the kernel reclaims first),
  against the memory limit.
* Disk: the workspace's own size-capped file system, asked of the agent.

The first sample is taken when the sandbox is handed out, so its CPU share is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sandboxd.jail import Jail
    from sandboxd.jail.cgroups import Cgroup

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 5.0
KEPT_SAMPLES = 720  # an hour of samples per sandbox
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    """One sample, with the fields of E2B's ``SandboxMetric``."""

    at: datetime
    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int

    def body(self) -> dict[str, Any]:
        """The JSON E2B's API answers (camelCase)."""
        return {
            "timestamp": self.at.isoformat().replace("+00:00", "Z"),
            "timestampUnix": int(self.at.timestamp()),
            "cpuCount": self.cpu_count,
            "cpuUsedPct": round(self.cpu_used_pct, 2),
            "memUsed": self.mem_used,
            "memTotal": self.mem_total,
            "memCache": self.mem_cache,
            "diskUsed": self.disk_used,
            "diskTotal": self.disk_total,
        }


def _stat_value(path: Path, key: str) -> int | None:
    """The value of ``key`` in a flat-keyed cgroup file (``memory.stat``, ``cpu.stat``)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def _processes_cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            # after the command name (which may hold spaces): utime stime cutime cstime
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / _CLOCK_TICKS


def cpu_seconds(cgroup: Cgroup) -> float:
    """CPU time used by the sandbox so far (see the module doc for where it comes from)."""
    directory = cgroup.dirs.get("cpu")
    if directory is not None:
        if cgroup.version == 2:
            usage = _stat_value(directory / "cpu.stat", "usage_usec")
            if usage is not None:
                return usage / 1e6
        else:
            with contextlib.suppress(OSError, ValueError):
                return int((directory / "cpuacct.usage").read_text()) / 1e9
    return _processes_cpu_seconds(cgroup.pids())


def memory_bytes(cgroup: Cgroup) -> tuple[int, int]:
    """(used, cache) bytes of the sandbox's memory cgroup; used excludes inactive cache."""
    directory = cgroup.dirs.get("memory")
    if directory is None:
        return 0, 0
    if cgroup.version == 2:
        current_file, inactive_key, cache_key = "memory.current", "inactive_file", "file"
    else:
        current_file, inactive_key, cache_key = (
            "memory.usage_in_bytes",
            "total_inactive_file",
            "total_cache",
        )
    try:
        current = int((directory / current_file).read_text())
    except (OSError, ValueError):
        return 0, 0
    inactive = _stat_value(directory / "memory.stat", inactive_key) or 0
    cache = _stat_value(directory / "memory.stat", cache_key) or 0
    return max(current - inactive, 0), cache


class MetricsRecorder:
    """Samples one sandbox until stopped; ``samples(start, end)`` answers the API."""

    def __init__(self, jail: Jail, *, cpus: float, memory_bytes: int) -> None:
        self._jail = jail
        self._cpus = cpus
        self._memory_total = memory_bytes
        self._samples: deque[Sample] = deque(maxlen=KEPT_SAMPLES)
        self._last: tuple[float, float] | None = None  # (monotonic time, cpu seconds)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"metrics-{self._jail.sandbox_id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def samples(self, start: datetime | None = None, end: datetime | None = None) -> list[Sample]:
        """Samples taken between `start` and `end` (inclusive; either may be open), oldest
        first."""
        return [
            sample
            for sample in self._samples
            if (start is None or sample.at >= start) and (end is None or sample.at <= end)
        ]

    def latest(self) -> Sample | None:
        return self._samples[-1] if self._samples else None

    async def _run(self) -> None:
        while self._jail.alive:
            try:
                await self.sample()
            except Exception:  # a sandbox dying mid-sample: stop quietly at the next check
                log.debug("sampling %s failed", self._jail.sandbox_id, exc_info=True)
            await asyncio.sleep(SAMPLE_SECONDS)

    async def sample(self) -> Sample:
        """Take one sample now and keep it."""
        cgroup = self._jail.cgroup
        now, used = time.monotonic(), await asyncio.to_thread(cpu_seconds, cgroup)
        pct = 0.0
        if self._last is not None and now > self._last[0]:
            share = (used - self._last[1]) / ((now - self._last[0]) * self._cpus)
            pct = min(max(share * 100, 0.0), 100.0)
        self._last = (now, used)
        mem_used, mem_cache = await asyncio.to_thread(memory_bytes, cgroup)
        disk_used, disk_total = await self._jail.disk_usage()
        sample = Sample(
            at=datetime.now(UTC),
            cpu_count=max(1, math.ceil(self._cpus)),
            cpu_used_pct=pct,
            mem_used=mem_used,
            mem_total=self._memory_total,
            mem_cache=mem_cache,
            disk_used=disk_used,
            disk_total=disk_total,
        )
        self._samples.append(sample)
        return sample
