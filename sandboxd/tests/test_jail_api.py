"""The Jail API as SP and SK use it: spawn, streaming with backpressure, stdin, signals,
processes(), and the file operations done in the sandbox's own view."""

from __future__ import annotations

import asyncio
import resource
import signal
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from sandboxd.agent import wire
from sandboxd.jail import FsError, Jail, JailError, JailManager
from sandboxd.jail.testing import jail_manager, run, sh

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def manager() -> AsyncIterator[JailManager]:
    async with jail_manager() as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def jail(manager: JailManager) -> AsyncIterator[Jail]:
    made = await manager.create("api")
    yield made
    await made.destroy()


async def test_spawn_reports_stdout_stderr_and_the_exit_code(jail: Jail) -> None:
    assert await sh(jail, "echo out; echo err >&2; exit 7") == (7, "out\n", "err\n")


async def test_a_signal_death_is_reported_as_the_signal(jail: Jail) -> None:
    code, _, _ = await sh(jail, "kill -TERM $$")
    assert code == -signal.SIGTERM


async def test_a_missing_executable_or_cwd_is_not_found(jail: Jail) -> None:
    with pytest.raises(FsError) as missing_exe:
        await jail.spawn(["no-such-program-xyz"])
    assert missing_exe.value.code == "not_found"
    with pytest.raises(FsError) as missing_cwd:
        await jail.spawn(["true"], cwd="/home/user/nowhere")
    assert missing_cwd.value.code == "not_found"


async def test_cwd_and_relative_paths_default_to_the_workspace(jail: Jail) -> None:
    await jail.make_dir("sub/dir")
    assert (await run(jail, ["pwd"], cwd="sub/dir"))[1] == "/home/user/sub/dir\n"
    assert (await run(jail, ["pwd"]))[1] == "/home/user\n"


async def test_stdin_is_delivered_and_closed(jail: Jail) -> None:
    process = await jail.spawn(["cat"], stdin=True)
    await process.write_stdin(b"hello ")
    await process.write_stdin(b"x" * 300_000)  # more than a pipe holds: needs backpressure
    await process.close_stdin()
    out = b"".join([e.data async for e in process.events() if e.kind == "stdout"])
    assert out == b"hello " + b"x" * 300_000


async def test_processes_lists_live_spawns_with_tag_and_signal_stops_them(jail: Jail) -> None:
    process = await jail.spawn(["sleep", "60"], tag="sleeper", envs={"K": "V"}, cwd="/tmp")
    listed = {p.pid: p for p in jail.processes()}
    assert listed[process.pid].tag == "sleeper"
    assert listed[process.pid].argv == ("sleep", "60")
    assert listed[process.pid].envs == {"K": "V"} and listed[process.pid].cwd == "/tmp"
    await jail.signal(process.pid, signal.SIGKILL)
    events = [e async for e in process.events()]
    assert events[-1].signal == signal.SIGKILL and not events[-1].oom_killed
    assert process.pid not in {p.pid for p in jail.processes()}
    with pytest.raises(FsError) as gone:
        await jail.signal(process.pid, signal.SIGTERM)
    assert gone.value.code == "not_found"


async def test_output_is_streamed_as_it_happens(jail: Jail) -> None:
    process = await jail.spawn(["bash", "-c", "echo first; sleep 1; echo second"])
    loop = asyncio.get_running_loop()
    start = loop.time()
    seen: list[tuple[float, bytes]] = []
    async for event in process.events():
        if event.kind == "stdout":
            seen.append((loop.time() - start, event.data))
    assert [data for _, data in seen] == [b"first\n", b"second\n"]
    assert seen[0][0] < 0.5 <= seen[1][0]


def host_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def test_200_mb_of_output_streams_with_bounded_host_memory(jail: Jail) -> None:
    before = host_rss_bytes()
    process = await jail.spawn(["head", "-c", "200M", "/dev/zero"])
    total = 0
    largest = 0
    async for event in process.events():
        if event.kind == "stdout":
            total += len(event.data)
            largest = max(largest, len(event.data))
    assert total == 200 << 20
    assert largest <= wire.MAX_PAYLOAD
    # Peak RSS grew by far less than the output: at most the credit window is ever held.
    assert host_rss_bytes() - before < 64 << 20


