"""The production sandbox backend: the official e2b SDK (`e2b-code-interpreter`).

Which server the SDK talks to is configuration only: sandboxd (SANDBOXD_URL, API and sandbox
URL alike) by default, E2B's cloud when E2B_API_KEY is set (E2B_DOMAIN for a self-hosted
E2B). This is the one module that knows the SDK's types and exceptions: `_mapped` turns each
into the contract's (base.py).
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from django.conf import settings
from e2b import (
    AsyncCommandHandle,
    AuthenticationException,
    CommandExitException,
    EntryInfo,
    FileNotFoundException,
    FileType,
    NotFoundException,
    PtySize,
    RateLimitException,
    SandboxException,
    SandboxNotRunningException,
    SandboxUnreachableException,
    ServiceBusyException,
    TimeoutException,
)
from e2b_code_interpreter import E2B, AsyncSandbox
from e2b_code_interpreter.constants import JUPYTER_PORT
from e2b_code_interpreter.models import ExecutionError, OutputMessage, Result

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
    SandboxRateLimited,
    SandboxUnavailable,
    Terminal,
)

# Result fields kept from the SDK's Result (the E2B result formats).
RESULT_FORMATS = (
    "text", "html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "json", "javascript",
    "data", "extra",
)  # fmt: skip


# How sandboxd marks an input() request (a result with this MIME type in `extra`, the one
# event shape the SDK passes on whole) and how a run asks to be allowed input() (a reserved
# env var sandboxd takes out): sandboxd's interpreter/events.py and interpreter/service.py.
INPUT_REQUEST_MIME = "application/vnd.sandboxd.input-request+json"
STDIN_ENV = "SANDBOXD_ALLOW_STDIN"
# The reserved env var that names a run for sandboxd to meter (interpreter/service.py).
RUN_ID_ENV = "SANDBOXD_RUN_ID"
# How long answering an input() may take (it is one small POST).
INPUT_REQUEST_TIMEOUT = 10.0


def client_options() -> dict[str, str]:
    """The SDK connection options from settings (sandboxd by default, E2B when keyed)."""
    if settings.E2B_API_KEY:
        options = {"api_key": settings.E2B_API_KEY}
        if settings.E2B_DOMAIN:
            options["domain"] = settings.E2B_DOMAIN
        return options
    return {
        # The SDK requires a key outside debug mode; sandboxd without one accepts any.
        "api_key": settings.SANDBOXD_API_KEY or "sandboxd-local",
        "api_url": settings.SANDBOXD_URL,
        "sandbox_url": settings.SANDBOXD_URL,
    }


def _is_execution_timeout(exc: TimeoutException) -> bool:
    # The SDK raises TimeoutException both for the code's own time limit and for a sandbox
    # that stopped answering; only the first says so in its message.
    return not isinstance(exc, SandboxNotRunningException | SandboxUnreachableException) and (
        "Execution timed out" in str(exc)
    )


@contextlib.asynccontextmanager
async def _mapped(*, run: bool = False) -> AsyncIterator[None]:
    """Translate the SDK's and the transport's exceptions into the contract's, once."""
    try:
        yield
    except FileNotFoundException as exc:
        raise SandboxFileNotFound(str(exc)) from exc
    except TimeoutError as exc:
        if run:
            raise RunTimedOut(str(exc)) from exc
        raise SandboxUnavailable(f"TimeoutError: {exc}") from exc
    except TimeoutException as exc:
        if run and _is_execution_timeout(exc):
            raise RunTimedOut(str(exc)) from exc
        # A sandbox that stopped answering, or the proxy's 502 for one it no longer knows.
        raise SandboxGone(f"{type(exc).__name__}: {exc}") from exc
    except NotFoundException as exc:
        raise SandboxGone(f"{type(exc).__name__}: {exc}") from exc
    except RateLimitException as exc:
        raise SandboxRateLimited(f"{type(exc).__name__}: {exc}") from exc
    except AuthenticationException as exc:
        raise SandboxUnavailable("the sandbox service refused our credentials") from exc
    except ServiceBusyException as exc:
        raise SandboxUnavailable("the sandbox service has no capacity right now") from exc
    except (SandboxException, httpx.HTTPError, OSError) as exc:
        raise SandboxUnavailable(f"{type(exc).__name__}: {exc}") from exc


