"""sandboxd's in-sandbox agent: pid 1 of every sandbox (standard library only).

Started by bubblewrap as the sandbox user; talks to the host over its stdin/stdout with the
frames of `wire.py`. It spawns processes and streams their output with credit-based
backpressure, reports exits, reaps every zombie (it is init), signals and feeds stdin, performs
file operations in the sandbox's own view (so a planted symlink resolves inside the sandbox,
never to a host file), and runs the package-egress forwarder: 127.0.0.1:PORT inside -> the
host's allow-list proxy socket bound into the sandbox.

When this process exits the kernel kills every other process of the sandbox's pid namespace.
Run as: python3 -E -s -S -B /opt/sandboxd/agent/main.py '<json config>'.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import pwd
import selectors
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable

import wire

READ_CHUNK = 64 << 10
POST_EXIT_BUDGET = 4 << 20  # output still read after an exit (background writers hold pipes)
TUNNEL_BUFFER = 256 << 10
MAX_TUNNELS = 64
MAX_LIST_ENTRIES = 20_000
KILL_REAP_SECONDS = 2.0  # how long a SIGKILL's answer waits for the process to be gone
PR_SET_DUMPABLE = 4
CHILD_OOM_SCORE_ADJ = b"500"  # every spawned process outranks the agent as an OOM victim

ERRNO_CODES = {
    errno.ENOENT: "not_found",
    errno.ENOTDIR: "not_found",
    errno.ESRCH: "not_found",
    errno.EEXIST: "already_exists",
    errno.ENOTEMPTY: "already_exists",
    errno.EACCES: "permission_denied",
    errno.EPERM: "permission_denied",
    errno.EROFS: "permission_denied",
    errno.EXDEV: "permission_denied",
    errno.ENOSPC: "resource_exhausted",
    errno.EDQUOT: "resource_exhausted",
    errno.EFBIG: "resource_exhausted",
    errno.ENOMEM: "resource_exhausted",
    errno.EAGAIN: "resource_exhausted",
    errno.EMFILE: "resource_exhausted",
    errno.ENFILE: "resource_exhausted",
    errno.EISDIR: "invalid_argument",
    errno.EINVAL: "invalid_argument",
    errno.ENAMETOOLONG: "invalid_argument",
    errno.ELOOP: "invalid_argument",
    errno.ENXIO: "invalid_argument",
}


class OpError(Exception):
    """An operation failed with a stable code (see sandboxd.jail.types.FS_ERROR_CODES)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def os_error(exc: OSError) -> OpError:
    """Map an OSError to an OpError with the matching stable code."""
    code = ERRNO_CODES.get(exc.errno or 0, "internal")
    where = f": {exc.filename}" if exc.filename else ""
    return OpError(code, f"{exc.strerror or exc}{where}")


def resolve(path: object) -> str:
    """Absolute sandbox path for `path` (relative paths are under /home/user)."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise OpError("invalid_argument", "path must be a non-empty string without NUL")
    if not path.startswith("/"):
        path = "/home/user/" + path
    return os.path.normpath(path)


_names: dict[tuple[str, int], str] = {}


def _name(kind: str, ident: int) -> str:
    key = (kind, ident)
    if key not in _names:
        try:
            if kind == "user":
                _names[key] = pwd.getpwuid(ident).pw_name
            else:
                _names[key] = grp.getgrgid(ident).gr_name
        except KeyError:
            _names[key] = str(ident)
    return _names[key]


def entry(path: str) -> dict:
    """Describe `path` as envd does: a symlink is reported with its target's type (a
    dangling one as a file) and its resolved absolute target in ``symlink_target``;
    ``link`` says whether `path` itself is a symlink (listings never descend into one)."""
    st = os.lstat(path)
    target = None
    link = stat.S_ISLNK(st.st_mode)
    shown = st
    if link:
        target = os.path.realpath(path)
        with contextlib.suppress(OSError):
            shown = os.stat(path)
    kind = "dir" if stat.S_ISDIR(shown.st_mode) and not stat.S_ISLNK(shown.st_mode) else "file"
    return {
        "name": os.path.basename(path) or "/",
        "type": kind,
        "path": path,
        "size": st.st_size,
        "mode": stat.S_IMODE(st.st_mode),
        "permissions": stat.filemode(st.st_mode),
        "owner": _name("user", st.st_uid),
        "group": _name("group", st.st_gid),
        "mtime": st.st_mtime,
        "symlink_target": target,
        "link": link,
    }


class Proc:
    """A process the host asked for, with its pipes and output credit."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.outs: dict[int, int] = {}  # pipe fd -> 1 (stdout) or 2 (stderr)
        self.files: dict[int, object] = {}  # pipe fd -> its file object (closed through it)
        self.paused: set[int] = set()
        self.credit = wire.OUTPUT_CREDIT
        self.status: int | None = None
        self.post_exit_budget = POST_EXIT_BUDGET
        self.stdin_fd: int | None = None
        self.stdin_queue: list[tuple[int, memoryview]] = []
        self.stdin_close_after = False


