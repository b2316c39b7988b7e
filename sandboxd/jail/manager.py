"""JailManager and Jail: one long-lived bubblewrap per sandbox, with the agent as its pid 1.

How a sandbox is made (all by the server, which runs as root):
* a host uid of its own from the machine-wide pool (sandboxd.jail.uids);
* cgroups for memory, pids and CPU (sandboxd.jail.cgroups), joined before exec;
* rlimits FSIZE, NOFILE, CORE=0 (and NPROC when there is no pids controller);
* bubblewrap started after dropping to that uid (setpriv: no groups, setgid, setuid),
  with every namespace (network and user included), no capabilities, a read-only system, a
  minimal /etc, size-capped tmpfs /tmp and /home/user, the seccomp allow-list (and its
  guard) and no nested user namespaces;
* inside, the agent (sandboxd/agent) as pid 1, speaking frames on its stdin/stdout.

Everything the agent says is untrusted: frame sizes are bounded, replies are validated, and a
broken or dead agent makes the jail dead (`alive` False) rather than confusing the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import logging
import os
import re
import shutil
import signal
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sandboxd.agent import wire
from sandboxd.jail import egress as egress_mod
from sandboxd.jail import seccomp
from sandboxd.jail.cgroups import Cgroup, CgroupBackend, backend_for
from sandboxd.jail.types import (
    Entry,
    FsError,
    JailError,
    Limits,
    ProcessInfo,
    ProcEvent,
    UnsafeHostError,
)
from sandboxd.jail.uids import DEFAULT_UID_BASE, DEFAULT_UID_COUNT, UidLease, UidPool

log = logging.getLogger("sandboxd.jail")

AGENT_DIR = Path(__file__).resolve().parent.parent / "agent"
SANDBOX_UID = 1000  # the sandbox user's uid and gid as seen inside
EGRESS_PORT = 3128  # the agent's forwarder, on the sandbox's own loopback
START_TIMEOUT = 20.0
CALL_TIMEOUT = 120.0
SHM_BYTES = 64 << 20
SANDBOX_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PIP_TARGET = "/home/user/.local/lib/python-packages"

# Read-only pieces of the host's /etc a sandbox needs (TLS roots, fonts, the dynamic linker's
# cache, alternatives symlinks, time zone). Nothing with accounts or secrets: /etc/ssl/certs,
# not /etc/ssl (its private/ holds host keys).
ETC_BINDS = (
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/ca-certificates",
    "/etc/fonts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/mime.types",
)


OnOk = Callable[[dict], None] | None  # see Jail._call
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8
MNT_DETACH = 2
MAX_READ_BYTES = 1 << 30  # no read_file answer is larger, whatever the agent says
MAX_HELD_WATCH_EVENTS = 8192  # watch events held for one slow reader before the watch is cut
RUNTIME_BYTES = 16 << 20  # /run/sandbox: kernel sockets and connection files only


@functools.cache
def _libc() -> ctypes.CDLL:
    """libc, for mount and umount2 (which Python's os module lacks)."""
    return ctypes.CDLL(None, use_errno=True)


def _mount_runtime_tmpfs(path: Path, uid: int) -> None:
    """Mount a small tmpfs owned by the sandbox's uid on its runtime dir: the sandbox can write
    there, so it must not be the host's disk (the workspace and /tmp caps would not hold)."""
    options = f"size={RUNTIME_BYTES},nr_inodes=4096,mode=0700,uid={uid},gid={uid}"
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if _libc().mount(b"tmpfs", str(path).encode(), b"tmpfs", flags, options.encode()) != 0:
        errno_ = ctypes.get_errno()
        raise JailError(f"cannot mount the runtime tmpfs on {path}: {os.strerror(errno_)}")


# Run by sh with the cgroups' procs files, then "--", then the command: the shell writes its
# own pid (the pid the command will have, as exec keeps it) into each file, then execs.
_JOIN_CGROUPS_THEN_EXEC = (
    'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"'
)
# The programs _setup_argv chains, looked up once (at start) in SETUP_PATH.
SETUP_TOOLS = ("sh", "prlimit", "setpriv")
SETUP_PATH = "/usr/bin:/bin"


def _mount_socket_tmpfs(path: Path) -> None:
    """Mount a tiny root-owned tmpfs on `path` for the egress socket: bound into the sandbox
    from there, the socket's mount shows no host path in the sandbox's /proc/self/mountinfo
    (a bind mount names its source's path within its filesystem; here that is just
    "/egress.sock")."""
    options = "size=64k,nr_inodes=16,mode=0711"
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if _libc().mount(b"tmpfs", str(path).encode(), b"tmpfs", flags, options.encode()) != 0:
        errno_ = ctypes.get_errno()
        raise JailError(f"cannot mount the egress tmpfs: {os.strerror(errno_)}")


def _unmount_under(directory: Path) -> int:
    """Detach every mount at or below `directory` (deepest first); return how many."""
    prefix = str(directory.absolute())
    points: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        _libc().umount2(point.encode(), MNT_DETACH)
    return len(points)


class JailProcess:
    """A process running inside a sandbox (see Jail.spawn)."""

    def __init__(self, jail: Jail, pid: int, info: ProcessInfo, oom_before: int) -> None:
        self.jail = jail
        self.pid = pid
        self.info = info
        self._oom_before = oom_before
        self._queue: asyncio.Queue[ProcEvent] = asyncio.Queue()
        self.exited = False
        self.unacked = 0  # output bytes received and not yet acknowledged to the agent

    def _push(self, event: ProcEvent) -> None:
        if event.kind == "exit":
            if self.exited:
                return
            self.exited = True
        elif self.exited:
            return
        self._queue.put_nowait(event)

    async def events(self) -> AsyncIterator[ProcEvent]:
        """Output events as they arrive, then exactly one exit event.

        The agent holds back further output until we acknowledge what was consumed here, so a
        process printing faster than the caller reads is paused, and host memory stays bounded
        (at most wire.OUTPUT_CREDIT bytes per process are in flight).
        """
        while True:
            event = await self._queue.get()
            if event.kind == "exit":
                yield event
                return
            yield event
            self.jail._ack(self.pid, len(event.data))

    async def write_stdin(self, data: bytes) -> None:
        """Send bytes to the process's stdin; returns once the pipe has taken them."""
        view = memoryview(bytes(data))
        while True:
            chunk, view = view[: wire.CHUNK], view[wire.CHUNK :]
            await self.jail._call({"op": "stdin", "pid": self.pid}, bytes(chunk))
            if not view:
                return

    async def close_stdin(self) -> None:
        await self.jail._call({"op": "stdin_close", "pid": self.pid})

    async def signal(self, sig: int) -> None:
        await self.jail.signal(self.pid, sig)


def _metadata(raw: object) -> dict[str, str] | None:
    if not isinstance(raw, dict) or not raw:
        return None
    return {str(k): str(v) for k, v in raw.items()}


class JailWatch:
    """A directory watch inside a sandbox (see Jail.watch): batches of
    ``(kind, name, is_dir)`` events, names relative to ``root``.

    At most ``MAX_HELD_WATCH_EVENTS`` wait here for a reader; past that, or when the agent
    reports its own bound passed, the watch ends with ``error`` set (a stated cut, never
    unbounded memory).
    """

    def __init__(self, jail: Jail, watch_id: int, root: str) -> None:
        self._jail = jail
        self.watch_id = watch_id
        self.root = root
        self._events: list[tuple[str, str, bool]] = []
        self._arrived = asyncio.Event()
        self.error: str | None = None

    def _deliver(self, message: dict) -> None:
        if self.error is not None:
            return
        error = message.get("error")
        if isinstance(error, str):
            self.error = error[:200]
        events = message.get("events")
        if isinstance(events, list):
            if len(self._events) + len(events) > MAX_HELD_WATCH_EVENTS:
                self.error = f"over {MAX_HELD_WATCH_EVENTS} events waiting for the client"
            else:
                for item in events:
                    if isinstance(item, list) and len(item) == 3:
                        self._events.append((str(item[0]), str(item[1]), item[2] is True))
        self._arrived.set()

    def take(self) -> list[tuple[str, str, bool]]:
        """The events received so far (raises FsError once the watch was cut)."""
        events, self._events = self._events, []
        self._arrived.clear()
        if not events and self.error is not None:
            raise FsError("resource_exhausted", f"the watch of {self.root} stopped: {self.error}")
        return events

    async def wait(self, seconds: float) -> list[tuple[str, str, bool]]:
        """Events as soon as there are some, or [] after `seconds`."""
        if not self._events and self.error is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), seconds)
        return self.take()

    async def flush(self) -> list[tuple[str, str, bool]]:
        """Every event up to now (the agent sends all it has before it answers)."""
        await self._jail._call({"op": "watch_flush"})
        return self.take()

    async def stop(self) -> None:
        self._jail._watches.pop(self.watch_id, None)
        if self._jail.alive:
            with contextlib.suppress(JailError, FsError):
                await self._jail._call({"op": "watch_stop", "watch": self.watch_id})


