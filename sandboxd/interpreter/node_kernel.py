"""JavaScript and TypeScript contexts: a long-lived Node process per context in the sandbox.

The process runs ``kernels/node_kernel.cjs`` (bound read-only at /opt/sandboxd/kernels) and
keeps the cell state between runs. The host writes one JSON request per line to its stdin and
reads frames from its stdout (see the script's header): frames carry the cell's console output,
its value and its error in order; bytes outside frames (a child process writing to fd 1) are
stdout, and the process's stderr is stderr. The sandbox owns that process, so nothing it prints
is trusted: an unparsable frame is just text.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sandboxd.interpreter import events
from sandboxd.interpreter.contexts import (
    ContextError,
    Emit,
    ProcessKernelContext,
    StartTrace,
    death_error,
    restarted_error,
)
from sandboxd.interpreter.layout import KERNELS_SANDBOX_DIR, NODE_TOOLS_SANDBOX_DIR
from sandboxd.jail.types import FsError

if TYPE_CHECKING:
    from sandboxd.jail import JailProcess

logger = logging.getLogger(__name__)

ESBUILD_SANDBOX_PATH = f"{NODE_TOOLS_SANDBOX_DIR}/esbuild"
FRAME_MARK = "\x1e\x1fsbx:"
# The longest frame held while waiting for its end (the kernel is the sandbox's code).
MAX_FRAME_CHARS = 64 << 20
START_TIMEOUT = 30.0
INTERRUPT_GRACE = 3.0


class _Run:
    def __init__(self, request_id: int, emit: Emit) -> None:
        self.id = request_id
        self.emit = emit
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class FrameParser:
    """Splits the kernel's stdout into frames (dicts) and plain text, across chunk borders.

    Linear in the input: a frame arriving in many chunks is collected as a list of parts and
    joined once, and a frame longer than MAX_FRAME_CHARS is passed on as text instead of held.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        self._tail = ""  # text that may be the start of a frame mark
        self._frame: list[str] | None = None  # parts of the frame being read, if any
        self._frame_chars = 0

    def feed(self, data: bytes) -> list[dict[str, Any] | str]:
        """Items completed by `data`, in order: a dict per frame, a str per run of text."""
        text = self._decoder.decode(data)
        items: list[dict[str, Any] | str] = []
        while text:
            if self._frame is not None:
                end = text.find("\n")
                if end < 0:
                    self._frame.append(text)
                    self._frame_chars += len(text)
                    if self._frame_chars > MAX_FRAME_CHARS:
                        # A frame that never ends: pass it on as text rather than hold it.
                        items.append(FRAME_MARK + "".join(self._frame))
                        self._frame, self._frame_chars = None, 0
                    break
                self._frame.append(text[:end])
                items.append(self._decode_frame("".join(self._frame)))
                self._frame, self._frame_chars = None, 0
                text = text[end + 1 :]
                continue
            text = self._tail + text
            self._tail = ""
            start = text.find(FRAME_MARK)
            if start < 0:
                keep = _partial_mark_length(text)
                if len(text) > keep:
                    items.append(text[: len(text) - keep])
                self._tail = text[len(text) - keep :]
                break
            if start > 0:
                items.append(text[:start])
            self._frame, self._frame_chars = [], 0
            text = text[start + len(FRAME_MARK) :]
        return items

    @staticmethod
    def _decode_frame(body: str) -> dict[str, Any] | str:
        try:
            frame = json.loads(body)
        except ValueError:
            return body + "\n"
        return frame if isinstance(frame, dict) else body + "\n"


def _partial_mark_length(text: str) -> int:
    """How many trailing characters of `text` could be the start of a frame mark."""
    for size in range(min(len(FRAME_MARK) - 1, len(text)), 0, -1):
        if FRAME_MARK.startswith(text[-size:]):
            return size
    return 0


