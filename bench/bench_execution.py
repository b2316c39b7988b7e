"""Benchmarks of the execution service end to end, each against a baseline from the same run.

Everything runs for real on loopback: a sandboxd started here, a daphne process serving
the project (SQLite file database, in-memory channel layer: the embedded defaults), HTTP
and websocket clients. The baselines talk to the same sandboxd through the e2b SDK
directly, so the ratios are what the Django service adds.

1. `POST /api/code/execute` of `print(1)` on a warm thread (wait=true): p50/p95, vs the
   same `run_code` through the SDK on a warm sandbox. Targets: ratio <= 2x, p50 <= 15 ms.
   Two rows say where the time goes: `ToolExecutor.execute_code` called in this process
   (the service without HTTP) and `GET /api/auth/me/` (HTTP + JWT without a run).
2. Websocket latency from the `print` in the sandbox to the client's frame (the code
   prints `time.time()`; sandbox and client share the host clock), vs the SDK's own
   `on_stdout` callback for the same code. Target: p50 <= 20 ms.
3. 20 concurrent websocket clients (one user and thread each) x 50 runs: runs/s, with
   every execution and output line counted in the frames AND in the database; vs the same
   20 x 50 runs through the SDK on 20 sandboxes. Target: zero lost. Then the same over two
   daphne processes sharing a Redis channel layer, when Redis answers.

4. (issue 10) A new thread's first result through `POST /api/code/execute` vs the SDK's
   `Sandbox.create` + `run_code` on the same sandboxd (interleaved, paced so sandboxd's warm
   pool is refilled before each); 8 clients' warm REST runs: throughput and daphne's CPU per
   run (process CPU time / runs), on one worker and on two workers sharing Redis, vs 8
   clients of the SDK direct.

`main()` prints the table and writes `bench/results/execution.json`, then runs the same again
in a second process on the production configuration, PostgreSQL and Redis, when both answer
on 127.0.0.1 (`--database postgres`; `bench/results/execution-postgres.json`): a fresh
database on that server, the one-worker rows served with the Redis channel layer too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "execution.json"

REST_RUNS = 200
WS_RUNS = 100
CLIENTS = 20
RUNS_PER_CLIENT = 50
WARMUP = 5
NEW_THREAD_RUNS = 10
# sandboxd refills its pool one sandbox at a time (jail + Python and JavaScript kernels).
POOL_REFILL_PAUSE_S = 3.0
LOAD_CLIENTS = 8
LOAD_RUNS_PER_CLIENT = 40

# The service's quotas are for people, not for a load generator: the bench raises the
# request throttles and caps so that it measures speed, not the limits (which have tests).
BENCH_SERVER_ENV = {
    "EXECUTION_USER_CONCURRENCY": "64",
    "EXECUTION_GLOBAL_CONCURRENCY": "64",
    "EXECUTION_THROTTLE_RATE": "100000/minute",
    "INSTALL_THROTTLE_RATE": "100000/minute",
    "SANDBOX_GLOBAL_LIMIT": "64",
}

# What _setup_django changes in this process's environment (restored after the run).
BENCH_ENV_NAMES = ("DATABASE_URL", "REDIS_URL", "E2B_API_KEY", "E2B_DOMAIN", "ATLASCHAT_VAR_DIR")

# 20 clients need 20 sandboxes (one per thread) at once, twice (one and two workers), more
# than sandboxd's default cap.
BENCH_SANDBOXD_ENV = {"SANDBOXD_MAX_SANDBOXES": "64"}


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile (0..1) by nearest rank on sorted values."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    milliseconds = [s * 1000 for s in seconds]
    return {
        "n": len(milliseconds),
        "p50_ms": round(statistics.median(milliseconds), 2),
        "p95_ms": round(percentile(milliseconds, 0.95), 2),
        "mean_ms": round(statistics.fmean(milliseconds), 2),
    }


# The production configuration of `--database postgres` (the machine's local servers).
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/atlaschat"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _setup_django(var_dir: Path, *, postgres: bool = False) -> None:
    """Configure Django in this process, its data in `var_dir`.

    Embedded defaults: the database is an SQLite file in `var_dir`, the very file the daphne
    server uses, so the in-process measurement and the database counts see what the server
    wrote; a DATABASE_URL or REDIS_URL of the caller's environment is ignored, so the bench
    never touches a real database. With `postgres`: the local PostgreSQL server, where each
    live stack creates (and drops) a database of its own.
    """
    sys.path.insert(0, str(ROOT))
    for name in ("DATABASE_URL", "REDIS_URL", "E2B_API_KEY", "E2B_DOMAIN"):
        os.environ.pop(name, None)
    if postgres:
        os.environ["DATABASE_URL"] = POSTGRES_URL
    os.environ["ATLASCHAT_VAR_DIR"] = str(var_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atlaschat.settings")
    # A throwaway key for this process and the servers it starts (they get the same one).
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    import django

    django.setup()
    # The SDK's HTTP client logs every request at INFO: thousands of lines, no information.
    logging.getLogger("httpx").setLevel(logging.WARNING)


# --- 1. REST execute vs the SDK -------------------------------------------------------------


def bench_rest(stack: Any, user: Any, thread: Any) -> tuple[list[float], list[float]]:
    """Timings of `POST /api/code/execute`, and of `GET /api/auth/me/` (the floor of an
    authenticated request through daphne, Django and DRF, with no execution in it)."""
    import httpx

    from execution.tests.live import bearer_headers

    body = {"code": "print(1)", "language": "python", "thread_id": str(thread.id)}
    timings: list[float] = []
    floor: list[float] = []
    with httpx.Client(
        base_url=stack.server.http_url, headers=bearer_headers(user), timeout=60
    ) as client:
        for n in range(WARMUP + REST_RUNS):
            started = time.perf_counter()
            response = client.get("/api/auth/me/")
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"who-am-I failed: {response.status_code} {response.text}")
            if n >= WARMUP:
                floor.append(elapsed)
        for n in range(WARMUP + REST_RUNS):
            started = time.perf_counter()
            response = client.post("/api/code/execute", json=body)
            elapsed = time.perf_counter() - started
            if response.status_code not in (200, 201) or response.json()["stdout"] != "1\n":
                raise RuntimeError(f"execute failed: {response.status_code} {response.text}")
            if n >= WARMUP:
                timings.append(elapsed)
    return timings, floor


def bench_in_process(sandboxd: Any, user: Any, thread: Any) -> list[float]:
    """The service alone: `ToolExecutor.execute_code` in this process, no HTTP, same DB."""
    from django.conf import settings

    from execution.caller import Caller
    from execution.services.sandbox_sessions import sessions
    from execution.services.tool_executor import ToolExecutor

    settings.SANDBOXD_URL = sandboxd.url
    settings.SANDBOXD_API_KEY = sandboxd.api_key
    caller = Caller(user=user, source="api", client_ip="127.0.0.1")
    timings: list[float] = []
    try:
        for n in range(WARMUP + REST_RUNS):
            started = time.perf_counter()
            execution = ToolExecutor().execute_code(
                code="print(1)", language="python", caller=caller, thread=thread
            )
            elapsed = time.perf_counter() - started
            if execution.stdout != "1\n":
                raise RuntimeError(f"in-process run failed: {execution.status} {execution.error}")
            if n >= WARMUP:
                timings.append(elapsed)
    finally:
        sessions.forget_all(kill=True)
    return timings


def bench_sdk(options: dict[str, Any]) -> tuple[list[float], list[float]]:
    """SDK baseline: warm `print(1)` timings, and print -> on_stdout latencies."""
    from e2b_code_interpreter import Sandbox

    sandbox = Sandbox.create(**options)
    try:
        timings: list[float] = []
        for n in range(WARMUP + REST_RUNS):
            started = time.perf_counter()
            execution = sandbox.run_code("print(1)")
            elapsed = time.perf_counter() - started
            if "".join(execution.logs.stdout) != "1\n":
                raise RuntimeError(f"SDK run failed: {execution}")
            if n >= WARMUP:
                timings.append(elapsed)
        latencies: list[float] = []
        for n in range(WARMUP + WS_RUNS):
            seen: list[float] = []

            def on_stdout(message: Any, seen: list[float] = seen) -> None:
                now = time.time()
                # print() may arrive as the text and its newline in two messages.
                if message.line.strip() and not seen:
                    seen.append(now - float(message.line))

            sandbox.run_code("import time; print(time.time())", on_stdout=on_stdout)
            if n >= WARMUP:
                latencies.append(seen[0])
        return timings, latencies
    finally:
        sandbox.kill()


# --- 2. websocket print -> frame ------------------------------------------------------------


async def bench_ws_latency(stack: Any, user: Any, thread: Any) -> tuple[list[float], list[float]]:
    """Print -> frame latencies, and execute-sent -> done round trips."""
    from execution.tests.live import bearer_headers, open_socket, receive_frame

    latencies: list[float] = []
    round_trips: list[float] = []
    request = json.dumps(
        {"type": "execute", "code": "import time; print(time.time())", "language": "python"}
    )
    async with await open_socket(
        stack.server, f"ws/threads/{thread.id}/", headers=bearer_headers(user)
    ) as socket:
        for n in range(WARMUP + WS_RUNS):
            started = time.perf_counter()
            await socket.send(request)
            latency = None
            while True:
                frame = await receive_frame(socket)
                if frame["type"] == "stdout" and latency is None and frame["text"].strip():
                    latency = time.time() - float(frame["text"])
                if frame["type"] == "done":
                    break
                if frame["type"] == "error" and "execution_id" not in frame:
                    raise RuntimeError(f"refused: {frame}")
            if frame["status"] != "succeeded" or latency is None:
                raise RuntimeError(f"run failed: {frame}")
            if n >= WARMUP:
                latencies.append(latency)
                round_trips.append(time.perf_counter() - started)
    return latencies, round_trips


# --- 3. 20 concurrent clients x 50 runs -----------------------------------------------------


async def bench_concurrent_ws(stack: Any, pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """Each client runs its 50 runs in sequence; returns wall time and what was seen.

    Clients are spread over the stack's servers (one, or several sharing Redis)."""
    from execution.tests.live import bearer_headers, open_socket, receive_frame

    async def client(index: int, user: Any, thread: Any) -> dict[str, str]:
        seen: dict[str, str] = {}  # execution id -> its stdout as the frames carried it
        server = stack.servers[index % len(stack.servers)]
        async with await open_socket(
            server, f"ws/threads/{thread.id}/", headers=bearer_headers(user)
        ) as socket:
            for run in range(RUNS_PER_CLIENT):
                code = f"print('client {index} run {run}')"
                await socket.send(
                    json.dumps({"type": "execute", "code": code, "language": "python"})
                )
                execution_id = None
                while True:
                    frame = await receive_frame(socket, within=120)
                    if frame["type"] == "error" and "execution_id" not in frame:
                        raise RuntimeError(f"client {index} refused: {frame}")
                    if frame["type"] == "execution":
                        execution_id = frame["execution_id"]
                        seen[execution_id] = ""
                    elif frame["type"] == "stdout":
                        seen[frame["execution_id"]] += frame["text"]
                    elif frame["type"] == "done" and frame["execution_id"] == execution_id:
                        if frame["status"] != "succeeded":
                            raise RuntimeError(f"client {index} run {run}: {frame}")
                        break
        return seen

    started = time.perf_counter()
    seen = await asyncio.gather(*(client(i, u, t) for i, (u, t) in enumerate(pairs)))
    wall = time.perf_counter() - started
    return {"wall_s": wall, "seen": seen}


