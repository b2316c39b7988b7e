"""Package-install egress: an allow-list HTTP CONNECT proxy on the host.

The allow-list is derived at run time from how the HOST's pip and npm are configured (pip's
index-url / extra-index-url / find-links over http(s), else pip's own default index and file
host taken from pip's internals; npm's `registry`). No host name is written here. Each sandbox
gets its own unix socket (owned by its uid, bound into it); the agent inside forwards
127.0.0.1:PORT to it. Every CONNECT to another host or port is answered 403 without any
connection being made. Plain-HTTP requests (absolute URI) are forwarded only to an allowed
http:// index; anything else is answered 405.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sandboxd import prometheus
from sandboxd.logs import RefusalSummary

log = logging.getLogger("sandboxd.egress")

MAX_HEAD = 8 << 10
HEAD_TIMEOUT = 10.0
CONNECT_TIMEOUT = 15.0
MAX_TUNNELS_PER_SANDBOX = 16
PIPE_CHUNK = 64 << 10
IDLE_TIMEOUT = 120.0
# A port as the request line may spell it: ASCII digits only (str.isdigit() also takes "²",
# which int() then refuses).
_PORT = re.compile(r"[0-9]{1,5}")


def parse_port(text: str) -> int | None:
    """The TCP port `text` names, or None when it is not one (1-65535, ASCII digits)."""
    if not _PORT.fullmatch(text):
        return None
    port = int(text)
    return port if 1 <= port <= 65535 else None


@dataclass(frozen=True)
class Allowed:
    """Where package clients may go: (host, port) pairs and the index settings to pass on."""

    endpoints: frozenset[tuple[str, int]]
    pip_index_url: str | None = None
    pip_extra_index_urls: tuple[str, ...] = ()
    npm_registry: str | None = None

    def permits(self, host: str, port: int) -> bool:
        return (host.lower().rstrip("."), port) in self.endpoints


def _endpoint(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname.lower().rstrip("."), port


def pip_settings() -> tuple[str | None, list[str], list[str]]:
    """(index-url, extra-index-urls, http(s) find-links) of the host's pip configuration."""
    from pip._internal.configuration import Configuration

    config = Configuration(isolated=False)
    config.load()
    values: dict[str, str] = {}
    for key, value in config.items():
        # pip yields (file, {"global.index-url": ...}) per source, or flat pairs in older
        # versions; sources come in precedence order, so later ones win.
        pairs = value.items() if isinstance(value, dict) else [(key, value)]
        for name, setting in pairs:
            section, _, option = name.rpartition(".")
            if section in ("global", "install", ":env:"):
                values[option] = str(setting)
    index = values.get("index-url")
    extra = (values.get("extra-index-url") or "").split()
    links = [u for u in (values.get("find-links") or "").split() if _endpoint(u)]
    return index, extra, links


def derive_allowed(npm_registry: str | None) -> Allowed:
    """Build the allow-list from the host's pip configuration and npm's registry."""
    from pip._internal.models.index import PyPI

    endpoints: set[tuple[str, int]] = set()
    index, extra, links = pip_settings()
    index_http = index if index and _endpoint(index) else None
    if index_http is None:
        # pip's own default index and the host it serves files from
        for url in (PyPI.simple_url, f"https://{PyPI.file_storage_domain}/"):
            ep = _endpoint(url)
            if ep:
                endpoints.add(ep)
    extra_http = [u for u in extra if _endpoint(u)]
    for url in [index_http or "", *extra_http, *links]:
        ep = _endpoint(url)
        if ep:
            endpoints.add(ep)
    registry = npm_registry if npm_registry and _endpoint(npm_registry) else None
    if registry:
        ep = _endpoint(registry)
        assert ep is not None
        endpoints.add(ep)
    return Allowed(frozenset(endpoints), index_http, tuple(extra_http), registry)