async def test_a_slow_reader_pauses_the_writer_instead_of_buffering(jail: Jail) -> None:
    process = await jail.spawn(
        [
            "python3",
            "-c",
            "import sys\nfor i in range(100000): sys.stdout.write('x' * 1023 + '\\n')",
        ]
    )
    await asyncio.sleep(1.5)  # read nothing: the agent must stop at its credit
    queued = process._queue.qsize()
    held = sum(len(e.data) for e in list(process._queue._queue))  # type: ignore[attr-defined]
    assert held <= wire.OUTPUT_CREDIT
    assert queued > 0
    assert not process.exited  # 100 MB could not have been written without our reading
    total = 0
    async for event in process.events():  # now read: everything arrives, nothing lost
        total += len(event.data)
    assert total == 100_000 * 1024


async def test_files_are_written_read_stat_listed_moved_and_removed(jail: Jail) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: several frames
    entry = await jail.write_file("docs/a/file.bin", data)
    assert (entry.type, entry.path, entry.size) == ("file", "/home/user/docs/a/file.bin", len(data))
    assert entry.owner == "user" and entry.permissions == "-rw-r--r--"
    assert await jail.read_file("/home/user/docs/a/file.bin", max_bytes=len(data)) == data
    with pytest.raises(FsError) as too_big:
        await jail.read_file("docs/a/file.bin", max_bytes=1000)
    assert too_big.value.code == "resource_exhausted"
    assert (await jail.stat("docs")).type == "dir"
    assert await jail.make_dir("docs/b") is True
    assert await jail.make_dir("docs/b") is False
    listed = {e.path for e in await jail.list_dir("docs", depth=2)}
    assert listed == {"/home/user/docs/a", "/home/user/docs/b", "/home/user/docs/a/file.bin"}
    assert {e.path for e in await jail.list_dir("docs")} == {
        "/home/user/docs/a",
        "/home/user/docs/b",
    }
    moved = await jail.move("docs/a/file.bin", "docs/b/renamed.bin")
    assert moved.path == "/home/user/docs/b/renamed.bin"
    await jail.remove("docs")
    with pytest.raises(FsError) as removed:
        await jail.stat("docs")
    assert removed.value.code == "not_found"
    empty = await jail.write_file("empty.txt", b"")
    assert empty.size == 0 and await jail.read_file("empty.txt", max_bytes=10) == b""


async def test_file_errors_have_stable_codes(jail: Jail) -> None:
    cases = [
        (jail.read_file("missing.txt", max_bytes=10), "not_found"),
        (jail.list_dir("missing-dir"), "not_found"),
        (jail.write_file("/usr/lib/x", b"x"), "permission_denied"),
        (jail.read_file("/home/user", max_bytes=10), "invalid_argument"),
        (jail.stat("bad\x00path"), "invalid_argument"),
    ]
    for call, code in cases:
        with pytest.raises(FsError) as raised:
            await call
        assert raised.value.code == code


async def test_a_planted_fifo_does_not_hang_the_file_api(jail: Jail) -> None:
    await sh(jail, "mkfifo /home/user/trap")
    with pytest.raises(FsError) as raised:
        await asyncio.wait_for(jail.read_file("trap", max_bytes=100), 5)
    assert raised.value.code == "invalid_argument"
    assert (await sh(jail, "echo fine"))[1] == "fine\n"


async def test_a_symlink_is_described_by_its_target_inside_the_sandbox(jail: Jail) -> None:
    await sh(jail, "ln -sfn /etc/hostname link")
    entry = await jail.stat("link")
    assert (entry.type, entry.symlink_target, entry.is_symlink) == ("file", "/etc/hostname", True)
    # reading resolves inside the sandbox: the sandbox's own /etc/hostname
    assert await jail.read_file("link", max_bytes=100) == b"sandbox\n"


async def test_when_the_agent_dies_the_jail_is_dead(manager: JailManager) -> None:
    jail = await manager.create("api-dies")
    sleeper = await jail.spawn(["sleep", "60"])
    assert jail._proc is not None
    jail._proc.kill()  # what an OOM kill of pid 1 or a crash looks like from the host
    events = [e async for e in sleeper.events()]
    assert events[-1].kind == "exit" and events[-1].signal == signal.SIGKILL
    assert not jail.alive
    with pytest.raises(JailError):
        await jail.spawn(["true"])
    await jail.destroy()
    assert jail.host_pids() == []


async def test_a_malformed_request_is_an_error_not_the_end_of_the_sandbox(jail: Jail) -> None:
    for argv, envs in ((["echo", "nul\x00byte"], {}), (["true"], {"BAD=KEY": "v"})):
        with pytest.raises(FsError) as raised:
            await jail.spawn(argv, envs=envs)
        assert raised.value.code == "invalid_argument"
    assert jail.alive
    assert (await sh(jail, "echo fine"))[1] == "fine\n"
