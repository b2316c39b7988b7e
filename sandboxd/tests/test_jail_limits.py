"""cgroup limits (memory, pids, CPU) and rlimits (file size, open files, core dumps), each
reported as what it is: an OOM kill, a pids-limit hit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from sandboxd.jail import JailManager, Limits
from sandboxd.jail.testing import jail_manager, run, sh

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def manager() -> AsyncIterator[JailManager]:
    async with jail_manager() as started:
        yield started


async def test_a_memory_bomb_is_oom_killed_and_reported_as_such(manager: JailManager) -> None:
    jail = await manager.create("lim-mem", limits=Limits(memory_bytes=128 << 20))
    try:
        process = await jail.spawn(
            ["python3", "-c", "b = []\nwhile True: b.append(bytearray(16 << 20))"]
        )
        events = [e async for e in process.events()]
        exit_event = events[-1]
        assert exit_event.kind == "exit"
        assert exit_event.signal == 9
        assert exit_event.oom_killed is True
        assert jail.oom_kills() >= 1
        assert jail.alive  # the agent survived: the sandbox still works
        assert (await sh(jail, "echo alive"))[1] == "alive\n"
    finally:
        await jail.destroy()


async def test_many_small_processes_over_the_memory_limit_never_cost_the_agent(
    manager: JailManager,
) -> None:
    # Each child is smaller than the agent: without its OOM ranking the agent would be the
    # first victim and the whole sandbox would die.
    bomb = (
        "import os, time\n"
        "for _ in range(40):\n"
        "    if os.fork() == 0:\n"
        "        b = bytearray(3 << 20)\n"
        "        for i in range(0, len(b), 4096): b[i] = 1\n"
        "        time.sleep(3)\n"
        "        os._exit(0)\n"
        "while True:\n"
        "    try:\n"
        "        os.wait()\n"
        "    except ChildProcessError:\n"
        "        break\n"
    )
    jail = await manager.create("lim-small", limits=Limits(memory_bytes=96 << 20, pids=64))
    try:
        await run(jail, ["python3", "-c", bomb])
        assert jail.oom_kills() >= 1
        assert jail.alive
        code, out, _ = await sh(jail, "cat /proc/self/oom_score_adj /proc/1/oom_score_adj")
        assert (code, out) == (0, "500\n0\n")
    finally:
        await jail.destroy()


async def test_a_fork_bomb_hits_the_pids_limit_and_is_counted(manager: JailManager) -> None:
    jail = await manager.create("lim-pids", limits=Limits(pids=24))
    try:
        assert jail.pids_limit_hits() == 0
        bomb = (
            "import os, signal, time\n"
            "children, refused = [], 0\n"
            "for _ in range(60):\n"
            "    try:\n"
            "        pid = os.fork()\n"
            "    except BlockingIOError:\n"
            "        refused += 1\n"
            "        continue\n"
            "    if pid == 0:\n"
            "        time.sleep(30)\n"
            "        os._exit(0)\n"
            "    children.append(pid)\n"
            "print(len(children), refused)\n"
            "for pid in children:\n"
            "    os.kill(pid, signal.SIGKILL)\n"
        )
        code, out, _ = await run(jail, ["python3", "-c", bomb])
        started, refused = map(int, out.split())
        assert code == 0
        assert started < 24 and refused > 0
        assert jail.pids_limit_hits() >= refused
        assert (await sh(jail, "echo alive"))[1] == "alive\n"
    finally:
        await jail.destroy()


async def test_the_cpu_quota_throttles_a_spinning_process(manager: JailManager) -> None:
    jail = await manager.create("lim-cpu", limits=Limits(cpus=0.2))
    try:
        code, out, _ = await run(
            jail,
            [
                "python3",
                "-c",
                "import time\nt0 = time.monotonic(); c0 = time.process_time()\n"
                "while time.monotonic() - t0 < 1.0: pass\n"
                "print(round((time.process_time() - c0) / (time.monotonic() - t0), 2))",
            ],
        )
        assert code == 0
        share = float(out)
        assert share < 0.5, f"spinning got {share:.2f} of a core under a 0.2 core quota"
    finally:
        await jail.destroy()


async def test_rlimits_cap_file_size_open_files_and_core_dumps(manager: JailManager) -> None:
    jail = await manager.create("lim-rlimit", limits=Limits(file_size_bytes=1 << 20, open_files=64))
    try:
        code, out, _ = await sh(jail, "ulimit -c; ulimit -n; ulimit -f")
        assert (code, out.split()) == (0, ["0", "64", str((1 << 20) // 1024)])
        code, _, err = await sh(jail, "head -c 2M /dev/zero > big")
        assert code == 128 + 25 and "File size limit exceeded" in err  # SIGXFSZ
        code, out, _ = await sh(jail, "stat -c %s big")
        assert out.strip() == str(1 << 20)
    finally:
        await jail.destroy()


async def test_the_workspace_is_capped_at_its_size(manager: JailManager) -> None:
    jail = await manager.create("lim-ws", limits=Limits(workspace_bytes=16 << 20))
    try:
        code, _, err = await sh(jail, "head -c 40M /dev/zero > /home/user/fill")
        assert code != 0 and "No space left on device" in err
        code, out, _ = await sh(jail, "df -B1 --output=size /home/user | tail -1")
        assert int(out) == 16 << 20
    finally:
        await jail.destroy()


async def test_limits_refuse_values_that_would_disable_a_protection() -> None:
    with pytest.raises(ValueError, match="memory_bytes"):
        Limits(memory_bytes=0)
    with pytest.raises(ValueError, match="cpus"):
        Limits(cpus=0)
