"""``python -m sandboxd``: configuration is checked before anything starts, and ``doctor``'s
exit code agrees with its verdict."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sandboxd.config import PROJECT_ROOT, ConfigError, config_from, describe_options


def run_cli(
    *args: str, env: dict[str, str] | None = None, as_nobody: bool = False
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
    # setpriv drops to an unprivileged user: a host where sandboxes cannot be made safe.
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if as_nobody else []
    return subprocess.run(
        [*prefix, sys.executable, "-m", "sandboxd", *args],
        cwd=PROJECT_ROOT,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_to_start_without_an_api_key() -> None:
    result = run_cli("serve", "--port", "0")
    assert result.returncode == 2
    assert "an API key is required" in result.stderr
    assert "listening" not in result.stdout


def test_serve_names_the_option_with_a_bad_value() -> None:
    result = run_cli("serve", "--api-key", "k", env={"SANDBOXD_MAX_SANDBOXES": "many"})
    assert result.returncode == 2
    assert "SANDBOXD_MAX_SANDBOXES" in result.stderr


def test_serve_refuses_a_state_dir_the_sandbox_uids_cannot_reach() -> None:
    closed = Path(tempfile.mkdtemp(prefix="sandboxd-closed-"))  # 0700, like /root
    try:
        result = run_cli("serve", "--api-key", "k", "--state-dir", str(closed / "state"))
        assert result.returncode == 2
        assert f"{closed} has no o+x permission" in result.stderr
    finally:
        closed.rmdir()


def test_serve_refuses_to_start_where_a_sandbox_cannot_be_made_safe() -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="sandboxd-unsafe-"))
    state_dir.chmod(0o777)
    try:
        result = run_cli(
            "serve",
            "--port",
            "0",
            "--api-key",
            "k",
            "--state-dir",
            str(state_dir / "s"),
            as_nobody=True,
        )
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    assert result.returncode == 1
    assert "refusing to start" in result.stderr
    assert "not running as root" in result.stderr
    assert "listening" not in result.stdout


def test_doctor_says_unsafe_and_exits_1_without_root() -> None:
    result = run_cli("doctor", as_nobody=True)
    assert result.returncode == 1
    assert "verdict: UNSAFE" in result.stdout


def test_the_command_line_wins_over_the_environment_and_limits_convert_units() -> None:
    config = config_from(
        {"api_key": "from-cli", "memory_mb": "512", "cpus": None, "port": None},
        environ={"SANDBOXD_API_KEY": "from-env", "SANDBOXD_PORT": "4000", "SANDBOXD_CPUS": "0.5"},
    )
    assert config.api_key == "from-cli"
    assert config.port == 4000
    assert config.limit_overrides() == {"memory_bytes": 512 << 20, "cpus": 0.5}


def test_a_default_timeout_above_the_maximum_is_refused() -> None:
    with pytest.raises(ConfigError, match="default-timeout"):
        config_from({"api_key": "k", "default_timeout": "100", "max_timeout": "10"}, environ={})


def test_every_option_has_an_environment_variable() -> None:
    rows = describe_options()
    assert all(env.startswith("SANDBOXD_") for _flag, env, _default, _help in rows)
    assert rows[1][:3] == ("--port", "SANDBOXD_PORT", "49982")


def test_doctor_exit_status_matches_its_verdict() -> None:
    result = run_cli("doctor")
    assert "verdict:" in result.stdout
    safe = "verdict: SAFE" in result.stdout
    assert result.returncode == (0 if safe else 1)