async def bench_concurrent_sdk(options: dict[str, Any]) -> dict[str, Any]:
    from e2b_code_interpreter import AsyncSandbox

    sandboxes: list[Any] = []
    try:
        for _ in range(CLIENTS):
            sandboxes.append(await AsyncSandbox.create(**options))
        for sandbox in sandboxes:
            await sandbox.run_code("None")  # warm, as the service's threads are

        async def client(index: int, sandbox: Any) -> int:
            lines = 0
            for run in range(RUNS_PER_CLIENT):
                execution = await sandbox.run_code(f"print('client {index} run {run}')")
                lines += "".join(execution.logs.stdout) == f"client {index} run {run}\n"
            return lines

        started = time.perf_counter()
        lines = await asyncio.gather(*(client(i, s) for i, s in enumerate(sandboxes)))
        return {"wall_s": time.perf_counter() - started, "lines": sum(lines)}
    finally:
        await asyncio.gather(*(sandbox.kill() for sandbox in sandboxes))


def count_lost(alias: str, pairs: list[tuple[Any, Any]], seen: list[dict[str, str]]) -> dict:
    """Compare what was expected, what the frames carried and what the database holds."""
    from execution.models import Execution

    expected = CLIENTS * RUNS_PER_CLIENT
    frames_ok = 0
    db_ok = 0
    db_rows = 0
    for index, ((_, thread), by_id) in enumerate(zip(pairs, seen, strict=True)):
        wanted = {f"client {index} run {run}\n" for run in range(RUNS_PER_CLIENT)}
        frames_ok += len(wanted & set(by_id.values()))
        rows = list(Execution.objects.using(alias).filter(thread_id=thread.id))
        db_rows += len(rows)
        db_ok += len(
            wanted & {row.stdout for row in rows if row.status == Execution.Status.SUCCEEDED}
        )
    return {
        "expected_runs": expected,
        "runs_in_db": db_rows,
        "lost_executions_db": expected - db_ok,
        "lost_lines_frames": expected - frames_ok,
    }


