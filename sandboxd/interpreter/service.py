"""The code interpreter of one sandbox: E2B's port-49999 HTTP API over the contexts.

SP's server has already checked the tokens and found the sandbox; it hands every request with
``E2b-Sandbox-Port: 49999`` to :meth:`Interpreter.handle`. Routes:

* ``GET /health`` → 200.
* ``POST /execute`` ``{code, context_id?, language?, env_vars?}`` → 200 and one JSON event per
  line as it happens (``events``), with a keepalive line every few seconds while quiet.
  Both ``context_id`` and ``language`` → 400; an unknown context → 404; no language → Python.
  The client closing the connection interrupts the run; the context stays usable.
* ``POST /contexts`` ``{language?, cwd?}`` → ``{id, language, cwd}``; ``GET /contexts``;
  ``POST /contexts/{id}/restart``; ``DELETE /contexts/{id}`` (404 when unknown).
* Ours, beyond E2B: a run whose ``env_vars`` hold ``SANDBOXD_ALLOW_STDIN=1`` may call
  ``input()`` (Python); the cell then sends an input-request event (``events.input_request``)
  and waits for ``POST /contexts/{id}/input`` ``{value}`` (204; 409 when nothing waits).
* Ours too: a run whose ``env_vars`` hold ``SANDBOXD_RUN_ID=<id>`` (letters, digits, ``-``,
  at most 64) is metered: its CPU time and the memory peak during it are served at
  ``GET /sandboxes/{sandbox}/runs/{id}/usage`` (sandboxd/prometheus.py), read by the client
  in one call after the run instead of a reading before and one after.

Errors are JSON ``{"code": <http status>, "error": <stable code>, "message": …}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sandboxd.interpreter import events
from sandboxd.interpreter.bash_kernel import BashContext
from sandboxd.interpreter.contexts import (
    DEFAULT_CWD,
    MAX_OUTPUT_BYTES,
    ContextError,
    KernelContext,
    normalize_language,
)
from sandboxd.interpreter.node_kernel import NodeContext, TypeScriptContext
from sandboxd.interpreter.python_kernel import PythonContext
from sandboxd.prometheus import UsageMeter, meter_for

if TYPE_CHECKING:
    from sandboxd.jail import Jail

logger = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 5.0
# The /execute env var by which a client asks that the cell may call input() (it answers
# with POST /contexts/{id}/input); without it input() fails at once, as on E2B.
STDIN_ENV = "SANDBOXD_ALLOW_STDIN"
# The /execute env var that names a run to meter (see the module doc); taken out like STDIN_ENV.
RUN_ID_ENV = "SANDBOXD_RUN_ID"
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9-]{1,64}")
# One line of input, at most (characters).
MAX_INPUT_CHARS = 64 * 1024
# How often a quiet run checks whether its client went away (aiohttp does not cancel the
# handler on disconnect unless the server asks it to; both cases are handled).
DISCONNECT_POLL_SECONDS = 0.1
# The default contexts GET /contexts always lists (E2B's template starts these two).
LISTED_DEFAULT_LANGUAGES = ("python", "javascript")

# Bytes of encoded events that may wait for a run's client before its kernel's reader waits.
PIPE_BACKLOG_BYTES = 1 << 20
# Characters kept of each field of an error that arrives past the output cap.
ERROR_KEPT_CHARS = 4096

_CONTEXT_CLASSES: dict[str, type[KernelContext]] = {
    "python": PythonContext,
    "javascript": NodeContext,
    "typescript": TypeScriptContext,
    "bash": BashContext,
}


class EventPipe:
    """The events of one run, from the kernel (an ``Emit``) to the HTTP writer (``take``).

    The one place a run's output is accounted for. Every event is encoded as it arrives and
    counted, whatever its kind (streams, results with their ``json``/``extra`` payloads,
    errors): past `limit` bytes a stream chunk is cut to fit, one stderr line says output
    was dropped, the first error still passes (cut to ERROR_KEPT_CHARS a field) and the rest
    is dropped. Between kernel and client at most about `backlog` bytes wait: past that the
    kernel's reader waits in ``room()`` until the client has taken them (back-pressure), and
    a pipe whose client left (``close``) drops everything and never makes anyone wait.
    """

    def __init__(self, limit: int = MAX_OUTPUT_BYTES, backlog: int = PIPE_BACKLOG_BYTES) -> None:
        self._lines: list[bytes] = []
        self._queued = 0
        self._left = limit
        self._limit = limit
        self._backlog = backlog
        self._truncated = False
        self._error_passed = False
        self.ended = False  # END_OF_EXECUTION was queued: the run is over
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()

    def __call__(self, event: events.Event) -> None:
        """Queue one event (within the cap) and wake the writer."""
        if self._closed or self.ended:
            return
        if event is events.END_OF_EXECUTION:
            self.ended = True
            self._queue(events.encode(event))
            return
        line = events.encode(event)
        if len(line) <= self._left:
            self._left -= len(line)
            self._queue(line)
            return
        if event["type"] in ("stdout", "stderr") and not self._truncated:
            self._queue_fitting(event, line)
        elif event["type"] == "error" and not self._error_passed:
            self._queue(
                events.encode(
                    events.error(
                        str(event.get("name", ""))[:ERROR_KEPT_CHARS],
                        str(event.get("value", ""))[:ERROR_KEPT_CHARS],
                        str(event.get("traceback", ""))[-ERROR_KEPT_CHARS:],
                    )
                )
            )
        if event["type"] == "error":
            self._error_passed = True
        self._left = 0
        if not self._truncated:
            self._truncated = True
            notice = f"\n[sandboxd: output truncated after {self._limit} bytes]\n"
            self._queue(events.encode(events.stream("stderr", notice)))

    def _queue_fitting(self, event: events.Event, line: bytes) -> None:
        """Queue what fits of a stream chunk in what is left (one chunk can be a whole
        cell's output); JSON escapes make the encoded text longer, hence the loop."""
        text: str = event["text"]
        while text:
            over = len(line) - self._left
            if over <= 0:
                self._queue(line)
                return
            raw = text.encode("utf-8", "surrogatepass")
            text = raw[: max(0, len(raw) - over)].decode("utf-8", "ignore")
            line = events.encode({**event, "text": text})

    def _queue(self, line: bytes) -> None:
        self._lines.append(line)
        self._queued += len(line)
        if self._queued > self._backlog:
            self._drained.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def room(self) -> None:
        """Return once the client has taken the backlog (or left)."""
        await self._drained.wait()

    @property
    def pending(self) -> bool:
        """Whether lines wait to be taken."""
        return bool(self._lines)

    def close(self) -> None:
        """The client left: drop what is queued and all that comes; release any waiter."""
        self._closed = True
        self._lines.clear()
        self._queued = 0
        self._drained.set()

    async def take(self, wait_seconds: float) -> bytes:
        """Every queued event's line, waiting up to `wait_seconds` for one; b"" if none."""
        if not self._lines:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(wait_seconds, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        lines, self._lines = self._lines, []
        self._queued = 0
        self._drained.set()
        return b"".join(lines)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class RequestError(Exception):
    """A request the interpreter refuses: HTTP `status`, stable `code`, readable `message`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": status, "error": code, "message": message}, status=status)


def _check_env_mapping(value: Any, field: str) -> dict[str, str]:
    """`value` as environment variables; RequestError(400) for anything that is not one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(400, "invalid_env_vars", f"{field} must be an object")
    checked: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise RequestError(400, "invalid_env_vars", f"invalid variable name {key!r}")
        if not isinstance(val, str) or "\0" in val:
            raise RequestError(400, "invalid_env_vars", f"variable {key!r} must be a string")
        checked[key] = val
    return checked


# Languages whose default context a pooled sandbox starts ahead of its first run.
WARM_LANGUAGES = ("python", "javascript")


class Interpreter:
    """The contexts of one sandbox and the HTTP API over them (see the module doc)."""

    def __init__(self, jail: Jail) -> None:
        self.jail = jail
        self._contexts: dict[str, KernelContext] = {}
        self._defaults: dict[str, str] = {}  # language → id of its default context
        self._envs: dict[str, str] = {}
        # One lock per language: starting one language's default context must not hold up a
        # run of another whose context is already up.
        self._default_locks: dict[str, asyncio.Lock] = {}
        self._background_warm: asyncio.Task[None] | None = None
        self._closed = False

    # --- the Python API (SP's pool and lifecycle) ---------------------------------------

    async def warm(self) -> None:
        """Start the default Python context, so the first run finds a live kernel; then the
        other WARM_LANGUAGES in the background (the sandbox is ready as soon as Python is; a
        first run of another language waits for that start instead of beginning its own).
        Clients such as AtlasChat run a new thread's code in the default contexts: no kernel
        start on their request path."""
        first, *rest = WARM_LANGUAGES
        await self._default_context(first)
        if rest:
            self._background_warm = asyncio.create_task(self._warm_quietly(rest))

    async def _warm_quietly(self, languages: list[str]) -> None:
        for language in languages:
            try:
                await self._default_context(language)
            except Exception:
                # Not fatal: the first run of that language starts the context itself.
                logger.warning("warming the %s context failed", language, exc_info=True)

    async def set_envs(self, envs: Mapping[str, str]) -> None:
        """Sandbox-level variables: applied to the live contexts and every later one."""
        self._envs.update(envs)
        await asyncio.gather(*(ctx.set_envs(envs) for ctx in list(self._contexts.values())))

    async def close(self) -> None:
        """Stop every kernel; the interpreter answers nothing afterwards."""
        self._closed = True
        if self._background_warm is not None:
            self._background_warm.cancel()
        contexts = list(self._contexts.values())
        self._contexts.clear()
        self._defaults.clear()
        await asyncio.gather(*(ctx.close() for ctx in contexts), return_exceptions=True)

    async def create_context(self, *, language: str | None, cwd: str | None) -> KernelContext:
        """A new started context; raises RequestError (400) for a bad language or cwd."""
        try:
            canonical = normalize_language(language)
        except ContextError as exc:
            raise RequestError(400, exc.code, exc.message) from exc
        cwd = cwd or DEFAULT_CWD
        await self._check_cwd(cwd)
        ctx = _CONTEXT_CLASSES[canonical](self.jail, cwd=cwd, envs=self._envs)
        self._contexts[ctx.id] = ctx
        try:
            await ctx.ensure_started()
        except ContextError as exc:
            self._contexts.pop(ctx.id, None)
            await ctx.close()
            raise RequestError(500, exc.code, exc.message) from exc
        return ctx

    async def _check_cwd(self, cwd: str) -> None:
        try:
            entry = await self.jail.stat(cwd)
        except Exception as exc:
            raise RequestError(400, "invalid_cwd", f"cwd {cwd!r} does not exist") from exc
        if entry.type != "dir":
            raise RequestError(400, "invalid_cwd", f"cwd {cwd!r} is not a directory")

    async def _default_context(self, language: str) -> KernelContext:
        async with self._default_locks.setdefault(language, asyncio.Lock()):
            ctx_id = self._defaults.get(language)
            ctx = self._contexts.get(ctx_id) if ctx_id else None
            if ctx is None:
                ctx = await self.create_context(language=language, cwd=None)
                self._defaults[language] = ctx.id
            return ctx

    async def _list_contexts(self) -> list[dict[str, Any]]:
        """Every context, the default ones first: E2B's server starts a default context per
        language it serves and lists them, so the ones it always has (Python, JavaScript) are
        started here if no run has needed them yet."""
        for language in LISTED_DEFAULT_LANGUAGES:
            await self._default_context(language)
        defaults = list(self._defaults.values())
        ordered = [self._contexts[i] for i in defaults if i in self._contexts]
        ordered += [c for i, c in self._contexts.items() if i not in defaults]
        return [c.describe() for c in ordered]

    # --- HTTP ---------------------------------------------------------------------------

    async def handle(self, request: web.Request, path: str) -> web.StreamResponse:
        """Answer one request of the code-interpreter port (see the module doc)."""
        try:
            if self._closed:
                raise RequestError(502, "sandbox_closed", "the sandbox is shutting down")
            parts = [p for p in path.split("/") if p]
            method = request.method
            if parts == ["health"] and method in ("GET", "HEAD"):
                return web.json_response({"status": "ok"})
            if parts == ["execute"] and method == "POST":
                return await self._execute(request)
            if parts == ["contexts"]:
                if method == "GET":
                    return web.json_response(await self._list_contexts())
                if method == "POST":
                    body = await self._json_body(request, allow_empty=True)
                    ctx = await self.create_context(
                        language=self._optional_str(body, "language"),
                        cwd=self._optional_str(body, "cwd"),
                    )
                    return web.json_response(ctx.describe())
            if len(parts) == 2 and parts[0] == "contexts" and method == "DELETE":
                await self._remove_context(parts[1])
                return web.Response(status=204)
            if (
                len(parts) == 3
                and parts[0] == "contexts"
                and parts[2] == "restart"
                and method == "POST"
            ):
                # Not behind the context's lock: a restart must not wait for a cell that may
                # never end; a running cell ends with a KernelRestarted error.
                ctx = self._context(parts[1])
                await ctx.restart()
                return web.json_response(ctx.describe())
            if len(parts) == 3 and parts[0] == "contexts" and parts[2] == "input":
                if method != "POST":
                    raise RequestError(405, "method_not_allowed", "POST a line of input")
                return await self._send_input(request, self._context(parts[1]))
            raise RequestError(404, "not_found", f"no route {method} {path}")
        except RequestError as exc:
            return _error_response(exc.status, exc.code, exc.message)
        except ContextError as exc:
            return _error_response(500, exc.code, exc.message)

    async def _send_input(self, request: web.Request, ctx: KernelContext) -> web.Response:
        """`POST /contexts/{id}/input {"value"}`: the answer to the running cell's input();
        409 when no cell of the context waits for one. Not behind the context's lock, which
        the waiting cell holds."""
        body = await self._json_body(request)
        value = body.get("value")
        if not isinstance(value, str) or len(value) > MAX_INPUT_CHARS:
            raise RequestError(
                400, "invalid_argument", f"value must be a string of at most {MAX_INPUT_CHARS}"
            )
        try:
            await ctx.send_input(value)
        except ContextError as exc:
            if exc.code == "no_input_requested":
                raise RequestError(409, exc.code, exc.message) from exc
            raise
        return web.Response(status=204)

    def _context(self, ctx_id: str) -> KernelContext:
        ctx = self._contexts.get(ctx_id)
        if ctx is None:
            raise RequestError(404, "context_not_found", f"context {ctx_id} not found")
        return ctx

    async def _remove_context(self, ctx_id: str) -> None:
        ctx = self._context(ctx_id)
        self._contexts.pop(ctx_id, None)
        for language, default_id in list(self._defaults.items()):
            if default_id == ctx_id:
                del self._defaults[language]
        await ctx.interrupt()
        await ctx.close()

    @staticmethod
    async def _json_body(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
        raw = await request.read()
        if not raw.strip() and allow_empty:
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise RequestError(400, "invalid_json", f"the body is not JSON: {exc}") from exc
        except RecursionError:
            # Nested deeper than the parser's stack: a hostile body, not a server fault.
            raise RequestError(400, "invalid_json", "the body is nested too deeply") from None
        if not isinstance(body, dict):
            raise RequestError(400, "invalid_json", "the body must be a JSON object")
        return body

    @staticmethod
    def _optional_str(body: Mapping[str, Any], field: str) -> str | None:
        value = body.get(field)
        if value is None or isinstance(value, str):
            return value or None
        raise RequestError(400, "invalid_argument", f"{field} must be a string")

    async def _execute(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_body(request)
        code = body.get("code")
        if not isinstance(code, str):
            raise RequestError(400, "invalid_argument", "code must be a string")
        context_id = self._optional_str(body, "context_id")
        language = self._optional_str(body, "language")
        if context_id and language:
            raise RequestError(
                400, "invalid_argument", "give context_id or language, not both at once"
            )
        env_vars = _check_env_mapping(body.get("env_vars"), "env_vars")
        # A client that will answer input() says so with this reserved variable (the SDK's
        # run_code sends nothing else of ours); it is taken out, never set in the kernel.
        allow_stdin = env_vars.pop(STDIN_ENV, "") == "1"
        run_id = env_vars.pop(RUN_ID_ENV, None)
        if run_id is not None and not RUN_ID_PATTERN.fullmatch(run_id):
            raise RequestError(
                400, "invalid_argument", f"{RUN_ID_ENV} must be 1 to 64 letters, digits or -"
            )
        if context_id:
            ctx = self._context(context_id)
        else:
            try:
                canonical = normalize_language(language)
            except ContextError as exc:
                raise RequestError(400, exc.code, exc.message) from exc
            ctx = await self._default_context(canonical)

        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/x-ndjson; charset=utf-8"}
        )
        await response.prepare(request)
        queue = EventPipe()
        running = asyncio.Event()
        meter = meter_for(self.jail) if run_id is not None else None
        task = asyncio.create_task(
            self._run_locked(
                ctx, code, env_vars, queue, running, allow_stdin=allow_stdin,
                metered=(meter, run_id) if meter is not None and run_id is not None else None,
            )
        )  # fmt: skip
        try:
            await self._stream(request, response, queue)
        except (asyncio.CancelledError, ConnectionError):
            # The client went away: interrupt the run; the context stays usable.
            queue.close()
            await asyncio.shield(self._abandon(ctx, task, running))
            raise
        if not task.done():  # disconnect noticed by polling
            queue.close()
            await self._abandon(ctx, task, running)
            return response
        if self._closed:  # cut by _stream: no end of body
            return response
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    @staticmethod
    async def _run_locked(
        ctx: KernelContext,
        code: str,
        env_vars: Mapping[str, str],
        queue: EventPipe,
        running: asyncio.Event,
        *,
        allow_stdin: bool = False,
        metered: tuple[UsageMeter, str] | None = None,
    ) -> None:
        try:
            async with ctx.lock:
                running.set()
                ctx.stdin_allowed = allow_stdin
                if metered is not None:
                    metered[0].begin_run(metered[1])
                try:
                    await ctx.run(code, env_vars, queue)
                finally:
                    # Before the end of the run is queued: a client that reads the usage
                    # as soon as it sees the end finds it final.
                    if metered is not None:
                        metered[0].end_run(metered[1])
        except ContextError as exc:
            queue(events.error("KernelUnavailable", exc.message, ""))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("context %s: run failed", ctx.id)
            queue(events.error("InterpreterError", str(exc), ""))
        finally:
            queue(events.END_OF_EXECUTION)

    async def _stream(
        self, request: web.Request, response: web.StreamResponse, queue: EventPipe
    ) -> None:
        """Write events as they come, keepalives while quiet; stop early if the client left.

        Events already queued go out in one write (fewer syscalls and chunks for the client
        to parse); the end of the run is always the last event queued. When the sandbox is
        being destroyed (killed, timed out) the connection is cut instead of ended: that is
        how E2B's SDK tells "the sandbox was killed while the request was in progress" from
        a finished run.
        """
        loop = asyncio.get_running_loop()
        last_write = loop.time()
        while True:
            data = await queue.take(DISCONNECT_POLL_SECONDS)
            if self._closed:
                if request.transport is not None:
                    request.transport.abort()
                return
            if not data:
                transport = request.transport
                if transport is None or transport.is_closing():
                    return
                if loop.time() - last_write >= KEEPALIVE_SECONDS:
                    await response.write(events.encode(events.KEEPALIVE))
                    last_write = loop.time()
                continue
            # Awaits the socket's drain: a slow client holds the writer here, the pipe fills
            # to its backlog, and the kernel's reader waits in turn.
            await response.write(data)
            last_write = loop.time()
            if queue.ended and not queue.pending:
                return

    @staticmethod
    async def _abandon(
        ctx: KernelContext, task: asyncio.Task[None], running: asyncio.Event
    ) -> None:
        """Stop a run whose client left: dropped if still queued, else interrupted."""
        if task.done():
            return
        if not running.is_set():
            task.cancel()  # still waiting for the context: it never runs
            return
        await ctx.interrupt()
