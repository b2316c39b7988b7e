"""Benchmarks of sandboxd, each next to a baseline measured in the same run on this machine.

A real ``python -m sandboxd serve`` is started here (``sandboxd.testing.running_sandboxd``,
pool of 2) and driven through the official e2b SDK, as users do.

1. Warm ``print(1)`` round trip through the SDK: p50/p95, vs the same cell on a bare
   jupyter_client + ipykernel on the host (same Python env, no sandbox, no HTTP). Target:
   p50 <= 5 ms.
2. New sandbox to first Python result (``Sandbox.create`` + ``run_code('print(1)')``), with
   the pool refilled between samples: p50, vs starting a bare host kernel and running the same
   cell. Target: p50 <= 150 ms.
3. One-shot Bash and Node runs: ``commands.run`` (the SDK's ``bash -l -c CMD``) vs the same
   ``bash -l -c CMD`` as a bare host subprocess (clean env, empty HOME, as in the sandbox);
   and ``run_code(language='bash')`` vs a bare ``bash -c``. Target: overhead <= 10 ms.
4. Throughput: trivial runs/s at concurrency 8 (8 async clients, each on its own Python
   context of one sandbox) vs one client. Target: >= 100 runs/s.
5. Memory of one idle sandbox with a live Python context: RSS and PSS summed over every
   process inside it, vs a bare host ipykernel.
6. The jail alone (``JailManager``, no HTTP, no kernel): a new jail until its agent answers,
   its destruction, and ``bash -c 'echo 1'`` spawned in it vs the same bare host subprocess.

``main()`` prints the table and writes ``bench/results/sandboxd.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "sandboxd.json"
SANDBOX_PY = ROOT / "var" / "sandbox-env" / "bin" / "python"

WARM_RUNS = 300
START_SAMPLES = 12
ONESHOT_RUNS = 40
THROUGHPUT_RUNS_PER_CLIENT = 60
CONCURRENCY = 8
WARMUP = 10
# A one-shot run that has not ended by then is counted as failed (and left out of the timings).
ONESHOT_TIMEOUT = 5
JAIL_SAMPLES = 40
# Time for the pool to start a replacement sandbox (jail + kernel) between start samples.
POOL_REFILL_SECONDS = 2.0


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    """p50/p95/mean of durations in seconds, as milliseconds rounded to 0.01."""
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": round(percentile(ms, 0.5), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "n": len(ms),
    }


def timed(
    fn: Callable[[], Any], runs: int, warmup: int = WARMUP, failures: list[str] | None = None
) -> list[float]:
    """Durations of `runs` calls of `fn`, after `warmup` untimed ones.

    With `failures`, a call that raises is recorded there (and left out of the durations)
    instead of ending the benchmark.
    """
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        try:
            fn()
        except Exception as exc:
            if failures is None:
                raise
            failures.append(f"{type(exc).__name__}: {str(exc)[:120]}")
            continue
        samples.append(time.perf_counter() - started)
    return samples


# --- the bare baseline: jupyter_client + ipykernel on the host ------------------------------


class BareKernel:
    """An ipykernel from the sandbox's Python env, on the host, driven by jupyter_client."""

    def __init__(self) -> None:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager

        self.runtime = tempfile.mkdtemp(prefix="bench-bare-kernel-")
        # A kernelspec of our own: the machine may have none (and kernel_cmd is gone).
        spec_dir = os.path.join(self.runtime, "kernels", "sandbox-python")
        os.makedirs(spec_dir)
        argv = [str(SANDBOX_PY), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        with open(os.path.join(spec_dir, "kernel.json"), "w") as spec:
            json.dump({"argv": argv, "display_name": "sandbox env", "language": "python"}, spec)
        self.manager = KernelManager(
            kernel_name="sandbox-python",
            kernel_spec_manager=KernelSpecManager(
                kernel_dirs=[os.path.join(self.runtime, "kernels")]
            ),
            connection_file=os.path.join(self.runtime, "kernel.json"),
            transport="ipc",  # as in sandboxd
            ip=os.path.join(self.runtime, "k"),
        )
        env = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
        self.manager.start_kernel(env=env, extra_arguments=["--HistoryManager.enabled=False"])
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(self, code: str) -> None:
        msg_id = self.client.execute(code)
        while True:
            msg = self.client.get_iopub_msg(timeout=30)
            if (
                msg["parent_header"].get("msg_id") == msg_id
                and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            ):
                return

    def pid(self) -> int:
        return int(self.manager.provisioner.process.pid)  # type: ignore[union-attr]

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)
        shutil.rmtree(self.runtime, ignore_errors=True)