def bench_two_workers(directory: Path, sandboxd: Any) -> dict[str, Any] | None:
    """The same 20 x 50 runs over two daphne processes sharing Redis (the production
    shape: several workers behind a proxy); None when no Redis answers."""
    from execution.models import Thread
    from execution.tests.live import create_user, live_stack, redis_url_if_reachable

    redis_url = redis_url_if_reachable()
    if redis_url is None:
        return None
    (directory / "workers").mkdir()
    with live_stack(
        directory / "workers",
        sandboxd_url=sandboxd.url,
        sandboxd_api_key=sandboxd.api_key,
        servers=2,
        redis_url=redis_url,
        extra_env=BENCH_SERVER_ENV,
    ) as stack:
        alias = stack.database.alias
        users = [create_user(alias, f"worker{n}") for n in range(CLIENTS)]
        pairs = [
            (user, Thread.objects.using(alias).create(owner=user, title="bench")) for user in users
        ]
        concurrent = asyncio.run(bench_concurrent_ws(stack, pairs))
        lost = count_lost(alias, pairs, concurrent["seen"])
    return {
        "servers": 2,
        "runs_per_s": round(CLIENTS * RUNS_PER_CLIENT / concurrent["wall_s"], 1),
        **lost,
    }


# --- 4. new thread, CPU per run, throughput with 8 clients ----------------------------------


