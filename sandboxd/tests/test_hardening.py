"""Issue 14: hostile sandbox code and hostile clients against one real sandboxd, through the
real e2b SDK and plain HTTP. Each attack is contained, the server's memory stays bounded
(its RSS measured before and after) and a neighbour sandbox still works afterwards.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pyseccomp
import pytest
from e2b import SandboxException
from e2b_code_interpreter import Context, Sandbox

from sandboxd.config import PROJECT_ROOT
from sandboxd.interpreter.contexts import MAX_OUTPUT_BYTES
from sandboxd.interpreter.python_kernel import IOPUB_HOST_QUEUE_MESSAGES, MAX_MESSAGE_BYTES
from sandboxd.jail import seccomp
from sandboxd.testing import RunningSandboxd, running_sandboxd, wait_until

pytestmark = pytest.mark.sandboxd

MIB = 1 << 20
# How much the server's resident memory may grow through one attack: well under what the
# attack pushes through it, far above the noise of a warm server.
RSS_SLACK = 48 * MIB


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sandboxd-harden-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def server(state_dir: Path) -> Iterator[RunningSandboxd]:
    """A server of its own, so its memory is this module's to measure."""
    with running_sandboxd(
        state_dir=state_dir,
        api_key="harden-" + secrets.token_hex(8),
        env={
            "SANDBOXD_POOL_SIZE": "0",
            "SANDBOXD_MAX_FILE_MB": "80",
            # A fixed threshold: blocks of 128 KiB and more are mapped and unmapped on
            # their own, so RSS measures what is live, not what glibc kept from before.
            "MALLOC_MMAP_THRESHOLD_": str(128 * 1024),
        },
    ) as running:
        yield running


@pytest.fixture(scope="module")
def neighbour(server: RunningSandboxd) -> Iterator[Sandbox]:
    """Another tenant's sandbox, which must keep working whatever the attacker does."""
    sandbox = Sandbox.create(**server.sdk_options())
    try:
        yield sandbox
    finally:
        sandbox.kill()


@pytest.fixture
def attacker(server: RunningSandboxd) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(**server.sdk_options())
    try:
        yield sandbox
    finally:
        sandbox.kill()


def rss(server: RunningSandboxd) -> int:
    """The server process's resident memory now, in bytes."""
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def assert_healthy(server: RunningSandboxd, neighbour: Sandbox) -> None:
    """The server answers and another sandbox still runs code."""
    assert httpx.get(f"{server.url}/health", timeout=30).json()["status"] == "ok"
    assert neighbour.run_code("6 * 7").text == "42"


def envd_headers(sandbox: Sandbox) -> dict[str, str]:
    return {
        "E2b-Sandbox-Id": sandbox.sandbox_id,
        "E2b-Sandbox-Port": "49983",
        "X-Access-Token": sandbox._envd_access_token or "",
    }


def interpreter_headers(sandbox: Sandbox) -> dict[str, str]:
    return {**envd_headers(sandbox), "E2b-Sandbox-Port": "49999"}


# --- 4, 3: the egress proxy ------------------------------------------------------------------

_PROXY_CLIENT = textwrap.dedent(
    """
    import os, socket, sys
    host, port = os.environ["HTTPS_PROXY"].rsplit("/", 1)[-1].rsplit(":", 1)

    def ask(target):
        with socket.create_connection((host, int(port)), timeout=30) as conn:
            conn.sendall(f"CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n".encode())
            return conn.recv(200).split(b"\\r\\n", 1)[0].decode()

    print(ask(sys.argv[1]))
    for _ in range(int(sys.argv[2])):
        ask(sys.argv[1])
    """
)


def ask_proxy(sandbox: Sandbox, target: str, repeat: int = 0) -> str:
    sandbox.files.write("/tmp/proxy_client.py", _PROXY_CLIENT)
    result = sandbox.commands.run(f"python3 /tmp/proxy_client.py '{target}' {repeat}", timeout=120)
    return result.stdout.strip()


