"""The sandbox contract: what the execution services need from a sandbox, and nothing more.

In the style of Django's session backends: this module states the contract in docstrings,
one module per implementation provides it, and settings choose one by dotted path
(`SANDBOX_BACKEND`, read by `execution.sandbox.get_backend`):

* `execution.sandbox.e2b.E2BBackend` — production: the official e2b SDK, talking to sandboxd
  (the default) or E2B's cloud. The SDK's types and exceptions are mapped there, once.
* `execution.sandbox.memory.MemoryBackend` — an in-memory stand-in for the fast test tier of
  the Django side. It implements this contract and nothing else; it never stands in for
  sandboxd in the integration tier.

Every method is a coroutine: the services run them on their service portal (runtime.py).
Failures are exactly the exceptions below; nothing else escapes an implementation except
`asyncio.CancelledError` (a cancelled run) and programming errors.

Code runs in the sandbox's *default context* of its language: each sandbox belongs to one
thread, so the default context is the thread's context (state carries from run to run), its
working directory is the workspace `/home/user`, and a pooled sandbox has its Python context
already started — a new thread's first run starts no kernel.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict

# --- failures ---------------------------------------------------------------------------------


class SandboxError(Exception):
    """Base of the contract's failures."""


class SandboxGone(SandboxError):
    """The sandbox does not exist any more (killed, expired, its server restarted): create a
    new one (and restore the thread into it) rather than fail."""


