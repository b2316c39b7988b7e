"""A code context: one stateful kernel of one language inside one sandbox.

Every language (``python_kernel``, ``node_kernel``, ``bash_kernel``) subclasses
:class:`KernelContext`. The contract they share:

* ``run(code, env_vars, emit)`` runs one cell and calls ``emit`` with each wire event
  (``sandboxd.interpreter.events``) as it happens, in order; it returns when the cell is over,
  never raises for a user-code failure (that is an ``error`` event), and returns promptly when
  the kernel dies (also an ``error`` event, after which the context restarts itself).
* ``lock`` serialises runs: the caller holds it around ``run`` so a second ``/execute`` on the
  same context waits its turn.
* ``interrupt()`` asks the running cell to stop; the state survives. ``restart()`` replaces the
  kernel (state lost, same id). ``close()`` stops it for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sandboxd import prometheus
from sandboxd.interpreter import events
from sandboxd.logs import untrusted

if TYPE_CHECKING:
    from sandboxd.jail import Jail, JailProcess
    from sandboxd.jail.types import ProcEvent

logger = logging.getLogger(__name__)


class Emit(Protocol):
    """Where a run's events go: the interpreter's ``EventPipe``, which caps the run's output
    and pushes back when its client reads slowly.

    A kernel calls it with each event, and between reads of its kernel's output awaits
    ``room()``, which returns once the events so far are (mostly) on their way to the client.
    That wait is the back-pressure: a slow client slows the kernel's reader, not the server's
    memory.
    """

    def __call__(self, event: events.Event) -> None: ...

    async def room(self) -> None: ...


class DiscardEvents:
    """An ``Emit`` that drops everything (bookkeeping requests whose output nobody reads)."""

    def __call__(self, event: events.Event) -> None:
        pass

    async def room(self) -> None:
        pass


# Accepted spellings of each language (the SDK sends what the caller typed).
LANGUAGE_ALIASES = {
    "python": "python",
    "python3": "python",
    "py": "python",
    "javascript": "javascript",
    "js": "javascript",
    "node": "javascript",
    "typescript": "typescript",
    "ts": "typescript",
    "bash": "bash",
    "sh": "bash",
    "shell": "bash",
}

DEFAULT_CWD = "/home/user"

# Bytes of events per run (every kind, counted as sent) beyond which output is dropped (and
# flagged once): enforced by the interpreter's EventPipe.
MAX_OUTPUT_BYTES = 32 << 20


class ContextError(Exception):
    """A context could not be started or used; `code` is stable, `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def normalize_language(language: str | None) -> str:
    """The canonical language name for `language` (None or "" means Python).

    Raises ContextError('unsupported_language') for anything sandboxd has no kernel for.
    """
    if not language:
        return "python"
    canonical = LANGUAGE_ALIASES.get(language.strip().lower())
    if canonical is None:
        supported = ", ".join(sorted(set(LANGUAGE_ALIASES.values())))
        raise ContextError(
            "unsupported_language",
            f"language {language!r} is not supported (supported: {supported})",
        )
    return canonical


def death_error(*, oom: bool, exit_code: int | None, signal: int | None) -> events.Event:
    """The ``error`` event for a cell whose kernel died under it (the context restarts)."""
    if oom:
        return events.error(
            "OutOfMemory",
            "the kernel was killed because the sandbox ran out of memory; "
            "the context restarted and its state is lost",
            "",
        )
    how = f"signal {signal}" if signal is not None else f"exit code {exit_code}"
    return events.error(
        "KernelDied",
        f"the kernel died ({how}); the context restarted and its state is lost",
        "",
    )


class StartTrace:
    """What a kernel process printed before it was ready and how it exited, if it died then:
    a start failure reports both (and logs them: they are the only trace of why)."""

    KEEP_BYTES = 2000  # the end of the output is kept: that is where a traceback ends

    def __init__(self) -> None:
        self._output = bytearray()
        self.exit: ProcEvent | None = None

    def add(self, data: bytes) -> None:
        self._output += data
        del self._output[: -self.KEEP_BYTES]

    def error(self, program: str, context_id: str) -> ContextError:
        how = f"{program} exited while starting"
        event = self.exit
        if event is not None and event.signal is not None:
            how += f" (killed by signal {event.signal}"
            how += ", out of memory)" if event.oom_killed else ")"
        elif event is not None:
            how += f" (exit code {event.exit_code})"
        output = self._output.decode("utf-8", "replace").strip()
        # The output is the sandbox's text: quoted in the log (it cannot forge lines there),
        # as it is to the client that started the kernel.
        logger.warning("context %s: %s: %s", context_id, how, untrusted(output, self.KEEP_BYTES))
        if output:
            how += ": " + output
        return ContextError("kernel_start_failed", how)


def restarted_error() -> events.Event:
    """The ``error`` event for a cell whose kernel was replaced under it (it ignored an
    interrupt, or the context was restarted or removed)."""
    return events.error(
        "KernelRestarted",
        "the kernel was stopped while the cell ran (restart, removal, or an interrupt it "
        "ignored); its state is lost",
        "",
    )


def _retrieve_exception(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


class KernelContext(ABC):
    """Shared state and life cycle of a context; subclasses provide the kernel itself."""

    language: str

    def __init__(
        self,
        jail: Jail,
        *,
        cwd: str = DEFAULT_CWD,
        envs: Mapping[str, str] | None = None,
        context_id: str | None = None,
    ) -> None:
        self.jail = jail
        self.id = context_id or str(uuid.uuid4())
        self.cwd = cwd
        # Sandbox-level variables (create-time envVars), applied at every (re)start.
        self.envs: dict[str, str] = dict(envs or {})
        self._envs_changes = 0  # set_envs calls so far: a start compares before and after
        self.lock = asyncio.Lock()
        self.execution_count = 0
        self._start_task: asyncio.Task[None] | None = None
        self._closed = False

    def describe(self) -> dict[str, str]:
        """The context as the SDK's ``Context.from_json`` reads it."""
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    async def ensure_started(self) -> None:
        """Start the kernel if it is not running (or wait for a start/restart under way).

        Raises ContextError when the kernel cannot start.
        """
        if self._closed:
            raise ContextError("context_closed", f"context {self.id} was removed")
        # Twice: a background restart under way does not raise when it fails (it has no
        # caller), so after waiting for one the kernel may still be down; then a start of
        # our own reports why.
        for _attempt in range(2):
            if self.alive:
                return
            if self._start_task is None or self._start_task.done():
                self._start_task = asyncio.create_task(
                    prometheus.timed_kernel_start(self.language, self._start_with_envs())
                )
                # Its failure is the waiters' to report; when they all went away (the sandbox
                # was killed during a background warm-up) it is not an unhandled error.
                self._start_task.add_done_callback(_retrieve_exception)
            task = self._start_task
            try:
                # shield: a client giving up must not cancel a start others may be waiting on.
                await asyncio.shield(task)
            finally:
                if task.done() and self._start_task is task:
                    self._start_task = None
        if not self.alive:
            raise ContextError("kernel_died", "the kernel stopped as soon as it started")

    def schedule_restart(self) -> None:
        """Start a fresh kernel in the background after the old one died."""
        if self._closed or (self._start_task is not None and not self._start_task.done()):
            return
        self._start_task = asyncio.create_task(self._restart_quietly())

    async def _start_with_envs(self) -> None:
        # A kernel starts with the variables of its launch. Those set while it was starting
        # (a pooled sandbox's create sets envs while its JavaScript kernel still warms up)
        # are applied once it is up, or it would never see them.
        changes = self._envs_changes
        await self._start()
        if self._envs_changes != changes and self.alive:
            await self._apply_envs(dict(self.envs))

    async def _restart_quietly(self) -> None:
        try:
            await self._stop()
            await self._start_with_envs()
        except Exception:
            # The next run will try again and report the failure to its caller.
            logger.warning("context %s could not restart", self.id, exc_info=True)

    async def restart(self) -> None:
        """Replace the kernel with a fresh one (the state is lost; the id stays)."""
        if self._start_task is not None and not self._start_task.done():
            await asyncio.gather(self._start_task, return_exceptions=True)
        await self._stop()
        self.execution_count = 0
        await self.ensure_started()

    async def close(self) -> None:
        """Stop the kernel for good."""
        self._closed = True
        if self._start_task is not None and not self._start_task.done():
            self._start_task.cancel()
            await asyncio.gather(self._start_task, return_exceptions=True)
        await self._stop()

    async def set_envs(self, envs: Mapping[str, str]) -> None:
        """Add sandbox-level variables: kept for restarts and applied to the live kernel."""
        self.envs.update(envs)
        self._envs_changes += 1
        if self.alive:
            await self._apply_envs(envs)

    @property
    @abstractmethod
    def alive(self) -> bool:
        """Whether the kernel is up and ready for a run."""

    @abstractmethod
    async def _start(self) -> None:
        """Start the kernel and wait until it answers; raise ContextError on failure."""

    @abstractmethod
    async def _stop(self) -> None:
        """Stop the kernel (idempotent)."""

    @abstractmethod
    async def _apply_envs(self, envs: Mapping[str, str]) -> None:
        """Set variables in the live kernel's environment for good."""

    @abstractmethod
    async def run(self, code: str, env_vars: Mapping[str, str], emit: Emit) -> None:
        """Run one cell (the caller holds `lock`), emitting its events; see the module doc."""

    # Whether the next cell may ask for input (set by the service per run, under `lock`).
    stdin_allowed = False

    async def send_input(self, value: str) -> None:
        """Answer the running cell's pending input request; ContextError when none is
        pending (kernels without stdin never have one)."""
        raise ContextError("no_input_requested", "no cell of this context is waiting for input")

    @abstractmethod
    async def interrupt(self) -> None:
        """Ask the running cell to stop, keeping the kernel's state."""


class CellRun(Protocol):
    """What a process kernel's cell being run offers its life cycle: where events go, an end."""

    def emit(self, event: events.Event) -> None: ...

    def finish(self) -> None: ...


class ProcessKernelContext(KernelContext):
    """A context whose kernel is one process in the jail, read by background tasks.

    Owns the life cycle the kernels share: a failed start cleans up after itself, and a stop
    ends the running cell with a `KernelRestarted` error, kills the process and cancels the
    readers before the subclass frees what else it holds (`_release`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._proc: JailProcess | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._run: Any = None  # the subclass's CellRun while a cell runs
        self._ready = False
        self._oom_baseline = 0

    @property
    def alive(self) -> bool:
        return self._ready

    async def _start(self) -> None:
        try:
            await self._launch()
        except BaseException:
            await self._stop()
            raise

    async def _stop(self) -> None:
        self._ready = False
        run: CellRun | None
        run, self._run = self._run, None
        if run is not None:  # a restart or removal while a cell runs: the cell is over
            run.emit(restarted_error())
            run.finish()
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(Exception):
                await proc.signal(signal.SIGKILL)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._release()

    @abstractmethod
    async def _launch(self) -> None:
        """Start the kernel process and wait until it answers; raise ContextError on failure."""

    def _release(self) -> None:
        """Free what the kernel holds besides its process and tasks (idempotent)."""
