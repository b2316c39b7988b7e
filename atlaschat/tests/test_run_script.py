"""`make run`'s script, for real: a fresh state directory is migrated, gets an admin account
whose printed password logs in, the site serves on the chosen port, a second start keeps the
account, and stopping the script stops the server.

sandboxd is out of this test's scope (its own tests start it): E2B_API_KEY tells the script
that code runs elsewhere, so it starts no sandboxd; nothing here contacts E2B.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings

# The script picks its own database whatever this run uses, so the PostgreSQL pass of
# `make test` would only repeat it: it runs in the SQLite pass.
pytestmark = pytest.mark.skipif(
    "DATABASE_URL" in os.environ, reason="database-independent: runs in the SQLite pass"
)

RUN_SCRIPT = Path(settings.BASE_DIR) / "scripts" / "run.sh"
START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunningScript:
    """scripts/run.sh in its own process group, its output collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            ["bash", str(RUN_SCRIPT)],
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """Return the first output line matching pattern; fail with the output so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        pytest.fail(f"run.sh never printed {pattern!r}; output:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        """SIGTERM the script (as a service manager would) and return its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            # Whatever happens, leave nothing of this test running.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # The embedded defaults, whatever the test run itself uses; and not "under pytest".
        # PROMETHEUS_MULTIPROC_DIR: this test process's own (settings), which the script
        # would empty; the script is to choose its own.
        if key
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "PYTEST_VERSION",
            "SANDBOXD_URL",
            "PROMETHEUS_MULTIPROC_DIR",
        }
    }
    env.update(
        HOST="127.0.0.1",
        PORT=str(free_port()),
        ATLASCHAT_VAR_DIR=str(tmp_path / "var"),
        STATIC_ROOT=str(tmp_path / "static"),
        SECRET_KEY="run-script-test-key-" + "x" * 40,
        E2B_API_KEY="e2b_unused_in_this_test",
        METRICS_TOKEN="run-script-metrics-token",
    )
    return env


@pytest.fixture
def start(run_env: dict[str, str]) -> Iterator[type[RunningScript]]:
    started: list[RunningScript] = []

    class Tracked(RunningScript):
        def __init__(self, env: dict[str, str]) -> None:
            super().__init__(env)
            started.append(self)

    yield Tracked
    for script in started:
        script.stop()


def log_in_and_open_the_audit(base_url: str, password: str) -> httpx.Response:
    with httpx.Client(base_url=base_url, follow_redirects=False, timeout=10) as client:
        form = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token, form.text
        login = client.post(
            "/accounts/login/",
            data={
                "csrfmiddlewaretoken": token.group(1),
                "username": "admin",
                "password": password,
            },
            headers={"Referer": f"{base_url}/accounts/login/"},
        )
        assert login.status_code == 302, login.text
        assert login.headers["location"] == "/"
        return client.get("/admin/execution/execution/")


def test_run_prepares_a_fresh_install_serves_it_and_stops(
    start: type[RunningScript], run_env: dict[str, str]
) -> None:
    base_url = f"http://127.0.0.1:{run_env['PORT']}"

    first = start(run_env)
    login_url = first.wait_for(r"log in at\s+(\S+)").group(1)
    assert login_url == f"{base_url}/accounts/login/"
    password = first.wait_for(r"^\s+password\s+(\S+)$").group(1)
    first.wait_for(r"AtlasChat is serving on " + re.escape(base_url))
    first.wait_for(r"Listening on TCP address")

    assert httpx.get(f"{base_url}/healthz").json() == {"status": "ok", "database": "ok"}
    # Static files were collected and are served (WhiteNoise), front-end packages included.
    assert httpx.get(f"{base_url}/static/vendor/htmx.org/htmx.min.js").status_code == 200
    audit = log_in_and_open_the_audit(base_url, password)
    assert audit.status_code == 200
    assert "Select execution to view" in audit.text

    # Metrics in multiprocess mode, in the state directory, for the token's bearer only.
    metrics_dir = Path(run_env["ATLASCHAT_VAR_DIR"]) / "prometheus"
    assert httpx.get(f"{base_url}/metrics").status_code == 401
    scrape = httpx.get(
        f"{base_url}/metrics", headers={"Authorization": "Bearer run-script-metrics-token"}
    )
    assert scrape.status_code == 200
    assert "atlaschat_websocket_connections_open" in scrape.text
    assert list(metrics_dir.glob("*.db"))

    # TERM: the script stops the server it started and exits 128 + 15.
    assert first.stop() == 143
    # What stopped processes left is emptied at the next start, so it is not counted twice.
    stale = metrics_dir / "counter_999999.db"
    stale.write_bytes(b"")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/healthz")

    # A second start finds the account: no new password, the first one still works.
    second = start(run_env)
    second.wait_for(r"The admin account 'admin' exists")
    second.wait_for(r"Listening on TCP address")
    assert not stale.exists()
    assert not any(password in line for line in second.lines)
    assert log_in_and_open_the_audit(base_url, password).status_code == 200


def worker_pids(script_pid: int) -> set[int]:
    """The daphne processes serving a shared socket (`--fd`) below run.sh's process group."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            group = os.getpgid(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
        if group == script_pid and b"daphne" in argv and b"--fd" in argv:
            pids.add(int(entry.name))
    return pids


def test_run_serves_with_several_workers_on_one_port_and_stops_them_all(
    start: type[RunningScript], run_env: dict[str, str]
) -> None:
    from execution.tests.live import redis_url_if_reachable

    redis_url = redis_url_if_reachable()
    assert redis_url, "Redis must answer on 127.0.0.1:6379 (CI's machine runs one)"
    base_url = f"http://127.0.0.1:{run_env['PORT']}"
    script = start({**run_env, "WORKERS": "2", "REDIS_URL": redis_url})
    script.wait_for(r"serving on " + re.escape(base_url) + r"/? with 2 workers")
    script.wait_for(r"Listening on TCP address")
    script.wait_for(r"Listening on TCP address")

    workers = worker_pids(script.process.pid)
    assert len(workers) == 2
    for _ in range(20):
        assert httpx.get(f"{base_url}/healthz", timeout=10).status_code == 200

    assert script.stop() == 143
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/healthz")


def test_run_refuses_several_workers_without_redis(
    start: type[RunningScript], run_env: dict[str, str]
) -> None:
    script = start({**run_env, "WORKERS": "3"})
    script.wait_for(r"WORKERS=3 needs REDIS_URL")
    assert script.process.wait(30) == 1