def bench_new_thread(
    stack: Any, user: Any, options: dict[str, Any]
) -> tuple[list[float], list[float]]:
    """A new thread's first `print(1)` through the API, and `Sandbox.create` + `run_code`
    through the SDK, interleaved, each after a pause that lets sandboxd's pool refill."""
    import httpx
    from e2b_code_interpreter import Sandbox

    from execution.tests.live import bearer_headers

    api: list[float] = []
    sdk: list[float] = []
    body = {"code": "print(1)", "language": "python"}
    with httpx.Client(
        base_url=stack.server.http_url, headers=bearer_headers(user), timeout=60
    ) as client:
        for _ in range(NEW_THREAD_RUNS):
            time.sleep(POOL_REFILL_PAUSE_S)
            started = time.perf_counter()
            sandbox = Sandbox.create(**options)
            execution = sandbox.run_code("print(1)")
            sdk.append(time.perf_counter() - started)
            sandbox.kill()
            if "".join(execution.logs.stdout) != "1\n":
                raise RuntimeError(f"SDK run failed: {execution}")
            time.sleep(POOL_REFILL_PAUSE_S)
            started = time.perf_counter()
            response = client.post("/api/code/execute", json=body)
            api.append(time.perf_counter() - started)
            if response.status_code != 201 or response.json()["stdout"] != "1\n":
                raise RuntimeError(f"new-thread run failed: {response.status_code} {response.text}")
            client.delete(f"/api/threads/{response.json()['thread_id']}/")
    return api, sdk