def test_a_malformed_port_is_answered_400_without_a_traceback(
    server: RunningSandboxd, attacker: Sandbox, neighbour: Sandbox
) -> None:
    assert ask_proxy(attacker, "example.com:\u00b2") == "HTTP/1.1 400 Bad Request: malformed port"
    assert ask_proxy(attacker, "example.com:99999") == "HTTP/1.1 400 Bad Request: malformed port"

    assert "Traceback" not in server.log()
    assert_healthy(server, neighbour)


def test_a_loop_of_refused_requests_is_logged_once_not_per_request(
    server: RunningSandboxd, attacker: Sandbox, neighbour: Sandbox
) -> None:
    host = f"refused-{secrets.token_hex(4)}.example"

    first = ask_proxy(attacker, f"{host}:443", repeat=300)

    assert first == "HTTP/1.1 403 Forbidden: not a package index of this host"
    mentions = [line for line in server.log().splitlines() if host in line]
    # The first at once; then a count a minute (one, should the loop have spanned a minute).
    assert "refused a request to" in mentions[0]
    assert len(mentions) <= 2
    assert all("in the last minute" in line for line in mentions[1:])
    assert_healthy(server, neighbour)


def test_a_template_id_cannot_forge_a_log_line(server: RunningSandboxd) -> None:
    marker = secrets.token_hex(6)
    forged = f"base\n2026-01-01 00:00:00,000 ERROR sandboxd: FORGED {marker}"

    response = httpx.post(
        f"{server.url}/sandboxes",
        headers={"X-API-KEY": server.api_key},
        json={"templateID": forged, "timeout": 30},
        timeout=60,
    )

    assert response.status_code == 404  # no such template (sandboxd.templates)
    lines = [line for line in server.log().splitlines() if marker in line]
    assert lines, "the template id was logged"
    assert not any(line.startswith("2026-01-01") for line in lines)


# --- 11: deeply nested JSON ------------------------------------------------------------------

NESTED = b"[" * 200_000 + b"]" * 200_000


def test_deeply_nested_json_gets_400_on_the_control_plane(server: RunningSandboxd) -> None:
    response = httpx.post(
        f"{server.url}/sandboxes",
        headers={"X-API-KEY": server.api_key, "Content-Type": "application/json"},
        content=b'{"metadata": ' + NESTED + b"}",
        timeout=60,
    )

    assert response.status_code == 400
    assert "JSON" in response.json()["message"]


def test_deeply_nested_json_gets_400_on_execute(
    server: RunningSandboxd, neighbour: Sandbox
) -> None:
    response = httpx.post(
        f"{server.url}/execute",
        headers={**interpreter_headers(neighbour), "Content-Type": "application/json"},
        content=b'{"code": "1", "env_vars": ' + NESTED + b"}",
        timeout=60,
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    assert_healthy(server, neighbour)


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/filesystem.Filesystem/Stat", "application/json", NESTED),
        # A server-streaming call: Connect's framing, one message, enveloped.
        (
            "/process.Process/Start",
            "application/connect+json",
            b"\x00" + len(NESTED).to_bytes(4, "big") + NESTED,
        ),
    ],
)
def test_deeply_nested_json_gets_400_on_connect_rpc_and_does_not_crash_the_server(
    server: RunningSandboxd, neighbour: Sandbox, path: str, content_type: str, body: bytes
) -> None:
    # protobuf-py's native JSON parser overflowed its stack on this and killed the server.
    response = httpx.post(
        f"{server.url}{path}",
        headers={**envd_headers(neighbour), "Content-Type": content_type},
        content=body,
        timeout=60,
    )

    assert response.status_code in (200, 400)  # a stream reports its error in its body
    assert b"invalid_argument" in response.content
    assert_healthy(server, neighbour)


# --- 10: a file name with CR/LF --------------------------------------------------------------


