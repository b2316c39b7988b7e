"""Package-install egress: only the hosts the host's pip and npm use, through the allow-list
proxy; everything else refused; direct connections unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from sandboxd.jail import Jail, JailManager
from sandboxd.jail.testing import jail_manager, run, sh

pytestmark = pytest.mark.asyncio(loop_scope="module")

CONNECT_PROBE = """
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", 3128, timeout=20)
conn.request("CONNECT", sys.argv[1])
print(conn.getresponse().status)
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def manager() -> AsyncIterator[JailManager]:
    async with jail_manager(egress=True) as started:
        yield started


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def jail(manager: JailManager) -> AsyncIterator[Jail]:
    made = await manager.create("egress")
    yield made
    await made.destroy()


async def test_the_proxy_refuses_any_other_host_with_403(manager: JailManager, jail: Jail) -> None:
    assert manager.allowed is not None
    assert not manager.allowed.permits("example.com", 443)
    code, out, err = await run(jail, ["python3", "-c", CONNECT_PROBE, "example.com:443"])
    assert (code, out) == (0, "403\n"), err
    # an allowed host on another port is refused too
    host, _port = sorted(manager.allowed.endpoints)[0]
    code, out, _ = await run(jail, ["python3", "-c", CONNECT_PROBE, f"{host}:22"])
    assert out == "403\n"


async def test_a_direct_connection_is_unreachable(jail: Jail) -> None:
    probe = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('192.0.2.1', 443), timeout=5)\n"
        "except OSError as e:\n"
        "    print(e.strerror)\n"
    )
    assert (await run(jail, ["python3", "-c", probe]))[1] == "Network is unreachable\n"


async def test_pip_installs_a_real_wheel_that_a_running_python_can_import(jail: Jail) -> None:
    # a Python process that is already running before the install (like a kernel)
    python = await jail.spawn(
        ["python3", "-u", "-c", "import sys\nfor line in sys.stdin: exec(line)"], stdin=True
    )
    code, out, err = await sh(jail, "pip install --quiet iniconfig==2.0.0 && echo installed")
    assert (code, out) == (0, "installed\n"), err
    await python.write_stdin(
        b"import importlib; importlib.invalidate_caches(); import iniconfig; "
        b"print(iniconfig.__file__)\n"
    )
    await python.close_stdin()
    out_bytes = b"".join([e.data async for e in python.events() if e.kind == "stdout"])
    assert out_bytes.decode().startswith("/home/user/.local/lib/python-packages/iniconfig/")


async def test_pip_inside_is_configured_for_wheels_only(jail: Jail) -> None:
    code, out, _ = await sh(jail, "pip config list")
    assert code == 0
    assert ":env:.only-binary=':all:'" in out.splitlines()


async def test_npm_installs_without_running_install_scripts(jail: Jail) -> None:
    code, out, err = await asyncio.wait_for(
        sh(
            jail,
            "npm install --silent is-number@7.0.0 >/dev/null && "
            "node -e \"console.log(require('is-number')(5))\" && "
            "npm config get ignore-scripts",
        ),
        240,
    )
    assert (code, out) == (0, "true\ntrue\n"), err


HTTP_PROBE = """
import sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": sys.argv[1]}))
try:
    with opener.open(sys.argv[2], timeout=20) as answer:
        print(answer.status, answer.read().decode())
except urllib.error.HTTPError as e:
    print(e.code)
"""


async def test_a_plain_http_index_of_the_host_is_reached_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def index(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        body = b"index saw " + request.split(b" ")[1]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(index, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", f"http://127.0.0.1:{port}/simple/")
    try:
        async with jail_manager(egress=True) as manager:
            jail = await manager.create("egress-http")
            proxy = "http://127.0.0.1:3128"
            # the index is on loopback: the sandbox's env must not bypass the proxy for it
            assert "127.0.0.1" not in (await sh(jail, "echo $NO_PROXY"))[1]
            code, out, err = await run(
                jail, ["python3", "-c", HTTP_PROBE, proxy, f"http://127.0.0.1:{port}/simple/x/"]
            )
            assert (code, out) == (0, "200 index saw /simple/x/\n"), err
            assert (await sh(jail, "echo $PIP_EXTRA_INDEX_URL"))[1] == (
                f"http://127.0.0.1:{port}/simple/\n"
            )
            other = f"http://127.0.0.1:{port + 1}/"
            assert (await run(jail, ["python3", "-c", HTTP_PROBE, proxy, other]))[1] == "403\n"
    finally:
        server.close()
