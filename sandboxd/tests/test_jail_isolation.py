"""Each isolation item of issue 3, checked on a real sandbox made by the real JailManager."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from sandboxd.jail import Jail, JailManager, Limits
from sandboxd.jail.testing import jail_manager, run, sh

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def manager() -> AsyncIterator[JailManager]:
    async with jail_manager() as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def jail(manager: JailManager) -> AsyncIterator[Jail]:
    made = await manager.create("iso-a", limits=Limits(tmp_bytes=8 << 20))
    yield made
    await made.destroy()


def proc_file(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def host_uid_of(pid: int) -> int:
    status = proc_file(pid, "status")
    match = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
    assert match
    return int(match.group(1))


async def test_the_sandbox_runs_as_its_own_unprivileged_host_uid(jail: Jail) -> None:
    assert jail.uid >= 200_000
    host_pids = jail.host_pids()
    assert host_pids, "the sandbox's processes are in its cgroup"
    assert {host_uid_of(pid) for pid in host_pids} == {jail.uid}
    code, out, _ = await sh(jail, "id -u; id -g; whoami")
    assert (code, out) == (0, "1000\n1000\nuser\n")


async def test_bubblewrap_itself_joined_the_cgroups_and_dropped_every_privilege(
    jail: Jail,
) -> None:
    # Set up by the exec chain before bwrap runs: cgroups joined, uid and gid changed, no
    # supplementary groups, no capabilities; rlimits set (checked from inside in
    # test_jail_limits).
    bwraps = [pid for pid in jail.host_pids() if proc_file(pid, "comm") == "bwrap\n"]
    assert bwraps, "bubblewrap is in the sandbox's cgroups"
    for pid in bwraps:
        status = proc_file(pid, "status")
        assert re.search(rf"^Uid:\s+{jail.uid}\s+{jail.uid}\s+{jail.uid}\s", status, re.M)
        assert re.search(rf"^Gid:\s+{jail.uid}\s+{jail.uid}\s+{jail.uid}\s", status, re.M)
        assert re.search(r"^Groups:\s*$", status, re.M)
        assert re.search(r"^CapEff:\s+0+$", status, re.M)


async def test_two_sandboxes_get_different_uids(manager: JailManager, jail: Jail) -> None:
    other = await manager.create("iso-b")
    try:
        assert other.uid != jail.uid
    finally:
        await other.destroy()


async def test_every_namespace_is_new(jail: Jail) -> None:
    kinds = ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"]
    script = "for n in " + " ".join(kinds) + "; do readlink /proc/self/ns/$n; done"
    code, out, _ = await sh(jail, script)
    assert code == 0
    inside = out.split()
    host = [os.readlink(f"/proc/self/ns/{kind}") for kind in kinds]
    assert len(inside) == len(kinds)
    for kind, mine, theirs in zip(kinds, host, inside, strict=True):
        assert mine != theirs, f"{kind} namespace is shared with the host"


async def test_the_only_network_interface_is_loopback(jail: Jail) -> None:
    code, out, _ = await sh(jail, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '")
    assert (code, out) == (0, "lo\n")


async def test_the_system_is_read_only(jail: Jail) -> None:
    for path in ("/usr/evil", "/etc/evil", "/evil", "/opt/python/evil", "/opt/sandboxd/agent/x"):
        code, _, err = await sh(jail, f"echo x > {path}")
        assert code != 0, path
        assert "Read-only file system" in err or "Permission denied" in err, (path, err)


async def test_tmp_is_a_private_size_capped_tmpfs(jail: Jail) -> None:
    code, out, _ = await sh(jail, "stat -f -c '%T' /tmp; df -B1 --output=size /tmp | tail -1")
    assert code == 0
    fs_type, size = out.split()
    assert fs_type == "tmpfs"
    assert int(size) == 8 << 20
    code, _, err = await sh(jail, "head -c 20M /dev/zero > /tmp/fill")
    assert code != 0 and "No space left on device" in err


async def test_the_workspace_is_home_user_and_writable(jail: Jail) -> None:
    code, out, _ = await sh(jail, "cd && pwd && echo hi > f && cat f && stat -f -c %T .")
    assert (code, out) == (0, "/home/user\nhi\ntmpfs\n")


async def test_no_capabilities_are_left(jail: Jail) -> None:
    code, out, _ = await sh(jail, "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb):' /proc/self/status")
    assert code == 0
    values = {line.split(":")[0]: int(line.split()[1], 16) for line in out.splitlines()}
    assert values == dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), 0)


async def test_a_seccomp_filter_is_in_force_with_no_new_privileges(jail: Jail) -> None:
    code, out, _ = await sh(jail, "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")
    assert code == 0
    fields = dict(line.split(":\t") for line in out.strip().splitlines())
    assert fields == {"NoNewPrivs": "1", "Seccomp": "2"}  # 2 = filter mode


async def test_etc_passwd_is_minimal_and_names_the_user(jail: Jail) -> None:
    code, out, _ = await sh(jail, "cut -d: -f1 /etc/passwd; getent passwd user | cut -d: -f6")
    assert (code, out) == (0, "user\nnobody\n/home/user\n")
    code, _, _ = await sh(jail, "test -e /etc/shadow")
    assert code == 1


async def test_the_environment_is_clean(jail: Jail) -> None:
    os.environ["SJ_HOST_ONLY_SECRET"] = "host-secret-value"
    try:
        code, out, _ = await sh(jail, "env")
    finally:
        del os.environ["SJ_HOST_ONLY_SECRET"]
    assert code == 0
    names = {line.split("=", 1)[0] for line in out.splitlines() if "=" in line}
    assert "SJ_HOST_ONLY_SECRET" not in names and "host-secret-value" not in out
    assert {"PATH", "HOME", "USER", "LANG"} <= names
    assert not any(name.startswith(("SANDBOXD", "DJANGO", "SECRET")) for name in names)


async def test_create_envs_and_spawn_envs_reach_the_process(manager: JailManager) -> None:
    jail = await manager.create("iso-env", envs={"LEVEL": "create", "BOTH": "create"})
    try:
        code, out, _ = await sh(jail, 'echo "$LEVEL $BOTH"')
        assert (code, out) == (0, "create create\n")
        process = await jail.spawn(["bash", "-c", 'echo "$LEVEL $BOTH"'], envs={"BOTH": "spawn"})
        chunks = [e.data async for e in process.events() if e.kind == "stdout"]
        assert b"".join(chunks) == b"create spawn\n"
    finally:
        await jail.destroy()


async def test_different_sandboxes_cannot_touch_each_others_files(manager: JailManager) -> None:
    first = await manager.create("iso-files-1")
    second = await manager.create("iso-files-2")
    try:
        await first.write_file("secret-of-first.txt", b"first's data")
        _, out, _ = await sh(
            second,
            "find / -name 'secret-of-first*' -not -path '/proc/*' 2>/dev/null; ls /home/user; "
            f"ls {first.runtime_dir} 2>&1",
        )
        assert "secret-of-first" not in out
        assert "No such file or directory" in out  # the other sandbox's host dir
        # The host sees the runtime dirs owned by different uids, 0700.
        st1, st2 = first.runtime_dir.stat(), second.runtime_dir.stat()
        assert (st1.st_uid, st2.st_uid) == (first.uid, second.uid)
        assert st1.st_mode & 0o777 == 0o700
    finally:
        await first.destroy()
        await second.destroy()


async def test_runtime_dir_is_shared_with_the_host_at_run_sandbox(jail: Jail) -> None:
    code, _, _ = await sh(jail, "echo from-inside > /run/sandbox/probe")
    assert code == 0
    assert (jail.runtime_dir / "probe").read_text() == "from-inside\n"
    assert (jail.runtime_dir / "probe").stat().st_uid == jail.uid


async def test_proc_shows_only_the_sandboxs_own_processes(jail: Jail) -> None:
    code, out, _ = await sh(
        jail, "ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '; cat /proc/1/cmdline"
    )
    assert code == 0
    pids = [int(p) for p in out.split("/opt")[0].split()]
    assert max(pids) < 1000 and len(pids) < 10
    assert str(os.getpid()) not in out.split()
    assert "sandboxd/agent/main.py" in out  # pid 1 is the agent, not a host process


async def test_the_runtime_dir_is_a_small_tmpfs_not_the_host_disk(jail: Jail) -> None:
    code, out, _ = await sh(jail, "stat -f -c %T /run/sandbox; df -B1M --output=size /run/sandbox")
    assert code == 0 and out.split()[0] == "tmpfs" and out.split()[-1] == "16"
    code, _, err = await sh(jail, "head -c 64M /dev/zero > /run/sandbox/fill")
    assert code != 0 and "No space left on device" in err
    await sh(jail, "rm -f /run/sandbox/fill")


async def test_a_new_user_namespace_cannot_be_made_even_with_clone(jail: Jail) -> None:
    # unshare(2) is denied by seccomp, and so is clone(2) with namespace flags (the
    # allow-list's rule); --disable-userns stands behind both (the nested userns limit).
    probe = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "pid = libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0)  # clone(CLONE_NEWUSER|SIGCHLD)\n"
        "if pid == 0:\n"
        "    os._exit(0)\n"
        "print(pid, os.strerror(ctypes.get_errno()))\n"
    )
    code, out, _ = await run(jail, ["python3", "-c", probe])
    assert (code, out) == (0, "-1 Operation not permitted\n")


async def test_sys_is_not_mounted(jail: Jail) -> None:
    assert (await sh(jail, "test -e /sys"))[0] == 1
