"""Bash contexts: one long-lived ``bash`` per context, so shell state carries over between runs.

Variables, functions, ``cd`` and background jobs persist from one run to the next, as with
E2B's bash kernel. The host never puts user data on the shell's command line: each run's code
(and each per-run variable's value) is written to a file in a kernel directory of the runtime
dir that only root can write (``runtime_dir.KernelDir``), and the shell is sent one fixed line
that sources it with stdin from /dev/null (so a command reading stdin cannot swallow the
shell's input). A second sourced file restores the variables and prints an end frame on stdout
and on stderr (``node_kernel.FRAME_MARK``), so the run ends only after both streams are drained.

A non-zero status is an ``error`` event whose ``value`` is the exit code, as with E2B's bash
kernel. ``exit`` ends the shell: reported the same way, and the context restarts with a fresh
shell. SIGINT interrupts the running command and returns from the cell (a trap), keeping the
shell and its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
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
from sandboxd.interpreter.node_kernel import FrameParser
from sandboxd.interpreter.runtime_dir import KernelDir, RuntimeDirError
from sandboxd.jail.types import FsError

if TYPE_CHECKING:
    from sandboxd.jail import JailProcess

SANDBOX_RUNTIME_DIR = "/run/sandbox"
START_TIMEOUT = 30.0
INTERRUPT_GRACE = 3.0
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FRAME = r"\036\037sbx:"  # node_kernel.FRAME_MARK, as printf writes it

# Sent once. SIGINT returns from the cell being sourced instead of killing the shell (a trap,
# not an ignore, so commands the cell starts still get SIGINT's default action). End frames go
# to copies of stdout/stderr on high descriptors, so a cell that redirects its own output for
# good (`exec >/dev/null`) does not swallow them.
_PRELUDE = (
    "exec 62>&1 61>&2\n"
    "trap 'builtin return 130 2>/dev/null' INT\n"
    f'builtin printf \'{_FRAME}{{"t":"ready"}}\\n\' >&62\n'
)


class _Run:
    def __init__(self, run_id: int, emit: Emit) -> None:
        self.id = run_id
        self.emit = emit
        self.status: int | None = None
        self.pending = {"stdout", "stderr"}  # end frames still to come
        self.interrupted = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class BashContext(ProcessKernelContext):
    """A stateful bash shell (see the module doc)."""

    language = "bash"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._run: _Run | None = None
        self._dir: KernelDir | None = None
        self._started: asyncio.Future[None] | None = None
        self._next_id = 0

    # --- life cycle ----------------------------------------------------------------------

    async def _launch(self) -> None:
        try:
            kdir = KernelDir(self.jail.runtime_dir, SANDBOX_RUNTIME_DIR, "bash")
            kdir.take_back()  # root's, 0755: the sandbox reads the cells, cannot change them
        except (OSError, RuntimeDirError) as exc:
            raise ContextError("kernel_start_failed", f"kernel directory: {exc}") from exc
        self._dir = kdir
        self._oom_baseline = self.jail.oom_kills()
        self._started = asyncio.get_running_loop().create_future()
        try:
            proc = await self.jail.spawn(
                ["bash", "--noprofile", "--norc"],
                envs=self.envs,
                cwd=self.cwd,
                stdin=True,
                tag=f"kernel:{self.id}",
            )
        except Exception as exc:
            raise ContextError("kernel_start_failed", f"cannot start bash: {exc}") from exc
        self._proc = proc
        self._tasks.append(asyncio.create_task(self._read(proc)))
        try:
            await proc.write_stdin(_PRELUDE.encode())
        except FsError as exc:
            # Its stdin is closed: the shell died at once (a BASH_ENV that exits, say). _read
            # reports how through _started when the exit arrives; anything else is a failure.
            if exc.code != "not_found":
                raise ContextError("kernel_start_failed", f"cannot start bash: {exc}") from exc
        try:
            await asyncio.wait_for(asyncio.shield(self._started), START_TIMEOUT)
        except TimeoutError as exc:
            raise ContextError("kernel_start_failed", "bash did not start in time") from exc
        self._ready = True

    def _release(self) -> None:
        if self._dir is not None:
            self._dir.close()
            self._dir = None

    async def _apply_envs(self, envs: Mapping[str, str]) -> None:
        # Sandbox-level variables, set for good: a run with no code and no restore, taking
        # its turn like any run.
        async with self.lock:
            await self._execute("", envs, lambda _event: None, restore=False)

    # --- running -------------------------------------------------------------------------

    async def run(self, code: str, env_vars: Mapping[str, str], emit: Emit) -> None:
        await self.ensure_started()
        self.execution_count += 1
        emit(events.number_of_executions(self.execution_count))
        await self._execute(code, env_vars, emit, restore=True)

    async def _execute(
        self, code: str, env_vars: Mapping[str, str], emit: Emit, *, restore: bool
    ) -> None:
        assert self._dir is not None and self._proc is not None
        kdir = self._dir
        self._next_id += 1
        n = self._next_id
        base = kdir.sandbox_path
        pre: list[str] = []
        post: list[str] = []
        files = [f"cell-{n}.sh", f"pre-{n}.sh", f"post-{n}.sh"]
        for i, (name, value) in enumerate(env_vars.items()):
            if not _IDENTIFIER.match(name):
                emit(events.stream("stderr", f"[sandboxd: {name!r} is not a shell name]\n"))
                continue
            files.append(f"val-{n}-{i}")
            kdir.write_file(files[-1], value.encode(), owner_uid=None, mode=0o644)
            # Values are read from their file (no quoting); names were checked above.
            pre.append(
                f"if [[ -v {name} ]]; then __sbx_old_{i}=${name}; __sbx_had_{i}=1; "
                f"else __sbx_had_{i}=0; fi"
            )
            pre.append(f"IFS= builtin read -r -d '' {name} < {base}/val-{n}-{i}")
            pre.append(f"builtin export {name}")
            if restore:
                post.append(
                    f'if [[ $__sbx_had_{i} == 1 ]]; then {name}="$__sbx_old_{i}"; '
                    f"else builtin unset {name}; fi"
                )
                post.append(f"builtin unset __sbx_old_{i} __sbx_had_{i}")
        post.append(
            f'builtin printf \'{_FRAME}{{"t":"done","id":{n},"rc":%d}}\\n\' "$__sbx_rc" >&62'
        )
        post.append(f'builtin printf \'{_FRAME}{{"t":"done","id":{n}}}\\n\' >&61')
        kdir.write_file(f"cell-{n}.sh", code.encode(), owner_uid=None, mode=0o644)
        kdir.write_file(f"pre-{n}.sh", "\n".join(pre).encode() + b"\n", owner_uid=None, mode=0o644)
        kdir.write_file(
            f"post-{n}.sh", "\n".join(post).encode() + b"\n", owner_uid=None, mode=0o644
        )

        run = _Run(n, emit)
        self._run = run
        try:
            try:
                await self._proc.write_stdin(
                    f"builtin . {base}/pre-{n}.sh; builtin . {base}/cell-{n}.sh </dev/null; "
                    f"__sbx_rc=$?; builtin . {base}/post-{n}.sh\n".encode()
                )
            except FsError as exc:  # the shell died; its exit is not reported yet
                raise ContextError("kernel_died", f"the shell stopped: {exc.message}") from exc
            await run.done
        finally:
            if self._run is run:
                self._run = None
            for name in files:
                kdir.unlink(name)
        if run.status:
            if run.interrupted:
                emit(events.error("KeyboardInterrupt", "the command was interrupted", ""))
            else:
                emit(
                    events.error(
                        "CommandExitError",
                        str(run.status),
                        f"the command exited with code {run.status}",
                    )
                )

    async def interrupt(self) -> None:
        run = self._run
        if run is None or self._proc is None:
            return
        run.interrupted = True
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

    def _on_frame(self, stream: str, frame: dict[str, Any]) -> None:
        kind = frame.get("t")
        if kind == "ready":
            if self._started is not None and not self._started.done():
                self._started.set_result(None)
            return
        run = self._run
        if kind == "done" and run is not None and frame.get("id") == run.id:
            if stream == "stdout":
                rc = frame.get("rc")
                run.status = rc if isinstance(rc, int) else None
            run.pending.discard(stream)
            if not run.pending:
                run.finish()

    async def _read(self, proc: JailProcess) -> None:
        """Follow the shell's output; when it exits, end the running cell and restart."""
        parsers = {"stdout": FrameParser(), "stderr": FrameParser()}
        trace = StartTrace()
        async for event in proc.events():
            if self._run is not None:
                # Back-pressure (see Emit.room): the next read waits for a slow client.
                await self._run.emit.room()
            if event.kind in parsers:
                for item in parsers[event.kind].feed(event.data):
                    if isinstance(item, dict):
                        self._on_frame(event.kind, item)
                    elif self._run is not None:
                        self._run.emit(events.stream(event.kind, item))
                    elif not self._ready:
                        trace.add(item.encode())
                continue
            if self._started is not None and not self._started.done():
                trace.exit = event
                self._started.set_exception(trace.error("bash", self.id))
            if self._proc is not proc:
                return
            self._ready = False
            self._proc = None
            oom = event.oom_killed or self.jail.oom_kills() > self._oom_baseline
            run, self._run = self._run, None
            if run is not None:
                if oom or event.signal is not None:
                    run.emit(death_error(oom=oom, exit_code=event.exit_code, signal=event.signal))
                elif event.exit_code:
                    run.emit(
                        events.error(
                            "CommandExitError",
                            str(event.exit_code),
                            f"the shell exited with code {event.exit_code}; the context "
                            "restarted with a fresh shell",
                        )
                    )
                run.finish()
            self.schedule_restart()
            return
