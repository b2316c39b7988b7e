"""An in-memory sandbox backend for the fast test tier of the Django side.

It implements the contract of base.py and nothing else, the way Django's `locmem` e-mail
backend implements sending: sandboxes are objects in this process, their files a dict, a
"run" is a *script* the test gives (`backend.script`; it may wait in `MemoryRun.input` for an
answer given with `send_input`), a command is recorded and answered by `backend.command` (or
`backend.command_script`, which prints as it goes), and a terminal echoes what is typed
(`MemoryTerminal`). It runs no code and never stands in for sandboxd in the integration tier.

A test reaches it through `execution.sandbox.get_backend()` with
`SANDBOX_BACKEND = "execution.sandbox.memory.MemoryBackend"` (the `memory_sandboxes`
fixture), and can make a sandbox vanish (`lose`) or the whole server unreachable
(`unavailable`) to drive the services' recovery paths.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from execution.sandbox.base import (
    BytesCallback,
    CommandResult,
    ErrorData,
    EventCallback,
    FileEntry,
    InputNotRequested,
    OutputCallback,
    ResultData,
    RunTimedOut,
    Sandbox,
    SandboxBackend,
    SandboxFileNotFound,
    SandboxGone,
    SandboxUnavailable,
    Terminal,
)


@dataclass
class MemoryRun:
    """One run, as its script sees it: emit events, touch files, wait for the test."""

    sandbox: MemorySandbox
    code: str
    language: str
    on_event: EventCallback
    allow_input: bool = False

    def stdout(self, text: str) -> None:
        self.on_event({"kind": "stdout", "text": text})

    def stderr(self, text: str) -> None:
        self.on_event({"kind": "stderr", "text": text})

    def result(self, result: ResultData) -> None:
        self.on_event({"kind": "result", "result": result})

    def error(self, name: str, value: str, traceback: str = "") -> None:
        self.on_event(
            {"kind": "error", "error": ErrorData(name=name, value=value, traceback=traceback)}
        )

    def write_file(self, path: str, data: bytes) -> None:
        self.sandbox.put(path, data)

    async def input(self, prompt: str = "", *, password: bool = False) -> str | None:
        """input() as sandboxd runs it: with `allow_input`, an `input_request` event, then
        the answer `send_input` gives (echoed with the prompt as stdout); without it, the
        error E2B's kernels raise, and None."""
        if not self.allow_input:
            self.error("StdinNotImplementedError", "raw_input was called, but this frontend "
                       "does not support input requests.")  # fmt: skip
            return None
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.sandbox.waiting[self.language] = answer
        self.on_event({"kind": "input_request", "prompt": prompt, "password": password})
        try:
            value = await answer
        finally:
            self.sandbox.waiting.pop(self.language, None)
        self.stdout(f"{prompt}{'' if password else value}\n")
        return value

    async def until(self, event: threading.Event, limit: float = 30.0) -> None:
        """Wait (without blocking the loop) until the test sets `event`."""
        if not await asyncio.to_thread(event.wait, limit):
            raise AssertionError("the test never released the run")


Script = Callable[[MemoryRun], Awaitable[None]]
# A command that takes its time and prints as it goes (an install with a live log).
CommandScript = Callable[[list[str], OutputCallback], Awaitable[CommandResult]]


class MemoryTerminal(Terminal):
    """A terminal that echoes what is typed, as a tty does, and keeps it (`typed`); the test
    ends the shell with `exit` (from any thread)."""

    def __init__(self, cols: int, rows: int, cwd: str, on_output: BytesCallback) -> None:
        self.size = (cols, rows)
        self.cwd = cwd
        self.on_output = on_output
        self.typed: list[bytes] = []
        self.exit_code: int | None = None
        self.killed = False
        self._loop = asyncio.get_running_loop()
        self._ended = asyncio.Event()

    async def send(self, data: bytes) -> None:
        if self._ended.is_set():
            raise SandboxGone("the shell has ended")
        self.typed.append(data)
        self.on_output(data)

    async def resize(self, *, cols: int, rows: int) -> None:
        self.size = (cols, rows)

    async def wait(self) -> int | None:
        await self._ended.wait()
        return self.exit_code

    async def kill(self) -> None:
        self.killed = True
        self._ended.set()

    def exit(self, code: int = 0) -> None:
        """The shell ends by itself with `code` (as `exit` typed in it would)."""

        def end() -> None:
            self.exit_code = code
            self._ended.set()

        self._loop.call_soon_threadsafe(end)


async def silent_script(run: MemoryRun) -> None:
    """The default script: the run prints nothing and succeeds."""


