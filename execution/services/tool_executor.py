"""The ToolExecutor: every tool a browser, an API client or an agent can call, in one place.

`execute_code`, `start_execution`, `cancel_execution`, `write_file`, `read_file`,
`list_files`, `delete_file`, `install_packages` and `delete_thread` are plain blocking
functions with keyword-only arguments, safe to call from DRF views, from websocket consumers
(through `database_sync_to_async`), from management commands and from any thread. Sandbox I/O
runs on the service loop (runtime.py); database work runs in the caller's thread.

A run goes: validate (a refusal is a `rejected` Execution, a SecurityEvent and a ToolError) →
quota → `Execution(queued)` and the `execution` event (seq 0) → per-thread lock → sandbox
(reconnected, or new and restored) and the language's context → `running` → output streamed:
each batch of stdout/stderr/result/error is stored with `last_seq` in one UPDATE and then
published → files synced back → final status and the `done` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import close_old_connections, connection, transaction
from django.db.models import F, TextField, Value
from django.db.models.functions import Concat
from django.utils import timezone
from e2b import (
    FileNotFoundException,
    NotFoundException,
    SandboxNotRunningException,
    SandboxUnreachableException,
    TimeoutException,
)
from e2b_code_interpreter import AsyncSandbox, Context
from e2b_code_interpreter.models import ExecutionError, OutputMessage, Result

from execution.models import (
    Agent,
    Execution,
    PackageInstall,
    SecurityEvent,
    Source,
    Thread,
    WorkspaceFile,
)
from execution.services import validation
from execution.services.errors import ToolError, not_found
from execution.services.events import EventPublisher, caller_event_loop
from execution.services.file_sync import SYNC_DEPTH, sync_workspace_back
from execution.services.packages import run_install
from execution.services.quotas import check_run_concurrency
from execution.services.runtime import service_loop
from execution.services.sandbox_sessions import (
    SANDBOX_GONE_ERRORS,
    SandboxLease,
    is_unavailability,
    sessions,
)
from execution.services.validation import WORKSPACE_ROOT

logger = logging.getLogger(__name__)

Status = Execution.Status
# Extra time past a run's own timeout before we stop waiting on the SDK ourselves.
RUN_GRACE_SECONDS = 5.0
# How precisely Thread.last_used_at follows the runs (it only feeds idle-sandbox reaping).
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)
# How often a running execution looks for a cancel asked through another process.
CANCEL_POLL_SECONDS = 1.0
# Result fields kept from the SDK's Result (the E2B result formats).
RESULT_FORMATS = (
    "text", "html", "markdown", "svg", "png", "jpeg", "pdf", "latex", "json", "javascript",
    "data", "extra",
)  # fmt: skip


@dataclass(frozen=True)
class ExecutionContext:
    """Who is calling and where: the user (owner of everything touched), the thread (None:
    a new one for runs), the agent acting for the user, the source and the client's IP."""

    user: AbstractBaseUser
    thread: Thread | None = None
    agent: Agent | None = None
    source: str = Source.API
    client_ip: str | None = None


def record_security_event(
    error: ToolError, context: ExecutionContext, *, execution: Execution | None = None
) -> SecurityEvent:
    """Store a refusal for the audit (kind from the error, default validation)."""
    return SecurityEvent.objects.create(
        kind=error.kind or SecurityEvent.Kind.VALIDATION,
        code=error.code[:64],
        message=error.message,
        user=context.user if context.user and context.user.is_authenticated else None,
        agent=context.agent,
        thread=context.thread,
        execution=execution,
        source=context.source,
        client_ip=context.client_ip,
        details=error.details,
    )


def result_as_dict(result: Result) -> dict[str, Any]:
    """The JSON form of one rich result: the formats it has and `is_main_result`."""
    data: dict[str, Any] = {}
    for name in RESULT_FORMATS:
        value = getattr(result, name, None)
        if value:
            data[name] = value
    data["is_main_result"] = bool(result.is_main_result)
    return data