def test_a_file_name_with_cr_lf_downloads_with_an_encoded_disposition(
    server: RunningSandboxd, attacker: Sandbox
) -> None:
    attacker.commands.run(
        "python3 -c \"open('/home/user/a\\r\\nSet-Cookie: x=1\\r\\n.txt', 'w').write('ok')\""
    )
    path = "/home/user/a\r\nSet-Cookie: x=1\r\n.txt"

    response = httpx.get(
        f"{server.url}/files",
        params={"path": path},
        headers=envd_headers(attacker),
        timeout=60,
    )

    assert response.status_code == 200
    assert response.content == b"ok"
    assert "set-cookie" not in response.headers
    assert response.headers["content-disposition"] == (
        'attachment; filename="a__Set-Cookie: x=1__.txt"; '
        "filename*=UTF-8''a%0D%0ASet-Cookie%3A%20x%3D1%0D%0A.txt"
    )


# --- 5, 6: uploads ---------------------------------------------------------------------------


def test_a_signed_upload_url_writes_only_its_own_path(
    server: RunningSandboxd, attacker: Sandbox, neighbour: Sandbox
) -> None:
    url = attacker.upload_url("/home/user/allowed.txt", use_signature_expiration=60)
    files = [
        ("file", ("/home/user/allowed.txt", b"mine")),
        ("file", ("/home/user/.profile", b"echo owned")),
    ]

    response = httpx.post(
        url, files=files, headers={"E2b-Sandbox-Id": attacker.sandbox_id}, timeout=60
    )

    assert response.status_code == 400
    assert "one file part" in response.json()["message"]
    assert attacker.files.read("/home/user/allowed.txt") == "mine"
    assert "owned" not in attacker.commands.run("cat /home/user/.profile || true").stdout
    assert_healthy(server, neighbour)


