"""Python contexts: an ipykernel inside the sandbox, driven from the host over ZeroMQ ipc.

The kernel runs as the sandbox user (``jail.spawn``); its five sockets live in a private
directory of the sandbox's runtime dir (see ``runtime_dir``). Two views of one connection: the
kernel reads ``/run/sandbox/<dir>/kernel.json`` (ipc paths inside the sandbox) while the host
connects to the same sockets through its pinned directory fd, with the same key. ZeroMQ never
reconnects on its own (``RECONNECT_IVL=-1``), so a replaced path is never followed.

Wire mapping (the same as E2B's own server): ``execute_input`` → ``number_of_executions``,
``stream`` → ``stdout``/``stderr``, ``execute_result`` → a main result, ``display_data`` → a
non-main result, ``error`` → ``error``, ``status: idle`` → end of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio
from jupyter_client.session import Session

from sandboxd.interpreter import events
from sandboxd.interpreter.contexts import (
    ContextError,
    DiscardEvents,
    Emit,
    ProcessKernelContext,
    StartTrace,
    death_error,
    restarted_error,
)
from sandboxd.interpreter.layout import KERNELS_SANDBOX_DIR, NODE_TOOLS_SANDBOX_DIR
from sandboxd.interpreter.runtime_dir import KernelDir, RuntimeDirError

if TYPE_CHECKING:
    from sandboxd.jail import JailProcess

logger = logging.getLogger(__name__)

SANDBOX_RUNTIME_DIR = "/run/sandbox"
_PORTS = {"shell": 1, "iopub": 2, "stdin": 3, "control": 4, "hb": 5}
_SOCKET_PREFIX = "k"
START_TIMEOUT = 60.0
# The largest message a kernel may send: above the output cap, so whatever a run could still
# deliver fits in one (a larger one drops the connection; the context restarts, reported).
MAX_MESSAGE_BYTES = 40 << 20
# Messages the kernel's iopub queues before ZeroMQ drops (an option of
# kernels/python_kernel.py on its command line): deep, and in the sandbox's own memory.
IOPUB_QUEUE_MESSAGES = 200_000
# Messages the host's end of iopub holds. Shallow on purpose: when it is full ZeroMQ stops
# reading the socket, the kernel's deep queue fills instead (its memory, its cgroup), and
# nothing is lost. So one context costs the host at most (this + 3) * MAX_MESSAGE_BYTES
# (queued, being received, being decoded, and one more that ZeroMQ's I/O thread may hold:
# its high-water mark is not exact), a hostile kernel's flood included; a run's events then
# wait in its EventPipe, which pushes back in turn. Measured (tests/test_hardening.py): a
# depth of 4 let 32 MiB frames hold 160 MiB, this one 65 MiB on a quiet machine and 125 MiB
# (four such frames) on a loaded one.
IOPUB_HOST_QUEUE_MESSAGES = 1
# A message larger than this is checked and decoded on a worker thread (hashlib and the copy
# release the GIL): a flood of large frames from one sandbox must not stall the event loop
# that serves every other one.
DECODE_INLINE_BYTES = 256 << 10
# ipykernel with a deep iopub send queue, bound read-only into every sandbox.
KERNEL_LAUNCHER = f"{KERNELS_SANDBOX_DIR}/python_kernel.py"
# After a cell's shell reply, how long iopub may stay silent before the run is ended without
# its `idle` status (lost despite the deep queues: the run must not hang on it).
IDLE_GRACE = 2.0
# How long a dropped connection waits for the kernel's exit to be reported instead.
EXIT_REPORT_GRACE = 1.0
# How long an interrupted cell may take to stop before the kernel is replaced.
INTERRUPT_GRACE = 5.0

# Writable places for IPython, matplotlib and friends (the workspace stays clean). This /tmp
# is the sandbox's own tmpfs, not the host's.
KERNEL_ENV = {
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "IPYTHONDIR": "/tmp/.sandboxd/ipython",  # noqa: S108
    "MPLCONFIGDIR": "/tmp/.sandboxd/matplotlib",  # noqa: S108
    "XDG_CACHE_HOME": "/tmp/.sandboxd/cache",  # noqa: S108
    "JUPYTER_RUNTIME_DIR": "/tmp/.sandboxd/jupyter",  # noqa: S108
    "JUPYTER_DATA_DIR": "/tmp/.sandboxd/jupyter-data",  # noqa: S108
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
}

# A matplotlib font list built ahead (scripts/setup-sandbox-node.sh, bound read-only) is
# copied in before the kernel starts, so the first plot does not scan every font. The shell
# execs the kernel, so the process the host follows is ipykernel itself.
MPL_CACHE_DIR = f"{NODE_TOOLS_SANDBOX_DIR}/mpl"
_PRELUDE = (
    'mkdir -p "$MPLCONFIGDIR" && cp -n ' + MPL_CACHE_DIR + '/*.json "$MPLCONFIGDIR"/ '
    '2>/dev/null; exec "$@"'
)


def _env_apply_code(envs: Mapping[str, str], *, save: bool) -> str:
    """Kernel code setting `envs` in os.environ (saving the old values when `save`).

    The values travel as a JSON document inside a Python string literal made by repr(), so no
    quoting in a name or value can break out. One expression, run silently: it leaves no name
    in the user's namespace (the saved values hang off the os module).
    """
    payload = repr(json.dumps(dict(envs)))
    saving = (
        'setattr(os, "_sandboxd_saved_env", {k: os.environ.get(k) for k in env}), ' if save else ""
    )
    return (
        f"(lambda os, env: ({saving}os.environ.update(env)))"
        f'(__import__("os"), __import__("json").loads({payload}))'
    )


_ENV_RESTORE_CODE = (
    "(lambda os: [os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)"
    ' for k, v in os.__dict__.pop("_sandboxd_saved_env", {}).items()])(__import__("os"))'
)


_DELIMITER = b"<IDS|MSG>"


def decode_message(key: bytes, frames: list[bytes]) -> dict[str, Any]:
    """A Jupyter wire message from its ZeroMQ frames, after checking its HMAC-SHA256.

    Leaner than ``Session.deserialize`` (no date parsing: the header's ISO date is what the
    wire events carry anyway). Raises ValueError for a malformed or badly signed message.
    """
    try:
        start = frames.index(_DELIMITER) + 1
    except ValueError:
        raise ValueError("no message delimiter") from None
    if len(frames) < start + 5:
        raise ValueError("truncated message")
    signature, header, parent, metadata, content = frames[start : start + 5]
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in (header, parent, metadata, content):
        mac.update(part)
    if not hmac.compare_digest(mac.hexdigest().encode(), signature):
        raise ValueError("bad message signature")
    decoded_header = json.loads(header)
    return {
        "header": decoded_header,
        "msg_type": decoded_header["msg_type"],
        "parent_header": json.loads(parent),
        "content": json.loads(content),
    }


class _Run:
    """The cell being executed: where its iopub messages go and when it is over."""

    def __init__(self, msg_id: str, emit: Emit) -> None:
        self.msg_id = msg_id
        self.emit = emit
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        self.last_message = loop.time()  # when iopub last brought something for this cell
        self.held = False  # the reader waits for the client to catch up (see Emit.room)

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class PythonContext(ProcessKernelContext):
    """A stateful ipykernel (see the module doc)."""

    language = "python"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._zmq = zmq.asyncio.Context.instance()
        self._dir: KernelDir | None = None
        self._session: Session | None = None
        self._key = b""
        self._sockets: dict[str, zmq.asyncio.Socket] = {}
        self._monitors: list[zmq.asyncio.Socket] = []
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._run: _Run | None = None
        # The running cell's input_request waiting for its reply: (its header, prompt, password).
        self._input_pending: tuple[dict[str, Any], str, bool] | None = None
        self._connection_dropped = False
        self._start_trace = StartTrace()

    # --- life cycle --------------------------------------------------------------------

    async def _launch(self) -> None:
        jail = self.jail
        key = secrets.token_hex(32)
        self._connection_dropped = False
        self._start_trace = StartTrace()
        try:
            kdir = KernelDir(jail.runtime_dir, SANDBOX_RUNTIME_DIR, "py")
        except (OSError, RuntimeDirError) as exc:
            raise ContextError("kernel_start_failed", f"kernel directory: {exc}") from exc
        self._dir = kdir
        connection = {
            "transport": "ipc",
            "ip": f"{kdir.sandbox_path}/{_SOCKET_PREFIX}",
            "key": key,
            "signature_scheme": "hmac-sha256",
            "kernel_name": "python3",
            **{f"{name}_port": port for name, port in _PORTS.items()},
        }
        kdir.write_file("kernel.json", json.dumps(connection).encode(), owner_uid=jail.uid)
        kdir.hand_to(jail.uid)

        argv = [
            "sh",
            "-c",
            _PRELUDE,
            "sh",
            "python",
            KERNEL_LAUNCHER,
            "-f",
            f"{kdir.sandbox_path}/kernel.json",
            f"--SandboxKernelApp.iopub_queue_messages={IOPUB_QUEUE_MESSAGES}",
            # Plain tracebacks: the SDK shows them as text, and ANSI codes break searching.
            "--InteractiveShell.colors=nocolor",
            # No sqlite history in the sandbox: faster start and nothing left in /tmp.
            "--HistoryManager.enabled=False",
        ]
        self._oom_baseline = jail.oom_kills()
        try:
            self._proc = await jail.spawn(
                argv, envs={**KERNEL_ENV, **self.envs}, cwd=self.cwd, tag=f"kernel:{self.id}"
            )
        except Exception as exc:
            raise ContextError("kernel_start_failed", f"cannot start ipykernel: {exc}") from exc
        exited = asyncio.Event()
        self._tasks.append(asyncio.create_task(self._watch_process(self._proc, exited)))

        # The sockets appear as the kernel binds them; then the directory is taken back.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        names = [f"{_SOCKET_PREFIX}-{port}" for port in _PORTS.values()]
        while not all(kdir.has(name) for name in names):
            if exited.is_set():
                raise self._start_trace.error("ipykernel", self.id)
            if loop.time() > deadline:
                raise ContextError("kernel_start_failed", "ipykernel did not start in time")
            await asyncio.sleep(0.005)
        kdir.take_back()

        self._key = key.encode()
        self._session = Session(key=self._key, signature_scheme="hmac-sha256")
        self._session.username = "sandboxd"
        for channel, kind in (
            ("shell", zmq.DEALER),
            ("iopub", zmq.SUB),
            ("control", zmq.DEALER),
            ("stdin", zmq.DEALER),
        ):
            try:
                path = kdir.checked_socket_path(f"{_SOCKET_PREFIX}-{_PORTS[channel]}", jail.uid)
            except RuntimeDirError as exc:
                raise ContextError("kernel_start_failed", str(exc)) from exc
            sock = self._zmq.socket(kind)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RECONNECT_IVL, -1)
            # The kernel is the sandbox's code: bound what one message can make us allocate
            # (a larger one drops the connection; the run then ends by interrupt/restart).
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
            if channel in ("shell", "stdin"):
                # The kernel routes a cell's input_request to the stdin socket whose identity
                # is that of the shell socket that sent the cell (as jupyter_client does).
                sock.setsockopt(zmq.IDENTITY, self._session.bsession)
            if kind == zmq.SUB:
                # PUB/SUB drops messages only at the publisher's queue, which the kernel makes
                # deep (a burst of prints on a busy machine once lost output and the `idle`
                # status that ends a run). Our end stays shallow: see IOPUB_HOST_QUEUE_MESSAGES.
                sock.setsockopt(zmq.RCVHWM, IOPUB_HOST_QUEUE_MESSAGES)
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(f"ipc://{path}")
            self._sockets[channel] = sock
        self._tasks.append(asyncio.create_task(self._read_iopub()))
        self._tasks.append(asyncio.create_task(self._read_replies("shell")))
        self._tasks.append(asyncio.create_task(self._read_replies("control")))
        self._tasks.append(asyncio.create_task(self._read_stdin()))
        for channel in ("shell", "iopub"):
            # A fresh inproc address each time: pyzmq's default is derived from a file
            # descriptor number, which a closed socket's successor may reuse.
            monitor = self._sockets[channel].get_monitor_socket(
                zmq.EVENT_DISCONNECTED, addr=f"inproc://sandboxd-monitor-{secrets.token_hex(8)}"
            )
            self._monitors.append(monitor)
            self._tasks.append(asyncio.create_task(self._watch_connection(channel, monitor)))
        await self._wait_until_ready(deadline, exited)
        self._ready = True

    async def _wait_until_ready(self, deadline: float, exited: asyncio.Event) -> None:
        """Ask kernel_info until both the shell reply and its iopub status arrive.

        A SUB socket misses what was published before it joined, so the iopub status proves
        the subscription is live before the first real cell.
        """
        loop = asyncio.get_running_loop()
        while True:
            if exited.is_set():
                raise self._start_trace.error("ipykernel", self.id)
            if loop.time() > deadline:
                raise ContextError("kernel_start_failed", "ipykernel did not answer in time")
            msg_id = self._send("shell", "kernel_info_request", {})
            seen = _Run(msg_id, DiscardEvents())
            self._run = seen
            reply = self._expect_reply(msg_id)
            try:
                await asyncio.wait_for(reply, 2.0)
                await asyncio.wait_for(asyncio.shield(seen.done), 0.2)
                return
            except TimeoutError:
                continue
            except ContextError:
                # The process died with the request in flight: say how it ended.
                await exited.wait()
                raise self._start_trace.error("ipykernel", self.id) from None
            finally:
                self._run = None
                self._replies.pop(msg_id, None)

    def _release(self) -> None:
        for sock in self._sockets.values():
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
        for monitor in self._monitors:
            monitor.close(linger=0)
        self._monitors.clear()
        for sock in self._sockets.values():
            sock.close(linger=0)
        self._sockets.clear()
        for fut in self._replies.values():
            if not fut.done():
                fut.cancel()
        self._replies.clear()
        if self._dir is not None:
            self._dir.close()
            self._dir = None

    # --- messaging ---------------------------------------------------------------------

    def _send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        sock = self._sockets.get(channel)
        if sock is None or self._session is None:
            # Stopped while the caller awaited something else (it died, or a restart began).
            raise ContextError("kernel_died", "the kernel stopped before the request was sent")
        msg = self._session.msg(msg_type, content)
        self._session.send(sock, msg)
        return str(msg["header"]["msg_id"])

    def _expect_reply(self, msg_id: str) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[msg_id] = fut
        return fut

    async def _recv(self, channel: str) -> dict[str, Any]:
        frames = await self._sockets[channel].recv_multipart()
        if sum(len(frame) for frame in frames) > DECODE_INLINE_BYTES:
            return await asyncio.to_thread(decode_message, self._key, frames)
        # A message already queued comes back without yielding to the loop: give the other
        # sandboxes their turn between two, whatever this kernel floods us with.
        await asyncio.sleep(0)
        return decode_message(self._key, frames)

    async def _read_replies(self, channel: str) -> None:
        while True:
            try:
                msg = await self._recv(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A malformed or badly signed message: the kernel is the sandbox's own code
                # (debug only: a hostile kernel must not flood the server's log).
                logger.debug("context %s: bad %s message", self.id, channel, exc_info=True)
                continue
            parent = msg.get("parent_header", {}).get("msg_id")
            fut = self._replies.pop(parent, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def _read_iopub(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                msg = await self._recv("iopub")
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.debug("context %s: bad iopub message", self.id, exc_info=True)
                if self._run is not None:
                    # Traffic, if not the cell's: iopub is not silent (see IDLE_GRACE).
                    self._run.last_message = loop.time()
                continue
            run = self._run
            if run is None or msg.get("parent_header", {}).get("msg_id") != run.msg_id:
                continue
            run.last_message = loop.time()
            try:
                self._dispatch(run, msg)
            except (KeyError, TypeError, ValueError):
                logger.debug("context %s: unexpected iopub message", self.id, exc_info=True)
            # Back-pressure: read on once the client has taken what was sent (meanwhile
            # the kernel's own queue holds the rest). Not silence: IDLE_GRACE waits.
            run.held = True
            try:
                await run.emit.room()
            finally:
                run.held = False
                run.last_message = loop.time()

    async def _read_stdin(self) -> None:
        """The kernel asks for a line of input (input(), getpass): tell the client, keep the
        request until POST .../input answers it (send_input) or the cell ends."""
        while True:
            try:
                msg = await self._recv("stdin")
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.debug("context %s: bad stdin message", self.id, exc_info=True)
                continue
            run = self._run
            if (
                run is None
                or msg.get("msg_type") != "input_request"
                or msg.get("parent_header", {}).get("msg_id") != run.msg_id
            ):
                continue
            content = msg.get("content", {})
            prompt, password = str(content.get("prompt", "")), bool(content.get("password"))
            self._input_pending = (msg["header"], prompt, password)
            run.last_message = asyncio.get_running_loop().time()
            run.emit(events.input_request(prompt, password))

    async def send_input(self, value: str) -> None:
        pending, run = self._input_pending, self._run
        if pending is None or run is None:
            await super().send_input(value)
            return
        header, prompt, password = pending
        self._input_pending = None
        sock = self._sockets.get("stdin")
        if sock is None or self._session is None:
            raise ContextError("kernel_died", "the kernel stopped before the input was sent")
        self._session.send(sock, "input_reply", {"value": value}, parent=header)
        # The prompt and the answer go into the output as a terminal shows them (a password
        # is not shown).
        run.emit(events.stream("stdout", f"{prompt}{'' if password else value}\n"))

    def _dispatch(self, run: _Run, msg: dict[str, Any]) -> None:
        msg_type = msg["msg_type"]
        content = msg["content"]
        if msg_type == "status":
            if content["execution_state"] == "idle":
                run.finish()
        elif msg_type == "stream":
            date = msg["header"].get("date")
            stamp = date if isinstance(date, str) else None
            run.emit(events.stream(content["name"], content["text"], stamp))
        elif msg_type == "execute_input":
            self.execution_count = int(content["execution_count"])
            run.emit(events.number_of_executions(self.execution_count))
        elif msg_type == "execute_result":
            run.emit(events.result(content["data"], is_main_result=True))
        elif msg_type == "display_data":
            run.emit(events.result(content["data"], is_main_result=False))
        elif msg_type == "error":
            run.emit(
                events.error(content["ename"], content["evalue"], "\n".join(content["traceback"]))
            )

    async def _silent(self, code: str) -> None:
        """Run bookkeeping code that shows nothing and does not count as an execution."""
        msg_id = self._send(
            "shell",
            "execute_request",
            {"code": code, "silent": True, "store_history": False, "allow_stdin": False},
        )
        await self._expect_reply(msg_id)

    async def _apply_envs(self, envs: Mapping[str, str]) -> None:
        await self._silent(_env_apply_code(envs, save=False))

    # --- running -----------------------------------------------------------------------

    async def run(self, code: str, env_vars: Mapping[str, str], emit: Emit) -> None:
        await self.ensure_started()
        if env_vars:
            await self._silent(_env_apply_code(env_vars, save=True))
        msg_id = self._send(
            "shell",
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": self.stdin_allowed,
                "stop_on_error": True,
            },
        )
        reply = self._expect_reply(msg_id)
        run = _Run(msg_id, emit)
        self._run = run
        try:
            await self._until_over(run, reply)
        finally:
            self._input_pending = None
            if self._run is run:
                self._run = None
            self._replies.pop(msg_id, None)
        if env_vars and self.alive:
            await self._silent(_ENV_RESTORE_CODE)

    async def _until_over(self, run: _Run, reply: asyncio.Future[dict[str, Any]]) -> None:
        """Wait for the cell's `idle` status; once its shell reply is in, stop waiting when
        iopub has been silent for IDLE_GRACE (the status was lost: say so, do not hang)."""
        await asyncio.wait((run.done, reply), return_when=asyncio.FIRST_COMPLETED)
        loop = asyncio.get_running_loop()
        replied = loop.time()
        while not run.done.done():
            if self._connection_dropped:
                # _watch_connection ends the cell, with the reason.
                await asyncio.wait((run.done,))
                break
            quiet = 0.0 if run.held else loop.time() - max(run.last_message, replied)
            if quiet >= IDLE_GRACE:
                logger.warning("context %s: the cell's idle status never came", self.id)
                run.emit(
                    events.stream(
                        "stderr",
                        "\n[sandboxd: the kernel's end-of-cell message was lost; "
                        "output may be incomplete]\n",
                        None,
                    )
                )
                run.finish()
                break
            await asyncio.wait((run.done,), timeout=IDLE_GRACE - quiet)
        if reply.done() and not reply.cancelled():
            reply.exception()  # a dead kernel's reply error is reported by the run already

    async def interrupt(self) -> None:
        run = self._run
        if run is None or not self.alive:
            return
        try:
            self._send("control", "interrupt_request", {})
        except Exception:
            if self._proc is not None:
                with contextlib.suppress(Exception):
                    await self._proc.signal(signal.SIGINT)
        try:
            await asyncio.wait_for(asyncio.shield(run.done), INTERRUPT_GRACE)
        except TimeoutError:
            # The cell ignores SIGINT (a C loop, a handler): replace the kernel.
            self._ready = False
            if self._run is run:
                self._run = None
            run.emit(restarted_error())
            run.finish()
            self.schedule_restart()

    async def _watch_connection(self, channel: str, monitor: zmq.asyncio.Socket) -> None:
        """End the cell and restart when a connection to the kernel drops.

        The host never reconnects, so a dropped connection (a message over MAX_MESSAGE_BYTES,
        say) leaves a kernel that can no longer be heard. A kernel that died also drops its
        connections: the process watcher reports that (out of memory, exit code) first.
        """
        await monitor.recv_multipart()
        self._connection_dropped = True
        await asyncio.sleep(EXIT_REPORT_GRACE)
        if not self._ready:
            return  # the process watcher (or a restart) has handled it
        self._ready = False
        run, self._run = self._run, None
        if run is not None:
            run.emit(
                events.error(
                    "KernelDisconnected",
                    f"the kernel's {channel} connection dropped (a message over "
                    f"{MAX_MESSAGE_BYTES} bytes?); the context restarted and its state is lost",
                    "",
                )
            )
            run.finish()
        self.schedule_restart()

    async def _watch_process(self, proc: JailProcess, exited: asyncio.Event) -> None:
        """Follow the kernel process: when it dies, end the running cell and restart."""
        async for event in proc.events():
            if event.kind != "exit":
                # Once ready, ipykernel forwards the cells' fd output on iopub itself; before,
                # this is the kernel's own start-up output (a traceback, if it fails).
                if not self._ready and self._proc is proc:
                    self._start_trace.add(event.data)
                continue
            if self._proc is proc and not self._ready:
                self._start_trace.exit = event
            exited.set()
            if self._proc is not proc:
                return
            self._ready = False
            oom = event.oom_killed or self.jail.oom_kills() > self._oom_baseline
            # Bookkeeping requests waiting for a reply (env vars) will never get one.
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_exception(ContextError("kernel_died", "the kernel died"))
            self._replies.clear()
            run, self._run = self._run, None
            if run is not None:
                run.emit(death_error(oom=oom, exit_code=event.exit_code, signal=event.signal))
                run.finish()
            self.schedule_restart()
            return
