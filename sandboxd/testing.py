"""Run a real sandboxd for tests: ``running_sandboxd(state_dir=..., api_key=...)``.

The server is started as a subprocess with this interpreter (``python -m sandboxd serve
--port 0``), so tests exercise exactly what users run. The context manager waits for the
"listening" line and a healthy answer, yields a ``RunningSandboxd`` (``.url``, ``.api_key``,
``.sdk_options()``), then stops it with SIGTERM and checks that nothing it started is left
running. If the server dies or never gets ready, the error carries its log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from sandboxd.config import PROJECT_ROOT, untraversable_ancestor

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
_LISTENING = re.compile(r"^sandboxd listening on (http://\S+)$", re.MULTILINE)


def wait_until(predicate: Callable[[], object], seconds: float) -> bool:
    """Poll `predicate` until it is true or `seconds` pass; True if it became true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


class SandboxdFailed(RuntimeError):
    """The test server did not start, died, or left processes behind; the message says
    which and includes the server's log."""


@dataclass(frozen=True)
class RunningSandboxd:
    """A live test server."""

    url: str
    api_key: str
    pid: int
    log_path: Path

    def sdk_options(self) -> dict[str, str]:
        """Keyword arguments for ``Sandbox.create(**opts)`` / ``Sandbox.connect(...)``."""
        return {"api_key": self.api_key, "api_url": self.url, "sandbox_url": self.url}

    def log(self) -> str:
        """Everything the server wrote so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True


def _descendants(root: int) -> dict[int, str]:
    """Live descendants of ``root`` (pid → /proc start time, to tell reused pids apart)."""
    parents: dict[int, int] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        starts[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = starts[pid]
                frontier.append(pid)
    return found


def _still_running(processes: Mapping[int, str]) -> list[int]:
    left = []
    for pid, start in processes.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[19] == start and fields[0] != "Z":
            left.append(pid)
    return left


def _wait_until_ready(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            url = match.group(1)
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:  # noqa: S310
                    if answer.status == 200:
                        return url
            except (urllib.error.URLError, OSError):
                pass
        if process.poll() is not None:
            raise SandboxdFailed(
                f"sandboxd exited with status {process.returncode} before it was ready:\n"
                + log_path.read_text(errors="replace")
            )
        time.sleep(0.05)
    raise SandboxdFailed(
        f"sandboxd was not ready after {START_TIMEOUT_SECONDS:.0f} s:\n"
        + log_path.read_text(errors="replace")
    )


@contextmanager
def running_sandboxd(
    *, state_dir: Path, api_key: str, env: dict[str, str] | None = None, port: int = 0
) -> Iterator[RunningSandboxd]:
    """Start ``python -m sandboxd serve`` on a free loopback port (or ``port``, to bring a
    stopped server back at the same address); stop it on exit.

    ``state_dir`` must be reachable by the sandbox uids (no 0700 ancestor such as /root or
    pytest's own tmp dir); ``env`` adds ``SANDBOXD_*`` settings. Raises ``SandboxdFailed``
    when the server does not start, dies, or leaves processes behind when stopped.
    """
    blocked = untraversable_ancestor(state_dir)
    if blocked is not None:
        raise SandboxdFailed(
            f"state_dir {state_dir} is under {blocked}, which the sandbox uids cannot "
            "traverse (no o+x); use e.g. tempfile.mkdtemp() made 0755 under /tmp"
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="sandboxd-log-"))
    log_path = log_dir / "sandboxd.log"
    # The key goes through the environment, not argv, where any local user could read it.
    environment = {**os.environ, **(env or {}), "SANDBOXD_API_KEY": api_key}
    environment.setdefault("SANDBOXD_LOG_LEVEL", "info")
    command = [
        sys.executable,
        "-m",
        "sandboxd",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        url = _wait_until_ready(process, log_path)
    except BaseException:
        process.kill()
        process.wait()
        shutil.rmtree(log_dir, ignore_errors=True)
        raise
    server = RunningSandboxd(url=url, api_key=api_key, pid=process.pid, log_path=log_path)
    try:
        yield server
    finally:
        try:
            _stop(process, log_path)
        finally:
            # Any failure above already carries the log in its message.
            shutil.rmtree(log_dir, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes], log_path: Path) -> None:
    """SIGTERM the server, then check it exited 0 and left none of its processes behind
    (any left are killed, and reported)."""
    started = _descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise SandboxdFailed(
            f"sandboxd did not stop within {STOP_TIMEOUT_SECONDS:.0f} s of SIGTERM:\n"
            + log_path.read_text(errors="replace")
        ) from None
    time.sleep(0.2)  # let the kernel reap what the server killed last
    left = _still_running(started)
    for pid in left:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        raise SandboxdFailed(
            f"sandboxd left processes running after it stopped: {left}\n"
            + log_path.read_text(errors="replace")
        )
    if process.returncode != 0:
        raise SandboxdFailed(
            f"sandboxd exited with status {process.returncode} on SIGTERM:\n"
            + log_path.read_text(errors="replace")
        )
