"""A real sandboxd killed with SIGKILL leaves cgroups, mounts and directories behind; the next
server on the same state dir sweeps them at start, and nothing of the old sandboxes runs."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
from e2b_code_interpreter import Sandbox

from sandboxd.jail.cgroups import parent_name
from sandboxd.testing import SandboxdFailed, running_sandboxd, wait_until

pytestmark = pytest.mark.sandboxd


def leftovers(state_dir: Path) -> dict[str, list[str]]:
    """What of this state dir's sandboxes exists on the host."""
    name = parent_name(state_dir)
    prefix = str(state_dir / "jails") + "/"
    mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    jails = state_dir / "jails"
    return {
        "cgroups": sorted(
            str(p) for p in Path("/sys/fs/cgroup").glob(f"**/{name}/*") if p.is_dir()
        ),
        "mounts": [line.split()[4] for line in mountinfo if line.split()[4].startswith(prefix)],
        "dirs": sorted(p.name for p in jails.iterdir()) if jails.exists() else [],
    }


def processes_with(needle: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def is_running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_restarted_server_sweeps_what_a_sigkilled_one_left() -> None:
    state_dir = Path(tempfile.mkdtemp(prefix="sj-restart-"))
    state_dir.chmod(0o755)
    env = {"SANDBOXD_POOL_SIZE": "0"}
    key = "restart-" + secrets.token_hex(8)
    try:
        with (
            pytest.raises(SandboxdFailed),
            running_sandboxd(state_dir=state_dir, api_key=key, env=env) as first,
        ):
            sandbox = Sandbox.create(**first.sdk_options())
            sandbox.commands.run("setsid nohup sleep 876.5 >/dev/null 2>&1 &")
            assert processes_with(b"sleep 876.5")
            os.kill(first.pid, signal.SIGKILL)
            while is_running(first.pid):  # (a zombie until running_sandboxd reaps it)
                time.sleep(0.05)
            left = leftovers(state_dir)
            assert left["cgroups"] and left["mounts"] and left["dirs"]
        # (running_sandboxd reports the SIGKILLed server as having died: expected here)
        # bwrap died with its server
        assert wait_until(lambda: not processes_with(b"sleep 876.5"), 5)

        with running_sandboxd(state_dir=state_dir, api_key=key, env=env) as second:
            assert leftovers(state_dir) == {"cgroups": [], "mounts": [], "dirs": []}
            fresh = Sandbox.create(**second.sdk_options())
            assert fresh.commands.run("echo ok").stdout == "ok\n"
            fresh.kill()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
