"""Bash contexts: each run is a fresh ``bash`` in the context's cwd (one-shot, not stateful).

Shell variables and ``cd`` do not carry over between runs; files do (the workspace is the
sandbox's). The code goes in on stdin and is read whole before it runs, so its size is not
bound by the argv limit and a command reading stdin cannot swallow the rest of the script.
Output is streamed as it comes; a non-zero exit is an ``error`` event, as with E2B's bash
kernel (``value`` is the exit code).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING

from sandboxd.interpreter import events
from sandboxd.interpreter.contexts import Emit, KernelContext, OutputCap, death_error

if TYPE_CHECKING:
    from sandboxd.jail import JailProcess

# Read the whole script, give the commands an empty stdin, run it in this shell.
_RUNNER = 'script=$(cat; printf x); script=${script%x}; exec </dev/null; eval "$script"'
INTERRUPT_GRACE = 2.0


class BashContext(KernelContext):
    """One-shot bash runs (see the module doc)."""

    language = "bash"

    _proc: JailProcess | None = None

    @property
    def alive(self) -> bool:
        return True

    async def _start(self) -> None:
        return None

    async def _stop(self) -> None:
        await self.interrupt()

    async def _apply_envs(self, envs: Mapping[str, str]) -> None:
        return None  # self.envs is read at every run

    async def run(self, code: str, env_vars: Mapping[str, str], emit: Emit) -> None:
        emit = OutputCap(emit)
        self.execution_count += 1
        emit(events.number_of_executions(self.execution_count))
        oom_baseline = self.jail.oom_kills()
        try:
            proc = await self.jail.spawn(
                ["bash", "-c", _RUNNER],
                envs={**self.envs, **env_vars},
                cwd=self.cwd,
                stdin=True,
                tag=f"bash:{self.id}",
            )
        except Exception as exc:
            emit(events.error("SpawnError", f"cannot start bash: {exc}", ""))
            return
        self._proc = proc
        try:
            await proc.write_stdin(code.encode())
            await proc.close_stdin()
            decoders = {
                "stdout": codecs.getincrementaldecoder("utf-8")(errors="replace"),
                "stderr": codecs.getincrementaldecoder("utf-8")(errors="replace"),
            }
            async for event in proc.events():
                if event.kind in decoders:
                    text = decoders[event.kind].decode(event.data)
                    if text:
                        emit(events.stream(event.kind, text))
                    continue
                oom = event.oom_killed or self.jail.oom_kills() > oom_baseline
                if oom:
                    emit(death_error(oom=True, exit_code=event.exit_code, signal=event.signal))
                elif event.signal is not None:
                    name = "KeyboardInterrupt" if event.signal == signal.SIGINT else "Killed"
                    emit(events.error(name, f"bash was stopped by signal {event.signal}", ""))
                elif event.exit_code:
                    emit(
                        events.error(
                            "CommandExitError",
                            str(event.exit_code),
                            f"bash exited with code {event.exit_code}",
                        )
                    )
        finally:
            self._proc = None

    async def interrupt(self) -> None:
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(Exception):
            await proc.signal(signal.SIGINT)
        for _ in range(int(INTERRUPT_GRACE / 0.05)):
            if self._proc is not proc:
                return
            await asyncio.sleep(0.05)
        with contextlib.suppress(Exception):
            await proc.signal(signal.SIGKILL)
