"""Every hostile program of issue 3, run through the real e2b SDK against a real sandboxd:
each is contained, and afterwards the server is healthy and a new sandbox works.

The server here has tight limits (memory, pids, disk) so that the attacks hit them quickly.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from e2b import CommandExitException, SandboxException, TimeoutException
from e2b_code_interpreter import Sandbox

from sandboxd.jail.cgroups import parent_name
from sandboxd.testing import RunningSandboxd, running_sandboxd, wait_until

pytestmark = pytest.mark.sandboxd

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LIMITS_ENV = {
    "SANDBOXD_MEMORY_MB": "256",
    "SANDBOXD_PIDS": "64",
    "SANDBOXD_WORKSPACE_MB": "64",
    "SANDBOXD_TMP_MB": "32",
    "SANDBOXD_POOL_SIZE": "1",
}


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sj-hostile-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(state_dir: Path) -> Iterator[RunningSandboxd]:
    with running_sandboxd(
        state_dir=state_dir, api_key="hostile-" + secrets.token_hex(8), env=LIMITS_ENV
    ) as running:
        yield running


def pids_limit_hits(state_dir: Path) -> int:
    """Forks refused at pids.max, summed over this server's sandbox cgroups."""
    total = 0
    for events in Path("/sys/fs/cgroup").glob(f"**/{parent_name(state_dir)}/*/pids.events"):
        for line in events.read_text().splitlines():
            key, value = line.split()
            total += int(value) if key == "max" else 0
    return total


@pytest.fixture
def sbx(server: RunningSandboxd) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(timeout=120, **server.sdk_options())
    yield sandbox
    with contextlib.suppress(SandboxException):
        sandbox.kill()
    assert_healthy_afterwards(server)


def assert_healthy_afterwards(server: RunningSandboxd) -> None:
    """The server answers and a brand-new sandbox runs code."""
    assert server.alive()
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    fresh = Sandbox.create(timeout=60, **server.sdk_options())
    try:
        assert fresh.commands.run("echo fresh").stdout == "fresh\n"
    finally:
        fresh.kill()