class SandboxUnavailable(SandboxError):
    """The sandbox server cannot be reached or failed; `reason` says how (for the logs and the
    503's details). Nothing the user asked for is lost."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SandboxRateLimited(SandboxUnavailable):
    """The sandbox server is rate limiting us: the client should retry after a pause (429)."""


class SandboxFileNotFound(SandboxError):
    """No file (or directory) at that path in the sandbox."""


class RunTimedOut(SandboxError):
    """The code ran past its time limit; the sandbox and its context survive."""


class InputNotRequested(SandboxError):
    """`Sandbox.send_input` found no running cell waiting in input() for an answer."""


# --- what a run emits -------------------------------------------------------------------------


class ResultData(TypedDict, total=False):
    """One rich result: the formats it has (E2B's result formats) and `is_main_result`."""

    text: str
    html: str
    markdown: str
    svg: str
    png: str
    jpeg: str
    pdf: str
    latex: str
    json: object
    javascript: str
    data: object
    extra: object
    chart: object  # E2B chart data (the e2b/chart MIME type), as its JSON, for the page to draw
    is_main_result: bool


class ErrorData(TypedDict):
    """An error raised by the code (or an infrastructure error in the same shape, with
    `code`)."""

    name: str
    value: str
    traceback: str
    code: NotRequired[str]


class OutputEvent(TypedDict):
    kind: Literal["stdout", "stderr"]
    text: str


class ResultEvent(TypedDict):
    kind: Literal["result"]
    result: ResultData


class ErrorEvent(TypedDict):
    kind: Literal["error"]
    error: ErrorData


class InputRequestEvent(TypedDict):
    """The code waits in input() for an answer (`Sandbox.send_input`); only in runs started
    with `allow_input`. Not output: the server echoes the prompt and the answer as stdout."""

    kind: Literal["input_request"]
    prompt: str
    password: bool


SandboxEvent = OutputEvent | ResultEvent | ErrorEvent | InputRequestEvent
EventCallback = Callable[[SandboxEvent], None]
# Text a command prints (stdout and stderr alike), as it comes.
OutputCallback = Callable[[str], None]
# Bytes a terminal prints, as they come.
BytesCallback = Callable[[bytes], None]

# --- files and commands -----------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One entry of a sandbox's filesystem."""

    path: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    modified_time: dt.datetime


@dataclass(frozen=True)
class CommandResult:
    """How a command ended: its exit code and what it printed."""

    exit_code: int
    stdout: str
    stderr: str


class Terminal(ABC):
    """A shell on a pseudo-terminal in a sandbox (`Sandbox.open_terminal`). Its output goes to
    the `on_output` it was opened with, as bytes (a UTF-8 character may straddle two calls)."""

    @abstractmethod
    async def send(self, data: bytes) -> None:
        """Type `data` into the terminal."""

    @abstractmethod
    async def resize(self, *, cols: int, rows: int) -> None:
        """Set the terminal's size in characters."""

    @abstractmethod
    async def wait(self) -> int | None:
        """Return when the shell has ended (its exit code where the server says it)."""

    @abstractmethod
    async def kill(self) -> None:
        """End the shell (nothing when it has already ended)."""


# --- the contract -----------------------------------------------------------------------------


class Sandbox(ABC):
    """One live sandbox. `sandbox_id` names it to `SandboxBackend.connect`/`kill`."""

    sandbox_id: str

    @abstractmethod
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
        """Run `code` in the default context of `language`, calling `on_event` for each
        stdout/stderr line, rich result and code error, in order, as they come.

        `run_id` names the run to a backend that meters runs (sandboxd: its CPU time and
        memory peak, execution/monitoring/usage.py); others ignore it.

        With `allow_input` (only where the backend's `accepts_input`) the code may call
        input(): each call is an `input_request` event, and the run waits for
        `send_input`. Without it input() fails at once, as on E2B's cloud.

        Returns when the code finished, also when it raised (its error was an event).
        Raises RunTimedOut after `time_limit` seconds, SandboxGone when the sandbox vanished
        (before or during the run: the caller tells the two apart by the events it got),
        SandboxUnavailable when its server failed."""

    @abstractmethod
    async def send_input(self, language: str, value: str) -> None:
        """Answer the input() that the running cell of `language`'s default context waits
        for; InputNotRequested when no cell waits."""

    @abstractmethod
    async def list_files(self, path: str, *, depth: int) -> list[FileEntry]:
        """Every entry under directory `path`, `depth` levels deep (symlinks not followed)."""

    @abstractmethod
    async def file_info(self, path: str) -> FileEntry:
        """The entry at `path`; SandboxFileNotFound when there is none."""

    @abstractmethod
    async def read_file(self, path: str) -> bytes:
        """The bytes of the file at `path`; SandboxFileNotFound when there is none."""

    @abstractmethod
    async def write_files(self, files: Mapping[str, bytes]) -> None:
        """Write each `path: data` (creating parent directories), in one call."""

    @abstractmethod
    async def remove_file(self, path: str) -> None:
        """Remove the file at `path`; SandboxFileNotFound when there is none."""

    @abstractmethod
    async def run_command(
        self,
        argv: list[str],
        *,
        cwd: str,
        time_limit: float,
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        """Run `argv` (never through a shell with unquoted user text) and wait for it. A
        non-zero exit is a result, not an exception. `on_output`, if given, gets what the
        command prints (stdout and stderr) as it comes, besides the whole in the result."""

    @abstractmethod
    async def open_terminal(
        self, *, cols: int, rows: int, cwd: str, on_output: BytesCallback
    ) -> Terminal:
        """Start a login shell on a pseudo-terminal of `cols` x `rows` in `cwd`, living until
        it exits or is killed (no time limit of its own)."""

    @abstractmethod
    async def keep_alive(self, seconds: int) -> None:
        """Push the sandbox's end of life to `seconds` from now (SandboxGone if it is gone)."""

    @abstractmethod
    async def is_running(self) -> bool:
        """Whether the sandbox still answers."""

    @abstractmethod
    async def kill(self) -> None:
        """End the sandbox (nothing when it is already gone)."""


class SandboxBackend(ABC):
    """Creates and finds sandboxes. One instance per process, shared by every thread."""

    # Whether its sandboxes take answers to input() (`run_code(allow_input=True)`).
    accepts_input: bool = False

    @abstractmethod
    async def create(self, *, metadata: Mapping[str, str], lifetime: int) -> Sandbox:
        """A new sandbox (from the server's warm pool where it has one), alive for
        `lifetime` seconds unless kept alive. SandboxUnavailable when none can be had."""

    @abstractmethod
    async def connect(self, sandbox_id: str, *, lifetime: int) -> Sandbox:
        """The live sandbox `sandbox_id`, its life extended to `lifetime` seconds; SandboxGone
        when it no longer exists."""

    @abstractmethod
    async def kill(self, sandbox_id: str) -> bool:
        """End sandbox `sandbox_id`; True if it existed."""
