"""Shared fixtures for sandboxd's tests: one real server for the whole session.

``sandboxd`` is a ``sandboxd.testing.RunningSandboxd``: the real ``python -m sandboxd serve``
on a free loopback port, with its state dir under /tmp (pytest's own tmp dir is 0700 and the
sandbox uids could not traverse it). Pass ``**sandboxd.sdk_options()`` to the SDK.

A shared server that dies or stops answering would make every later test wait out its
timeouts; instead the first test to find it so fails with the end of the server's log (where
the loop watchdog says what blocked it), and the tests after fail at once.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandboxd.testing import RunningSandboxd, running_sandboxd

SHARED_SERVERS = ("sandboxd", "small_sandboxd")
LOG_LINES_SHOWN = 60
# Why each shared server was found broken (keyed by its pid).
_broken: dict[int, str] = {}


def make_state_dir() -> Path:
    """A fresh state dir the sandbox uids can traverse (0755 under /tmp)."""
    path = Path(tempfile.mkdtemp(prefix="sandboxd-test-"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def sandboxd() -> Iterator[RunningSandboxd]:
    """The session's sandboxd (stopped, and checked to leave nothing behind, at the end)."""
    state_dir = make_state_dir()
    try:
        with running_sandboxd(
            state_dir=state_dir, api_key="test-" + secrets.token_hex(16)
        ) as server:
            yield server
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def small_sandboxd() -> Iterator[RunningSandboxd]:
    """A second server with small limits: at most 2 live sandboxes, no pool, and files of at
    most 1 MiB through /files."""
    state_dir = make_state_dir()
    try:
        with running_sandboxd(
            state_dir=state_dir,
            api_key="small-" + secrets.token_hex(8),
            env={
                "SANDBOXD_MAX_SANDBOXES": "2",
                "SANDBOXD_POOL_SIZE": "0",
                "SANDBOXD_MAX_FILE_MB": "1",
            },
        ) as server:
            yield server
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def _why_unusable(server: RunningSandboxd) -> str | None:
    if not server.alive():
        return "it exited"
    try:
        httpx.get(f"{server.url}/health", timeout=10).raise_for_status()
    except httpx.HTTPError as error:
        return f"its /health failed ({error!r})"
    return None


@pytest.fixture(autouse=True)
def _shared_server_answers(request: pytest.FixtureRequest) -> None:
    """Fail fast, with the server's log, when a shared server a test needs is broken."""
    for name in SHARED_SERVERS:
        if name not in request.fixturenames:
            continue
        server: RunningSandboxd = request.getfixturevalue(name)
        if server.pid in _broken:
            pytest.fail(
                f"the shared {name} server broke before this test ({_broken[server.pid]}); "
                "see the first failure for its log",
                pytrace=False,
            )
        reason = _why_unusable(server)
        if reason is not None:
            _broken[server.pid] = reason
            tail = "\n".join(server.log().splitlines()[-LOG_LINES_SHOWN:])
            pytest.fail(
                f"the shared {name} server is broken: {reason}. The end of its log:\n{tail}",
                pytrace=False,
            )


_ROUTINE_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ (DEBUG|INFO) ")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """A failed test's report carries what its sandboxd servers logged above INFO (kernel
    deaths, start failures, tracebacks): a server's log is gone once the run ends."""
    report = yield
    if report.failed and call.when == "call":
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, RunningSandboxd) and value.log_path.exists():
                lines = [
                    line
                    for line in value.log().splitlines()
                    if line.strip() and not _ROUTINE_LOG_LINE.match(line)
                ]
                text = "\n".join(lines[-LOG_LINES_SHOWN:]) or "(nothing above INFO)"
                report.sections.append((f"{name} server log, above INFO", text))
    return report