class Jail:
    """One sandbox: a bubblewrap whose pid 1 is the agent. Made by JailManager.create."""

    def __init__(
        self,
        manager: JailManager,
        sandbox_id: str,
        lease: UidLease,
        limits: Limits,
        host_dir: Path,
        cgroup: Cgroup,
        base_env: dict[str, str],
    ) -> None:
        self.manager = manager
        self.sandbox_id = sandbox_id
        self.uid = lease.uid
        self.limits = limits
        self.runtime_dir = host_dir / "run"
        self._host_dir = host_dir
        self._lease = lease
        self._cgroup = cgroup
        self._base_env = base_env
        self._proc: asyncio.subprocess.Process | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._next_id = 0
        # request id -> (future, received chunks, hook run synchronously on success)
        self._pending: dict[int, tuple[asyncio.Future[tuple[dict, bytes]], list[bytes], OnOk]] = {}
        self._procs: dict[int, JailProcess] = {}
        self._watches: dict[int, JailWatch] = {}
        self.sandbox_env: Path = manager.sandbox_env  # its template's (see JailManager.create)
        self._proxy: egress_mod.EgressProxy | None = None
        self._dead_reason: str | None = None
        self._destroyed = False
        self.stderr_tail = b""

    # --- state ----------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """True while the agent runs and answers; False once it died or was destroyed."""
        return (
            self._dead_reason is None and self._proc is not None and self._proc.returncode is None
        )

    def oom_kills(self) -> int:
        """OOM kills seen by the sandbox's memory cgroup so far."""
        return self._cgroup.oom_kills()

    def pids_limit_hits(self) -> int:
        """Forks refused at the pids limit so far."""
        return self._cgroup.pids_limit_hits()

    @property
    def cgroup(self) -> Cgroup:
        """The sandbox's cgroup (read by sandboxd.metrics and sandboxd.prometheus)."""
        return self._cgroup

    def host_pids(self) -> list[int]:
        """Host pids of the sandbox's processes (from its cgroup), for diagnostics and tests."""
        return self._cgroup.pids()

    # --- the agent channel ----------------------------------------------------------------

    async def _read_frames(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        try:
            while True:
                header = await stdout.readexactly(wire.HEADER.size)
                json_len, payload_len = wire.decode_header(header)
                message = wire.decode_body(await stdout.readexactly(json_len))
                payload = await stdout.readexactly(payload_len) if payload_len else b""
                self._on_frame(message, payload)
        except asyncio.IncompleteReadError:
            self._die("the sandbox agent exited")
        except wire.WireError as exc:
            self._die(f"the sandbox agent broke the protocol: {exc}")
        except asyncio.CancelledError:
            self._die("the sandbox was destroyed")
            raise

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while data := await self._proc.stderr.read(4096):
            self.stderr_tail = (self.stderr_tail + data)[-8192:]  # bounded, for diagnostics

    def _on_frame(self, message: dict, payload: bytes) -> None:
        if "ev" in message:
            self._on_event(message, payload)
            return
        rid = message.get("id")
        pending = self._pending.get(rid) if isinstance(rid, int) else None
        if pending is None:
            return  # an answer nobody waits for (timed out): ignore
        future, chunks, on_ok = pending
        if message.get("chunk") is True:
            chunks.append(payload)
            if sum(map(len, chunks)) > MAX_READ_BYTES:
                self._kill_broken("the sandbox agent sent more data than was asked for")
            return
        del self._pending[rid]  # type: ignore[arg-type]
        if on_ok is not None and isinstance(message.get("ok"), dict) and not future.done():
            # Before any later frame is handled: a spawned process's exit may be the very
            # next frame, and it must find the process registered.
            try:
                on_ok(message["ok"])
            except JailError as exc:
                future.set_exception(exc)
                return
        if not future.done():
            future.set_result((message, b"".join(chunks) if chunks else payload))

    def _on_event(self, message: dict, payload: bytes) -> None:
        kind = message.get("ev")
        if kind == "ready":
            if not self._ready.done():
                self._ready.set_result(None)
            return
        if kind == "watch":
            watch = self._watches.get(message.get("watch"))  # type: ignore[arg-type]
            if watch is not None:
                watch._deliver(message)
            return
        proc = self._procs.get(message.get("pid"))  # type: ignore[arg-type]
        if proc is None:
            return
        if kind == "out":
            proc.unacked += len(payload)
            if proc.unacked > wire.OUTPUT_CREDIT:
                # the agent ignored its credit: do not let it grow our memory
                self._kill_broken("the sandbox agent sent output beyond its credit")
                return
            stream = "stdout" if message.get("fd") == 1 else "stderr"
            proc._push(ProcEvent(kind=stream, data=payload))
        elif kind == "exit":
            code = message.get("code")
            sig = message.get("signal")
            code = code if isinstance(code, int) else None
            sig = sig if isinstance(sig, int) else None
            oom = sig == signal.SIGKILL and self.oom_kills() > proc._oom_before
            proc._push(ProcEvent(kind="exit", exit_code=code, signal=sig, oom_killed=oom))
            del self._procs[proc.pid]

    def _die(self, reason: str) -> None:
        if self._dead_reason is None:
            self._dead_reason = reason
        for future, _chunks, _hook in self._pending.values():
            if not future.done():
                future.set_exception(JailError(f"sandbox {self.sandbox_id}: {reason}"))
        self._pending.clear()
        oom = self.oom_kills() > 0
        for proc in list(self._procs.values()):
            proc._push(
                ProcEvent(kind="exit", exit_code=None, signal=signal.SIGKILL, oom_killed=oom)
            )
        self._procs.clear()
        if not self._ready.done():
            self._ready.set_exception(JailError(f"sandbox {self.sandbox_id}: {reason}"))

    def _send(self, message: dict, payload: bytes = b"") -> None:
        if not self.alive:
            raise JailError(f"sandbox {self.sandbox_id} is not running: {self._dead_reason}")
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(wire.encode(message, payload))

    async def _call(
        self,
        message: dict,
        payload: bytes = b"",
        deadline: float = CALL_TIMEOUT,
        on_ok: OnOk = None,
    ) -> tuple[dict, bytes]:
        """Send a request and return the agent's (result, payload); raise FsError/JailError.

        `on_ok(result)` runs as soon as the success reply is read, before the next frame.
        """
        self._next_id += 1
        rid = self._next_id
        future: asyncio.Future[tuple[dict, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (future, [], on_ok)
        try:
            self._send({**message, "id": rid}, payload)
            assert self._proc is not None and self._proc.stdin is not None
            await self._proc.stdin.drain()
            reply, data = await asyncio.wait_for(future, deadline)
        except (ConnectionError, BrokenPipeError):
            self._die("the sandbox agent's pipe closed")
            raise JailError(f"sandbox {self.sandbox_id} is not running") from None
        except TimeoutError:
            raise JailError(f"sandbox {self.sandbox_id} did not answer in {deadline}s") from None
        finally:
            self._pending.pop(rid, None)
        error = reply.get("error")
        if isinstance(error, dict):
            raise FsError(str(error.get("code")), str(error.get("message"))[:2000])
        result = reply.get("ok")
        if not isinstance(result, dict):
            raise JailError(f"sandbox {self.sandbox_id} sent a malformed reply")
        return result, data

    def _kill_broken(self, reason: str) -> None:
        """The agent broke the protocol: the sandbox is dead (destroy() cleans up)."""
        log.warning("sandbox %s: %s; killing it", self.sandbox_id, reason)
        self._die(reason)
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    def _ack(self, pid: int, amount: int) -> None:
        proc = self._procs.get(pid)
        if proc is not None:
            proc.unacked = max(0, proc.unacked - amount)
        if amount and self.alive:
            with contextlib.suppress(JailError, ConnectionError):
                self._send({"op": "ack", "pid": pid, "bytes": amount})

    # --- processes ------------------------------------------------------------------------

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        envs: Mapping[str, str] = {},
        cwd: str = "/home/user",
        stdin: bool = False,
        tag: str | None = None,
        user: str = "user",
    ) -> JailProcess:
        """Run argv inside the sandbox as the sandbox user (there is no root inside: `user`
        is accepted for API compatibility and every process runs as `user`).

        The environment is the base env (PATH, HOME, USER, LANG, TERM, package-install
        settings, the create() envs) updated with `envs`. Raises FsError('not_found') for a
        missing cwd or executable, JailError if the sandbox is not running.
        """
        del user
        if not argv:
            raise FsError("invalid_argument", "argv is empty")
        env = {**self._base_env, **{str(k): str(v) for k, v in envs.items()}}
        argv_list = [str(a) for a in argv]
        oom_before = self.oom_kills()
        made: list[JailProcess] = []

        def register(result: dict) -> None:
            pid = result.get("pid")
            if not isinstance(pid, int) or pid <= 0 or pid in self._procs:
                raise JailError(f"sandbox {self.sandbox_id} sent a malformed spawn reply")
            info = ProcessInfo(pid=pid, tag=tag, argv=tuple(argv_list), envs=dict(envs), cwd=cwd)
            made.append(JailProcess(self, pid, info, oom_before))
            self._procs[pid] = made[0]

        await self._call(
            {"op": "spawn", "argv": argv_list, "env": env, "cwd": cwd, "stdin": bool(stdin)},
            on_ok=register,
        )
        return made[0]

    def processes(self) -> list[ProcessInfo]:
        """Live processes started with spawn()."""
        return [p.info for p in self._procs.values()]

    async def signal(self, pid: int, sig: int) -> None:
        """Send `sig` to a spawned process (and its process group); FsError('not_found')."""
        if pid not in self._procs:
            raise FsError("not_found", f"no such process: {pid}")
        await self._call({"op": "signal", "pid": pid, "sig": int(sig)})

    # --- files (done by the agent, in the sandbox's own view) -----------------------------

    @staticmethod
    def _entry(raw: object) -> Entry:
        if not isinstance(raw, dict):
            raise FsError("internal", "malformed entry from the sandbox")
        try:
            kind = raw["type"]
            if kind not in ("file", "dir", "symlink"):
                raise ValueError(kind)
            target = raw.get("symlink_target")
            return Entry(
                name=str(raw["name"]),
                type=kind,
                path=str(raw["path"]),
                size=int(raw["size"]),
                mode=int(raw["mode"]),
                permissions=str(raw["permissions"]),
                owner=str(raw["owner"]),
                group=str(raw["group"]),
                modified_time=datetime.fromtimestamp(float(raw["mtime"]), tz=UTC),
                symlink_target=str(target) if target is not None else None,
                is_symlink=raw.get("link") is True,
                metadata=_metadata(raw.get("metadata")),
            )
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            raise FsError("internal", "malformed entry from the sandbox") from None

    async def stat(self, path: str) -> Entry:
        """Describe `path` (a final symlink: its target's type, see ``Entry``)."""
        result, _ = await self._call({"op": "stat", "path": path})
        return self._entry(result.get("entry"))

    async def list_dir(self, path: str, depth: int = 1) -> list[Entry]:
        """Entries under `path`, descending `depth` levels (symlinked dirs are not entered)."""
        result, _ = await self._call({"op": "list", "path": path, "depth": int(depth)})
        raw = result.get("entries")
        if not isinstance(raw, list):
            raise FsError("internal", "malformed listing from the sandbox")
        return [self._entry(item) for item in raw]

    async def watch(self, path: str, *, recursive: bool) -> JailWatch:
        """Start watching directory `path` (inotify, in the sandbox); FsError not_found /
        invalid_argument for a bad path, resource_exhausted past the sandbox's bounds."""
        result, _ = await self._call({"op": "watch_start", "path": path, "recursive": recursive})
        watch = JailWatch(self, int(result["watch"]), str(result["root"]))
        self._watches[watch.watch_id] = watch
        return watch

    async def disk_usage(self) -> tuple[int, int]:
        """(used, total) bytes of the sandbox's workspace file system."""
        result, _ = await self._call({"op": "disk"})
        return int(result["used"]), int(result["total"])

    async def make_dir(self, path: str) -> bool:
        """Create `path` and its parents; False when it already exists."""
        result, _ = await self._call({"op": "mkdir", "path": path})
        return result.get("created") is True

    async def move(self, src: str, dst: str) -> Entry:
        """Rename `src` to `dst` (creating dst's parents); return the moved entry."""
        result, _ = await self._call({"op": "move", "src": src, "dst": dst})
        return self._entry(result.get("entry"))

    async def remove(self, path: str) -> None:
        """Remove a file, symlink or directory tree."""
        await self._call({"op": "remove", "path": path})

    async def read_file(self, path: str, *, max_bytes: int) -> bytes:
        """The file's bytes; FsError('resource_exhausted') when larger than max_bytes."""
        result, data = await self._call({"op": "read", "path": path, "max_bytes": max_bytes})
        if len(data) > max_bytes or result.get("size") != len(data):
            raise FsError("internal", "the sandbox sent a file of the wrong size")
        return data

    async def write_file(self, path: str, data: bytes) -> Entry:
        """Create or replace the file (and its parent directories); return its entry."""

        async def whole() -> AsyncIterator[bytes]:
            yield data

        return await self.write_stream(path, whole())

    async def write_stream(
        self,
        path: str,
        chunks: AsyncIterable[bytes],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> Entry:
        """Create or replace the file from `chunks` as they arrive; return its entry.

        At most about one wire chunk is held at a time, so an upload of any size costs the
        server a bounded amount of memory. An exception from `chunks` propagates and leaves
        the part written so far (the caller decides whether to remove it). `metadata`
        replaces the file's metadata (``user.e2b.*`` extended attributes; none clears it).
        """
        pending = bytearray()
        first = True
        meta = dict(metadata or {})
        async for chunk in chunks:
            pending += chunk
            # Strictly more than a chunk: the last frame (`last`) must carry something or
            # be the only one, so one chunk's worth always waits for the next read.
            while len(pending) > wire.CHUNK:
                await self._call(
                    {
                        "op": "write",
                        "path": path,
                        "append": not first,
                        "last": False,
                        "metadata": meta,
                    },
                    bytes(pending[: wire.CHUNK]),
                )
                del pending[: wire.CHUNK]
                first = False
        result, _ = await self._call(
            {"op": "write", "path": path, "append": not first, "last": True, "metadata": meta},
            bytes(pending),
        )
        return self._entry(result.get("entry"))

    # --- lifecycle ------------------------------------------------------------------------

    async def destroy(self) -> None:
        """Kill everything of the sandbox and remove its cgroups, socket and directories."""
        if self._destroyed:
            return
        self._destroyed = True
        self._die("the sandbox was destroyed")
        if self._proc is not None and self._proc.returncode is None:
            # The agent is pid 1 of the sandbox's pid namespace: when it dies the kernel
            # kills every process in it. bwrap (outside) follows via --die-with-parent.
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        await asyncio.to_thread(self._cgroup.destroy)
        if self._proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 5)
        for task in (self._reader_task, self._stderr_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._proxy is not None:
            await self._proxy.close()
        await asyncio.to_thread(_unmount_under, self._host_dir)
        await asyncio.to_thread(shutil.rmtree, self._host_dir, True)
        self._lease.release()
        log.debug("sandbox %s destroyed (uid %d released)", self.sandbox_id, self.uid)
        self.manager._jails.pop(self.sandbox_id, None)


class JailManager:
    """Creates and destroys sandboxes; one per server (see the module docstring)."""

    def __init__(
        self,
        *,
        state_dir: Path,
        sandbox_env: Path,
        ro_binds: Sequence[tuple[Path, str]] = (),
        egress: bool = True,
        uid_base: int = DEFAULT_UID_BASE,
        uid_count: int = DEFAULT_UID_COUNT,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.sandbox_env = Path(sandbox_env).absolute()
        self.ro_binds = [(Path(src).absolute(), dst) for src, dst in ro_binds]
        self.egress = egress
        self.uids = UidPool(uid_base, uid_count)
        self.cgroups: CgroupBackend | None = None
        self.allowed: egress_mod.Allowed | None = None
        self._jails: dict[str, Jail] = {}
        self._started = False
        self._tools: dict[str, str] = {}  # SETUP_TOOLS by absolute path (see start)

    @property
    def jails_dir(self) -> Path:
        return self.state_dir / "jails"

    async def start(self) -> None:
        """Check the host, sweep this state dir's leftovers, derive the egress allow-list.

        Raises UnsafeHostError(report) when a sandbox cannot be made safe here.
        """
        from sandboxd.doctor import inspect_host

        self.state_dir.mkdir(parents=True, exist_ok=True)
        # o+x only: bwrap resolves bind sources below it as the sandbox's uid
        os.chmod(self.state_dir, 0o711)  # noqa: S103
        report = await asyncio.to_thread(
            inspect_host, state_dir=self.state_dir, sandbox_env=self.sandbox_env
        )
        if not report.safe:
            raise UnsafeHostError(report)
        self.cgroups = await asyncio.to_thread(backend_for, self.state_dir)
        swept = await asyncio.to_thread(self.sweep)
        if any(swept.values()):
            log.info("janitor removed leftovers of %s: %s", self.state_dir, swept)
        self.jails_dir.mkdir(exist_ok=True, mode=0o711)
        if self.egress:
            self.allowed = egress_mod.derive_allowed(await egress_mod.npm_registry())
        # (inspect_host above refused to start when one of them is missing)
        self._tools = {tool: shutil.which(tool, path=SETUP_PATH) or tool for tool in SETUP_TOOLS}
        seccomp.filter_bpf()  # build once now, not during the first create()
        self._started = True

    def sweep(self) -> dict[str, int]:
        """Janitor: remove leftovers of THIS state dir (cgroups with their processes, then the
        per-sandbox directories). Returns what was removed."""
        assert self.cgroups is not None
        cgroups = self.cgroups.sweep()
        mounts = _unmount_under(self.jails_dir)
        dirs = 0
        if self.jails_dir.is_dir():
            for child in self.jails_dir.iterdir():
                shutil.rmtree(child, ignore_errors=True)
                dirs += 1
        return {"cgroups": cgroups, "mounts": mounts, "dirs": dirs}

    def base_env(self, envs: Mapping[str, str]) -> dict[str, str]:
        """The environment every process in a sandbox starts from."""
        env = {
            "PATH": "/opt/python/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/home/user",
            "USER": "user",
            "LOGNAME": "user",
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
            "TERM": "xterm-256color",
            "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's own private tmpfs
            # pip: wheels only, into a user-writable dir that is on the sandbox Python's path
            # (a venv ignores the user site, so PIP_TARGET + PYTHONPATH).
            "PIP_TARGET": PIP_TARGET,
            "PYTHONPATH": PIP_TARGET,
            "PIP_ONLY_BINARY": ":all:",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            "PIP_CERT": CA_BUNDLE,
            "SSL_CERT_FILE": CA_BUNDLE,
            "npm_config_ignore_scripts": "true",
            "npm_config_cafile": CA_BUNDLE,  # npm only: NODE_EXTRA_CA_CERTS slows every node
            "npm_config_update_notifier": "false",
            "npm_config_fund": "false",
            "npm_config_audit": "false",
        }
        if self.egress and self.allowed is not None:
            proxy = f"http://127.0.0.1:{EGRESS_PORT}"
            # The sandbox's own local servers are reached directly, unless the host's index
            # itself is on loopback (then that name must go through the proxy to the host).
            index_hosts = {host for host, _port in self.allowed.endpoints}
            no_proxy = ",".join(
                h for h in ("localhost", "127.0.0.1", "::1") if h not in index_hosts
            )
            env |= {
                "HTTPS_PROXY": proxy,
                "HTTP_PROXY": proxy,
                "https_proxy": proxy,
                "http_proxy": proxy,
                "NO_PROXY": no_proxy,
                "no_proxy": no_proxy,
                "npm_config_https_proxy": proxy,
                "npm_config_proxy": proxy,
            }
            if self.allowed.pip_index_url:
                env["PIP_INDEX_URL"] = self.allowed.pip_index_url
            if self.allowed.pip_extra_index_urls:
                env["PIP_EXTRA_INDEX_URL"] = " ".join(self.allowed.pip_extra_index_urls)
            if self.allowed.npm_registry:
                env["npm_config_registry"] = self.allowed.npm_registry
        env |= {str(k): str(v) for k, v in envs.items()}
        return env

    async def create(
        self,
        sandbox_id: str,
        *,
        limits: Limits = Limits(),  # noqa: B008 - frozen dataclass, safe as a default
        envs: Mapping[str, str] = {},
        sandbox_env: Path | None = None,
    ) -> Jail:
        """Start a sandbox and return it once its agent is ready; `sandbox_env` is the Python
        environment it sees at /opt/python (a template's; default: the manager's).

        Raises JailError if the sandbox cannot start (the partial sandbox is cleaned up).
        """
        if not self._started or self.cgroups is None:
            raise JailError("JailManager.start() was not called")
        if not SANDBOX_ID.match(sandbox_id):
            raise JailError(f"invalid sandbox id {sandbox_id!r}", "invalid_argument")
        if sandbox_id in self._jails:
            raise JailError(f"sandbox {sandbox_id} exists", "already_exists")
        lease = self.uids.allocate()
        host_dir = self.jails_dir / sandbox_id
        cgroup: Cgroup | None = None
        try:
            host_dir.mkdir(mode=0o711)
            runtime = host_dir / "run"
            runtime.mkdir(mode=0o700)
            os.chown(runtime, lease.uid, lease.uid)
            _mount_runtime_tmpfs(runtime, lease.uid)
            cgroup = self.cgroups.create(sandbox_id, limits)
        except Exception:
            lease.release()
            _unmount_under(host_dir)
            shutil.rmtree(host_dir, ignore_errors=True)
            if cgroup is not None:
                cgroup.destroy()
            raise
        jail = Jail(self, sandbox_id, lease, limits, host_dir, cgroup, self.base_env(envs))
        jail.sandbox_env = sandbox_env or self.sandbox_env  # callers pass absolute paths
        self._jails[sandbox_id] = jail
        try:
            await self._launch(jail)
        except BaseException:
            await jail.destroy()
            raise
        log.debug("sandbox %s started as uid %d", sandbox_id, jail.uid)
        return jail

    async def _launch(self, jail: Jail) -> None:
        fds: list[int] = []

        def keep(fd: int) -> str:
            fds.append(fd)
            return str(fd)

        def data_fd(name: str, content: str) -> str:
            fd = os.memfd_create(name, os.MFD_CLOEXEC)
            os.write(fd, content.encode())
            os.lseek(fd, 0, os.SEEK_SET)
            return keep(fd)

        def path_fd(path: Path) -> str:
            return keep(os.open(path, os.O_PATH | os.O_CLOEXEC))

        if self.egress and self.allowed is not None:
            egress_dir = jail._host_dir / "egress"
            egress_dir.mkdir(mode=0o711)
            _mount_socket_tmpfs(egress_dir)  # unmounted with the rest of host_dir
            jail._proxy = egress_mod.EgressProxy(
                self.allowed, egress_dir / "egress.sock", jail.uid, jail.sandbox_id
            )
            await jail._proxy.start()
        try:
            argv = self._setup_argv(jail) + self._bwrap_argv(jail, keep, data_fd, path_fd)
            jail._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=fds,
                start_new_session=True,
                limit=wire.MAX_JSON,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
        finally:
            for fd in fds:
                os.close(fd)
        jail._reader_task = asyncio.create_task(jail._read_frames())
        jail._stderr_task = asyncio.create_task(jail._read_stderr())
        try:
            await asyncio.wait_for(asyncio.shield(jail._ready), START_TIMEOUT)
        except (TimeoutError, JailError):
            await asyncio.sleep(0.05)  # let the stderr reader catch bwrap's message
            detail = jail.stderr_tail.decode(errors="replace").strip()[-500:]
            raise JailError(
                f"sandbox {jail.sandbox_id} did not start: {detail or 'no message'}",
                "start_failed",
            ) from None

    def _setup_argv(self, jail: Jail) -> list[str]:
        """The programs that prepare bwrap's process, as host root, before it execs bwrap: join
        the sandbox's cgroups first (so nothing the sandbox starts is outside them), set the
        rlimits, then drop to the sandbox's uid for good (bwrap never runs as host root) with
        a parent-death signal set after the uid change, so bwrap dies with the server.

        A chain of execs of small C programs (sh, util-linux's prlimit and setpriv), not a
        Python preexec_fn: this server has threads (ZeroMQ's, the loop watchdog's, asyncio's
        workers), and a forked child running Python can deadlock before exec, which would
        block the event loop in Popen and freeze every sandbox."""
        limits = jail.limits
        procs_files = [str(path) for path in jail._cgroup.procs_files()]
        rlimits = [
            "--core=0:0",
            f"--fsize={limits.file_size_bytes}:{limits.file_size_bytes}",
            f"--nofile={limits.open_files}:{limits.open_files}",
        ]
        if "pids" not in jail._cgroup.dirs:
            # one uid per sandbox makes the per-uid count a per-sandbox count
            rlimits.append(f"--nproc={limits.pids}:{limits.pids}")
        return [
            *(self._tools["sh"], "-c", _JOIN_CGROUPS_THEN_EXEC, "sh", *procs_files, "--"),
            *(self._tools["prlimit"], *rlimits, "--"),
            self._tools["setpriv"],
            f"--reuid={jail.uid}",
            f"--regid={jail.uid}",
            "--clear-groups",
            "--pdeathsig=KILL",
            "--",
        ]

    def _bwrap_argv(
        self,
        jail: Jail,
        keep: Callable[[int], str],
        data_fd: Callable[[str, str], str],
        path_fd: Callable[[Path], str],
    ) -> list[str]:
        """bubblewrap's argv. Host-specific paths go in as fds (--ro-bind-fd), so bwrap needs
        no search permission on their parents and they stay out of its argv."""
        limits = jail.limits
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise JailError("bubblewrap (bwrap) is not installed", "unsafe_host")
        argv = [
            bwrap,
            "--unshare-all",
            "--unshare-user",  # explicit: needed by --disable-userns
            "--disable-userns",  # code inside cannot nest namespaces
            "--die-with-parent",
            "--new-session",
            "--as-pid-1",  # the agent is init: it reaps, and its death ends the sandbox
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--hostname",
            "sandbox",
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            host = Path("/") / top
            if host.is_symlink():
                argv += ["--symlink", os.readlink(host), f"/{top}"]
            elif host.is_dir():
                argv += ["--ro-bind", str(host), f"/{top}"]
        for path in ETC_BINDS:
            argv += ["--ro-bind-try", path, path]
        passwd = (
            f"user:x:{SANDBOX_UID}:{SANDBOX_UID}:user:/home/user:/bin/bash\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )
        group = f"user:x:{SANDBOX_UID}:\nnogroup:x:65534:\n"
        hosts = "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        argv += ["--ro-bind-data", data_fd("passwd", passwd), "/etc/passwd"]
        argv += ["--ro-bind-data", data_fd("group", group), "/etc/group"]
        argv += ["--ro-bind-data", data_fd("hosts", hosts), "/etc/hosts"]
        argv += ["--ro-bind-data", data_fd("hostname", "sandbox\n"), "/etc/hostname"]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        # Private, size-capped tmpfs mounts (paths inside the sandbox, not the host's).
        shm, tmp, home = "/dev/shm", "/tmp", "/home/user"  # noqa: S108
        argv += ["--perms", "1777", "--size", str(SHM_BYTES), "--tmpfs", shm]
        argv += ["--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", tmp]
        argv += ["--perms", "0755", "--size", str(limits.workspace_bytes), "--tmpfs", home]
        # E2B's sandboxes have root's home too, and code (and E2B's own tests) use it as a
        # working directory: here it is the one user's home, not a second writable place.
        argv += ["--symlink", home, "/root"]
        argv += ["--ro-bind-fd", path_fd(jail.sandbox_env), "/opt/python"]
        # The env's console scripts (pip, jupyter, ...) have its host path in their #! line:
        # the real path, links resolved, as the env was built there. (So that one host path
        # is visible inside, by design.)
        argv += ["--ro-bind-fd", path_fd(jail.sandbox_env), str(jail.sandbox_env.resolve())]
        argv += ["--ro-bind-fd", path_fd(AGENT_DIR), "/opt/sandboxd/agent"]
        for src, dst in self.ro_binds:
            argv += ["--ro-bind-fd", path_fd(src), dst]
        argv += ["--bind-fd", path_fd(jail.runtime_dir), "/run/sandbox"]
        agent_config: dict[str, Any] = {"dirs": [PIP_TARGET]}
        if jail._proxy is not None:
            argv += ["--bind", str(jail._proxy.socket_path), "/run/sandboxd/egress.sock"]
            agent_config |= {
                "egress_socket": "/run/sandboxd/egress.sock",
                "egress_port": EGRESS_PORT,
            }
        argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
        for fd in seccomp.filter_fds():
            argv += ["--add-seccomp-fd", keep(fd)]
        argv += ["--chdir", "/home/user", "--clearenv"]
        for key, value in (
            ("PATH", "/opt/python/bin:/usr/local/bin:/usr/bin:/bin"),
            ("HOME", "/home/user"),
            ("LANG", "C.UTF-8"),
        ):
            argv += ["--setenv", key, value]
        argv += [
            "/opt/python/bin/python3",
            "-E",
            "-s",
            "-S",
            "-B",
            "/opt/sandboxd/agent/main.py",
            json.dumps(agent_config, separators=(",", ":")),
        ]
        return argv

    async def close(self) -> None:
        """Destroy every sandbox."""
        await asyncio.gather(
            *(jail.destroy() for jail in list(self._jails.values())), return_exceptions=True
        )
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.remove_parents)

    def get(self, sandbox_id: str) -> Jail | None:
        """The live jail with this id, if any."""
        return self._jails.get(sandbox_id)