def bare_start_to_first_result() -> float:
    started = time.perf_counter()
    kernel = BareKernel()
    kernel.run("print(1)")
    elapsed = time.perf_counter() - started
    kernel.close()
    return elapsed


def memory_of(pids: list[int]) -> dict[str, float]:
    """Summed RSS and PSS (MiB) of `pids`, from /proc (smaps_rollup)."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return {"rss_mib": round(rss / 1024, 1), "pss_mib": round(pss / 1024, 1)}


# What runs inside the sandbox to weigh it: every process it can see (its own pid namespace).
MEMORY_PROBE = """
import json, os
rss = pss = 0
names = []
for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
    try:
        rollup = open(f'/proc/{pid}/smaps_rollup').read()
        names.append(open(f'/proc/{pid}/comm').read().strip())
    except OSError:
        continue
    for line in rollup.splitlines():
        if line.startswith('Rss:'):
            rss += int(line.split()[1])
        elif line.startswith('Pss:'):
            pss += int(line.split()[1])
print(json.dumps({'rss_mib': round(rss / 1024, 1), 'pss_mib': round(pss / 1024, 1),
                  'processes': sorted(names)}))
"""


# --- the measurements -------------------------------------------------------------------------


def bench_warm(options: dict[str, str], bare: BareKernel) -> dict[str, Any]:
    from e2b_code_interpreter import Sandbox

    # Samples alternate between the two so that both see the same machine load.
    sdk: list[float] = []
    base: list[float] = []
    sbx = Sandbox.create(**options)
    try:
        for _ in range(WARMUP):
            sbx.run_code("print(1)")
            bare.run("print(1)")
        for _ in range(WARM_RUNS):
            sdk += timed(lambda: sbx.run_code("print(1)"), 1, warmup=0)
            base += timed(lambda: bare.run("print(1)"), 1, warmup=0)
    finally:
        sbx.kill()
    sdk_s, base_s = summary_ms(sdk), summary_ms(base)
    return {
        "sdk": sdk_s,
        "bare_jupyter_client": base_s,
        "p50_ratio": round(sdk_s["p50_ms"] / base_s["p50_ms"], 2),
    }


def bench_start(options: dict[str, str]) -> dict[str, Any]:
    from e2b_code_interpreter import Sandbox

    samples = []
    for _ in range(START_SAMPLES):
        time.sleep(POOL_REFILL_SECONDS)
        started = time.perf_counter()
        sbx = Sandbox.create(**options)
        execution = sbx.run_code("print(1)")
        samples.append(time.perf_counter() - started)
        sbx.kill()
        if execution.logs.stdout != ["1\n"]:
            raise RuntimeError(f"unexpected first run: {execution}")
    base = [bare_start_to_first_result() for _ in range(5)]
    return {"sdk_with_pool": summary_ms(samples), "bare_kernel_start": summary_ms(base)}


def bench_oneshot(options: dict[str, str]) -> dict[str, Any]:
    from e2b_code_interpreter import Sandbox

    node_cmd = "node -e 'console.log(1)'"
    # The baseline is the same command as a bare host process, with a clean environment and
    # an empty HOME like the sandbox's (root's own dotfiles here load pyenv: not comparable).
    home = tempfile.mkdtemp(prefix="bench-home-")
    clean_env = {"HOME": home, "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

    def bare(argv: list[str]) -> Callable[[], Any]:
        return lambda: subprocess.run(argv, capture_output=True, check=True, env=clean_env)

    def bash_cell() -> None:
        execution = sbx.run_code("echo 1", language="bash", timeout=ONESHOT_TIMEOUT)
        if execution.logs.stdout != ["1\n"]:
            raise RuntimeError(f"unexpected run: {execution}")

    sbx = Sandbox.create(**options)
    pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "commands_run_bash": (
            lambda: sbx.commands.run("echo 1", timeout=ONESHOT_TIMEOUT),
            bare(["/bin/bash", "-l", "-c", "echo 1"]),
        ),
        "commands_run_node": (
            lambda: sbx.commands.run(node_cmd, timeout=ONESHOT_TIMEOUT),
            bare(["/bin/bash", "-l", "-c", node_cmd]),
        ),
        "run_code_bash": (bash_cell, bare(["/bin/bash", "-c", "echo 1"])),
    }
    out: dict[str, Any] = {}
    try:
        for name, (sandboxed_fn, bare_fn) in pairs.items():
            lost: list[str] = []
            sandboxed: list[float] = []
            baseline: list[float] = []
            for _ in range(3):
                bare_fn()
            # Alternate the two so both see the same machine load.
            for _ in range(ONESHOT_RUNS):
                sandboxed += timed(sandboxed_fn, 1, warmup=0, failures=lost)
                baseline += timed(bare_fn, 1, warmup=0)
            s, b = summary_ms(sandboxed), summary_ms(baseline)
            out[name] = {
                "sandboxd": s,
                "bare_process": b,
                "overhead_p50_ms": round(s["p50_ms"] - b["p50_ms"], 2),
                "failed_runs": len(lost),
                "failures": sorted(set(lost)),
            }
    finally:
        sbx.kill()
        shutil.rmtree(home, ignore_errors=True)
    return out


async def _throughput(options: dict[str, str], clients: int) -> float:
    from e2b_code_interpreter import AsyncSandbox

    sbx = await AsyncSandbox.create(**options)
    try:
        contexts = [await sbx.create_code_context() for _ in range(clients)]

        async def worker(ctx: Any) -> None:
            for _ in range(THROUGHPUT_RUNS_PER_CLIENT):
                execution = await sbx.run_code("1", context=ctx)
                if execution.text != "1":
                    raise RuntimeError(f"unexpected run: {execution}")

        await asyncio.gather(*(sbx.run_code("0", context=c) for c in contexts))  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in contexts))
        elapsed = time.perf_counter() - started
    finally:
        await sbx.kill()
    return clients * THROUGHPUT_RUNS_PER_CLIENT / elapsed


def bench_throughput(options: dict[str, str]) -> dict[str, Any]:
    concurrent = asyncio.run(_throughput(options, CONCURRENCY))
    single = asyncio.run(_throughput(options, 1))
    return {
        f"runs_per_s_concurrency_{CONCURRENCY}": round(concurrent, 1),
        "runs_per_s_concurrency_1": round(single, 1),
    }


def bench_memory(options: dict[str, str], bare: BareKernel) -> dict[str, Any]:
    from e2b_code_interpreter import Sandbox

    sbx = Sandbox.create(**options)
    try:
        sbx.run_code("print(1)")
        time.sleep(1.0)  # idle
        execution = sbx.run_code(MEMORY_PROBE)
        inside = json.loads("".join(execution.logs.stdout))
    finally:
        sbx.kill()
    return {"sandbox": inside, "bare_ipykernel": memory_of([bare.pid()])}


# --- report ----------------------------------------------------------------------------------


def render(r: dict[str, Any]) -> str:
    warm, start, one, thr, mem = r["warm"], r["start"], r["oneshot"], r["throughput"], r["memory"]
    rows = [
        ("metric", "sandboxd", "baseline (same run)", "vs baseline", "target", "met"),
        (
            "warm print(1) via SDK p50 / p95",
            f"{warm['sdk']['p50_ms']} / {warm['sdk']['p95_ms']} ms",
            f"bare jupyter_client {warm['bare_jupyter_client']['p50_ms']} / "
            f"{warm['bare_jupyter_client']['p95_ms']} ms",
            f"{warm['p50_ratio']}x",
            "p50 <= 5 ms",
            "yes" if warm["sdk"]["p50_ms"] <= 5 else "no",
        ),
        (
            "new sandbox -> first result p50 / p95",
            f"{start['sdk_with_pool']['p50_ms']} / {start['sdk_with_pool']['p95_ms']} ms",
            f"bare kernel start {start['bare_kernel_start']['p50_ms']} ms",
            "",
            "p50 <= 150 ms",
            "yes" if start["sdk_with_pool"]["p50_ms"] <= 150 else "no",
        ),
    ]
    for name, label in (
        ("commands_run_bash", "commands.run('echo 1') p50"),
        ("commands_run_node", "commands.run(node -e) p50"),
        ("run_code_bash", "run_code(bash 'echo 1') p50"),
    ):
        item = one[name]
        failed = f" ({item['failed_runs']}/{ONESHOT_RUNS} failed)" if item["failed_runs"] else ""
        rows.append(
            (
                label,
                f"{item['sandboxd']['p50_ms']} ms{failed}",
                f"bare process {item['bare_process']['p50_ms']} ms",
                f"{item['overhead_p50_ms']:+} ms",
                "<= +10 ms",
                "yes" if item["overhead_p50_ms"] <= 10 else "no",
            )
        )
    rows.append(
        (
            f"throughput, concurrency {CONCURRENCY}",
            f"{thr[f'runs_per_s_concurrency_{CONCURRENCY}']} runs/s",
            f"concurrency 1: {thr['runs_per_s_concurrency_1']} runs/s",
            "",
            ">= 100 runs/s",
            "yes" if thr[f"runs_per_s_concurrency_{CONCURRENCY}"] >= 100 else "no",
        )
    )
    rows.append(
        (
            "idle sandbox + Python context RSS / PSS",
            f"{mem['sandbox']['rss_mib']} / {mem['sandbox']['pss_mib']} MiB",
            f"bare ipykernel {mem['bare_ipykernel']['rss_mib']} / "
            f"{mem['bare_ipykernel']['pss_mib']} MiB",
            "",
            "(reported)",
            "",
        )
    )
    jail = r["jail"]
    rows.append(
        (
            "new jail (bwrap + agent ready) / destroy p50",
            f"{jail['create']['p50_ms']} / {jail['destroy']['p50_ms']} ms",
            "",
            "",
            "(reported)",
            "",
        )
    )
    rows.append(
        (
            "bash -c 'echo 1' spawned in a jail p50",
            f"{jail['spawn_in_jail']['p50_ms']} ms",
            f"bare process {jail['bare_process']['p50_ms']} ms",
            f"{jail['spawn_overhead_p50_ms']:+} ms",
            "(reported)",
            "",
        )
    )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append(
            "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        )
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def _jail_costs() -> dict[str, Any]:
    from sandboxd.jail.testing import jail_manager, run

    async def bare_echo() -> None:
        process = await asyncio.create_subprocess_exec(
            "bash", "-c", "echo 1", stdout=asyncio.subprocess.PIPE
        )
        await process.communicate()

    creates: list[float] = []
    destroys: list[float] = []
    spawns: list[float] = []
    bare: list[float] = []
    async with jail_manager() as manager:
        for index in range(JAIL_SAMPLES):
            started = time.perf_counter()
            jail = await manager.create(f"bench-{index}")
            creates.append(time.perf_counter() - started)
            started = time.perf_counter()
            await run(jail, ["bash", "-c", "echo 1"])
            spawns.append(time.perf_counter() - started)
            started = time.perf_counter()
            await jail.destroy()
            destroys.append(time.perf_counter() - started)
            started = time.perf_counter()
            await bare_echo()
            bare.append(time.perf_counter() - started)
    spawn, bare_spawn = summary_ms(spawns), summary_ms(bare)
    return {
        "create": summary_ms(creates),
        "destroy": summary_ms(destroys),
        "spawn_in_jail": spawn,
        "bare_process": bare_spawn,
        "spawn_overhead_p50_ms": round(spawn["p50_ms"] - bare_spawn["p50_ms"], 2),
    }


def bench_jail() -> dict[str, Any]:
    """Item 6: what one jail costs, without the server around it."""
    return asyncio.run(_jail_costs())


def run_all() -> dict[str, Any]:
    """Start a sandboxd and a bare kernel, run every measurement, stop both."""
    from sandboxd.testing import running_sandboxd

    load_before = [round(x, 2) for x in os.getloadavg()]
    state_dir = Path(tempfile.mkdtemp(prefix="bench-sandboxd-"))
    state_dir.chmod(0o755)  # the sandbox uids must traverse it
    bare = BareKernel()
    try:
        with running_sandboxd(
            state_dir=state_dir,
            api_key="bench-" + secrets.token_hex(16),
            env={"SANDBOXD_LOG_LEVEL": "warning"},
        ) as server:
            options = server.sdk_options()
            results: dict[str, Any] = {}
            results["warm"] = bench_warm(options, bare)
            results["start"] = bench_start(options)
            results["oneshot"] = bench_oneshot(options)
            time.sleep(POOL_REFILL_SECONDS)
            results["throughput"] = bench_throughput(options)
            time.sleep(POOL_REFILL_SECONDS)
            results["memory"] = bench_memory(options, bare)
        results["jail"] = bench_jail()
    finally:
        bare.close()
        shutil.rmtree(state_dir, ignore_errors=True)
    results["machine"] = {
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "measured_at": time.strftime("%FT%TZ"),
    }
    return results


def main() -> None:
    """Run every sandboxd benchmark, print the table, write bench/results/sandboxd.json."""
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    results = run_all()
    print(render(results))
    machine = results["machine"]
    print(
        f"{machine['cpus']} CPUs; load average before/after: "
        f"{machine['load_average_before']} / {machine['load_average_after']} "
        "(other work on the machine inflates every number, the baselines too)"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
