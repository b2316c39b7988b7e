"""sandboxd's Prometheus metrics and per-sandbox resource usage, read from the cgroups.

Two routes, both behind the API key like every control-plane call (``X-API-KEY``, or
``Authorization: Bearer <key>``, which is what a Prometheus scrape config can send):

* ``GET /metrics``: the Prometheus text format. sandboxd is one process, so one registry
  serves it (no multiprocess mode). Values computed at scrape time (live and pooled
  sandboxes, each sandbox's CPU and memory, OOM kills) come from a collector that reads the
  control plane and the cgroups when scraped; the rest are counters and histograms fed by
  the few hooks below (``observe_*``, ``count_egress``).
* ``GET /sandboxes/{id}/usage`` and ``POST /sandboxes/{id}/usage/reset``: an extension of
  E2B's API (E2B's own ``get_metrics`` gives CPU percentages sampled every few seconds, too
  coarse to say what one run cost). The body is ``{"sandboxID", "cpuSeconds",
  "memoryBytes", "memoryPeakBytes", "peakSince", "oomKills"}``: CPU time is the cgroup's
  cumulative counter, so a client takes a reading before and after a run and subtracts;
  ``reset`` first sets the memory peak back to the current usage, so the reading after the
  run is that run's peak (``peakSince`` says "reset", or "start" where the kernel cannot
  reset a peak and the value is the sandbox's peak since it started).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sandboxd.control import ControlPlane
    from sandboxd.jail import Jail

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

# Starting a jail is ~10 ms, a warm pool hand-out well under that, a kernel 0.4-0.5 s.
_START_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

SANDBOX_CREATE_SECONDS = Histogram(
    "sandboxd_sandbox_create_seconds",
    "Time to hand out a new sandbox, by where it came from (pool: pre-started; cold: started "
    "for this request)",
    ["origin"],
    buckets=_START_BUCKETS,
    registry=REGISTRY,
)
KERNEL_START_SECONDS = Histogram(
    "sandboxd_kernel_start_seconds",
    "Time for a code-interpreter kernel to start and answer, by language",
    ["language"],
    buckets=_START_BUCKETS,
    registry=REGISTRY,
)
SANDBOX_DESTROY_SECONDS = Histogram(
    "sandboxd_sandbox_destroy_seconds",
    "Time to stop a sandbox's kernels and destroy its jail",
    buckets=_START_BUCKETS,
    registry=REGISTRY,
)
EGRESS_REQUESTS = Counter(
    "sandboxd_egress_requests",
    "Proxy requests from sandboxes to the outside, by decision (allowed: a package index)",
    ["decision"],
    registry=REGISTRY,
)
LOOP_LAG_SECONDS = Gauge(
    "sandboxd_event_loop_lag_seconds",
    "How late the event loop last woke a timer (every sandbox shares this loop)",
    registry=REGISTRY,
)
LOOP_LAG_HISTOGRAM = Histogram(
    "sandboxd_event_loop_lag_histogram_seconds",
    "How late the event loop woke a timer, sampled every LAG_INTERVAL seconds",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
    registry=REGISTRY,
)
LAG_INTERVAL = 0.5
# OOM kills of sandboxes already destroyed (their cgroups are gone, their count is not).
_oom_kills_of_gone = 0


def observe_destroy(jail: Jail, seconds: float, *, oom_kills: int) -> None:
    """A sandbox was destroyed: its destroy time, and its OOM kills (read before its cgroup
    was removed) kept past it."""
    global _oom_kills_of_gone
    SANDBOX_DESTROY_SECONDS.observe(seconds)
    _oom_kills_of_gone += oom_kills
    _meters.pop(jail, None)


async def timed_kernel_start(language: str, start: Awaitable[None]) -> None:
    """Await a kernel start and record how long it took (only starts that succeed)."""
    began = time.monotonic()
    await start
    KERNEL_START_SECONDS.labels(language).observe(time.monotonic() - began)


def count_egress(*, allowed: bool) -> None:
    EGRESS_REQUESTS.labels("allowed" if allowed else "refused").inc()


async def measure_loop_lag() -> None:
    """Sleep LAG_INTERVAL at a time and record how late each wake-up came (until cancelled).

    The watchdog thread reports a loop blocked for seconds; this measures the everyday lag
    a busy server adds to every sandbox's requests.
    """
    loop = asyncio.get_running_loop()
    while True:
        planned = loop.time() + LAG_INTERVAL
        await asyncio.sleep(LAG_INTERVAL)
        lag = max(0.0, loop.time() - planned)
        LOOP_LAG_SECONDS.set(lag)
        LOOP_LAG_HISTOGRAM.observe(lag)


# --- a sandbox's usage, from its cgroup ------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """One reading of a sandbox's cgroup; None where this host's cgroups cannot say."""

    cpu_seconds: float | None
    memory_bytes: int | None
    memory_peak_bytes: int | None
    peak_since: str  # "reset" or "start"
    oom_kills: int


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_key(path: Path, key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    return None


# Per-run readings kept per sandbox: a client reads its run's right after the run ends.
RUN_READINGS_KEPT = 32


@dataclass
class RunReading:
    """One run's CPU time at its start and end, and the sandbox's memory peak during it."""

    cpu_start: float | None
    cpu_end: float | None = None
    memory_peak: int | None = None
    finished: bool = False


class UsageMeter:
    """Reads one jail's CPU time and memory, and resets its memory peak.

    cgroup v1: ``cpuacct.usage`` (ns), ``memory.usage_in_bytes``, ``memory.max_usage_in_bytes``
    (writing 0 sets the peak back to the current usage). cgroup v2: ``cpu.stat``'s
    ``usage_usec``, ``memory.current``, ``memory.peak``; since Linux 6.12 writing to
    ``memory.peak`` resets the peak *for the file descriptor written to*, so the meter keeps
    that descriptor open for the jail's life and reads the peak through it.
    """

    def __init__(self, jail: Jail) -> None:
        self.dirs = jail.cgroup.dirs
        self.version = jail.cgroup.version
        self._peak_fd: int | None = None
        self._reset_once = False
        self._finalizer: weakref.finalize[Any, UsageMeter] | None = None
        # The readings of the last runs that carried a run id, oldest first.
        self._runs: OrderedDict[str, RunReading] = OrderedDict()

    def begin_run(self, run_id: str) -> None:
        """A run with this id starts: reset the memory peak, note the CPU time."""
        self.reset_peak()
        self._runs[run_id] = RunReading(cpu_start=self.cpu_seconds())
        self._runs.move_to_end(run_id)
        while len(self._runs) > RUN_READINGS_KEPT:
            self._runs.popitem(last=False)

    def end_run(self, run_id: str) -> None:
        """The run ended: its CPU time and memory peak are final."""
        reading = self._runs.get(run_id)
        if reading is not None:
            reading.cpu_end = self.cpu_seconds()
            reading.memory_peak = self.memory_peak_bytes()
            reading.finished = True

    def run_body(self, run_id: str) -> dict[str, Any] | None:
        """What run `run_id` used (so far, while it runs); None when it is not known."""
        reading = self._runs.get(run_id)
        if reading is None:
            return None
        end = reading.cpu_end if reading.finished else self.cpu_seconds()
        start = reading.cpu_start
        return {
            "runID": run_id,
            "finished": reading.finished,
            "cpuSeconds": None if start is None or end is None else max(0.0, end - start),
            "memoryPeakBytes": (
                reading.memory_peak if reading.finished else self.memory_peak_bytes()
            ),
            "peakSince": "reset" if self._reset_once else "start",
        }

    def _dir(self, controller: str) -> Path | None:
        directory = self.dirs.get(controller)
        if directory is None and self.version == 2 and self.dirs:
            directory = next(iter(self.dirs.values()))  # v2: one directory for all
        return directory

    def cpu_seconds(self) -> float | None:
        if self.version == 1:
            directory = self.dirs.get("cpuacct")
            usage = _read_int(directory / "cpuacct.usage") if directory else None
            return None if usage is None else usage / 1e9
        directory = self._dir("cpu")
        usec = _read_key(directory / "cpu.stat", "usage_usec") if directory else None
        return None if usec is None else usec / 1e6

    def memory_bytes(self) -> int | None:
        directory = self.dirs.get("memory")
        if directory is None:
            return None
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return _read_int(directory / name)

    def memory_peak_bytes(self) -> int | None:
        directory = self.dirs.get("memory")
        if directory is None:
            return None
        if self.version == 1:
            return _read_int(directory / "memory.max_usage_in_bytes")
        if self._peak_fd is not None:
            with contextlib.suppress(OSError, ValueError):
                return int(os.pread(self._peak_fd, 64, 0).split()[0])
        return _read_int(directory / "memory.peak")

    def reset_peak(self) -> None:
        """Set the memory peak back to the current usage (best effort; see peak_since)."""
        directory = self.dirs.get("memory")
        if directory is None:
            return
        try:
            if self.version == 1:
                (directory / "memory.max_usage_in_bytes").write_text("0")
            else:
                if self._peak_fd is None:
                    self._peak_fd = os.open(directory / "memory.peak", os.O_RDWR | os.O_CLOEXEC)
                    self._finalizer = weakref.finalize(self, os.close, self._peak_fd)
                os.write(self._peak_fd, b"reset\n")
            self._reset_once = True
        except OSError:
            pass  # an older kernel: the peak stays the sandbox's peak since it started

    def read(self, jail: Jail) -> Usage:
        return Usage(
            cpu_seconds=self.cpu_seconds(),
            memory_bytes=self.memory_bytes(),
            memory_peak_bytes=self.memory_peak_bytes(),
            peak_since="reset" if self._reset_once else "start",
            oom_kills=jail.oom_kills(),
        )


# One meter per jail, dropped with it (observe_destroy, or when the jail is collected).
_meters: weakref.WeakKeyDictionary[Jail, UsageMeter] = weakref.WeakKeyDictionary()


def meter_for(jail: Jail) -> UsageMeter:
    meter = _meters.get(jail)
    if meter is None:
        meter = _meters[jail] = UsageMeter(jail)
    return meter


def usage_body(sandbox_id: str, usage: Usage) -> dict[str, Any]:
    return {
        "sandboxID": sandbox_id,
        "cpuSeconds": usage.cpu_seconds,
        "memoryBytes": usage.memory_bytes,
        "memoryPeakBytes": usage.memory_peak_bytes,
        "peakSince": usage.peak_since,
        "oomKills": usage.oom_kills,
    }


# --- values read at scrape time --------------------------------------------------------------


class ControlPlaneCollector(Collector):
    """Live and pooled sandboxes, per-sandbox CPU and memory, OOM kills: read when scraped."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def collect(self) -> Iterable[Any]:
        live = self.plane.live()
        yield GaugeMetricFamily(
            "sandboxd_sandboxes_live", "Sandboxes held by clients", value=len(live)
        )
        yield GaugeMetricFamily(
            "sandboxd_sandboxes_pooled",
            "Pre-started sandboxes waiting in the pool",
            value=self.plane.pool_ready(),
        )
        cpu = CounterMetricFamily(
            "sandboxd_sandbox_cpu_seconds",
            "CPU time used by each live sandbox since it started (its cgroup)",
            labels=["sandbox_id"],
        )
        memory = GaugeMetricFamily(
            "sandboxd_sandbox_memory_bytes",
            "Memory used by each live sandbox now (its cgroup, page cache included)",
            labels=["sandbox_id"],
        )
        oom = 0
        for sandbox in live:
            meter = meter_for(sandbox.jail)
            seconds = meter.cpu_seconds()
            if seconds is not None:
                cpu.add_metric([sandbox.sandbox_id], seconds)
            used = meter.memory_bytes()
            if used is not None:
                memory.add_metric([sandbox.sandbox_id], used)
            oom += sandbox.jail.oom_kills()
        yield cpu
        yield memory
        yield CounterMetricFamily(
            "sandboxd_oom_kills",
            "Processes killed for running out of memory in sandboxes, live and gone",
            value=oom + _oom_kills_of_gone,
        )