def _entry(info: EntryInfo) -> FileEntry:
    kind = {FileType.FILE: "file", FileType.DIR: "dir", FileType.SYMLINK: "symlink"}.get(
        info.type, "other"
    ) if info.type is not None else "other"  # fmt: skip
    # envd (E2B's, and sandboxd's since parity) reports a link as the type of its target,
    # with symlink_target set: it is a link all the same, never synced as a file.
    if getattr(info, "symlink_target", None):
        kind = "symlink"
    return FileEntry(path=info.path, type=kind, size=info.size, modified_time=info.modified_time)  # type: ignore[arg-type]


def result_data(result: Result) -> ResultData:
    """The contract's ResultData of one SDK Result (its formats, chart data included)."""
    data: dict[str, Any] = {}
    for name in RESULT_FORMATS:
        value = getattr(result, name, None)
        if value:
            data[name] = value
    chart = getattr(result, "chart", None)
    if chart is not None:
        data["chart"] = chart.to_dict()
    data["is_main_result"] = bool(result.is_main_result)
    return ResultData(**data)  # type: ignore[typeddict-item]


def _input_request(result: Result) -> dict[str, Any] | None:
    """The input() request a result from sandboxd stands for, if it is one."""
    request = (result.extra or {}).get(INPUT_REQUEST_MIME)
    return request if isinstance(request, dict) else None


class E2BTerminal(Terminal):
    """A PTY started with the SDK's `sandbox.pty`."""

    def __init__(self, sdk: AsyncSandbox, handle: AsyncCommandHandle) -> None:
        self.sdk = sdk
        self.handle = handle
        self.pid = handle.pid

    async def send(self, data: bytes) -> None:
        async with _mapped():
            await self.sdk.pty.send_stdin(self.pid, data)

    async def resize(self, *, cols: int, rows: int) -> None:
        async with _mapped():
            await self.sdk.pty.resize(self.pid, PtySize(rows=rows, cols=cols))

    async def wait(self) -> int | None:
        async with _mapped():
            try:
                return (await self.handle.wait()).exit_code
            except CommandExitException as exc:  # a shell that ended with a non-zero status
                return exc.exit_code

    async def kill(self) -> None:
        with contextlib.suppress(SandboxGone):
            async with _mapped():
                await self.sdk.pty.kill(self.pid)