def _parts(count: int, size: int, boundary: str) -> Iterator[bytes]:
    block = b"x" * MIB
    for index in range(count):
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="/home/user/big{index}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for _ in range(size // MIB):
            yield block
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def test_a_large_multipart_upload_is_streamed_not_held_in_memory(
    server: RunningSandboxd, attacker: Sandbox, neighbour: Sandbox
) -> None:
    boundary = secrets.token_hex(8)
    before = rss(server)

    response = httpx.post(
        f"{server.url}/files",
        headers={
            **envd_headers(attacker),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        content=_parts(4, 64 * MIB, boundary),
        timeout=300,
    )

    assert response.status_code == 200, response.text
    assert [entry["path"] for entry in response.json()] == [
        f"/home/user/big{index}" for index in range(4)
    ]
    sizes = attacker.commands.run("stat -c %s /home/user/big0 /home/user/big3").stdout.split()
    assert sizes == [str(64 * MIB)] * 2
    assert rss(server) - before < RSS_SLACK
    assert_healthy(server, neighbour)


def test_an_upload_over_the_cap_is_refused_and_leaves_no_file(
    server: RunningSandboxd, attacker: Sandbox
) -> None:
    boundary = secrets.token_hex(8)

    response = httpx.post(
        f"{server.url}/files",
        headers={
            **envd_headers(attacker),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        content=_parts(1, 96 * MIB, boundary),
        timeout=300,
    )

    assert response.status_code == 413
    assert not attacker.files.exists("/home/user/big0")


# --- 2: the output cap and the event pipe ----------------------------------------------------


def execute(server: RunningSandboxd, sandbox: Sandbox, code: str) -> list[dict[str, object]]:
    """Run `code` through plain HTTP /execute; every event of the response."""
    response = httpx.post(
        f"{server.url}/execute",
        headers=interpreter_headers(sandbox),
        json={"code": code},
        timeout=300,
    )
    assert response.status_code == 200
    return [json.loads(line) for line in response.content.splitlines()]


def test_json_extra_and_error_payloads_count_against_the_output_cap(
    server: RunningSandboxd, attacker: Sandbox, neighbour: Sandbox
) -> None:
    code = (
        "from IPython.display import display\n"
        "for _ in range(30):\n"
        "    display({'application/json': {'k': 'x' * (1 << 20)},"
        " 'application/x-other': 'y' * (1 << 20)}, raw=True)\n"
        "raise ValueError('z' * (8 << 20))"
    )

    found = execute(server, attacker, code)

    sent = sum(len(json.dumps(event)) for event in found)
    assert sent <= MAX_OUTPUT_BYTES + 64 * 1024  # 60 MiB of payloads were produced
    assert any("output truncated" in str(event.get("text")) for event in found)
    errors = [event for event in found if event["type"] == "error"]
    assert [error["name"] for error in errors] == ["ValueError"]  # cut, but still reported
    assert found[-1] == {"type": "end_of_execution"}
    assert_healthy(server, neighbour)


def test_a_slow_client_holds_the_output_back_instead_of_the_server_buffering_it(
    server: RunningSandboxd, attacker: Sandbox, neighbour: Sandbox
) -> None:
    """The client reads nothing until the cell is over: the server keeps about the pipe's
    backlog, the kernel holds the rest, and every byte arrives once the client reads."""
    code = (
        "import sys, pathlib\n"
        "for _ in range(24):\n"
        "    sys.stdout.write('x' * (1 << 20))\n"
        "sys.stdout.flush()\n"
        "pathlib.Path('/tmp/produced').touch()\n"
    )
    body = json.dumps({"code": code}).encode()
    headers = {
        **interpreter_headers(attacker),
        "Host": "sandboxd",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
    }
    before = rss(server)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client.connect((host, int(port)))
        client.sendall(
            b"POST /execute HTTP/1.1\r\n"
            + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
            + b"\r\n"
            + body
        )
        assert wait_until(lambda: attacker.files.exists("/tmp/produced"), 120)
        held = rss(server) - before
        received = bytearray()
        client.settimeout(120)
        while not received.endswith(b"\r\n0\r\n\r\n"):  # the chunked body's end
            chunk = client.recv(1 << 20)
            assert chunk, "the server closed the stream early"
            received += chunk

    assert held < 20 * MIB  # 24 MiB were produced while the client read nothing
    assert b'{"type":"end_of_execution"}' in received
    assert received.count(b"x" * 1024) >= 24 * 1024  # and none of it was lost
    assert_healthy(server, neighbour)


# --- 1: a kernel flooding the host's iopub ---------------------------------------------------


@pytest.mark.parametrize(
    ("frame_mib", "count", "bound"),
    [
        (1, 1000, 32 * MIB),
        # Large frames: the stated worst case, the host's queue, one frame being decoded, one
        # being received and one more in ZeroMQ's I/O thread (its high-water mark is not
        # exact: 125 MiB, four 32 MiB frames, was seen on a loaded machine), each at most
        # MAX_MESSAGE_BYTES.
        (32, 30, (IOPUB_HOST_QUEUE_MESSAGES + 3) * MAX_MESSAGE_BYTES),
    ],
)
def test_a_flood_of_badly_signed_frames_keeps_the_server_small_and_its_neighbours_served(
    server: RunningSandboxd,
    attacker: Sandbox,
    neighbour: Sandbox,
    frame_mib: int,
    count: int,
    bound: int,
) -> None:
    code = (
        "sock = get_ipython().kernel.iopub_socket\n"
        f"frame = b'x' * ({frame_mib} << 20)\n"
        f"for _ in range({count}):\n"
        "    sock.send_multipart([b'<IDS|MSG>', b'bad', b'{}', b'{}', b'{}', frame])\n"
        "'flooded'"
    )
    before = rss(server)
    peak = [before]
    neighbour_runs: list[str] = []
    flooding = threading.Event()
    flooding.set()

    def watch() -> None:
        while flooding.is_set():
            peak[0] = max(peak[0], rss(server))
            neighbour_runs.append(neighbour.run_code("1 + 1").text or "")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        execution = attacker.run_code(code, timeout=300)
    finally:
        flooding.clear()
        watcher.join()

    assert execution.text == "flooded"  # ~1 GiB of bad frames went through and were dropped
    assert peak[0] - before < bound
    assert neighbour_runs and set(neighbour_runs) == {"2"}
    assert_healthy(server, neighbour)


# --- 12: host paths --------------------------------------------------------------------------


def test_the_sandbox_sees_neither_the_state_dir_nor_its_own_host_directory(
    state_dir: Path, attacker: Sandbox
) -> None:
    seen = attacker.commands.run("cat /proc/self/mountinfo; tr '\\0' ' ' < /proc/1/cmdline").stdout

    assert "/run/sandboxd/egress.sock" in seen  # the egress socket is there, from a tmpfs
    assert str(state_dir) not in seen
    assert attacker.sandbox_id not in seen


def host_secrets(server: RunningSandboxd, state_dir: Path, *sandboxes: Sandbox) -> set[str]:
    """What no error a sandbox or an API client sees may contain: the state dir, each
    sandbox's host directory, the server's log directory and the project's host path."""
    found = {
        str(state_dir),
        str(state_dir.resolve()),
        str(server.log_path.parent),
        str(PROJECT_ROOT),
    }
    found.update(str(state_dir / "jails" / sandbox.sandbox_id) for sandbox in sandboxes)
    return found


def refusal(call: Callable[[], object]) -> str:
    """What the SDK says when `call` is refused (it must be)."""
    with pytest.raises(SandboxException) as info:
        call()
    return str(info.value)


def http_refusal(response: httpx.Response) -> str:
    """A refused plain-HTTP request's whole body (it must be refused)."""
    assert response.status_code >= 400, (response.status_code, response.text)
    return response.text


def test_error_messages_name_no_host_path_and_no_other_sandbox(
    server: RunningSandboxd, state_dir: Path, attacker: Sandbox, neighbour: Sandbox
) -> None:
    api = {"X-API-KEY": server.api_key}
    envd, interpreter = envd_headers(attacker), interpreter_headers(attacker)
    unknown = "i" + secrets.token_hex(9)
    attacker.commands.run("mkfifo /home/user/fifo; echo x > /home/user/plain")
    seen: dict[str, str] = {}

    # The files API, through the SDK and plain HTTP.
    seen["read a missing file"] = refusal(lambda: attacker.files.read("/home/user/missing"))
    seen["list a missing dir"] = refusal(lambda: attacker.files.list("/home/user/no/such/dir"))
    seen["write a read-only path"] = refusal(lambda: attacker.files.write("/etc/evil", "x"))
    seen["write under a file"] = refusal(lambda: attacker.files.write("/home/user/plain/x", "x"))
    seen["remove a read-only file"] = refusal(lambda: attacker.files.remove("/usr/bin/env"))
    seen["remove from /proc"] = refusal(lambda: attacker.files.remove("/proc/1"))
    seen["make a read-only dir"] = refusal(lambda: attacker.files.make_dir("/usr/evil"))
    seen["rename a missing file"] = refusal(
        lambda: attacker.files.rename("/home/user/missing", "/home/user/other")
    )
    seen["read a fifo"] = refusal(lambda: attacker.files.read("/home/user/fifo"))
    seen["read a runtime entry"] = refusal(lambda: attacker.files.read("/run/sandbox/missing"))
    seen["watch a missing dir"] = refusal(lambda: attacker.files.watch_dir("/home/user/nodir"))
    seen["GET a missing file"] = http_refusal(
        httpx.get(f"{server.url}/files", params={"path": "/x/y"}, headers=envd, timeout=60)
    )
    seen["Stat over Connect"] = http_refusal(
        httpx.post(
            f"{server.url}/filesystem.Filesystem/Stat",
            headers=envd,
            json={"path": "/home/user/missing"},
            timeout=60,
        )
    )
    upload = f"{server.url}/files"
    seen["upload to a read-only path"] = http_refusal(
        httpx.post(
            upload, params={"path": "/etc/u"}, files={"file": ("u", b"x")}, headers=envd, timeout=60
        )
    )
    seen["upload onto a directory"] = http_refusal(
        httpx.post(
            upload,
            params={"path": "/home/user"},
            files={"file": ("u", b"x")},
            headers=envd,
            timeout=60,
        )
    )
    seen["a malformed upload"] = http_refusal(
        httpx.post(
            upload,
            params={"path": "/home/user/u"},
            headers={**envd, "Content-Type": "multipart/form-data; boundary=zz"},
            content=b"no parts here",
            timeout=60,
        )
    )

    # Processes.
    seen["a missing cwd"] = refusal(lambda: attacker.commands.run("true", cwd="/nonexistent"))
    seen["a missing program"] = refusal(lambda: attacker.commands.run("no-such-program"))
    seen["a missing process"] = refusal(lambda: attacker.commands.connect(999_999))
    seen["another user"] = refusal(lambda: attacker.commands.run("id", user="root"))

    # The code interpreter: missing contexts, bad requests, a kernel that fails or dies.
    missing = Context(context_id="no-such-context", language="python", cwd="/home/user")
    seen["run_code in a missing context"] = refusal(lambda: attacker.run_code("1", context=missing))
    seen["remove a missing context"] = refusal(lambda: attacker.remove_code_context(missing))
    seen["a context in a missing cwd"] = refusal(
        lambda: attacker.create_code_context(cwd="/nonexistent")
    )
    seen["an unknown language"] = refusal(lambda: attacker.run_code("1", language="cobol"))
    seen["/execute in a missing context"] = http_refusal(
        httpx.post(
            f"{server.url}/execute",
            headers=interpreter,
            json={"code": "1", "context_id": "no-such-context"},
            timeout=60,
        )
    )
    for language, code in (
        ("python", "import json; json.loads('{')"),
        ("python", "import os; os.kill(os.getpid(), 9)"),
        ("js", "require('no-such-module')"),
        ("bash", "cat /no/such/file"),
    ):
        error = attacker.run_code(code, language=language).error
        assert error is not None, code
        seen[f"{language}: {code}"] = f"{error.name}: {error.value}\n{error.traceback}"
    attacker.files.write(
        "/home/user/.local/lib/python-packages/sitecustomize.py", "raise SystemExit('no')"
    )
    seen["a kernel that fails to start"] = refusal(
        lambda: attacker.create_code_context(language="python")
    )
    attacker.files.remove("/home/user/.local/lib/python-packages/sitecustomize.py")

    # The control plane: unknown ids, bad bodies, a pause that fails.
    options = server.sdk_options()
    seen["connect to an unknown sandbox"] = refusal(lambda: Sandbox.connect(unknown, **options))
    seen["the timeout of an unknown one"] = refusal(
        lambda: Sandbox.set_timeout(unknown, 30, **options)
    )
    seen["an unknown template"] = refusal(lambda: Sandbox.create(template="nope", **options))
    for method, path in (
        ("GET", f"/sandboxes/{unknown}"),
        ("DELETE", f"/sandboxes/{unknown}"),
        ("POST", f"/sandboxes/{unknown}/pause"),
        ("POST", f"/sandboxes/{unknown}/resume"),
    ):
        seen[f"{method} {path}"] = http_refusal(
            httpx.request(method, f"{server.url}{path}", headers=api, json={}, timeout=60)
        )
    seen["a body that is not JSON"] = http_refusal(
        httpx.post(
            f"{server.url}/sandboxes",
            headers={**api, "Content-Type": "application/json"},
            content=b"{",
            timeout=60,
        )
    )
    seen["an unknown sandbox on the envd port"] = http_refusal(
        httpx.get(
            f"{server.url}/files",
            params={"path": "/x"},
            headers={**envd, "E2b-Sandbox-Id": unknown},
            timeout=60,
        )
    )
    # tar cannot read a file its owner made unreadable: the pause fails (and kills it).
    attacker.commands.run("echo secret > /home/user/locked && chmod 000 /home/user/locked")
    seen["a pause that fails"] = http_refusal(
        httpx.post(f"{server.url}/sandboxes/{attacker.sandbox_id}/pause", headers=api, timeout=120)
    )

    forbidden = host_secrets(server, state_dir, attacker, neighbour) | {neighbour.sandbox_id}
    leaks = {what: text for what, text in seen.items() if any(s in text for s in forbidden)}
    assert not leaks, leaks
    assert_healthy(server, neighbour)


def test_a_kernel_that_cannot_get_its_directory_names_no_host_path(
    server: RunningSandboxd, state_dir: Path, attacker: Sandbox
) -> None:
    """The sandbox fills its runtime dir's inodes, so the host cannot make a kernel's
    directory there: the client is told so with the sandbox's path, not the host's."""
    filled = attacker.commands.run(
        "cd /run/sandbox && i=0; while : 2>/dev/null > f$i; do i=$((i+1)); done; echo $i",
        timeout=120,
    )
    assert int(filled.stdout) > 1000

    failures = [
        refusal(lambda language=language: attacker.create_code_context(language=language))
        for language in ("python", "bash")
    ]

    for failure in failures:
        assert not any(s in failure for s in host_secrets(server, state_dir, attacker)), failure
        assert "kernel_start_failed" in failure and "No space left on device" in failure
        assert "/run/sandbox/" in failure  # the path as the sandbox sees it
    attacker.commands.run("find /run/sandbox -maxdepth 1 -name 'f*' -type f -delete")
    assert attacker.run_code("echo ok", language="bash").logs.stdout == ["ok\n"]
    assert attacker.run_code("6 * 7").text == "42"  # kernels start again once there is room


# --- 13: the seccomp allow-list --------------------------------------------------------------

# A system call neither filter names: Docker's default profile allows get_mempolicy(2) only
# with CAP_SYS_NICE, our allow-list leaves it out, and the guard does not list it, so only the
# allow-list's default can answer. It is a harmless query that succeeds unprivileged on the
# host, so an EPERM in the sandbox is the filter's, not the kernel's.
UNLISTED_SYSCALL = "get_mempolicy"

_SYSCALL_PROBE = textwrap.dedent(
    """
    import ctypes, errno, json, os
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def probe(number, *args):
        ctypes.set_errno(0)
        result = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
        return {"result": result, "errno": errno.errorcode.get(ctypes.get_errno(), "")}

    print(json.dumps({
        "unlisted": probe(UNLISTED, 0, 0, 0, 0, 0),
        "getpid": probe(GETPID),
        "pid": os.getpid(),
    }))
    """
)


def test_a_system_call_no_filter_names_is_refused_with_eperm(attacker: Sandbox) -> None:
    assert UNLISTED_SYSCALL not in seccomp.ALLOWED_SYSCALLS
    assert UNLISTED_SYSCALL not in seccomp.DENIED_SYSCALLS
    assert "getpid" in seccomp.ALLOWED_SYSCALLS
    # The numbers of this machine's architecture (the sandbox runs on it too).
    native = pyseccomp.Arch.NATIVE
    code = _SYSCALL_PROBE.replace(
        "UNLISTED", str(pyseccomp.resolve_syscall(native, UNLISTED_SYSCALL))
    ).replace("GETPID", str(pyseccomp.resolve_syscall(native, "getpid")))
    host = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, check=True, text=True
        ).stdout
    )

    execution = attacker.run_code(code)

    assert execution.error is None, execution.error
    inside = json.loads("".join(execution.logs.stdout))
    assert host["unlisted"]["errno"] != "EPERM"  # the kernel itself would not refuse it
    assert inside["unlisted"] == {"result": -1, "errno": "EPERM"}  # not ENOSYS, not success
    assert inside["getpid"]["result"] == inside["pid"]  # a listed call goes through
