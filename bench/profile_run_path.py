"""Where a warm run's web-tier time goes: py-spy samples the daphne process (every thread,
idle ones excluded) while 8 clients run `print(1)` through `POST /api/code/execute`.

Not a benchmark (bench/run.py does not run it): `python bench/profile_run_path.py
[--database postgres]` (the embedded defaults, or PostgreSQL + Redis on 127.0.0.1) prints
the share of samples per part of the path (view/DRF, ToolExecutor and the runner, the
sandbox contract and SDK, the channel layer, the database, JSON) and writes the collapsed
stacks to bench/results/run_path.collapsed for a flame graph.
"""

from __future__ import annotations

import collections
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "run_path.collapsed"
CLIENTS = 8
# --database postgres: a fresh database on the local server, the Redis channel layer.
POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/atlaschat"
REDIS_URL = "redis://127.0.0.1:6379/0"
RUNS_PER_CLIENT = 60
SERVER_ENV = {
    "EXECUTION_USER_CONCURRENCY": "64",
    "EXECUTION_THROTTLE_RATE": "100000/minute",
    "SANDBOX_GLOBAL_LIMIT": "32",
}

# First matching frame (innermost first) decides a sample's part of the path.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("database (Django ORM + driver)", ("django/db/", "sqlite3", "psycopg")),
    ("channel layer publish", ("channels/layers", "channels_redis", "services/events.py")),
    ("e2b SDK + httpx (sandbox I/O)", ("e2b", "httpx", "httpcore", "h11", "anyio/_backends")),
    ("JSON encode/decode", ("json/",)),
    ("sandbox contract + runner", ("execution/sandbox/", "services/runs.py")),
    ("ToolExecutor + sessions + file sync", ("execution/services/",)),
    ("DRF + views + auth", ("rest_framework", "execution/api/", "accounts/", "simplejwt")),
    ("Django request/middleware", ("django/core/handlers", "django/middleware", "atlaschat/")),
    ("daphne/twisted/asgiref", ("daphne", "twisted", "autobahn", "asgiref")),
)


def main() -> None:
    sys.path.insert(0, str(ROOT))
    postgres = sys.argv[1:] == ["--database", "postgres"]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atlaschat.settings")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    for name in ("DATABASE_URL", "REDIS_URL", "E2B_API_KEY"):
        os.environ.pop(name, None)
    if postgres:
        os.environ["DATABASE_URL"] = POSTGRES_URL
    with tempfile.TemporaryDirectory(prefix="atlaschat-profile-", dir="/tmp") as tmp:
        directory = Path(tmp)
        directory.chmod(0o755)
        (directory / "live").mkdir()
        os.environ["ATLASCHAT_VAR_DIR"] = str(directory / "live")
        import django

        django.setup()
        import httpx

        from execution.models import Thread
        from execution.tests.live import bearer_headers, create_user, live_stack
        from sandboxd.testing import running_sandboxd

        env = {"SANDBOXD_MAX_SANDBOXES": "32"}
        with running_sandboxd(
            state_dir=directory / "sandboxd", api_key=secrets.token_urlsafe(24), env=env
        ) as sandboxd, live_stack(
            directory / "live", sandboxd_url=sandboxd.url, sandboxd_api_key=sandboxd.api_key,
            redis_url=REDIS_URL if postgres else None, extra_env=SERVER_ENV,
        ) as stack:  # fmt: skip
            alias = stack.database.alias
            users = [create_user(alias, f"profile{n}") for n in range(CLIENTS)]
            threads = [Thread.objects.using(alias).create(owner=u, title="p") for u in users]

            def client(index: int, runs: int) -> None:
                body = {
                    "code": "print(1)",
                    "language": "python",
                    "thread_id": str(threads[index].id),
                }
                with httpx.Client(
                    base_url=stack.server.http_url, headers=bearer_headers(users[index]), timeout=60
                ) as http:
                    for _ in range(runs):
                        response = http.post("/api/code/execute", json=body)
                        assert response.json()["stdout"] == "1\n", response.text

            def load(runs: int) -> float:
                workers = [threading.Thread(target=client, args=(i, runs)) for i in range(CLIENTS)]
                started = time.perf_counter()
                for worker in workers:
                    worker.start()
                for worker in workers:
                    worker.join()
                return time.perf_counter() - started

            load(5)  # warm: sandboxes, connections, imports
            pid = stack.server.process.pid
            cpu_before = _cpu_seconds(pid)
            OUT.parent.mkdir(parents=True, exist_ok=True)  # py-spy does not make it
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(pid),
                 "--rate", "250", "--format", "raw", "--output", str(OUT), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1.0)
            wall = load(RUNS_PER_CLIENT)
            cpu = _cpu_seconds(pid) - cpu_before
            spy.send_signal(2)
            spy.wait(60)
    runs = CLIENTS * RUNS_PER_CLIENT
    print(
        f"{runs} runs in {wall:.1f} s ({runs / wall:.0f} runs/s); "
        f"daphne CPU {cpu / runs * 1000:.2f} ms/run"
    )
    print(summarise(OUT))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def summarise(path: Path) -> str:
    """Share of (non-idle) samples per part of the path, and the hottest of our functions."""
    parts: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue  # the last line, cut when py-spy was interrupted mid-write
        count = int(count_text)
        frames = stack.split(";")
        total += count
        for frame in reversed(frames):
            part = next((name for name, needles in PARTS if any(n in frame for n in needles)), None)
            if part:
                parts[part] += count
                break
        else:
            parts["other (Python runtime, threads)"] += count
        for frame in reversed(frames):
            where = frame.rpartition(" (")[2]
            if where.startswith(("execution/", "atlaschat/", "accounts/")):
                ours[f"{frame.rpartition(' (')[0]} ({where.split(':')[0]}"] += count
                break
    lines = [f"{'part of the path':45} share of busy samples", "-" * 68]
    for name, count in parts.most_common():
        lines.append(f"{name:45} {100 * count / total:5.1f} %")
    lines.append("\nhottest frames of our own code (innermost of ours, inclusive):")
    for name, count in ours.most_common(12):
        lines.append(f"  {100 * count / total:5.1f} %  {name}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