class E2BSandbox(Sandbox):
    """A sandbox reached through the SDK's AsyncSandbox."""

    def __init__(self, sdk: AsyncSandbox) -> None:
        self.sdk = sdk
        self.sandbox_id = sdk.sandbox_id

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
        envs = {STDIN_ENV: "1"} if allow_input else {}
        if run_id is not None and not settings.E2B_API_KEY:
            # Only sandboxd takes the variable out; on E2B's cloud the cell would see it.
            envs[RUN_ID_ENV] = run_id

        def on_stdout(message: OutputMessage) -> None:
            on_event({"kind": "stdout", "text": message.line})

        def on_stderr(message: OutputMessage) -> None:
            on_event({"kind": "stderr", "text": message.line})

        def on_result(result: Result) -> None:
            request = _input_request(result) if allow_input else None
            if request is not None:
                on_event({
                    "kind": "input_request", "prompt": str(request.get("prompt", "")),
                    "password": bool(request.get("password")),
                })  # fmt: skip
            else:
                on_event({"kind": "result", "result": result_data(result)})

        def on_error(error: ExecutionError) -> None:
            data = ErrorData(name=error.name, value=error.value, traceback=error.traceback)
            on_event({"kind": "error", "error": data})

        async with _mapped(run=True):
            await self.sdk.run_code(
                code, language=language, timeout=time_limit, on_stdout=on_stdout,
                on_stderr=on_stderr, on_result=on_result, on_error=on_error,
                envs=envs or None,
            )  # fmt: skip

    async def send_input(self, language: str, value: str) -> None:
        # The SDK has no call for sandboxd's `POST /contexts/{id}/input`: it is sent with the
        # SDK's own client, URL and headers, to the default context of `language` (which
        # sandboxd lists first among that language's contexts).
        sdk = self.sdk
        async with _mapped():
            contexts = await sdk.list_code_contexts()
            context = next((c for c in contexts if c.language == language), None)
            if context is None:
                raise InputNotRequested(f"no {language} context runs in the sandbox")
            headers = {"E2b-Sandbox-Id": sdk.sandbox_id, "E2b-Sandbox-Port": str(JUPYTER_PORT)}
            if sdk._envd_access_token:
                headers["X-Access-Token"] = sdk._envd_access_token
            if sdk.traffic_access_token:
                headers["E2B-Traffic-Access-Token"] = sdk.traffic_access_token
            response = await sdk._client.post(
                f"{sdk._jupyter_url}/contexts/{context.id}/input",
                json={"value": value}, headers=headers, timeout=INPUT_REQUEST_TIMEOUT,
            )  # fmt: skip
        if response.status_code == 409:
            raise InputNotRequested("no cell waits for input")
        if response.status_code == 404:
            raise SandboxGone(f"the sandbox's interpreter answered 404: {response.text[:200]}")
        if response.status_code >= 400:
            raise SandboxUnavailable(
                f"the sandbox refused the input ({response.status_code}): {response.text[:200]}"
            )

    async def list_files(self, path: str, *, depth: int) -> list[FileEntry]:
        async with _mapped():
            return [_entry(info) for info in await self.sdk.files.list(path, depth=depth)]

    async def file_info(self, path: str) -> FileEntry:
        async with _mapped():
            return _entry(await self.sdk.files.get_info(path))

    async def read_file(self, path: str) -> bytes:
        async with _mapped():
            return bytes(await self.sdk.files.read(path, format="bytes"))

    async def write_files(self, files: Mapping[str, bytes]) -> None:
        if not files:
            return
        async with _mapped():
            if len(files) == 1:
                ((path, data),) = files.items()
                await self.sdk.files.write(path, data)
            else:
                entries: list[Any] = [{"path": p, "data": d} for p, d in files.items()]
                await self.sdk.files.write_files(entries)

    async def remove_file(self, path: str) -> None:
        async with _mapped():
            await self.sdk.files.remove(path)

    async def run_command(
        self,
        argv: list[str],
        *,
        cwd: str,
        time_limit: float,
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        # The SDK takes one command line that the sandbox runs with `bash -c`: every argv
        # element is quoted, so none can be more than one argument.
        command = shlex.join(argv)
        async with _mapped():
            try:
                result = await self.sdk.commands.run(
                    command, cwd=cwd, timeout=time_limit, on_stdout=on_output,
                    on_stderr=on_output,
                )  # fmt: skip
            except CommandExitException as exc:
                return CommandResult(exc.exit_code, exc.stdout or "", exc.stderr or "")
        return CommandResult(result.exit_code, result.stdout or "", result.stderr or "")

    async def open_terminal(
        self, *, cols: int, rows: int, cwd: str, on_output: BytesCallback
    ) -> Terminal:
        async with _mapped():
            handle = await self.sdk.pty.create(
                PtySize(rows=rows, cols=cols), on_data=on_output, cwd=cwd,
                timeout=0,  # the shell lives as long as its user wants, not a fixed time
            )  # fmt: skip
        return E2BTerminal(self.sdk, handle)

    async def keep_alive(self, seconds: int) -> None:
        async with _mapped():
            await self.sdk.set_timeout(seconds)

    async def is_running(self) -> bool:
        try:
            async with _mapped():
                return bool(await self.sdk.is_running())
        except (SandboxUnavailable, SandboxGone):
            return False

    async def kill(self) -> None:
        with contextlib.suppress(SandboxGone):
            async with _mapped():
                await self.sdk.kill()


class E2BBackend(SandboxBackend):
    """Sandboxes from the configured E2B-compatible server."""

    def __init__(self) -> None:
        # sandboxd answers input() (its stdin extension); E2B's cloud kernels take no input.
        self.accepts_input = not settings.E2B_API_KEY
        # E2B(...) binds the options to a subclass, so the process environment (E2B_*
        # variables the SDK would otherwise read) never changes where our sandboxes go.
        self.options = client_options()
        self.sdk_class: type[AsyncSandbox] = E2B(**self.options).AsyncSandbox

    async def create(self, *, metadata: Mapping[str, str], lifetime: int) -> Sandbox:
        async with _mapped():
            sdk = await self.sdk_class.create(
                template=settings.SANDBOX_TEMPLATE, timeout=lifetime, metadata=dict(metadata)
            )
        return E2BSandbox(sdk)

    async def connect(self, sandbox_id: str, *, lifetime: int) -> Sandbox:
        async with _mapped():
            sdk = await self.sdk_class.connect(sandbox_id, timeout=lifetime)
        return E2BSandbox(sdk)

    async def kill(self, sandbox_id: str) -> bool:
        try:
            async with _mapped():
                return bool(await self.sdk_class.kill(sandbox_id))
        except SandboxGone:
            return False