def _utf8_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` that fits in `max_bytes` of UTF-8."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


# --- the run's live state and its events ------------------------------------------------------


class EventSink:
    """Stores and publishes the events of one execution; used by one thread at a time.

    Holds the next seq, the output budget and the results so far. Every batch is one UPDATE
    (including `last_seq`) followed by the publication of its events in order.
    """

    def __init__(self, execution: Execution, publisher: EventPublisher) -> None:
        self.execution = execution
        self.publisher = publisher
        self.seq = execution.last_seq
        self.results: list[dict[str, Any]] = list(execution.results or [])
        self.output_budget = settings.EXECUTION_MAX_OUTPUT_BYTES - len(
            (execution.stdout + execution.stderr).encode("utf-8")
        )
        self.truncated = execution.truncated
        self.error: dict[str, Any] | None = execution.error

    @property
    def execution_id(self) -> str:
        return str(self.execution.id)

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        return {"type": kind, "execution_id": self.execution_id, **fields, "seq": self.seq}

    def _publish(self, events: list[dict[str, Any]]) -> None:
        self.publisher.publish_many(
            execution_id=self.execution.id, thread_id=self.execution.thread_id, events=events
        )

    def _spend(self, size: int) -> int:
        """Take up to `size` bytes from the output budget; returns what was granted."""
        granted = max(0, min(size, self.output_budget))
        self.output_budget -= granted
        if granted < size:
            self.truncated = True
        return granted

    def running(self) -> bool:
        """queued → running (conditional, so a cancel that won the race is respected)."""
        now = timezone.now()
        seq = self.seq + 1
        updated = Execution.objects.filter(pk=self.execution.pk, status=Status.QUEUED).update(
            status=Status.RUNNING, started_at=now, last_seq=seq
        )
        if not updated:
            return False
        self.execution.status, self.execution.started_at = Status.RUNNING, now
        self._publish([self._event("status", status=Status.RUNNING)])
        return True

    def output(self, items: list[tuple[str, Any]]) -> None:
        """Store then publish a batch of ("stdout"|"stderr", text), ("result", dict) and
        ("error", dict) items, honouring the output cap."""
        events: list[dict[str, Any]] = []
        appended = {"stdout": "", "stderr": ""}
        results_changed = error_changed = False
        was_truncated = self.truncated
        for kind, payload in items:
            if kind in appended:
                size = len(payload.encode("utf-8"))
                granted = self._spend(size)
                if granted == 0:
                    continue
                text = payload if granted == size else _utf8_prefix(payload, granted)
                appended[kind] += text
                events.append(self._event(kind, text=text))
            elif kind == "result":
                size = sum(len(str(v)) for v in payload.values())
                if self._spend(size) < size:
                    # A rich result is never cut in half: it is dropped whole and flagged.
                    continue
                self.results.append(payload)
                results_changed = True
                events.append(self._event("result", result=payload))
            elif kind == "error":
                self.error = payload
                error_changed = True
                events.append(self._event("error", error=payload))
        if not events and self.truncated == was_truncated:
            return
        update: dict[str, Any] = {"last_seq": self.seq, "truncated": self.truncated}
        for stream, text in appended.items():
            if text:
                update[stream] = Concat(F(stream), Value(text), output_field=TextField())
        if results_changed:
            update["results"] = self.results
        if error_changed:
            update["error"] = self.error
        Execution.objects.filter(pk=self.execution.pk).update(**update)
        self._publish(events)

    def finish(
        self,
        status: str,
        *,
        error: dict[str, Any] | None = None,
        exit_code: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Store the final status (with an infra `error` if given) and publish `error` (if
        given) and `done`. Does nothing if the execution is already final.

        The in-memory row is trusted (this sink is its only writer besides a cancel of a
        queued run); the UPDATE is conditional on the status it expects, so a run cancelled
        behind its back is never overwritten."""
        if not self.execution.can_transition_to(status):
            return
        events: list[dict[str, Any]] = []
        if error is not None:
            self.error = error
            events.append(self._event("error", error=error))
        now = timezone.now()
        started = self.execution.started_at
        duration_ms = int((now - started).total_seconds() * 1000) if started else None
        merged = {**(self.execution.details or {}), **(details or {})}
        done = self._event(
            "done", status=status, duration_ms=duration_ms, exit_code=exit_code,
            truncated=self.truncated,
        )  # fmt: skip
        events.append(done)
        updated = Execution.objects.filter(
            pk=self.execution.pk, status=self.execution.status
        ).update(
            status=status, finished_at=now, duration_ms=duration_ms, exit_code=exit_code,
            truncated=self.truncated, error=self.error, details=merged, last_seq=self.seq,
        )  # fmt: skip
        if updated:
            self._publish(events)


@dataclass
class RunOutcome:
    """How the SDK call ended: kind is ok, timeout, cancelled, lost (sandbox died during the
    run), gone (nothing ran: sandbox or context unknown) or unavailable."""

    kind: str
    detail: str = ""
    received_events: bool = False


class _RunHandle:
    """The in-process handle of a running execution, for cancel and for waiting."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.done = threading.Event()
        self.future: Any = None

    def request_cancel(self) -> None:
        self.cancel.set()
        future = self.future
        if future is not None:
            future.cancel()


_active: dict[uuid.UUID, _RunHandle] = {}
_active_lock = threading.Lock()


def _is_execution_timeout(exc: BaseException, elapsed: float, timeout: float) -> bool:
    if isinstance(exc, SandboxNotRunningException | SandboxUnreachableException):
        return False
    if isinstance(exc, TimeoutError):
        return True
    return isinstance(exc, TimeoutException) and (
        "Execution timed out" in str(exc) or elapsed >= timeout * 0.95
    )


async def _stream_run(
    sandbox: AsyncSandbox,
    code: str,
    context: Context,
    time_limit: float,
    push: queue.SimpleQueue[tuple[str, Any]],
) -> None:
    """Run the code through the SDK, pushing ("stdout"|…, payload) items and finally
    ("end", RunOutcome). Never raises: cancellation is an outcome too."""
    received = False

    def on_text(kind: str):
        def handler(message: OutputMessage) -> None:
            nonlocal received
            received = True
            push.put((kind, message.line))

        return handler

    def on_result(result: Result) -> None:
        nonlocal received
        received = True
        push.put(("result", result_as_dict(result)))

    def on_error(error: ExecutionError) -> None:
        nonlocal received
        received = True
        push.put(
            ("error", {"name": error.name, "value": error.value, "traceback": error.traceback})
        )

    started = time.monotonic()
    outcome = RunOutcome("ok")
    try:
        async with asyncio.timeout(time_limit + RUN_GRACE_SECONDS):
            await sandbox.run_code(
                code, context=context, timeout=time_limit,
                on_stdout=on_text("stdout"), on_stderr=on_text("stderr"),
                on_result=on_result, on_error=on_error,
            )  # fmt: skip
        # List the workspace for file sync here, while the worker thread is still storing
        # the last output: the round trip overlaps the database writes.
        try:
            entries = await sandbox.files.list(WORKSPACE_ROOT, depth=SYNC_DEPTH)
            push.put(("listing", entries))
        except Exception as exc:
            push.put(("listing", exc))
    except asyncio.CancelledError:
        outcome = RunOutcome("cancelled")
    except BaseException as exc:
        elapsed = time.monotonic() - started
        if _is_execution_timeout(exc, elapsed, time_limit):
            outcome = RunOutcome("timeout", str(exc))
        elif not received and isinstance(exc, NotFoundException | TimeoutException):
            # Refused before anything ran (unknown context or sandbox, or the proxy's
            # "not found"/502): safe to recover and run once more.
            outcome = RunOutcome("gone", f"{type(exc).__name__}: {exc}")
        elif isinstance(exc, (*SANDBOX_GONE_ERRORS, TimeoutException)):
            outcome = RunOutcome("lost", f"{type(exc).__name__}: {exc}")
        elif is_unavailability(exc):
            outcome = RunOutcome("unavailable", f"{type(exc).__name__}: {exc}")
        else:
            logger.exception("run failed unexpectedly")
            outcome = RunOutcome("unavailable", f"{type(exc).__name__}: {exc}")
    outcome.received_events = received
    push.put(("end", outcome))


def _exit_code(error: dict[str, Any] | None) -> int:
    """The exit code of a failed run: a bash kernel reports the shell's own (E2B's and
    sandboxd's bash kernels send it as the error's value); any other failure is 1."""
    value = str((error or {}).get("value", ""))
    if (error or {}).get("name") == "CommandExitError" and value.isdigit():
        return int(value)
    return 1


def _infra_error(code: str, message: str) -> dict[str, Any]:
    # Stored and sent in the shape of a code error ({name, value, traceback}) so that every
    # client renders it, plus the stable code for those that branch on it.
    return {"name": "SandboxError", "value": message, "traceback": "", "code": code}


class ExecutionRunner:
    """Carries one queued execution to a final status (runs in the thread that calls run())."""

    def __init__(
        self,
        execution_id: uuid.UUID,
        publisher: EventPublisher,
        execution: Execution | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.publisher = publisher
        # The row just created by the caller (inline runs), to save reading it back.
        self.execution = execution
        # The workspace listing taken right after the run (or the error listing it).
        self.listing: Any = None

    def run(self) -> None:
        handle = _RunHandle()
        with _active_lock:
            _active[self.execution_id] = handle
        try:
            self._run(handle)
        except Exception:
            logger.exception("execution %s crashed", self.execution_id)
            with contextlib.suppress(Exception):
                execution = Execution.objects.get(pk=self.execution_id)
                EventSink(execution, self.publisher).finish(
                    Status.ERROR,
                    error=_infra_error("internal_error", "The run failed unexpectedly."),
                )
        finally:
            handle.done.set()
            with _active_lock:
                _active.pop(self.execution_id, None)

    def _run(self, handle: _RunHandle) -> None:
        execution = self.execution or Execution.objects.select_related("thread").get(
            pk=self.execution_id
        )
        thread = execution.thread
        sink = EventSink(execution, self.publisher)
        if thread is None:
            sink.finish(
                Status.ERROR, error=_infra_error("thread_deleted", "The thread was deleted.")
            )
            return
        with sessions.thread_lock(thread.id):
            # A cancel while it waited for the thread is caught by running(), whose update
            # is conditional on `queued`.
            if handle.cancel.is_set():
                sink.finish(Status.CANCELLED)
                return
            try:
                lease, context = self._acquire(
                    thread, execution.language, fresh=self.execution is not None
                )
            except ToolError as exc:
                sink.finish(
                    Status.ERROR,
                    error=_infra_error(exc.code, exc.message),
                    details={"reason": exc.details.get("reason", "")},
                )
                return
            details: dict[str, Any] = {"sandbox_id": lease.sandbox.sandbox_id}
            if lease.restored is not None:
                details["restored"] = lease.restored.as_dict()
            if not sink.running():
                return
            since = timezone.now()
            timeout = execution.timeout_seconds or settings.EXECUTION_DEFAULT_TIMEOUT
            outcome = self._stream(handle, sink, lease.sandbox, context, execution, timeout)
            if outcome.kind == "gone":
                # Nothing ran: the sandbox or the context is unknown to the server (killed
                # behind our back, server restarted). Recover once, then run for real.
                try:
                    outcome, lease, context, details = self._recover_and_rerun(
                        handle, sink, thread, execution, timeout, details
                    )
                except ToolError as exc:
                    sessions.forget(thread)
                    sink.finish(
                        Status.ERROR,
                        error=_infra_error(exc.code, exc.message),
                        details={**details, "reason": exc.details.get("reason", "")},
                    )
                    return
            if outcome.kind in ("ok", "timeout", "cancelled"):
                report = sync_workspace_back(
                    thread=thread, sandbox=lease.sandbox, since=since, listing=self.listing,
                    written_by=WorkspaceFile.WrittenBy.AGENT if execution.agent_id
                    else WorkspaceFile.WrittenBy.CODE,
                )  # fmt: skip
                details["file_sync"] = report.as_dict()
            now = timezone.now()
            # Idle reaping needs minutes, not milliseconds: skip the write on busy threads.
            if thread.last_used_at is None or now - thread.last_used_at > LAST_USED_RESOLUTION:
                Thread.objects.filter(pk=thread.pk).update(last_used_at=now)
            self._finish(sink, outcome, timeout, details, thread)

    def _stream(
        self,
        handle: _RunHandle,
        sink: EventSink,
        sandbox: AsyncSandbox,
        context: Context,
        execution: Execution,
        timeout: float,
    ) -> RunOutcome:
        items: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        handle.future = service_loop().submit(
            _stream_run(sandbox, execution.code, context, timeout, items)
        )
        if handle.cancel.is_set():
            handle.future.cancel()
        next_poll = time.monotonic() + CANCEL_POLL_SECONDS
        while True:
            try:
                first = items.get(timeout=0.25)
            except queue.Empty:
                if time.monotonic() >= next_poll and not handle.cancel.is_set():
                    next_poll = time.monotonic() + CANCEL_POLL_SECONDS
                    if Execution.objects.filter(pk=execution.pk, cancel_requested=True).exists():
                        handle.request_cancel()
                continue
            batch = [first]
            # Drain what is already there: one UPDATE for a burst of output.
            while len(batch) < 500:
                try:
                    batch.append(items.get_nowait())
                except queue.Empty:
                    break
            end = next((payload for kind, payload in batch if kind == "end"), None)
            for kind, payload in batch:
                if kind == "listing":
                    self.listing = payload
            sink.output([(k, p) for k, p in batch if k not in ("end", "listing")])
            if end is not None:
                if end.kind == "cancelled" and not handle.cancel.is_set():
                    end.kind = "unavailable"
                return end

    @staticmethod
    def _acquire(
        thread: Thread, language: str, *, fresh: bool = False
    ) -> tuple[SandboxLease, Context]:
        """The thread's sandbox and its context for `language`. A sandbox that vanishes
        between the two steps (killed, expired) is replaced once. Raises ToolError (503)."""
        for attempt in range(2):
            try:
                lease = sessions.get_or_create(thread, fresh=fresh and attempt == 0)
                return lease, sessions.context_for(thread, lease.sandbox, language)
            except SANDBOX_GONE_ERRORS as exc:
                sessions.forget(thread)
                sessions.forget_context(thread, language)
                if attempt == 1:
                    raise ToolError(
                        "sandbox_lost", "The sandbox vanished while it was being prepared.", 503,
                        {"reason": f"{type(exc).__name__}: {exc}"}, headers={"Retry-After": "5"},
                    ) from exc  # fmt: skip
        raise AssertionError("unreachable")

    def _recover_and_rerun(
        self,
        handle: _RunHandle,
        sink: EventSink,
        thread: Thread,
        execution: Execution,
        timeout: float,
        details: dict[str, Any],
    ) -> tuple[RunOutcome, SandboxLease, Context, dict[str, Any]]:
        sessions.forget_context(thread, execution.language)
        cached = sessions.get_or_create(thread)  # reconnects, or recreates and restores
        if not sessions.is_running(cached.sandbox):
            sessions.forget(thread)
        lease, context = self._acquire(thread, execution.language)
        if lease.sandbox.sandbox_id != details.get("sandbox_id"):
            details = {**details, "sandbox_id": lease.sandbox.sandbox_id, "recreated": True}
            if lease.restored is not None:
                details["restored"] = lease.restored.as_dict()
        outcome = self._stream(handle, sink, lease.sandbox, context, execution, timeout)
        if outcome.kind == "gone":
            outcome.kind = "lost"
        return outcome, lease, context, details

    def _finish(
        self,
        sink: EventSink,
        outcome: RunOutcome,
        timeout: float,
        details: dict[str, Any],
        thread: Thread,
    ) -> None:
        if outcome.kind == "ok":
            failed = sink.error is not None
            sink.finish(
                Status.FAILED if failed else Status.SUCCEEDED,
                exit_code=_exit_code(sink.error) if failed else 0,
                details=details,
            )
        elif outcome.kind == "timeout":
            sink.finish(
                Status.TIMED_OUT,
                error={
                    "name": "TimeoutError",
                    "value": f"The run did not finish within {timeout:g} seconds.",
                    "traceback": "",
                    "code": "execution_timeout",
                },
                details=details,
            )
        elif outcome.kind == "cancelled":
            sink.finish(Status.CANCELLED, details=details)
        else:
            # The sandbox died or its server failed mid-run: the next run starts afresh.
            sessions.forget(thread)
            code = "sandbox_lost" if outcome.kind in ("lost", "gone") else "sandbox_unavailable"
            message = (
                "The sandbox stopped during the run; the next run gets a new one with your "
                "files and packages."
                if code == "sandbox_lost"
                else "The sandbox service failed during the run; try again in a moment."
            )
            sink.finish(
                Status.ERROR,
                error=_infra_error(code, message),
                details={**details, "reason": outcome.detail[:500]},
            )


# --- the service ------------------------------------------------------------------------------


class ToolExecutor:
    """The tools of the execution service. Every method takes keyword arguments only and
    raises ToolError for anything the caller should be told."""

    # --- guards ---------------------------------------------------------------------------

    def _check_agent(self, context: ExecutionContext, tool: str) -> None:
        agent = context.agent
        if agent is None:
            return
        if agent.owner_id != context.user.pk or not agent.allows(tool):
            error = ToolError(
                "tool_not_allowed",
                f"Agent {agent.name!r} may not use the {tool} tool.",
                403,
                {"agent_id": str(agent.id), "tool": tool},
                kind=SecurityEvent.Kind.AUTHORIZATION,
            )
            record_security_event(error, context)
            raise error

    def _check_thread(self, context: ExecutionContext) -> Thread | None:
        thread = context.thread
        if thread is not None and thread.owner_id != context.user.pk:
            raise not_found("thread")
        return thread

    def _validated(self, context: ExecutionContext, check, *args, **kwargs):
        """Run a validation function; on refusal record a SecurityEvent and re-raise."""
        try:
            return check(*args, **kwargs)
        except ToolError as error:
            record_security_event(error, context)
            raise

    # --- runs ---------------------------------------------------------------------------

    def start_execution(
        self,
        *,
        code: str,
        language: str,
        context: ExecutionContext,
        timeout: float | None = None,
    ) -> Execution:
        """Validate, create `Execution(queued)`, publish its `execution` event and run it in a
        background thread owned by the service; return the queued row at once.

        Raises ToolError: a validation refusal (after storing a `rejected` Execution and a
        SecurityEvent), 403 for an agent without the tool, 404 for another user's thread,
        429 when a concurrency cap is reached.
        """
        execution, publisher = self._create_execution(
            code=code, language=language, context=context, timeout=timeout
        )
        worker = threading.Thread(
            target=self._run_in_background,
            args=(execution.id, publisher),
            name=f"execution-{execution.id.hex[:8]}",
            daemon=True,
        )
        worker.start()
        return execution

    def _create_execution(
        self, *, code: str, language: str, context: ExecutionContext, timeout: float | None
    ) -> tuple[Execution, EventPublisher]:
        """Validate, check quotas, create the queued row and publish its `execution` event."""
        self._check_agent(context, "execute_code")
        thread = self._check_thread(context)
        try:
            language = validation.validate_language(language)
            validation.validate_code(
                code,
                max_bytes=settings.EXECUTION_MAX_CODE_BYTES,
                dangerous_patterns=settings.EXECUTION_DANGEROUS_PATTERNS,
            )
            timeout = validation.validate_timeout(
                timeout,
                default=settings.EXECUTION_DEFAULT_TIMEOUT,
                maximum=settings.EXECUTION_MAX_TIMEOUT,
            )
        except ToolError as error:
            self._record_rejected_run(error, context, code=code, language=language)
            raise
        try:
            # The count and the insert share one transaction (see quotas.py).
            with transaction.atomic():
                check_run_concurrency(context.user)
                execution = self._insert_execution(thread, context, language, code, timeout)
        except ToolError as error:
            # Recorded outside the rolled-back transaction, or the audit entry would vanish.
            record_security_event(error, context)
            raise
        thread = execution.thread
        publisher = EventPublisher(caller_event_loop())
        publisher.publish(
            execution_id=execution.id,
            thread_id=thread.id,
            event={
                "type": "execution", "execution_id": str(execution.id),
                "thread_id": str(thread.id), "status": Status.QUEUED,
                "language": language, "seq": 0,
            },
        )  # fmt: skip
        return execution, publisher

    @staticmethod
    def _insert_execution(
        thread: Thread | None,
        context: ExecutionContext,
        language: str,
        code: str,
        timeout: float,
    ) -> Execution:
        if thread is None:
            thread = Thread.objects.create(owner=context.user)
        return Execution.objects.create(
            thread=thread, user=context.user, agent=context.agent, language=language,
            code=code, status=Status.QUEUED, source=context.source,
            client_ip=context.client_ip, timeout_seconds=timeout, last_seq=0,
        )  # fmt: skip

    @staticmethod
    def _run_in_background(execution_id: uuid.UUID, publisher: EventPublisher) -> None:
        close_old_connections()
        try:
            ExecutionRunner(execution_id, publisher).run()
        finally:
            connection.close()

    def _record_rejected_run(
        self, error: ToolError, context: ExecutionContext, *, code: object, language: object
    ) -> None:
        thread = context.thread
        execution = Execution.objects.create(
            thread=thread,
            user=context.user,
            agent=context.agent,
            language=str(language or "")[:16],
            code=code if isinstance(code, str) else "",
            status=Status.REJECTED,
            source=context.source,
            client_ip=context.client_ip,
            error={"code": error.code, "message": error.message},
            finished_at=timezone.now(),
        )
        record_security_event(error, context, execution=execution)
        error.details = {**error.details, "execution_id": str(execution.id)}

    def execute_code(
        self,
        *,
        code: str,
        language: str,
        context: ExecutionContext,
        timeout: float | None = None,
    ) -> Execution:
        """Run code to a final status in the calling thread and return the stored Execution.

        Raises what start_execution raises; a run that fails for sandbox reasons is not an
        exception: it comes back with status `error` (the API turns that into a 503).
        """
        execution, publisher = self._create_execution(
            code=code, language=language, context=context, timeout=timeout
        )
        ExecutionRunner(execution.id, publisher, execution).run()
        execution.refresh_from_db()
        return execution

    def wait_for(self, execution_id: uuid.UUID, timeout: float) -> bool:
        """Wait until an execution running in this process finishes; True when it did (or
        when it is not running here)."""
        with _active_lock:
            handle = _active.get(execution_id)
        return True if handle is None else handle.done.wait(timeout)

    def cancel_execution(
        self, *, execution_id: uuid.UUID | str, user: AbstractBaseUser
    ) -> Execution:
        """Cancel a queued or running execution of `user` and return it.

        A queued one is cancelled at once; a running one is interrupted (the kernel stops, its
        state survives) and this waits briefly for its final status. Raises ToolError 404
        (not the user's) or 409 `execution_not_cancellable` (already final).
        """
        try:
            execution = Execution.objects.get(pk=execution_id, user=user)
        except (Execution.DoesNotExist, ValueError, TypeError):
            raise not_found("execution") from None
        if execution.is_final:
            raise ToolError(
                "execution_not_cancellable",
                f"The execution already finished ({execution.status}).",
                409,
                {"status": execution.status},
            )
        Execution.objects.filter(pk=execution.pk).update(cancel_requested=True)
        # queued → cancelled right here, unless the runner moved it to running first (both
        # are conditional updates, so exactly one of them wins).
        cancelled_queued = Execution.objects.filter(pk=execution.pk, status=Status.QUEUED).update(
            status=Status.CANCELLED, finished_at=timezone.now(), last_seq=F("last_seq") + 1
        )
        if cancelled_queued:
            execution.refresh_from_db()
            EventPublisher(caller_event_loop()).publish(
                execution_id=execution.id,
                thread_id=execution.thread_id,
                event={
                    "type": "done", "execution_id": str(execution.id),
                    "status": Status.CANCELLED, "duration_ms": None, "exit_code": None,
                    "truncated": False, "seq": execution.last_seq,
                },
            )  # fmt: skip
            return execution
        with _active_lock:
            handle = _active.get(execution.pk)
        if handle is not None:
            handle.request_cancel()
            handle.done.wait(10)
        else:
            # Running in another process: it polls cancel_requested; give it a moment.
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                execution.refresh_from_db(fields=["status"])
                if execution.is_final:
                    break
                time.sleep(0.1)
        execution.refresh_from_db()
        return execution

    # --- files ----------------------------------------------------------------------------

    def _file_path(self, context: ExecutionContext, file_path: object) -> str:
        return self._validated(
            context,
            validation.validate_workspace_path,
            file_path,
            suspicious_extensions=settings.EXECUTION_SUSPICIOUS_EXTENSIONS,
        )

    def write_file(
        self, *, file_path: str, content: bytes | str, context: ExecutionContext
    ) -> WorkspaceFile:
        """Store a file in the thread's workspace (database and, when the thread has a sandbox,
        the sandbox too) and return its row. Raises ToolError: path rules, 413 too large,
        403/404 as for every tool, 503 when the thread's sandbox cannot be reached."""
        self._check_agent(context, "write_file")
        thread = self._require_thread(context)
        path = self._file_path(context, file_path)
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        self._validated(
            context, validation.validate_file_size, len(data),
            max_bytes=settings.EXECUTION_MAX_FILE_BYTES,
        )  # fmt: skip
        with sessions.thread_lock(thread.id):
            thread.refresh_from_db(fields=["sandbox_id"])
            if thread.sandbox_id:
                # Write through to the live sandbox; a thread without one gets the file when
                # its sandbox is created (restore), so no sandbox is started just for this.
                lease = sessions.get_or_create(thread)
                sessions.call(
                    lease.sandbox.files.write(f"{validation.WORKSPACE_ROOT}/{path}", data)
                )
            row = WorkspaceFile.objects.filter(thread=thread, path=path).first()
            if row is None:
                row = WorkspaceFile(thread=thread, path=path)
            row.written_by = (
                WorkspaceFile.WrittenBy.AGENT if context.agent else WorkspaceFile.WrittenBy.USER
            )
            with transaction.atomic():
                row.set_content(data)
        return row

    def read_file(self, *, file_path: str, context: ExecutionContext) -> tuple[str, bytes]:
        """Return (normalised path, bytes) of a workspace file: from the database, or, for a
        file code made that was not synced (e.g. over the sync limits), from the sandbox.
        Raises ToolError 404 `file_not_found`, path rules, 413, 503."""
        self._check_agent(context, "read_file")
        thread = self._require_thread(context)
        path = self._file_path(context, file_path)
        row = WorkspaceFile.objects.filter(thread=thread, path=path).first()
        if row is not None:
            return path, row.read_content()
        thread.refresh_from_db(fields=["sandbox_id"])
        if not thread.sandbox_id:
            raise not_found("file")
        with sessions.thread_lock(thread.id):
            lease = sessions.get_or_create(thread)
            full = f"{validation.WORKSPACE_ROOT}/{path}"
            try:
                info = sessions.call(lease.sandbox.files.get_info(full))
                if info.type is None or info.type.value != "file":
                    raise not_found("file")
                validation.validate_file_size(
                    info.size, max_bytes=settings.EXECUTION_MAX_FILE_BYTES
                )
                data = bytes(sessions.call(lease.sandbox.files.read(full, format="bytes")))
            except (FileNotFoundException, NotFoundException):
                raise not_found("file") from None
        return path, data

    def list_files(self, *, context: ExecutionContext) -> list[WorkspaceFile]:
        """Return the thread's workspace files (database rows, ordered by path)."""
        self._check_agent(context, "list_files")
        thread = self._require_thread(context)
        return list(WorkspaceFile.objects.filter(thread=thread).order_by("path"))

    def delete_file(self, *, file_path: str, context: ExecutionContext) -> None:
        """Delete a workspace file from the database and the thread's sandbox. Raises ToolError
        404 `file_not_found`, 503 when the sandbox exists but cannot be reached (so the file
        cannot come back on the next sync)."""
        self._check_agent(context, "write_file")
        thread = self._require_thread(context)
        path = self._file_path(context, file_path)
        with sessions.thread_lock(thread.id):
            row = WorkspaceFile.objects.filter(thread=thread, path=path).first()
            if row is None:
                raise not_found("file")
            thread.refresh_from_db(fields=["sandbox_id"])
            if thread.sandbox_id:
                lease = sessions.get_or_create(thread)
                with contextlib.suppress(FileNotFoundException, NotFoundException):
                    sessions.call(lease.sandbox.files.remove(f"{validation.WORKSPACE_ROOT}/{path}"))
            row.content.delete(save=False)
            row.delete()

    def _require_thread(self, context: ExecutionContext) -> Thread:
        thread = self._check_thread(context)
        if thread is None:
            raise ToolError("thread_required", "A thread is required for file operations.", 400)
        return thread

    # --- packages -----------------------------------------------------------------------

    def install_packages(
        self, *, packages: list[str], language: str, context: ExecutionContext
    ) -> PackageInstall:
        """Install pip (python) or npm (javascript/typescript) packages in the thread's
        sandbox and return the PackageInstall (status succeeded or failed, with its log).

        Raises ToolError: validation (after storing a `rejected` PackageInstall and a
        SecurityEvent), 403/404 as for every tool, 503 when the sandbox cannot be reached
        (the install is then stored as failed).
        """
        self._check_agent(context, "install_packages")
        thread = self._require_thread(context)
        try:
            language = validation.validate_language(language)
            manager, specs = validation.validate_package_specs(
                packages, language=language, deny_list=settings.PACKAGE_DENY_LIST
            )
        except ToolError as error:
            PackageInstall.objects.create(
                thread=thread, user=context.user, agent=context.agent,
                language=language if language in validation.LANGUAGES else "python",
                packages=[str(p)[:200] for p in packages] if isinstance(packages, list) else [],
                status=PackageInstall.Status.REJECTED, log=f"{error.code}: {error.message}",
                finished_at=timezone.now(),
            )  # fmt: skip
            record_security_event(error, context)
            raise
        install = PackageInstall.objects.create(
            thread=thread, user=context.user, agent=context.agent, language=language,
            packages=specs, status=PackageInstall.Status.RUNNING,
        )  # fmt: skip
        try:
            with sessions.thread_lock(thread.id):
                lease = sessions.get_or_create(thread)
                outcome = sessions.call(
                    run_install(
                        lease.sandbox, manager, specs, time_limit=settings.PACKAGE_INSTALL_TIMEOUT
                    )
                )
        except ToolError as error:
            self._finish_install(
                install, PackageInstall.Status.FAILED, f"{error.code}: {error.message}"
            )
            raise
        except SANDBOX_GONE_ERRORS as exc:
            sessions.forget(thread)
            self._finish_install(install, PackageInstall.Status.FAILED, f"sandbox_lost: {exc}")
            raise ToolError(
                "sandbox_lost", "The sandbox stopped during the install; try again.", 503
            ) from exc
        status = (
            PackageInstall.Status.SUCCEEDED if outcome.succeeded else PackageInstall.Status.FAILED
        )
        self._finish_install(install, status, outcome.log)
        return install

    @staticmethod
    def _finish_install(install: PackageInstall, status: str, log: str) -> None:
        install.status, install.log, install.finished_at = status, log, timezone.now()
        install.save(update_fields=["status", "log", "finished_at"])

    # --- threads ------------------------------------------------------------------------

    def delete_thread(self, *, thread: Thread, user: AbstractBaseUser) -> None:
        """Cancel the thread's active runs, kill its sandbox and delete it with its files and
        packages (executions stay, detached, as history). A sandbox that cannot be reached is
        left to expire by its own timeout rather than blocking the deletion."""
        if thread.owner_id != user.pk:
            raise not_found("thread")
        active = Execution.objects.filter(
            thread=thread, status__in=(Status.QUEUED, Status.RUNNING)
        ).values_list("pk", flat=True)
        for execution_id in list(active):
            with contextlib.suppress(ToolError):
                self.cancel_execution(execution_id=execution_id, user=user)
        try:
            sessions.kill(thread)
        except ToolError:
            logger.warning("thread %s: sandbox not reachable for kill; it will expire", thread.id)
        storage_names = [f.content.name for f in WorkspaceFile.objects.filter(thread=thread)]
        thread.delete()
        for name in storage_names:
            with contextlib.suppress(Exception):
                WorkspaceFile.content.field.storage.delete(name)


def wait_for_background_runs(timeout: float = 60.0) -> bool:
    """Wait until no execution runs in this process (tests, orderly shutdown); True if none is
    left running."""
    deadline = time.monotonic() + timeout
    while True:
        with _active_lock:
            handles = list(_active.values())
        if not handles:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        handles[0].done.wait(remaining)


def mark_interrupted_executions(*, reason: str = "The server stopped during the run.") -> int:
    """Mark every queued or running execution `error` (for use when a server starts, before it
    accepts runs: nothing can still be running them). Returns how many were marked."""
    now = timezone.now()
    count = 0
    for execution in Execution.objects.filter(status__in=(Status.QUEUED, Status.RUNNING)):
        error = _infra_error("server_restarted", reason)
        updated = Execution.objects.filter(pk=execution.pk, status=execution.status).update(
            status=Status.ERROR, error=error, finished_at=now, last_seq=F("last_seq") + 1
        )
        count += updated
    return count


def reap_idle_sandboxes(*, idle_seconds: int | None = None) -> list[str]:
    """Kill the sandboxes of threads unused for `idle_seconds` (SANDBOX_IDLE_SECONDS by
    default) with no active run. Returns the ids of the threads whose sandbox was released."""
    idle = idle_seconds if idle_seconds is not None else settings.SANDBOX_IDLE_SECONDS
    cutoff = timezone.now() - dt.timedelta(seconds=idle)
    threads = Thread.objects.exclude(sandbox_id="").filter(last_used_at__lt=cutoff)
    released = []
    for thread in threads:
        busy = Execution.objects.filter(
            thread=thread, status__in=(Status.QUEUED, Status.RUNNING)
        ).exists()
        if busy:
            continue
        try:
            sessions.kill(thread)
        except ToolError:
            logger.warning("thread %s: could not reach the sandbox server to kill", thread.id)
            continue
        released.append(str(thread.id))
    return released