def _process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _execute_print(http: Any, thread: Any) -> str | None:
    """One warm `print(1)` through `POST /api/code/execute`: None, or what went wrong."""
    body = {"code": "print(1)", "language": "python", "thread_id": str(thread.id)}
    response = http.post("/api/code/execute", json=body)
    if response.status_code != 201 or response.json()["stdout"] != "1\n":
        return f"{response.status_code} {response.text[:200]}"
    return None


def _get_me(http: Any, thread: Any) -> str | None:
    """One `GET /api/auth/me/`, the cheapest authenticated request: the floor of any run."""
    response = http.get("/api/auth/me/")
    return None if response.status_code == 200 else f"{response.status_code} {response.text}"


def bench_rest_load(
    stack: Any,
    pairs: list[tuple[Any, Any]],
    request: Callable[[Any, Any], str | None] = _execute_print,
) -> dict[str, float]:
    """LOAD_CLIENTS clients, each sending `request` (by default a warm `print(1)` through
    `POST /api/code/execute`) in sequence on its own thread, spread over the stack's servers:
    requests/s and the servers' CPU time per request."""
    import threading

    import httpx

    from execution.tests.live import bearer_headers

    failures: list[str] = []

    def client(index: int, runs: int) -> None:
        user, thread = pairs[index]
        server = stack.servers[index % len(stack.servers)]
        with httpx.Client(
            base_url=server.http_url, headers=bearer_headers(user), timeout=60
        ) as http:
            for _ in range(runs):
                failure = request(http, thread)
                if failure is not None:
                    failures.append(failure)

    def load(runs: int) -> float:
        workers = [threading.Thread(target=client, args=(i, runs)) for i in range(len(pairs))]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return time.perf_counter() - started

    load(3)  # every client's sandbox warm
    pids = [server.process.pid for server in stack.servers]
    cpu_before = sum(_process_cpu_seconds(pid) for pid in pids)
    wall = load(LOAD_RUNS_PER_CLIENT)
    cpu = sum(_process_cpu_seconds(pid) for pid in pids) - cpu_before
    if failures:
        raise RuntimeError(f"{len(failures)} REST runs failed, e.g. {failures[0]}")
    runs = len(pairs) * LOAD_RUNS_PER_CLIENT
    return {"runs_per_s": round(runs / wall, 1), "cpu_ms_per_run": round(cpu / runs * 1000, 2)}


def bench_sdk_load(options: dict[str, Any]) -> float:
    """LOAD_CLIENTS clients of the SDK direct, each on a warm sandbox of its own: runs/s."""
    import threading

    from e2b_code_interpreter import Sandbox

    sandboxes = [Sandbox.create(**options) for _ in range(LOAD_CLIENTS)]
    try:
        for sandbox in sandboxes:
            sandbox.run_code("None")

        def client(sandbox: Any) -> None:
            for _ in range(LOAD_RUNS_PER_CLIENT):
                sandbox.run_code("print(1)")

        workers = [threading.Thread(target=client, args=(s,)) for s in sandboxes]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return round(LOAD_CLIENTS * LOAD_RUNS_PER_CLIENT / (time.perf_counter() - started), 1)
    finally:
        for sandbox in sandboxes:
            sandbox.kill()


def bench_rest_load_two_workers(directory: Path, sandboxd: Any) -> dict[str, float] | None:
    """bench_rest_load over two daphne processes sharing Redis; None when no Redis answers."""
    from execution.models import Thread
    from execution.tests.live import create_user, live_stack, redis_url_if_reachable

    redis_url = redis_url_if_reachable()
    if redis_url is None:
        return None
    (directory / "load-workers").mkdir()
    with live_stack(
        directory / "load-workers",
        sandboxd_url=sandboxd.url,
        sandboxd_api_key=sandboxd.api_key,
        servers=2,
        redis_url=redis_url,
        extra_env=BENCH_SERVER_ENV,
    ) as stack:
        alias = stack.database.alias
        pairs = []
        for n in range(LOAD_CLIENTS):
            user = create_user(alias, f"load{n}")
            pairs.append((user, Thread.objects.using(alias).create(owner=user, title="load")))
        return bench_rest_load(stack, pairs)


# --- the run --------------------------------------------------------------------------------


