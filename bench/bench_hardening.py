"""A neighbour's latency and the server's memory while one sandbox floods it (issue 14).

A real ``python -m sandboxd serve`` (``sandboxd.testing.running_sandboxd``, no pool) holds two
sandboxes. The neighbour runs ``1 + 1`` through the SDK again and again; the attacker's kernel
floods the host's iopub with badly signed frames (1 MiB each, 1 GiB a round) in some rounds
and stays idle in the others, interleaved. Reported: the neighbour's p50/p95/max per
condition and their ratio, and the server's peak RSS above its idle RSS.

``main()`` prints the table and writes ``bench/results/hardening.json``.
"""

from __future__ import annotations

import json
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "hardening.json"
ROUNDS = 3
FLOOD = (
    "sock = get_ipython().kernel.iopub_socket\n"
    "frame = b'x' * (1 << 20)\n"
    "for _ in range(1024):\n"
    "    sock.send_multipart([b'<IDS|MSG>', b'bad', b'{}', b'{}', b'{}', frame])\n"
)
QUIET = "import time\ntime.sleep(4)\n"


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def one_round(server: Any, attacker: Any, neighbour: Any, code: str) -> dict[str, Any]:
    """The neighbour's run latencies (s) and the server's RSS peak while `code` runs."""
    latencies: list[float] = []
    peak = [rss(server.pid)]
    busy = threading.Event()
    busy.set()

    def measure() -> None:
        while busy.is_set():
            started = time.perf_counter()
            neighbour.run_code("1 + 1")
            latencies.append(time.perf_counter() - started)
            peak[0] = max(peak[0], rss(server.pid))

    watcher = threading.Thread(target=measure)
    watcher.start()
    try:
        attacker.run_code(code, timeout=600)
    finally:
        busy.clear()
        watcher.join()
    return {"latencies": latencies, "peak_rss": peak[0]}


def run_all() -> dict[str, Any]:
    from e2b_code_interpreter import Sandbox

    from sandboxd.testing import running_sandboxd

    state_dir = Path(tempfile.mkdtemp(prefix="sandboxd-bench-harden-"))
    state_dir.chmod(0o755)
    try:
        with running_sandboxd(
            state_dir=state_dir,
            api_key="bench-" + secrets.token_hex(8),
            env={"SANDBOXD_POOL_SIZE": "0", "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)},
        ) as server:
            attacker = Sandbox.create(**server.sdk_options())
            neighbour = Sandbox.create(**server.sdk_options())
            try:
                for _ in range(20):
                    neighbour.run_code("1 + 1")  # warm
                idle_rss = rss(server.pid)
                quiet: dict[str, list[float]] = {"latencies": [], "peaks": []}
                flood: dict[str, list[float]] = {"latencies": [], "peaks": []}
                for _ in range(ROUNDS):  # interleaved: baseline, then candidate, each round
                    for code, into in ((QUIET, quiet), (FLOOD, flood)):
                        found = one_round(server, attacker, neighbour, code)
                        into["latencies"] += found["latencies"]
                        into["peaks"].append(found["peak_rss"] - idle_rss)
            finally:
                attacker.kill()
                neighbour.kill()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)

    def summary(data: dict[str, list[float]]) -> dict[str, float]:
        ms = [s * 1000 for s in data["latencies"]]
        return {
            "p50_ms": round(percentile(ms, 0.5), 2),
            "p95_ms": round(percentile(ms, 0.95), 2),
            "max_ms": round(max(ms), 2),
            "mean_ms": round(statistics.fmean(ms), 2),
            "n": len(ms),
            "peak_rss_above_idle_mib": round(max(data["peaks"]) / (1 << 20), 1),
        }

    return {"quiet": summary(quiet), "flood": summary(flood), "idle_rss_mib": idle_rss >> 20}


def main() -> None:
    """Run the benchmark, print its table, write bench/results/hardening.json."""
    results = run_all()
    quiet, flood = results["quiet"], results["flood"]
    print("neighbour run_code('1 + 1') while another sandbox's kernel floods iopub (1 GiB/round)")
    print(f"{'':>28} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'n':>5} {'peak RSS+ MiB':>14}")
    for name, row in (("quiet neighbour (baseline)", quiet), ("during the flood", flood)):
        print(
            f"{name:>28} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['max_ms']:>8} "
            f"{row['n']:>5} {row['peak_rss_above_idle_mib']:>14}"
        )
    ratio = flood["p50_ms"] / quiet["p50_ms"] if quiet["p50_ms"] else float("nan")
    print(f"p50 ratio flood/quiet: {ratio:.2f} (server idle RSS {results['idle_rss_mib']} MiB)")
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