async def npm_registry() -> str | None:
    """`npm config get registry` of the host, or None without npm."""
    npm = shutil.which("npm")
    if npm is None:
        return None
    proc = await asyncio.create_subprocess_exec(
        npm,
        "config",
        "get",
        "registry",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    value = out.decode(errors="replace").strip()
    return value if proc.returncode == 0 and _endpoint(value) else None


@dataclass
class EgressProxy:
    """One sandbox's proxy endpoint: a unix socket server enforcing `allowed`."""

    allowed: Allowed
    socket_path: Path
    uid: int
    sandbox_id: str
    server: asyncio.AbstractServer | None = None
    tunnels: set[asyncio.Task[None]] = field(default_factory=set)
    refused: int = 0
    summary: RefusalSummary = field(init=False)

    def __post_init__(self) -> None:
        # A sandbox can retry a refused host in a loop: its refusals are summarised, not
        # logged one by one.
        self.summary = RefusalSummary(log, f"egress of sandbox {self.sandbox_id}")

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.server = await asyncio.start_unix_server(self._handle, path=str(self.socket_path))
        os.chown(self.socket_path, self.uid, self.uid)
        os.chmod(self.socket_path, 0o600)

    async def close(self) -> None:
        self.summary.flush()
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self.tunnels):
            task.cancel()
        for task in list(self.tunnels):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self.tunnels) >= MAX_TUNNELS_PER_SANDBOX:
            writer.close()
            return
        self.tunnels.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            self.tunnels.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        if len(head) > MAX_HEAD:
            await _answer(writer, 431, "Request Header Fields Too Large")
            return
        request_line, _, headers = head.partition(b"\r\n")
        parts = request_line.decode("latin-1").split()
        if len(parts) != 3:
            await _answer(writer, 400, "Bad Request")
            return
        method, target, version = parts
        if method == "CONNECT":
            host, _, port_text = target.rpartition(":")
            host, path = host.strip("[]"), None
        elif target.startswith("http://"):
            # a plain-HTTP index: forwarded in origin form to that host only
            url = urlsplit(target)
            host, path = url.hostname or "", url.path or "/"
            if url.query:
                path += "?" + url.query
            try:
                port_text = str(url.port or 80)
            except ValueError:
                port_text = ""
        else:
            await _answer(writer, 405, "Only CONNECT and http:// requests are proxied")
            return
        port = parse_port(port_text)
        if port is None:
            await _answer(writer, 400, "Bad Request: malformed port")
            return
        if not self.allowed.permits(host, port):
            self.refused += 1
            prometheus.count_egress(allowed=False)
            self.summary.refused(target)
            await _answer(writer, 403, "Forbidden: not a package index of this host")
            return
        prometheus.count_egress(allowed=True)
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), CONNECT_TIMEOUT
        )
        if path is None:
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await writer.drain()
        else:
            # Whatever else the client sends on this connection goes to the same host: the
            # allow-list is about where bytes can go, and that is fixed once connected.
            kept = [
                line
                for line in headers.split(b"\r\n")
                if line and not line.lower().startswith((b"proxy-", b"connection:"))
            ]
            up_writer.write(
                f"{method} {path} {version}\r\n".encode("latin-1")
                + b"".join(line + b"\r\n" for line in kept)
                + b"Connection: close\r\n\r\n"
            )
        activity = [asyncio.get_running_loop().time()]
        try:
            await asyncio.gather(
                _pipe(reader, up_writer, activity), _pipe(up_reader, writer, activity)
            )
        finally:
            up_writer.close()


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    body = f"{reason}\n".encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: list[float]
) -> None:
    """Copy reader -> writer until EOF. `activity[0]` is the tunnel's last transfer time (both
    directions): a tunnel idle both ways for IDLE_TIMEOUT is closed, so a sandbox cannot hold
    connections open forever, while a long download (one direction quiet) goes on."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                data = await asyncio.wait_for(reader.read(PIPE_CHUNK), IDLE_TIMEOUT)
            except TimeoutError:
                if loop.time() - activity[0] >= IDLE_TIMEOUT:
                    raise
                continue
            if not data:
                break
            activity[0] = loop.time()
            writer.write(data)
            await writer.drain()  # backpressure: never buffer more than the socket takes
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, TimeoutError):
        writer.close()
