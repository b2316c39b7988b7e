"""Lifecycle: nothing survives destroy() (processes, cgroups, dirs, the uid lease), and the
janitor sweeps what a SIGKILLed server left behind, touching only its own state dir."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandboxd.jail import JailManager
from sandboxd.jail.cgroups import parent_name
from sandboxd.jail.testing import SANDBOX_ENV, jail_manager, sh, traversable_tmpdir

pytestmark = pytest.mark.asyncio
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def still_running(pids: list[int]) -> list[int]:
    """Those of `pids` that are live processes (zombies count as gone)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory) + "/"
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(prefix)]


def cgroup_dirs(state_dir: Path) -> list[Path]:
    """Every sandbox cgroup directory of this state dir, across v1 controllers or v2."""
    name = parent_name(state_dir)
    return [p for p in Path("/sys/fs/cgroup").glob(f"**/{name}/*") if p.is_dir()]


async def test_destroy_leaves_no_process_cgroup_dir_or_uid_lease() -> None:
    async with jail_manager() as manager:
        jail = await manager.create("life-destroy")
        code, _, _ = await sh(jail, "setsid nohup sleep 300 >/dev/null 2>&1 & echo started")
        assert code == 0
        await asyncio.sleep(0.2)
        # the background process outlived its run (as in E2B) ...
        pids = jail.host_pids()
        assert len(still_running(pids)) >= 3  # bwrap, the agent, sleep
        assert cgroup_dirs(manager.state_dir)
        assert mounts_under(manager.state_dir) == [str(jail.runtime_dir)]
        await jail.destroy()
        # ... but not the sandbox
        assert still_running(pids) == []
        assert cgroup_dirs(manager.state_dir) == []
        assert mounts_under(manager.state_dir) == []
        assert not jail.runtime_dir.exists()
        assert not jail.alive
        again = await manager.create("life-destroy")  # the id and a uid are free again
        assert (await sh(again, "echo ok"))[1] == "ok\n"


async def test_close_destroys_every_jail() -> None:
    async with jail_manager() as manager:
        jails = [await manager.create(f"life-close-{i}") for i in range(3)]
        pids = [pid for j in jails for pid in j.host_pids()]
        assert len(still_running(pids)) >= 6
        await manager.close()
        assert still_running(pids) == []
        assert cgroup_dirs(manager.state_dir) == []


SERVER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from sandboxd.jail import JailManager

    async def main():
        manager = JailManager(state_dir=Path(sys.argv[1]), sandbox_env=Path(sys.argv[2]),
                              egress=False)
        await manager.start()
        jail = await manager.create("left-behind")
        await jail.spawn(["sleep", "300"])
        print(" ".join(map(str, jail.host_pids())), flush=True)
        await asyncio.sleep(300)

    asyncio.run(main())
    """
)


async def test_the_janitor_sweeps_what_a_killed_server_left() -> None:
    root = traversable_tmpdir("sj-janitor-")
    state_dir = root / "state"
    try:
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            SERVER_SCRIPT,
            str(state_dir),
            str(SANDBOX_ENV),
            stdout=subprocess.PIPE,
            cwd=PROJECT_ROOT,
        )
        assert server.stdout is not None
        pids = [int(p) for p in (await server.stdout.readline()).split()]
        server.send_signal(signal.SIGKILL)
        await server.wait()
        leftovers = cgroup_dirs(state_dir)
        assert leftovers, "a SIGKILLed server leaves its cgroups behind"
        assert (state_dir / "jails" / "left-behind").exists()
        assert mounts_under(state_dir), "and its runtime tmpfs mount"
        # and a process that escaped --die-with-parent would still sit in those cgroups:
        stray = await asyncio.create_subprocess_exec("sleep", "300")
        for directory in leftovers:
            (directory / "cgroup.procs").write_text(str(stray.pid))

        manager = JailManager(state_dir=state_dir, sandbox_env=SANDBOX_ENV, egress=False)
        await manager.start()
        try:
            assert cgroup_dirs(state_dir) == []
            assert mounts_under(state_dir) == []
            assert await asyncio.wait_for(stray.wait(), 5) == -signal.SIGKILL
            assert list((state_dir / "jails").iterdir()) == []
            assert still_running(pids) == []
            jail = await manager.create("after-sweep")
            assert (await sh(jail, "echo ok"))[1] == "ok\n"
        finally:
            await manager.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_a_janitor_never_touches_another_state_dirs_sandboxes() -> None:
    async with jail_manager() as first:
        jail = await first.create("mine")
        async with jail_manager() as second:  # its start() runs the janitor
            assert parent_name(second.state_dir) != parent_name(first.state_dir)
            assert jail.alive
            assert (await sh(jail, "echo still here"))[1] == "still here\n"


async def test_uids_are_leased_machine_wide() -> None:
    """Two managers (as two servers would) never hold the same uid at once."""
    async with jail_manager() as first, jail_manager() as second:
        a = await first.create("lease-a")
        b = await second.create("lease-b")
        assert a.uid != b.uid
        assert not lock_is_free(a.uid)  # held for the sandbox's lifetime
        await a.destroy()
        assert lock_is_free(a.uid)


def lock_is_free(uid: int) -> bool:
    """Try the uid's machine-wide lock the way another sandboxd would."""
    fd = os.open(f"/run/sandboxd/uids/{uid}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