def run_all(directory: Path, *, postgres: bool = False) -> dict[str, Any]:
    from execution.models import Thread
    from execution.tests.live import create_user, live_stack
    from sandboxd.testing import running_sandboxd

    api_key = secrets.token_urlsafe(24)
    with running_sandboxd(
        state_dir=directory / "sandboxd", api_key=api_key, env=BENCH_SANDBOXD_ENV
    ) as sandboxd:
        options = sandboxd.sdk_options()
        sdk_timings, sdk_latencies = bench_sdk(options)
        sdk_concurrent = asyncio.run(bench_concurrent_sdk(options))
        sdk_load = bench_sdk_load(options)
        with live_stack(
            directory / "live",
            sandboxd_url=sandboxd.url,
            sandboxd_api_key=sandboxd.api_key,
            redis_url=REDIS_URL if postgres else None,
            extra_env=BENCH_SERVER_ENV,
        ) as stack:
            alias = stack.database.alias
            users = [create_user(alias, f"bench{n}") for n in range(CLIENTS)]
            threads = [
                Thread.objects.using(alias).create(owner=user, title="bench") for user in users
            ]
            in_process_thread = Thread.objects.using(alias).create(owner=users[0], title="direct")
            new_thread_api, new_thread_sdk = bench_new_thread(stack, users[1], options)
            load_pairs = list(zip(users, threads, strict=True))[:LOAD_CLIENTS]
            rest_load = bench_rest_load(stack, load_pairs)
            floor_load = bench_rest_load(stack, load_pairs, _get_me)
            # In process, the service uses the default database: only the SQLite run's
            # default is the stack's own file.
            in_process_timings = (
                None if postgres else bench_in_process(sandboxd, users[0], in_process_thread)
            )
            rest_timings, http_floor = bench_rest(stack, users[0], threads[0])
            ws_latencies, ws_round_trips = asyncio.run(
                bench_ws_latency(stack, users[0], threads[0])
            )
            pairs = list(zip(users, threads, strict=True))
            concurrent = asyncio.run(bench_concurrent_ws(stack, pairs))
            lost = count_lost(alias, pairs, concurrent["seen"])
        scaled = bench_two_workers(directory, sandboxd)
        rest_load_two = bench_rest_load_two_workers(directory, sandboxd)

    total = CLIENTS * RUNS_PER_CLIENT
    rest = summary_ms(rest_timings)
    sdk = summary_ms(sdk_timings)
    return {
        "rest_execute": rest,
        "sdk_run_code": sdk,
        "rest_to_sdk_p50_ratio": round(rest["p50_ms"] / sdk["p50_ms"], 2),
        "tool_executor_in_process": in_process_timings and summary_ms(in_process_timings),
        "http_jwt_floor_get_me": summary_ms(http_floor),
        "ws_print_to_frame": summary_ms(ws_latencies),
        "sdk_print_to_on_stdout": summary_ms(sdk_latencies),
        "ws_execute_to_done": summary_ms(ws_round_trips),
        "concurrent_ws": {
            "clients": CLIENTS,
            "runs_per_client": RUNS_PER_CLIENT,
            "runs_per_s": round(total / concurrent["wall_s"], 1),
            **lost,
        },
        "concurrent_ws_two_workers_redis": scaled,
        "concurrent_sdk": {
            "runs_per_s": round(total / sdk_concurrent["wall_s"], 1),
            "lost_lines": total - sdk_concurrent["lines"],
        },
        "new_thread_first_result": summary_ms(new_thread_api),
        "sdk_create_and_run": summary_ms(new_thread_sdk),
        "rest_load_one_worker": rest_load,
        "get_me_load_one_worker": floor_load,
        "rest_load_two_workers_redis": rest_load_two,
        "sdk_load_runs_per_s": sdk_load,
        "targets": {
            "rest_to_sdk_p50_ratio_max": 2.0,
            "ws_execute_to_done_to_sdk_p50_ratio_max": 2.0,
            "new_thread_to_sdk_create_p50_ratio_max": 4.0,
            "new_thread_p50_ms_max": 60.0,
            "cpu_ms_per_run_max": 4.0,
            "load_one_worker_to_sdk_ratio_min": 0.5,
            "lost": 0,
        },
    }