class NodeContext(ProcessKernelContext):
    """A stateful Node kernel for JavaScript (and TypeScript, see TypeScriptContext)."""

    language = "javascript"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._run: _Run | None = None
        self._started: asyncio.Future[None] | None = None
        self._next_id = 0
        self._acks: dict[int, asyncio.Future[None]] = {}

    async def _launch(self) -> None:
        argv = [
            "node",
            # Node's REPL rewriter for top-level await lives in its internals.
            "--expose-internals",
            "--disable-warning=ExperimentalWarning",
            f"{KERNELS_SANDBOX_DIR}/node_kernel.cjs",
            self.language,
            ESBUILD_SANDBOX_PATH,
        ]
        self._oom_baseline = self.jail.oom_kills()
        loop = asyncio.get_running_loop()
        self._started = loop.create_future()
        try:
            proc = await self.jail.spawn(
                argv, envs=self.envs, cwd=self.cwd, stdin=True, tag=f"kernel:{self.id}"
            )
        except Exception as exc:
            raise ContextError("kernel_start_failed", f"cannot start node: {exc}") from exc
        self._proc = proc
        self._tasks.append(asyncio.create_task(self._read(proc)))
        try:
            await asyncio.wait_for(asyncio.shield(self._started), START_TIMEOUT)
        except TimeoutError as exc:
            raise ContextError("kernel_start_failed", "node did not start in time") from exc
        self._ready = True

    def _release(self) -> None:
        for fut in self._acks.values():
            if not fut.done():
                fut.cancel()
        self._acks.clear()

    async def _request(self, payload: dict[str, Any]) -> int:
        if self._proc is None:
            raise ContextError("kernel_died", "the kernel stopped before the request was sent")
        self._next_id += 1
        payload["id"] = self._next_id
        try:
            await self._proc.write_stdin(json.dumps(payload).encode() + b"\n")
        except FsError as exc:  # node died; its exit is not reported yet
            raise ContextError("kernel_died", f"the kernel stopped: {exc.message}") from exc
        return self._next_id

    async def _apply_envs(self, envs: Mapping[str, str]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        request_id = self._next_id + 1
        self._acks[request_id] = fut
        await self._request({"setenv": dict(envs)})
        await fut

    async def run(self, code: str, env_vars: Mapping[str, str], emit: Emit) -> None:
        await self.ensure_started()
        self.execution_count += 1
        emit(events.number_of_executions(self.execution_count))
        run = _Run(self._next_id + 1, emit)
        self._run = run
        try:
            await self._request({"code": code, "env": dict(env_vars)})
            await run.done
        finally:
            if self._run is run:
                self._run = None

    async def interrupt(self) -> None:
        run = self._run
        if run is None or self._proc is None:
            return
        with contextlib.suppress(Exception):
            await self._proc.signal(signal.SIGINT)
        try:
            await asyncio.wait_for(asyncio.shield(run.done), INTERRUPT_GRACE)
        except TimeoutError:
            self._ready = False
            if self._run is run:
                self._run = None
            run.emit(restarted_error())
            run.finish()
            self.schedule_restart()

    def _handle_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("t")
        run = self._run
        if kind == "ready":
            if self._started is not None and not self._started.done():
                self._started.set_result(None)
            return
        if kind == "done":
            ack = self._acks.pop(frame.get("id"), None)  # type: ignore[arg-type]
            if ack is not None and not ack.done():
                ack.set_result(None)
            if run is not None and frame.get("id") == run.id:
                run.finish()
            return
        if run is None:
            return  # output of a callback that fired after its cell ended
        if kind == "out" and frame.get("s") in ("stdout", "stderr"):
            run.emit(events.stream(str(frame["s"]), str(frame.get("x", ""))))
        elif kind == "result" and frame.get("id") == run.id:
            run.emit(events.result({"text/plain": str(frame.get("text", ""))}, is_main_result=True))
        elif kind == "error" and frame.get("id") == run.id:
            run.emit(
                events.error(
                    str(frame.get("name", "Error")),
                    str(frame.get("value", "")),
                    str(frame.get("traceback", "")),
                )
            )

    async def _read(self, proc: JailProcess) -> None:
        """Follow the process's output; when it exits, end the running cell and restart."""
        parser = FrameParser()
        stderr = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        trace = StartTrace()
        async for event in proc.events():
            if self._run is not None:
                # Back-pressure (see Emit.room): the next read waits for a slow client.
                await self._run.emit.room()
            if event.kind == "stdout":
                for item in parser.feed(event.data):
                    if isinstance(item, dict):
                        self._handle_frame(item)
                    elif self._run is not None:
                        self._run.emit(events.stream("stdout", item))
                    elif not self._ready:
                        trace.add(item.encode("utf-8", "surrogateescape"))
            elif event.kind == "stderr":
                text = stderr.decode(event.data)
                if text and self._run is not None:
                    self._run.emit(events.stream("stderr", text))
                elif not self._ready:
                    trace.add(event.data)
            else:
                if self._started is not None and not self._started.done():
                    trace.exit = event
                    self._started.set_exception(trace.error("node", self.id))
                if self._proc is not proc:
                    return
                self._ready = False
                self._proc = None
                oom = event.oom_killed or self.jail.oom_kills() > self._oom_baseline
                run, self._run = self._run, None
                if run is not None:
                    run.emit(death_error(oom=oom, exit_code=event.exit_code, signal=event.signal))
                    run.finish()
                self.schedule_restart()
                return


class TypeScriptContext(NodeContext):
    """The Node kernel with each cell transpiled by esbuild first (no type-check pass)."""

    language = "typescript"
