"""`make test`'s script: both passes run, and it fails when a pass fails or runs nothing
(pytest's exit 5 would otherwise let an empty run look green)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

# The script picks its own database whatever this run uses, so the PostgreSQL pass of
# `make test` would only repeat it: it runs in the SQLite pass.
pytestmark = pytest.mark.skipif(
    "DATABASE_URL" in os.environ, reason="database-independent: runs in the SQLite pass"
)

TEST_SCRIPT = Path(settings.BASE_DIR) / "scripts" / "test.sh"


def answers(port: int) -> bool:
    """Whether a server accepts connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def run_test_script(
    *pytest_args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # A nested pytest must not inherit this run's database or layer choice.
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(extra_env or {})
    return subprocess.run(
        ["bash", str(TEST_SCRIPT), "-q", "-p", "no:cacheprovider", *pytest_args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_it_passes_when_every_pass_passes() -> None:
    result = run_test_script("-k", "test_envbool_reads_the_usual_spellings")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pytest: SQLite + in-memory layer" in result.stdout
    if answers(5432) and answers(6379):  # as on CI's machine: the second pass ran too
        assert "pytest: PostgreSQL + Redis" in result.stdout
        assert result.stdout.count("8 passed") == 2
    else:
        assert "skipped that pass" in result.stderr
        assert result.stdout.count("8 passed") == 1
    assert "every pass succeeded" in result.stdout


def test_it_fails_when_a_pass_collects_no_tests() -> None:
    result = run_test_script("-k", "no_test_is_called_like_this")
    assert result.returncode == 1
    assert "the SQLite + in-memory layer pass collected no tests" in result.stderr
    assert "FAILED" in result.stderr


def test_it_fails_when_a_test_fails(tmp_path: Path) -> None:
    canary = tmp_path / "test_canary.py"
    canary.write_text("def test_canary_fails():\n    assert 1 + 1 == 3\n")
    result = run_test_script(str(canary), "-k", "canary")
    assert result.returncode == 1
    assert "1 failed" in result.stdout
    assert "FAILED: SQLite + in-memory layer (exit 1)" in result.stderr


def test_a_pass_that_hangs_stops_at_its_budget_with_pytests_summary(tmp_path: Path) -> None:
    canary = tmp_path / "test_canary.py"
    canary.write_text(
        "import time\n\n"
        "def test_canary_passes():\n    pass\n\n"
        "def test_canary_hangs():\n    time.sleep(600)\n"
    )
    env = {"TEST_PASS_BUDGET_SECONDS": "20"}  # the whole suite is collected first
    result = run_test_script(str(canary), "-k", "canary", extra_env=env)
    assert result.returncode == 1
    assert "KeyboardInterrupt" in result.stdout  # pytest stopped and reported
    assert "1 passed" in result.stdout
    assert "FAILED: SQLite + in-memory layer (stopped at its budget of 20 s)" in result.stderr