def two_worker_rows(
    scaled: dict[str, Any] | None, conc_sdk: dict[str, Any]
) -> list[tuple[str, ...]]:
    if scaled is None:
        return [("  same, 2 daphne workers + Redis", "skipped: no Redis", "", "", "")]
    return [
        (
            "  same, 2 daphne workers + Redis",
            f"{scaled['runs_per_s']} runs/s",
            f"{conc_sdk['runs_per_s']} runs/s",
            f"{round(scaled['runs_per_s'] / conc_sdk['runs_per_s'], 2)}x",
            "",
        ),
        (
            "  lost executions (db) / lines (frames)",
            f"{scaled['lost_executions_db']} / {scaled['lost_lines_frames']}",
            "",
            "",
            "0 / 0",
        ),
    ]


def issue_10_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """The rows of issue 10's targets."""
    new, create = results["new_thread_first_result"], results["sdk_create_and_run"]
    sdk, rtt = results["sdk_run_code"], results["ws_execute_to_done"]
    one, two = results["rest_load_one_worker"], results["rest_load_two_workers_redis"]
    sdk_load = results["sdk_load_runs_per_s"]
    rows = [
        (
            "new thread -> first result p50",
            f"{new['p50_ms']} ms",
            f"{create['p50_ms']} ms (create + run_code)",
            f"{round(new['p50_ms'] / create['p50_ms'], 2)}x",
            "<= 4x, <= 60 ms",
        ),
        (
            "websocket execute -> done p50 vs SDK run_code",
            f"{rtt['p50_ms']} ms",
            f"{sdk['p50_ms']} ms",
            f"{round(rtt['p50_ms'] / sdk['p50_ms'], 2)}x",
            "<= 2x",
        ),
        (
            f"{LOAD_CLIENTS} clients REST print(1), 1 worker",
            f"{one['runs_per_s']} runs/s",
            f"{sdk_load} runs/s",
            f"{round(one['runs_per_s'] / sdk_load, 2)}x",
            ">= 0.5x",
        ),
        ("  web-tier CPU per run (daphne)", f"{one['cpu_ms_per_run']} ms", "", "", "<= 4 ms"),
    ]
    floor = results.get("get_me_load_one_worker")
    if floor:
        rows += [
            (
                f"  floor: {LOAD_CLIENTS} clients GET /api/auth/me/, 1 worker",
                f"{floor['runs_per_s']} requests/s",
                "",
                "",
                "",
            ),
            ("    its CPU per request (daphne)", f"{floor['cpu_ms_per_run']} ms", "", "", ""),
        ]
    if two is None:
        rows.append(
            (f"{LOAD_CLIENTS} clients REST, 2 workers + Redis", "skipped: no Redis", "", "", "")
        )
    else:
        rows += [
            (
                f"{LOAD_CLIENTS} clients REST print(1), 2 workers + Redis",
                f"{two['runs_per_s']} runs/s",
                f"{sdk_load} runs/s",
                f"{round(two['runs_per_s'] / sdk_load, 2)}x",
                "reported",
            ),
            ("  web-tier CPU per run (2 daphnes)", f"{two['cpu_ms_per_run']} ms", "", "", ""),
        ]
    return rows


def in_process_rows(
    in_process: dict[str, float] | None, sdk: dict[str, float]
) -> list[tuple[str, ...]]:
    if not in_process:
        return []
    return [
        (
            "  of which ToolExecutor in process p50",
            f"{in_process['p50_ms']} ms",
            "",
            f"{round(in_process['p50_ms'] / sdk['p50_ms'], 2)}x",
            "",
        )
    ]