# --- routes ----------------------------------------------------------------------------------


async def metrics_view(request: web.Request) -> web.Response:
    """``GET /metrics``: the Prometheus text format (the API key was checked by dispatch)."""
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def _plane(request: web.Request) -> ControlPlane:
    from sandboxd.server import CONTROL_PLANE

    return request.app[CONTROL_PLANE]


def _sandbox_usage(request: web.Request, *, reset: bool) -> web.Response:
    from sandboxd.control import ControlError

    sandbox_id = request.match_info["sandbox_id"]
    sandbox = _plane(request).get(sandbox_id)
    if sandbox is None:
        raise ControlError(404, f"sandbox {sandbox_id} not found")
    meter = meter_for(sandbox.jail)
    if reset:
        meter.reset_peak()
    return web.json_response(usage_body(sandbox_id, meter.read(sandbox.jail)))


async def usage_view(request: web.Request) -> web.Response:
    """``GET /sandboxes/{id}/usage``: the sandbox's cumulative CPU, memory and peak."""
    return _sandbox_usage(request, reset=False)


async def usage_reset_view(request: web.Request) -> web.Response:
    """``POST /sandboxes/{id}/usage/reset``: reset the memory peak, then read as GET does."""
    return _sandbox_usage(request, reset=True)


async def run_usage_view(request: web.Request) -> web.Response:
    """``GET /sandboxes/{id}/runs/{run_id}/usage``: the CPU time and memory peak of the run
    that ``/execute`` was given with that id (``SANDBOXD_RUN_ID`` in its env_vars), so far
    while it runs; 404 once it is not among the sandbox's last RUN_READINGS_KEPT runs."""
    from sandboxd.control import ControlError

    sandbox_id, run_id = request.match_info["sandbox_id"], request.match_info["run_id"]
    sandbox = _plane(request).get(sandbox_id)
    if sandbox is None:
        raise ControlError(404, f"sandbox {sandbox_id} not found")
    body = meter_for(sandbox.jail).run_body(run_id)
    if body is None:
        raise ControlError(404, f"no reading of run {run_id} in sandbox {sandbox_id}")
    return web.json_response(body)


def bearer_key(request: web.Request) -> str | None:
    """The key of an ``Authorization: Bearer`` header (how Prometheus sends credentials)."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def install(app: web.Application, plane: ControlPlane) -> None:
    """Add the metrics and usage routes, the scrape-time collector and the loop-lag probe."""
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/sandboxes/{sandbox_id}/usage", usage_view)
    app.router.add_post("/sandboxes/{sandbox_id}/usage/reset", usage_reset_view)
    app.router.add_get("/sandboxes/{sandbox_id}/runs/{run_id}/usage", run_usage_view)
    collector = ControlPlaneCollector(plane)
    REGISTRY.register(collector)
    tasks: list[asyncio.Task[None]] = []

    async def start_lag_probe(app: web.Application) -> None:
        tasks.append(asyncio.create_task(measure_loop_lag(), name="sandboxd-loop-lag"))

    async def stop(app: web.Application) -> None:
        for task in tasks:
            task.cancel()
        REGISTRY.unregister(collector)

    app.on_startup.append(start_lag_probe)
    app.on_cleanup.append(stop)