@dataclass
class MemorySandbox(Sandbox):
    """A sandbox that is a dict of files and a log of what was asked of it."""

    backend: MemoryBackend
    sandbox_id: str
    metadata: dict[str, str]
    files: dict[str, tuple[bytes, dt.datetime]] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)
    runs: list[tuple[str, str]] = field(default_factory=list)
    terminals: list[MemoryTerminal] = field(default_factory=list)
    # language → the answer its running cell waits for in input()
    waiting: dict[str, asyncio.Future[str]] = field(default_factory=dict)
    alive: bool = True

    def put(self, path: str, data: bytes) -> None:
        self.files[path] = (data, dt.datetime.now(dt.UTC))

    def _check(self) -> None:
        self.backend.check_available()
        if not self.alive:
            raise SandboxGone(f"sandbox {self.sandbox_id} is gone")

    async def run_code(
        self,
        code: str,
        *,
        language: str,
        time_limit: float,
        on_event: EventCallback,
        allow_input: bool = False,
        run_id: str | None = None,
    ) -> None:
        self._check()
        self.runs.append((language, code))
        run = MemoryRun(self, code, language, on_event, allow_input=allow_input)
        try:
            async with asyncio.timeout(time_limit):
                await self.backend.script(run)
        except TimeoutError as exc:
            raise RunTimedOut(f"the run did not finish within {time_limit} s") from exc
        if not self.alive:  # lost while running
            raise SandboxGone(f"sandbox {self.sandbox_id} stopped during the run")

    async def send_input(self, language: str, value: str) -> None:
        self._check()
        answer = self.waiting.get(language)
        if answer is None or answer.done():
            raise InputNotRequested(f"no {language} cell waits for input")
        answer.set_result(value)

    async def list_files(self, path: str, *, depth: int) -> list[FileEntry]:
        self._check()
        prefix = path.rstrip("/") + "/"
        entries: dict[str, FileEntry] = {}
        for name, (data, modified) in self.files.items():
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix) :].split("/")
            if len(parts) > depth:
                continue
            for level in range(1, len(parts)):
                directory = prefix + "/".join(parts[:level])
                entries[directory] = FileEntry(directory, "dir", 0, modified)
            entries[name] = FileEntry(name, "file", len(data), modified)
        return list(entries.values())

    async def file_info(self, path: str) -> FileEntry:
        self._check()
        if path not in self.files:
            raise SandboxFileNotFound(path)
        data, modified = self.files[path]
        return FileEntry(path, "file", len(data), modified)

    async def read_file(self, path: str) -> bytes:
        self._check()
        if path not in self.files:
            raise SandboxFileNotFound(path)
        return self.files[path][0]

    async def write_files(self, files: Mapping[str, bytes]) -> None:
        self._check()
        for path, data in files.items():
            self.put(path, data)

    async def remove_file(self, path: str) -> None:
        self._check()
        if self.files.pop(path, None) is None:
            raise SandboxFileNotFound(path)

    async def run_command(
        self,
        argv: list[str],
        *,
        cwd: str,
        time_limit: float,
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        self._check()
        self.commands.append(list(argv))
        if self.backend.command_script is not None:
            return await self.backend.command_script(argv, on_output or (lambda text: None))
        result = self.backend.command(argv)
        if on_output is not None:
            for text in (result.stdout, result.stderr):
                if text:
                    on_output(text)
        return result

    async def open_terminal(
        self, *, cols: int, rows: int, cwd: str, on_output: BytesCallback
    ) -> Terminal:
        self._check()
        terminal = MemoryTerminal(cols, rows, cwd, on_output)
        self.terminals.append(terminal)
        return terminal

    async def keep_alive(self, seconds: int) -> None:
        self._check()

    async def is_running(self) -> bool:
        return self.alive and not self.backend.unavailable

    async def kill(self) -> None:
        self.backend.check_available()
        self.alive = False


class MemoryBackend(SandboxBackend):
    """Sandboxes in a dict; the knobs a test turns are plain attributes."""

    accepts_input = True

    def __init__(self) -> None:
        self.sandboxes: dict[str, MemorySandbox] = {}
        self.script: Script = silent_script
        self.command: Callable[[list[str]], CommandResult] = lambda argv: CommandResult(
            0, "installed\n", ""
        )
        self.command_script: CommandScript | None = None
        self.unavailable = False
        self._ids = itertools.count(1)

    def check_available(self) -> None:
        if self.unavailable:
            raise SandboxUnavailable("the in-memory sandbox server is set unavailable")

    def lose(self, sandbox_id: str) -> None:
        """Make a sandbox vanish behind the services' back (killed, expired)."""
        self.sandboxes[sandbox_id].alive = False

    def live(self) -> list[MemorySandbox]:
        return [sandbox for sandbox in self.sandboxes.values() if sandbox.alive]

    async def create(self, *, metadata: Mapping[str, str], lifetime: int) -> Sandbox:
        self.check_available()
        sandbox = MemorySandbox(self, f"memory-{next(self._ids)}", dict(metadata))
        self.sandboxes[sandbox.sandbox_id] = sandbox
        return sandbox

    async def connect(self, sandbox_id: str, *, lifetime: int) -> Sandbox:
        self.check_available()
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None or not sandbox.alive:
            raise SandboxGone(f"sandbox {sandbox_id} is gone")
        return sandbox

    async def kill(self, sandbox_id: str) -> bool:
        self.check_available()
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None or not sandbox.alive:
            return False
        sandbox.alive = False
        return True