def render(results: dict[str, Any]) -> str:
    rest, sdk = results["rest_execute"], results["sdk_run_code"]
    ws, sdk_ws = results["ws_print_to_frame"], results["sdk_print_to_on_stdout"]
    rtt = results["ws_execute_to_done"]
    conc, conc_sdk = results["concurrent_ws"], results["concurrent_sdk"]
    rows = [
        ("metric", "atlaschat", "baseline (SDK direct)", "ratio", "target"),
        (
            "POST /api/code/execute print(1) p50",
            f"{rest['p50_ms']} ms",
            f"{sdk['p50_ms']} ms",
            f"{results['rest_to_sdk_p50_ratio']}x",
            "<= 2x",
        ),
        (
            "POST /api/code/execute print(1) p95",
            f"{rest['p95_ms']} ms",
            f"{sdk['p95_ms']} ms",
            f"{round(rest['p95_ms'] / sdk['p95_ms'], 2)}x",
            "",
        ),
        *in_process_rows(results.get("tool_executor_in_process"), sdk),
        (
            "  floor: GET /api/auth/me/ p50",
            f"{results['http_jwt_floor_get_me']['p50_ms']} ms",
            "",
            "",
            "",
        ),
        (
            "websocket print -> frame p50",
            f"{ws['p50_ms']} ms",
            f"{sdk_ws['p50_ms']} ms (on_stdout)",
            "",
            "<= 20 ms",
        ),
        ("websocket print -> frame p95", f"{ws['p95_ms']} ms", f"{sdk_ws['p95_ms']} ms", "", ""),
        ("websocket execute -> done p50", f"{rtt['p50_ms']} ms", "", "", ""),
        (
            f"{conc['clients']} clients x {conc['runs_per_client']} runs",
            f"{conc['runs_per_s']} runs/s",
            f"{conc_sdk['runs_per_s']} runs/s",
            f"{round(conc['runs_per_s'] / conc_sdk['runs_per_s'], 2)}x",
            "",
        ),
        (
            "lost executions (db) / lines (frames)",
            f"{conc['lost_executions_db']} / {conc['lost_lines_frames']}",
            f"- / {conc_sdk['lost_lines']}",
            "",
            "0 / 0",
        ),
        *two_worker_rows(results.get("concurrent_ws_two_workers_redis"), conc_sdk),
        *issue_10_rows(results),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run every execution benchmark, print the table, write bench/results/execution.json;
    then the same on PostgreSQL + Redis in a second process when both answer. With
    `--database postgres` (that second process): only the PostgreSQL run."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default=None)
    args = parser.parse_args([] if argv is None else argv)
    if args.database is not None:
        run_configuration(postgres=args.database == "postgres")
        return
    # The production run first, in its own process (Django is set up once per process); then
    # the embedded defaults here, whose in-process service keeps its worker heartbeat on the
    # run's SQLite file until this process ends.
    if _answers(5432) and _answers(6379):
        print("== the production configuration (PostgreSQL + Redis)", flush=True)
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--database", "postgres"],
            check=True,
        )
        print("\n== the embedded defaults (SQLite, in-memory channel layer)", flush=True)
    else:
        print("PostgreSQL or Redis does not answer on 127.0.0.1: no production run.")
    run_configuration(postgres=False)


def _answers(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def run_configuration(*, postgres: bool) -> None:
    saved = {name: os.environ.get(name) for name in BENCH_ENV_NAMES}
    try:
        with tempfile.TemporaryDirectory(prefix="atlaschat-bench-", dir="/tmp") as tmp:
            directory = Path(tmp)
            # sandboxd opens its state as the sandbox uids: the directory must be traversable.
            directory.chmod(0o755)
            (directory / "live").mkdir()
            _setup_django(directory / "live", postgres=postgres)
            load_before = os.getloadavg()[0]
            results = run_all(directory, postgres=postgres)
            # Other work on the machine moves every number here: say how busy it was.
            results["machine"] = {
                "cpus": os.cpu_count(),
                "load_average_1min_before": round(load_before, 2),
                "load_average_1min_after": round(os.getloadavg()[0], 2),
                "database": "PostgreSQL" if postgres else "SQLite file",
                "channel_layer": "Redis" if postgres else "in-memory",
            }
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    print(render(results))
    machine = results["machine"]
    print(
        f"\n{machine['cpus']} CPUs, load average {machine['load_average_1min_before']} before and "
        f"{machine['load_average_1min_after']} after; {machine['database']}, "
        f"{machine['channel_layer']} channel layer and one daphne process except in the "
        "two-worker rows (Redis)."
    )
    path = RESULTS.with_name("execution-postgres.json") if postgres else RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