class Tunnel:
    """One egress connection: a client inside <-> the host proxy's unix socket."""

    def __init__(self, a: socket.socket, b: socket.socket) -> None:
        self.socks = (a, b)
        self.pending = {a: bytearray(), b: bytearray()}  # bytes waiting to be sent TO sock
        self.eof = {a: False, b: False}  # sock has sent EOF
        self.events = {a: 0, b: 0}

    def other(self, sock: socket.socket) -> socket.socket:
        return self.socks[1] if sock is self.socks[0] else self.socks[0]


class Agent:
    """The agent's single-threaded event loop."""

    def __init__(self, config: dict) -> None:
        self.sel = selectors.DefaultSelector()
        self.frames = wire.FrameBuffer()
        self.procs: dict[int, Proc] = {}
        self.tunnels: set[Tunnel] = set()
        self.egress_socket: str | None = config.get("egress_socket")
        self.egress_port: int = int(config.get("egress_port") or 0)
        self.listener: socket.socket | None = None
        for path in config.get("dirs") or ():
            os.makedirs(path, exist_ok=True)
        self.out = sys.stdout.buffer.fileno()
        self.inp = sys.stdin.buffer.fileno()
        os.set_blocking(self.inp, False)
        self.sel.register(self.inp, selectors.EVENT_READ, self.on_host)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        # A Python handler (not SIG_IGN) so that children get the default action back at exec.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, lambda *_: None)
        self.wake_r = wake_r
        self.sel.register(wake_r, selectors.EVENT_READ, self.on_wake)
        if self.egress_socket and self.egress_port:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(("127.0.0.1", self.egress_port))
            self.listener.listen(64)
            self.listener.setblocking(False)
            self.sel.register(self.listener, selectors.EVENT_READ, self.on_accept)

    # --- host channel ---------------------------------------------------------------------

    def send(self, message: dict, payload: bytes = b"") -> None:
        """Write one frame to the host (blocking: the host always reads)."""
        data = memoryview(wire.encode(message, payload))
        while data:
            written = os.write(self.out, data)
            data = data[written:]

    def reply(self, rid: object, result: dict | None = None, payload: bytes = b"") -> None:
        self.send({"id": rid, "ok": result or {}}, payload)

    def fail(self, rid: object, code: str, message: str) -> None:
        self.send({"id": rid, "error": {"code": code, "message": message[:2000]}})

    def on_host(self, _mask: int) -> None:
        try:
            data = os.read(self.inp, 1 << 20)
        except BlockingIOError:
            return
        if not data:
            sys.exit(0)  # the host is gone: so is the sandbox
        for message, payload in self.frames.feed(data):
            self.dispatch(message, payload)

    def dispatch(self, message: dict, payload: bytes) -> None:
        op = message.get("op")
        rid = message.get("id")
        if op == "ack":
            self.on_ack(message)
            return
        handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        if handler is None:
            self.fail(rid, "invalid_argument", f"unknown operation {op!r}")
            return
        try:
            handler(rid, message, payload)
        except OpError as exc:
            self.fail(rid, exc.code, exc.message)
        except OSError as exc:
            err = os_error(exc)
            self.fail(rid, err.code, err.message)
        except (KeyError, TypeError, ValueError) as exc:
            self.fail(rid, "invalid_argument", f"bad request: {exc}")
        except Exception as exc:  # one bad request must not end the sandbox
            self.fail(rid, "internal", f"{type(exc).__name__}: {exc}")

    # --- processes ------------------------------------------------------------------------

    def op_spawn(self, rid: object, msg: dict, _payload: bytes) -> None:
        argv = msg["argv"]
        env = msg["env"]
        cwd = msg["cwd"]
        if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
            raise OpError("invalid_argument", "argv must be a non-empty list of strings")
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise OpError("invalid_argument", "env must map strings to strings")
        cwd = resolve(cwd)
        if not os.path.isdir(cwd):
            raise OpError("not_found", f"working directory not found: {cwd}")
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if msg.get("stdin") else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
                bufsize=0,
                preexec_fn=prepare_child,  # the agent is single-threaded: safe to fork here
            )
        except FileNotFoundError:
            raise OpError("not_found", f"executable not found: {argv[0]}") from None
        proc = Proc(popen)
        for fd_num, pipe in ((1, popen.stdout), (2, popen.stderr)):
            assert pipe is not None
            fd = pipe.fileno()
            os.set_blocking(fd, False)
            proc.outs[fd] = fd_num
            proc.files[fd] = pipe
            self.sel.register(fd, selectors.EVENT_READ, self._reader(proc, fd))
        if popen.stdin is not None:
            proc.stdin_fd = popen.stdin.fileno()
            os.set_blocking(proc.stdin_fd, False)
        self.procs[proc.pid] = proc
        self.reply(rid, {"pid": proc.pid})

    def _reader(self, proc: Proc, fd: int) -> Callable[[int], None]:
        return lambda _mask: self.read_output(proc, fd)

    def read_output(self, proc: Proc, fd: int) -> bool:
        """Read one chunk of `fd` within the credit; return True if more may follow."""
        if fd not in proc.outs:
            return False
        if proc.credit <= 0:
            self.pause(proc, fd)
            return False
        size = min(READ_CHUNK, proc.credit)
        if proc.status is not None:
            size = min(size, proc.post_exit_budget)
        try:
            data = os.read(fd, size) if size > 0 else b""
        except BlockingIOError:
            if proc.status is not None:
                self.close_output(proc, fd)  # exited and drained: do not wait for stragglers
            return False
        if not data:
            self.close_output(proc, fd)
            return False
        proc.credit -= len(data)
        if proc.status is not None:
            proc.post_exit_budget -= len(data)
        self.send({"ev": "out", "pid": proc.pid, "fd": proc.outs[fd]}, data)
        return True

    def pause(self, proc: Proc, fd: int) -> None:
        if fd not in proc.paused:
            self.sel.unregister(fd)
            proc.paused.add(fd)

    def close_output(self, proc: Proc, fd: int) -> None:
        if fd in proc.paused:
            proc.paused.discard(fd)
        else:
            self.sel.unregister(fd)
        del proc.outs[fd]
        proc.files.pop(fd).close()  # type: ignore[attr-defined]
        self.maybe_finish(proc)

    def on_ack(self, msg: dict) -> None:
        proc = self.procs.get(msg.get("pid"))  # type: ignore[arg-type]
        amount = msg.get("bytes")
        if proc is None or not isinstance(amount, int) or amount <= 0:
            return
        proc.credit = min(wire.OUTPUT_CREDIT, proc.credit + amount)
        for fd in list(proc.paused):
            proc.paused.discard(fd)
            self.sel.register(fd, selectors.EVENT_READ, self._reader(proc, fd))
        if proc.status is not None:
            self.drain(proc)

    def drain(self, proc: Proc) -> None:
        """After an exit: read what is buffered (within credit), then close the pipes."""
        for fd in list(proc.outs):
            while self.read_output(proc, fd):
                pass
            if fd in proc.outs and proc.status is not None and proc.post_exit_budget <= 0:
                self.close_output(proc, fd)

    def maybe_finish(self, proc: Proc) -> None:
        if proc.status is None or proc.outs or proc.pid not in self.procs:
            return
        del self.procs[proc.pid]
        self.close_stdin(proc)
        code = os.waitstatus_to_exitcode(proc.status)
        proc.popen.returncode = code  # we reaped it; keep subprocess from trying again
        if code < 0:
            self.send({"ev": "exit", "pid": proc.pid, "code": None, "signal": -code})
        else:
            self.send({"ev": "exit", "pid": proc.pid, "code": code, "signal": None})

    def on_wake(self, _mask: int) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        self.reap()

    def reap(self) -> None:
        """Collect every exited child, ours or orphans re-parented to us (we are init)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.procs.get(pid)
            if proc is not None and proc.status is None:
                proc.status = status
                self.drain(proc)
                self.maybe_finish(proc)

    def op_signal(self, rid: object, msg: dict, _payload: bytes) -> None:
        pid, sig = msg["pid"], msg["sig"]
        if not isinstance(sig, int) or not 1 <= sig <= 64:
            raise OpError("invalid_argument", f"bad signal {sig!r}")
        proc = self.procs.get(pid)
        if proc is None or proc.status is not None:
            raise OpError("not_found", f"no such process: {pid}")
        try:
            os.killpg(pid, sig)  # its session/group: children die with it
        except ProcessLookupError:
            os.kill(pid, sig)
        if sig == signal.SIGKILL:
            # envd answers a kill once the process is gone: reap it first, so `kill -0 PID`
            # right after fails. Bounded: a process stuck in the kernel (D state) may take
            # longer to die; its exit is then reported as usual when it comes.
            self.wait_exited(pid, KILL_REAP_SECONDS)
            self.reap()
        self.reply(rid)

    @staticmethod
    def wait_exited(pid: int, seconds: float) -> None:
        """Wait (without reaping) until child `pid` has exited, at most `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return
            except ChildProcessError:
                return
            time.sleep(0.002)

    def op_stdin(self, rid: object, msg: dict, payload: bytes) -> None:
        proc = self.procs.get(msg["pid"])
        if proc is None or proc.stdin_fd is None:
            raise OpError("not_found", f"no process with open stdin: {msg['pid']}")
        proc.stdin_queue.append((rid, memoryview(payload)))  # type: ignore[arg-type]
        self.want_stdin_write(proc)

    def op_stdin_close(self, rid: object, msg: dict, _payload: bytes) -> None:
        proc = self.procs.get(msg["pid"])
        if proc is None:
            raise OpError("not_found", f"no such process: {msg['pid']}")
        if proc.stdin_queue:
            proc.stdin_close_after = True
        else:
            self.close_stdin(proc)
        self.reply(rid)

    def want_stdin_write(self, proc: Proc) -> None:
        fd = proc.stdin_fd
        if fd is None:
            return
        with contextlib.suppress(KeyError):  # KeyError: already waiting for writability
            self.sel.register(fd, selectors.EVENT_WRITE, lambda _m: self.write_stdin(proc))

    def write_stdin(self, proc: Proc) -> None:
        while proc.stdin_queue and proc.stdin_fd is not None:
            rid, view = proc.stdin_queue[0]
            try:
                written = os.write(proc.stdin_fd, view)
            except BlockingIOError:
                return
            except BrokenPipeError:
                written = len(view)  # the reader is gone: the data has nowhere to go
            view = view[written:]
            if view:
                proc.stdin_queue[0] = (rid, view)
                return
            proc.stdin_queue.pop(0)
            self.reply(rid)
        if proc.stdin_fd is not None:
            self.sel.unregister(proc.stdin_fd)
        if proc.stdin_close_after:
            self.close_stdin(proc)

    def close_stdin(self, proc: Proc) -> None:
        if proc.stdin_fd is None:
            return
        with contextlib.suppress(KeyError):
            self.sel.unregister(proc.stdin_fd)
        for rid, _view in proc.stdin_queue:
            self.reply(rid)
        proc.stdin_queue.clear()
        assert proc.popen.stdin is not None
        proc.popen.stdin.close()
        proc.stdin_fd = None

    # --- files (in the sandbox's own view) ------------------------------------------------

    def op_stat(self, rid: object, msg: dict, _payload: bytes) -> None:
        self.reply(rid, {"entry": entry(resolve(msg["path"]))})

    def op_list(self, rid: object, msg: dict, _payload: bytes) -> None:
        """Entries under a directory down to `depth` levels, depth-first in name order (each
        directory's children right after it, as envd lists). Ends when the tree does, so a
        huge `depth` costs no more than the tree; symlinks are listed, never entered."""
        root = resolve(msg["path"])
        depth = msg.get("depth", 1)
        if not isinstance(depth, int) or depth < 1:
            raise OpError("invalid_argument", "depth must be a positive integer")
        if not os.path.isdir(root):
            if os.path.lexists(root):
                raise OpError("invalid_argument", f"not a directory: {root}")
            raise OpError("not_found", f"no such directory: {root}")
        entries: list[dict] = []
        # (directory, its level); names are popped in order from a reversed list
        stack: list[tuple[str, int, list[str]]] = [(root, 1, sorted(os.listdir(root)))]
        while stack:
            directory, level, names = stack[-1]
            if not names:
                stack.pop()
                continue
            path = os.path.join(directory, names.pop(0))
            try:
                item = entry(path)
            except OSError:
                continue  # vanished while listing
            entries.append(item)
            if len(entries) > MAX_LIST_ENTRIES:
                raise OpError(
                    "resource_exhausted",
                    f"over {MAX_LIST_ENTRIES} entries to list; list a smaller depth or directory",
                )
            if item["type"] == "dir" and not item["link"] and level < depth:
                try:
                    children = sorted(os.listdir(path))
                except OSError:
                    continue  # an unreadable subdirectory is listed but not entered
                stack.append((path, level + 1, children))
        self.reply(rid, {"entries": entries})

    def op_mkdir(self, rid: object, msg: dict, _payload: bytes) -> None:
        path = resolve(msg["path"])
        if os.path.isdir(path):
            self.reply(rid, {"created": False})
            return
        os.makedirs(path)
        self.reply(rid, {"created": True})

    def op_move(self, rid: object, msg: dict, _payload: bytes) -> None:
        src, dst = resolve(msg["src"]), resolve(msg["dst"])
        os.lstat(src)
        parent = os.path.dirname(dst)
        os.makedirs(parent, exist_ok=True)
        os.rename(src, dst)
        self.reply(rid, {"entry": entry(dst)})

    def op_remove(self, rid: object, msg: dict, _payload: bytes) -> None:
        """Remove a file, link or tree; a path that is already gone is success (envd's rule)."""
        path = resolve(msg["path"])
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.reply(rid)
            return
        if stat.S_ISDIR(st.st_mode):
            import shutil  # here, not at start: it pulls in lzma & co. (~3 ms of every start)

            shutil.rmtree(path)
        else:
            os.unlink(path)
        self.reply(rid)

    def _open_regular(self, path: str, flags: int) -> int:
        # O_NONBLOCK: a FIFO planted by the sandbox must not hang the agent.
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, 0o644)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OpError("invalid_argument", f"not a regular file: {path}")
        os.set_blocking(fd, True)
        return fd

    def op_read(self, rid: object, msg: dict, _payload: bytes) -> None:
        path = resolve(msg["path"])
        max_bytes = msg["max_bytes"]
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise OpError("invalid_argument", "max_bytes must be a non-negative integer")
        fd = self._open_regular(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size > max_bytes:
                raise OpError("resource_exhausted", f"file is {size} bytes, over {max_bytes}")
            total = 0
            while True:
                chunk = os.read(fd, wire.CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise OpError("resource_exhausted", f"file grew over {max_bytes} bytes")
                self.send({"id": rid, "chunk": True}, chunk)
        finally:
            os.close(fd)
        self.reply(rid, {"size": total})

    def op_write(self, rid: object, msg: dict, payload: bytes) -> None:
        path = resolve(msg["path"])
        append = bool(msg.get("append"))
        if not append:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        flags = os.O_WRONLY | (os.O_APPEND if append else os.O_CREAT | os.O_TRUNC)
        fd = self._open_regular(path, flags)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        self.reply(rid, {"entry": entry(path)} if msg.get("last") else {})

    def op_ping(self, rid: object, _msg: dict, _payload: bytes) -> None:
        self.reply(rid, {"procs": len(self.procs)})

    # --- egress forwarder -----------------------------------------------------------------

    def on_accept(self, _mask: int) -> None:
        assert self.listener is not None and self.egress_socket is not None
        try:
            client, _addr = self.listener.accept()
        except (BlockingIOError, OSError):
            return
        if len(self.tunnels) >= MAX_TUNNELS:
            client.close()
            return
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.egress_socket)
        except OSError:
            client.close()
            upstream.close()
            return
        client.setblocking(False)
        upstream.setblocking(False)
        tunnel = Tunnel(client, upstream)
        self.tunnels.add(tunnel)
        self.update_tunnel(tunnel)

    def update_tunnel(self, tunnel: Tunnel) -> None:
        a, b = tunnel.socks
        done = all(tunnel.eof[s] and not tunnel.pending[s] for s in (a, b))
        for sock in (a, b):
            other = tunnel.other(sock)
            events = 0
            if not tunnel.eof[sock] and len(tunnel.pending[other]) < TUNNEL_BUFFER:
                events |= selectors.EVENT_READ
            if tunnel.pending[sock]:
                events |= selectors.EVENT_WRITE
            if done:
                events = 0
            if events != tunnel.events[sock]:
                if tunnel.events[sock] == 0:
                    self.sel.register(sock, events, self._pump(tunnel, sock))
                elif events == 0:
                    self.sel.unregister(sock)
                else:
                    self.sel.modify(sock, events, self._pump(tunnel, sock))
                tunnel.events[sock] = events
        if done:
            self.close_tunnel(tunnel)

    def _pump(self, tunnel: Tunnel, sock: socket.socket) -> Callable[[int], None]:
        return lambda mask: self.pump(tunnel, sock, mask)

    def pump(self, tunnel: Tunnel, sock: socket.socket, mask: int) -> None:
        other = tunnel.other(sock)
        try:
            if mask & selectors.EVENT_READ:
                data = sock.recv(READ_CHUNK)
                if data:
                    tunnel.pending[other] += data
                else:
                    tunnel.eof[sock] = True
                    if not tunnel.pending[other]:
                        other.shutdown(socket.SHUT_WR)
            if mask & selectors.EVENT_WRITE and tunnel.pending[sock]:
                sent = sock.send(tunnel.pending[sock])
                del tunnel.pending[sock][:sent]
                if not tunnel.pending[sock] and tunnel.eof[other]:
                    sock.shutdown(socket.SHUT_WR)
        except BlockingIOError:
            pass
        except OSError:
            self.close_tunnel(tunnel)
            return
        self.update_tunnel(tunnel)

    def close_tunnel(self, tunnel: Tunnel) -> None:
        if tunnel not in self.tunnels:
            return
        self.tunnels.discard(tunnel)
        for sock in tunnel.socks:
            if tunnel.events[sock]:
                self.sel.unregister(sock)
            sock.close()

    # --- loop -----------------------------------------------------------------------------

    def run(self) -> None:
        self.send({"ev": "ready"})
        while True:
            for key, mask in self.sel.select():
                key.data(mask)


_libc = None


def prepare_child() -> None:
    """In a new child before exec: make it the OOM killer's choice over the agent.

    Without this a sandbox of many small processes loses its agent (often the largest one) to
    the first OOM kill, and with it the whole sandbox. Raising one's own oom_score_adj needs no
    privilege; the child inherited the agent's non-dumpability, which would make /proc/self
    root's, so it becomes dumpable first (exec resets that anyway; its stdin/stdout are
    already its own pipes, not the agent's host channel).
    """
    assert _libc is not None
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    try:
        fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
        try:
            os.write(fd, CHILD_OOM_SCORE_ADJ)
        finally:
            os.close(fd)
    except OSError:
        pass  # best effort: the child runs either way


def make_undumpable() -> None:
    """PR_SET_DUMPABLE 0: code of the same uid cannot open /proc/1/fd/* (our host pipes),
    /proc/1/mem or /proc/1/environ."""
    import ctypes

    global _libc
    _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def main() -> None:
    make_undumpable()
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    Agent(config).run()


if __name__ == "__main__":
    main()
