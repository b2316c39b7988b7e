"""envd's process service through the real SDK (sync and async): commands.run with output,
exit codes, envs and cwd; background commands, kill, stdin, list, connect and disconnect."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2b import AsyncSandbox, CommandExitException, PtySize, Sandbox
from e2b.exceptions import SandboxException, SandboxNotRunningException, TimeoutException

from sandboxd.testing import RunningSandboxd
from sandboxd.tests.test_control_plane import assert_healthy

pytestmark = pytest.mark.sandboxd


@pytest.fixture(scope="module")
def sandbox(sandboxd: RunningSandboxd) -> Iterator[Sandbox]:
    created = Sandbox.create(envs={"SANDBOX_LEVEL": "from-create"}, **sandboxd.sdk_options())
    yield created
    created.kill()


def test_run_returns_stdout_stderr_and_exit_code(sandbox: Sandbox) -> None:
    result = sandbox.commands.run("echo out; echo err >&2; printf 'no newline'")
    assert result.stdout == "out\nno newline"
    assert result.stderr == "err\n"
    assert result.exit_code == 0


def test_a_non_zero_exit_raises_command_exit_exception(sandbox: Sandbox) -> None:
    with pytest.raises(CommandExitException) as raised:
        sandbox.commands.run("echo partial; echo broken >&2; exit 3")
    assert raised.value.exit_code == 3
    assert raised.value.stdout == "partial\n"
    assert raised.value.stderr == "broken\n"
    assert raised.value.error == "exit status 3"


def test_envs_and_cwd_reach_the_command(sandbox: Sandbox) -> None:
    sandbox.files.make_dir("workdir")
    result = sandbox.commands.run(
        'printf "%s|%s|%s" "$ONE" "$SANDBOX_LEVEL" "$PWD"',
        envs={"ONE": 'it\'s "quoted" $x'},
        cwd="/home/user/workdir",
    )
    assert result.stdout == 'it\'s "quoted" $x|from-create|/home/user/workdir'


def test_a_missing_cwd_is_an_error_not_a_crash(sandbox: Sandbox, sandboxd: RunningSandboxd) -> None:
    with pytest.raises(SandboxException):
        sandbox.commands.run("pwd", cwd="/home/user/does-not-exist")
    assert sandbox.commands.run("echo still fine").stdout == "still fine\n"
    assert_healthy(sandboxd)


def test_commands_and_files_as_root_are_refused_not_silently_run_as_user(
    sandbox: Sandbox,
) -> None:
    with pytest.raises(SandboxException, match="run as 'user'"):
        sandbox.commands.run("id -u", user="root")
    with pytest.raises(SandboxException, match="run as 'user'"):
        sandbox.files.write("as-root.txt", "x", user="root")
    assert sandbox.commands.run("whoami", user="user").stdout == "user\n"


def test_output_streams_to_callbacks_as_it_happens(sandbox: Sandbox) -> None:
    seen: list[tuple[float, str]] = []
    sandbox.commands.run(
        "echo first; sleep 1; echo second",
        on_stdout=lambda text: seen.append((time.monotonic(), text)),
    )
    assert [text for _, text in seen] == ["first\n", "second\n"]
    assert seen[1][0] - seen[0][0] >= 0.8


def test_a_background_command_is_listed_and_killed(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("sleep 300", background=True)
    assert handle.pid in {process.pid for process in sandbox.commands.list()}
    listed = next(p for p in sandbox.commands.list() if p.pid == handle.pid)
    assert listed.cmd == "/bin/bash" and listed.args[-1] == "sleep 300"
    assert handle.kill() is True
    with pytest.raises(CommandExitException) as raised:
        handle.wait()
    assert raised.value.error == "signal: killed"
    assert handle.pid not in {process.pid for process in sandbox.commands.list()}
    assert sandbox.commands.kill(handle.pid) is False


def test_stdin_can_be_sent_and_closed(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("cat; echo done", background=True, stdin=True)
    sandbox.commands.send_stdin(handle.pid, "line one\n")
    handle.send_stdin(b"line two\n")
    handle.close_stdin()
    result = handle.wait()
    assert result.stdout == "line one\nline two\ndone\n"


def test_stream_input_writes_chunks_in_order(sandbox: Sandbox) -> None:
    handle = sandbox.commands.run("cat", background=True, stdin=True)
    sandbox.commands.stream_input(handle.pid, iter(["a", "b", b"c"]))
    handle.close_stdin()
    assert handle.wait().stdout == "abc"


def test_disconnecting_leaves_the_command_running_and_connect_reattaches(
    sandbox: Sandbox,
) -> None:
    handle = sandbox.commands.run("sleep 1; echo after-disconnect", background=True)
    handle.disconnect()
    assert handle.pid in {process.pid for process in sandbox.commands.list()}
    again = sandbox.commands.connect(handle.pid)
    result = again.wait()
    assert result.stdout == "after-disconnect\n"


def test_an_sdk_timeout_leaves_the_command_running_and_the_log_clean(
    sandbox: Sandbox, sandboxd: RunningSandboxd
) -> None:
    log_before = len(sandboxd.log())
    with pytest.raises(TimeoutException):
        sandbox.commands.run("sleep 2; echo finished", timeout=0.5)
    running = [p for p in sandbox.commands.list() if p.args[-1] == "sleep 2; echo finished"]
    assert len(running) == 1
    assert sandbox.commands.connect(running[0].pid).wait().stdout == "finished\n"
    assert "Traceback" not in sandboxd.log()[log_before:]


def test_a_pty_runs_an_interactive_shell_that_can_be_resized(sandbox: Sandbox) -> None:
    handle = sandbox.pty.create(PtySize(rows=24, cols=80))
    sandbox.pty.send_stdin(handle.pid, b"tty\n")
    sandbox.pty.resize(handle.pid, PtySize(rows=40, cols=100))
    sandbox.pty.send_stdin(handle.pid, b"stty size; exit 3\n")
    output: list[bytes] = []
    with pytest.raises(CommandExitException) as raised:
        handle.wait(on_pty=lambda data: output.append(bytes(data)))
    assert raised.value.exit_code == 3
    terminal = b"".join(output).decode()
    assert "/dev/pts/" in terminal
    assert "40 100" in terminal


def test_a_pty_can_be_killed_and_closing_its_stdin_is_refused(sandbox: Sandbox) -> None:
    handle = sandbox.pty.create(PtySize(rows=24, cols=80))
    with pytest.raises(SandboxException, match="Ctrl\\+D"):
        sandbox.commands.close_stdin(handle.pid)
    assert sandbox.pty.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as raised:
        handle.wait()
    assert raised.value.error == "signal: killed"


def test_sending_stdin_to_an_unknown_process_fails_cleanly(
    sandbox: Sandbox, sandboxd: RunningSandboxd
) -> None:
    with pytest.raises(SandboxException):
        sandbox.commands.send_stdin(999_999, "nobody")
    assert_healthy(sandboxd)


def server_rss_bytes(server: RunningSandboxd) -> int:
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def test_a_command_killed_with_its_sandbox_reports_the_sandbox_gone(
    sandboxd: RunningSandboxd,
) -> None:
    doomed = Sandbox.create(**sandboxd.sdk_options())
    killer = threading.Timer(1.0, doomed.kill)
    killer.start()
    try:
        with pytest.raises(SandboxNotRunningException):
            doomed.commands.run("sleep 60")
    finally:
        killer.join()
    assert_healthy(sandboxd)


def test_200_mb_of_output_streams_through_without_growing_the_server(
    sandbox: Sandbox, sandboxd: RunningSandboxd
) -> None:
    received = 0

    def count(text: str) -> None:
        nonlocal received
        received += len(text)

    before = server_rss_bytes(sandboxd)
    sandbox.commands.run(
        "head -c 200000000 /dev/zero | tr '\\0' a", on_stdout=count, retain_output=False
    )
    assert received == 200_000_000
    assert server_rss_bytes(sandboxd) - before < 64 << 20


async def test_the_async_sdk_runs_commands_and_kills_them(sandboxd: RunningSandboxd) -> None:
    sandbox = await AsyncSandbox.create(**sandboxd.sdk_options())
    try:
        result = await sandbox.commands.run("echo async-out; echo async-err >&2")
        assert (result.stdout, result.stderr) == ("async-out\n", "async-err\n")
        with pytest.raises(CommandExitException) as raised:
            await sandbox.commands.run("exit 7")
        assert raised.value.exit_code == 7
        handle = await sandbox.commands.run("sleep 300", background=True)
        assert await handle.kill() is True
        with pytest.raises(CommandExitException):
            await handle.wait()
        handle = await sandbox.commands.run("read name; echo hi $name", background=True, stdin=True)
        await handle.send_stdin("async\n")
        assert (await handle.wait()).stdout == "hi async\n"
    finally:
        await sandbox.kill()


async def test_the_async_sdk_drives_a_pty(sandboxd: RunningSandboxd) -> None:
    sandbox = await AsyncSandbox.create(**sandboxd.sdk_options())
    try:
        chunks: list[bytes] = []
        handle = await sandbox.pty.create(
            PtySize(rows=24, cols=80), on_data=lambda data: chunks.append(bytes(data))
        )
        await sandbox.pty.send_stdin(handle.pid, b"echo from-the-pty; exit\n")
        result = await handle.wait()
        assert result.exit_code == 0
        assert b"from-the-pty\r\n" in b"".join(chunks)
    finally:
        await sandbox.kill()