def run(sbx: Sandbox, script: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run a bash script; (exit code, stdout, stderr) whatever the exit code."""
    try:
        result = sbx.commands.run(script, timeout=timeout)
    except CommandExitException as exc:
        return exc.exit_code, exc.stdout, exc.stderr
    return result.exit_code, result.stdout, result.stderr


def host_processes_with(needle: str) -> list[int]:
    """Host pids whose command line contains `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if needle.encode() in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def server_rss_bytes(server: RunningSandboxd) -> int:
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# --- reading host files -------------------------------------------------------------------


def test_reading_etc_shadow_fails(sbx: Sandbox) -> None:
    code, out, err = run(sbx, "cat /etc/shadow")
    assert code != 0 and out == ""
    assert "No such file or directory" in err


def test_reading_the_servers_source_fails(sbx: Sandbox) -> None:
    source = PROJECT_ROOT / "sandboxd" / "server.py"
    code, out, err = run(sbx, f"cat {source}; ls {PROJECT_ROOT}/sandboxd")
    assert code != 0 and out == ""
    assert err.count("No such file or directory") == 2


def test_the_servers_environment_and_api_key_are_invisible(
    sbx: Sandbox, server: RunningSandboxd
) -> None:
    # Every kind of process sandboxd starts is running, so /proc holds each one's
    # environment as it was started: the Python and the JavaScript kernel, and the shell.
    assert sbx.run_code("1").text == "1"
    assert sbx.run_code("1", language="js").text == "1"
    code, out, _ = run(sbx, "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'")
    assert "IPYTHONDIR=" in out  # the Python kernel's environment was read
    assert server.api_key not in out
    assert "SANDBOXD_" not in out
    code, _, err = run(sbx, "cat /proc/1/environ")  # the agent: not readable by user code
    assert code != 0 and "Permission denied" in err


def test_another_sandboxs_workspace_is_unreachable(sbx: Sandbox, server: RunningSandboxd) -> None:
    other = Sandbox.create(timeout=60, **server.sdk_options())
    try:
        marker = "secret-" + secrets.token_hex(6)
        other.files.write(f"{marker}.txt", "the other sandbox's data")
        _code, out, _ = run(
            sbx,
            f"find / -name '{marker}*' -not -path '/proc/*' 2>/dev/null; "
            f"grep -rl {marker} /home /tmp /run 2>/dev/null; echo searched",
        )
        assert out == "searched\n"
    finally:
        other.kill()


# --- the network --------------------------------------------------------------------------

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    print("connected")
except OSError as e:
    print(e.strerror)
"""


def probe(sbx: Sandbox, host: str, port: int) -> str:
    sbx.files.write("probe.py", CONNECT)
    return sbx.commands.run(f"python3 probe.py {host} {port}").stdout.strip()


def test_a_loopback_service_on_the_host_is_unreachable(sbx: Sandbox) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.1)
    accepted: list[object] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            accepted.append(listener.accept())

    waiter = threading.Thread(target=accept)
    waiter.start()
    try:
        port = listener.getsockname()[1]
        assert probe(sbx, "127.0.0.1", port) == "Connection refused"
        waiter.join()
        assert accepted == []
    finally:
        listener.close()


def test_postgresql_and_redis_on_the_hosts_loopback_are_unreachable(sbx: Sandbox) -> None:
    assert probe(sbx, "127.0.0.1", 5432) == "Connection refused"
    assert probe(sbx, "127.0.0.1", 6379) == "Connection refused"


def test_an_outside_address_is_unreachable(sbx: Sandbox) -> None:
    # only a connect attempt: there is no interface but lo, so nothing leaves the sandbox
    assert probe(sbx, "192.0.2.1", 80) == "Network is unreachable"


def test_dns_does_not_resolve(sbx: Sandbox) -> None:
    _code, out, _ = run(
        sbx,
        "python3 -c \"import socket\ntry:\n socket.getaddrinfo('pypi.org', 443)\n"
        " print('resolved')\nexcept OSError as e:\n print('failed')\"",
    )
    assert out == "failed\n"


# --- resources ----------------------------------------------------------------------------


def test_a_fork_bomb_is_contained(sbx: Sandbox, state_dir: Path) -> None:
    hits_before = pids_limit_hits(state_dir)
    with contextlib.suppress(TimeoutException, CommandExitException, SandboxException):
        sbx.commands.run("bomb() { bomb | bomb & }; bomb; sleep 2", timeout=8)
    # the sandbox's own process count stayed under its pids limit (64), which it hit
    assert len(host_processes_with("bomb")) <= 64
    assert pids_limit_hits(state_dir) > hits_before
    sbx.kill()
    time.sleep(0.5)
    assert host_processes_with("bomb() { bomb | bomb & }") == []


def test_a_memory_bomb_is_killed_and_reported_as_out_of_memory(sbx: Sandbox) -> None:
    with pytest.raises(CommandExitException) as killed:
        sbx.commands.run("python3 -c 'b = []\nwhile True: b.append(bytearray(32 << 20))'")
    # SIGKILL by the OOM killer of the sandbox's memory cgroup, reported as such
    assert killed.value.error == "signal: killed (out of memory)"
    # the same in a Python kernel: reported as out of memory, and the context comes back
    execution = sbx.run_code("x = bytearray(1 << 30)")
    assert execution.error is not None and execution.error.name == "OutOfMemory"
    assert sbx.run_code("1 + 1").text == "2"
    assert sbx.commands.run("echo survived").stdout == "survived\n"


def test_filling_the_workspace_stops_at_its_cap(sbx: Sandbox) -> None:
    code, _, err = run(sbx, "head -c 200M /dev/zero > /home/user/fill")
    assert code != 0 and "No space left on device" in err
    size = run(sbx, "df -B1M --output=size /home/user | tail -1")[1]
    assert int(size) == 64


def test_filling_tmp_stops_at_its_cap(sbx: Sandbox) -> None:
    code, _, err = run(sbx, "head -c 200M /dev/zero > /tmp/fill")
    assert code != 0 and "No space left on device" in err
    assert int(run(sbx, "df -B1M --output=size /tmp | tail -1")[1]) == 32


def test_a_cpu_spin_past_the_command_timeout_is_contained(sbx: Sandbox) -> None:
    with pytest.raises(TimeoutException):
        sbx.commands.run("exec -a spin-past-timeout bash -c 'while :; do :; done'", timeout=2)
    # capped at its CPU quota, it does not starve the sandbox or the server ...
    assert sbx.commands.run("echo responsive", timeout=10).stdout == "responsive\n"
    # ... and it ends with the sandbox
    sbx.kill()
    assert wait_until(lambda: not host_processes_with("spin-past-timeout"), 10)


def test_a_cpu_spin_past_the_sandbox_timeout_dies_with_the_sandbox(
    server: RunningSandboxd,
) -> None:
    short = Sandbox.create(timeout=3, **server.sdk_options())
    short.commands.run("exec -a spin-past-lifetime bash -c 'while :; do :; done'", background=True)
    # A background command returns once started; its exec may come a moment later.
    assert wait_until(lambda: host_processes_with("spin-past-lifetime"), 5)
    assert wait_until(lambda: not host_processes_with("spin-past-lifetime"), 20)
    assert not short.is_running()
    assert_healthy_afterwards(server)


def test_200_mb_of_output_is_capped_and_the_server_stays_small(
    sbx: Sandbox, server: RunningSandboxd
) -> None:
    before = server_rss_bytes(server)
    execution = sbx.run_code("head -c 200M /dev/zero | tr '\\0' x", language="bash")
    printed = sum(len(line) for line in execution.logs.stdout)
    assert printed < 200 << 20
    assert "truncated" in "".join(execution.logs.stdout[-2:] + execution.logs.stderr)
    assert server_rss_bytes(server) - before < 100 << 20


# --- the files API ------------------------------------------------------------------------


def test_a_planted_symlink_never_reaches_a_host_file_through_the_files_api(
    sbx: Sandbox, server: RunningSandboxd
) -> None:
    other = Sandbox.create(timeout=60, **server.sdk_options())
    try:
        other.files.write("mine.txt", "other sandbox")
        targets = {
            "shadow": "/etc/shadow",
            "source": str(PROJECT_ROOT / "sandboxd" / "server.py"),
            "state": str(server.log_path),
            "other": "/proc/1/root/home/user/mine.txt",
        }
        for name, target in targets.items():
            sbx.commands.run(f"ln -s {target} /home/user/{name}")
        for name in ("shadow", "source", "state"):
            with pytest.raises(SandboxException):
                sbx.files.read(name)
        # /proc/1/root is the sandbox's own root: the other sandbox's file is not there
        with pytest.raises(SandboxException):
            sbx.files.read("other")
        with pytest.raises(SandboxException):
            sbx.files.write("shadow", "overwrite attempt")
        assert other.files.read("mine.txt") == "other sandbox"
    finally:
        other.kill()


# --- system calls -------------------------------------------------------------------------

SYSCALL = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
name = sys.argv[1]
if name == "ptrace":
    result = libc.ptrace(16, int(sys.argv[2]), 0, 0)  # PTRACE_ATTACH
elif name == "mount":
    os.makedirs("/tmp/m", exist_ok=True)
    result = libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None)
print(result, os.strerror(ctypes.get_errno()))
"""


def test_ptrace_is_refused(sbx: Sandbox) -> None:
    sbx.files.write("sys.py", SYSCALL)
    handle = sbx.commands.run("sleep 30", background=True)
    try:
        assert run(sbx, f"python3 sys.py ptrace {handle.pid}")[1] == "-1 Operation not permitted\n"
        assert run(sbx, "python3 sys.py ptrace 1")[1] == "-1 Operation not permitted\n"
    finally:
        handle.kill()


def test_mount_is_refused(sbx: Sandbox) -> None:
    sbx.files.write("sys.py", SYSCALL)
    assert run(sbx, "python3 sys.py mount")[1] == "-1 Operation not permitted\n"
    code, _, _err = run(sbx, "mount -t tmpfs none /tmp")
    assert code != 0


def test_unshare_is_refused(sbx: Sandbox) -> None:
    for command in ("unshare -U true", "unshare -n true", "unshare -m true"):
        code, _, err = run(sbx, command)
        assert code != 0 and "Operation not permitted" in err, (command, err)


def test_kill_9_minus_1_leaves_the_sandbox_working(sbx: Sandbox) -> None:
    handle = sbx.commands.run("sleep 60", background=True)
    run(sbx, "kill -9 -1")
    assert sbx.commands.run("echo still here").stdout == "still here\n"
    with contextlib.suppress(SandboxException):
        handle.kill()


def test_a_background_process_outlives_its_run_but_not_the_sandbox(sbx: Sandbox) -> None:
    marker = "sleep 987.654"
    sbx.commands.run(f"setsid nohup {marker} >/dev/null 2>&1 &")
    assert wait_until(lambda: host_processes_with(marker), 5), "not running after the command"
    sbx.kill()
    assert wait_until(lambda: not host_processes_with(marker), 10)


def test_writing_outside_the_workspace_fails(sbx: Sandbox) -> None:
    for path in ("/usr/bin/evil", "/etc/evil", "/evil", "/opt/python/evil", "/bin/evil"):
        code, _, err = run(sbx, f"echo x > {path}")
        assert code != 0 and "Read-only file system" in err, (path, err)
    with pytest.raises(SandboxException):
        sbx.files.write("/etc/evil", "x")


def test_proc_shows_no_host_processes(sbx: Sandbox, server: RunningSandboxd) -> None:
    _code, out, _ = run(
        sbx,
        "ls /proc | grep -E '^[0-9]+$' | wc -l; cat /proc/1/cmdline | tr '\\0' ' '; echo; "
        "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '",
    )
    count, agent, cmdlines = out.split("\n", 2)
    assert int(count) < 20
    assert "/opt/sandboxd/agent/main.py" in agent
    assert "sandboxd serve" not in cmdlines and server.api_key not in cmdlines
    assert "pytest" not in cmdlines
    # The network namespace is the sandbox's own: each TCP socket in it is the agent's
    # egress forwarder (127.0.0.1:3128) or a connection to it, belongs to a process of the
    # sandbox (ipykernel binds a loopback port of its own), or is closed (TIME_WAIT, no
    # inode). The host's sockets, the server's listening port among them, are not there.
    assert sbx.run_code("1").text == "1"  # the Python kernel is running, with its socket
    table = run(sbx, "awk 'FNR > 1 && NF > 9 {print $2, $3, $10}' /proc/net/tcp /proc/net/tcp6")
    fds = run(sbx, "ls -l /proc/[0-9]*/fd 2>/dev/null")[1]
    owned = set(re.findall(r"socket:\[(\d+)\]", fds))
    forwarder = "0100007F:0C38"
    rows = [line.split() for line in table[1].splitlines() if line.strip()]
    assert any(local == forwarder for local, _remote, _inode in rows)
    server_port = f":{urlsplit(server.url).port:04X}"
    for local, remote, inode in rows:
        assert not local.endswith(server_port), local
        assert forwarder in (local, remote) or inode in owned or inode == "0", (local, inode)
