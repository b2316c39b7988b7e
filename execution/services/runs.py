"""Carrying one execution from `queued` to a final status: the run machinery behind the
ToolExecutor (tool_executor.py), which is the only intended caller.

* `ExecutionRunner` takes the thread's sandbox and context, marks the row `running`, streams the
  run through the SDK on the service loop and stores and publishes what comes (`EventSink`),
  syncs files back and writes the final status.
* `EventSink` keeps the stream's contract (README, Websocket protocol): every batch of events is
  stored with `last_seq` in one UPDATE and only then published, seq increasing by one per event.
* Runs of this process are registered (`active_run`), so a cancel or a wait reaches them.
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
from typing import Any, cast

from django.conf import settings
from django.db.models import F, TextField, Value
from django.db.models.functions import Concat
from django.utils import timezone

from execution.models import Execution, Thread, WorkspaceFile, output_order_tokens
from execution.monitoring.runs import run_finished
from execution.monitoring.usage import RunUsage, read_run_usage
from execution.sandbox import get_backend
from execution.sandbox.base import (
    FileEntry,
    RunTimedOut,
    Sandbox,
    SandboxError,
    SandboxEvent,
    SandboxGone,
    SandboxUnavailable,
)
from execution.services.errors import ToolError
from execution.services.events import EventPublisher
from execution.services.file_sync import SYNC_DEPTH, SyncReport, sync_workspace_back
from execution.services.runtime import service_portal
from execution.services.sandbox_sessions import SandboxLease, sessions
from execution.services.validation import WORKSPACE_ROOT
from execution.stream import result_mime_types, result_reference, result_size, split_text

logger = logging.getLogger(__name__)

Status = Execution.Status
# Extra time past a run's own timeout before we stop waiting on the SDK ourselves.
RUN_GRACE_SECONDS = 5.0
# How precisely Thread.last_used_at follows the runs (it only feeds idle-sandbox reaping).
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)
# How long an event may wait to be stored and published with the ones after it: a quick
# run's status, output and `done` become one write and one publication.
BATCH_WINDOW_SECONDS = 0.01
# How often a running execution looks for a cancel asked through another process.
CANCEL_POLL_SECONDS = 1.0
# How long reading a stopped run's usage may hold up its final status.
USAGE_READ_SECONDS = 2.0
# Items of _stream_run that are not the run's output.
NOT_OUTPUT = frozenset({"end", "listing", "usage", "finished"})


def _utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8, a lone surrogate counted as the 3 bytes it takes encoded
    (program output may hold them: they are stored escaped, see models.LosslessTextField)."""
    return len(text.encode("utf-8", "surrogatepass"))


def _utf8_prefix(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` that fits in `max_bytes` of UTF-8 (lone surrogates kept)."""
    cut = text.encode("utf-8", "surrogatepass")[:max_bytes]
    while True:  # at most 3 rounds: only a character cut at the end can fail to decode
        try:
            return cut.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            cut = cut[:-1]


# --- the run's live state and its events ------------------------------------------------------


class EventSink:
    """Stores and publishes the events of one execution; used by one thread at a time.

    Holds the next seq, the output budget and the results so far. Output accumulates
    (`output`) until `flush` or `finish` stores it in one UPDATE (with `last_seq`) and then
    publishes every event stored so far, in order: a quick run's status, output and `done`
    are one write and one publication, a long run's a write per batch window.
    """

    def __init__(
        self,
        execution: Execution,
        publisher: EventPublisher,
        *,
        stored: list[dict[str, Any]] | None = None,
    ) -> None:
        self.execution = execution
        self.publisher = publisher
        self.seq = execution.last_seq
        self.results: list[dict[str, Any]] = list(execution.results or [])
        self.output_budget = settings.EXECUTION_MAX_OUTPUT_BYTES - _utf8_size(
            execution.stdout + execution.stderr
        )
        self.result_budget = settings.EXECUTION_MAX_RESULT_BYTES - sum(
            result_size(r) for r in self.results
        )
        self.truncated = execution.truncated
        self.error: dict[str, Any] | None = execution.error
        # Events not stored yet, and what storing them changes in the row.
        self.unsaved: list[dict[str, Any]] = []
        self.appended = {"stdout": "", "stderr": ""}
        self.results_changed = self.error_changed = self.truncated_changed = False
        # What is kept, in order, for `output_order` (Execution.ordered_output).
        self.ordered: list[tuple[str, Any]] = []
        # The input() the code waits in, if any: kept in `details` while it waits, so a page
        # that reloads can still answer it (stream.StreamCursor replays it).
        self.details: dict[str, Any] = dict(execution.details or {})
        self.details_changed = False
        # Events stored but not published yet (always published after what came before).
        self.unpublished: list[dict[str, Any]] = list(stored or [])
        # Whether `execution` (the in-memory row) holds what finish() stored.
        self.row_current = False
        # monotonic time of the oldest event not yet published (None: nothing pending)
        self.pending_since: float | None = time.monotonic() if self.unpublished else None

    @property
    def execution_id(self) -> str:
        return str(self.execution.id)

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.seq += 1
        if self.pending_since is None:
            self.pending_since = time.monotonic()
        return {"type": kind, "execution_id": self.execution_id, **fields, "seq": self.seq}

    def _publish(self) -> None:
        events, self.unpublished = self.unpublished, []
        self.pending_since = None
        if events:
            self.publisher.publish_many(
                execution_id=self.execution.id, thread_id=self.execution.thread_id, events=events
            )

    def _spend(self, size: int) -> int:
        """Take up to `size` bytes from the output budget; returns what was granted."""
        granted = max(0, min(size, self.output_budget))
        self.output_budget -= granted
        if granted < size:
            if not self.truncated:
                self.truncated_changed = True
            self.truncated = True
        return granted

    def _store_result(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """Keep `result` within the run's result budget: whole when it fits, else a stated
        placeholder (its MIME types and size; the run is flagged truncated), else — once
        even placeholders no longer fit — nothing. Returns what was stored."""
        size = result_size(result)
        if size > self.result_budget:
            self.truncated_changed = self.truncated_changed or not self.truncated
            self.truncated = True
            mime_types = result_mime_types(result)
            result = {
                "text": f"[{', '.join(mime_types) or 'result'} of {size} bytes omitted: over "
                f"the limit of {settings.EXECUTION_MAX_RESULT_BYTES} bytes per run]",
                "omitted": {"mime_types": mime_types, "size": size},
                "is_main_result": bool(result.get("is_main_result")),
            }
            size = result_size(result)
            if size > self.result_budget:
                return None
        self.result_budget -= size
        self.results.append(result)
        return result

    def running(self) -> bool:
        """queued → running (conditional, so a cancel that won the race is respected). The
        `status` event is stored now and published with the next batch."""
        now = timezone.now()
        updated = Execution.objects.filter(pk=self.execution.pk, status=Status.QUEUED).update(
            status=Status.RUNNING, started_at=now, last_seq=self.seq + 1
        )
        if not updated:
            return False
        self.execution.status, self.execution.started_at = Status.RUNNING, now
        self.execution.last_seq = self.seq + 1
        self.unpublished.append(self._event("status", status=Status.RUNNING))
        return True

    def output(self, items: list[tuple[str, Any]]) -> None:
        """Take a batch of ("stdout"|"stderr", text), ("result", dict), ("error", dict) and
        ("input_request", {prompt, password}) items, honouring the output caps; stored by the
        next flush() or finish()."""
        for kind, payload in items:
            if kind != "input_request" and "input_request" in self.details:
                # Answered (its echo is this output), or the cell moved on.
                del self.details["input_request"]
                self.details_changed = True
            if kind in self.appended:
                size = _utf8_size(payload)
                granted = self._spend(size)
                if granted == 0:
                    continue
                text = payload if granted == size else _utf8_prefix(payload, granted)
                self.appended[kind] += text
                self.ordered.append((kind, text))
                # One line may be megabytes: frames stay under the transport's limit.
                self.unsaved.extend(self._event(kind, text=piece) for piece in split_text(text))
            elif kind == "result":
                stored = self._store_result(payload)
                if stored is None:
                    continue
                self.results_changed = True
                self.ordered.append((kind, stored))
                reference = result_reference(self.execution.id, len(self.results) - 1, stored)
                self.unsaved.append(self._event("result", result=reference))
            elif kind == "error":
                self.error = payload
                self.error_changed = True
                self.ordered.append((kind, payload))
                self.unsaved.append(self._event("error", error=payload))
            elif kind == "input_request":
                # Not output: the prompt and the answer reach stdout once answered.
                event = self._event(
                    "input_request",
                    prompt=str(payload.get("prompt", ""))[:1000],
                    password=bool(payload.get("password")),
                )
                self.details["input_request"] = {
                    "prompt": event["prompt"], "password": event["password"], "seq": event["seq"],
                }  # fmt: skip
                self.details_changed = True
                self.unsaved.append(event)

    def _take_changes(self) -> dict[str, Any]:
        """The UPDATE fields for what output() took since the last write; resets them."""
        update: dict[str, Any] = {}
        for stream, text in self.appended.items():
            if text:
                # The column's own field, so the text is stored as the column stores any
                # text (NUL and lone surrogates escaped: models.LosslessTextField).
                field = cast(TextField, Execution._meta.get_field(stream))
                update[stream] = Concat(
                    F(stream), Value(text, output_field=field), output_field=field
                )
        if self.results_changed:
            update["results"] = self.results
        if self.error_changed:
            update["error"] = self.error
        if self.truncated_changed:
            update["truncated"] = self.truncated
        if self.ordered:
            # Appended in the same UPDATE as the output it orders: a reader never sees one
            # without the other.
            tokens = output_order_tokens(self.ordered)
            update["output_order"] = Concat(
                F("output_order"), Value(tokens), output_field=TextField()
            )
            self.execution.output_order += tokens
        if self.details_changed:
            self.execution.details = update["details"] = dict(self.details)
        # The in-memory row follows what is written, so a caller holding it needs no re-read.
        self.execution.stdout += self.appended["stdout"]
        self.execution.stderr += self.appended["stderr"]
        self.appended = {"stdout": "", "stderr": ""}
        self.results_changed = self.error_changed = self.truncated_changed = False
        self.ordered = []
        self.details_changed = False
        return update

    def flush(self) -> None:
        """Store what is unsaved in one UPDATE, then publish every stored event in order."""
        update = self._take_changes()
        if update or self.unsaved:
            Execution.objects.filter(pk=self.execution.pk).update(last_seq=self.seq, **update)
            self.execution.last_seq = self.seq
            self.unpublished.extend(self.unsaved)
            self.unsaved = []
        self._publish()

    def finish(
        self,
        status: str,
        *,
        error: dict[str, Any] | None = None,
        exit_code: int | None = None,
        details: dict[str, Any] | None = None,
        usage: RunUsage | None = None,
    ) -> None:
        """Store the final status with the output not stored yet (and an infra `error` if
        given) in one UPDATE, then publish every event since the last publication and
        `done`. Does nothing but publish what was stored if the execution is already final.

        The in-memory row is trusted (this sink is its only writer besides a cancel of a
        queued run and the recovery of a dead worker's runs); the UPDATE is conditional on
        the status it expects, so a run finished behind its back is never overwritten."""
        if not self.execution.can_transition_to(status):
            self._publish()
            return
        if error is not None:
            self.error = error
            self.error_changed = True
            self.ordered.append(("error", error))
            self.unsaved.append(self._event("error", error=error))
        now = timezone.now()
        started = self.execution.started_at
        duration_ms = int((now - started).total_seconds() * 1000) if started else None
        merged = {**self.details, **(details or {})}
        merged.pop("input_request", None)  # nothing waits once the run is over
        if usage is not None and usage.note:
            merged["usage_note"] = usage.note
        self.unsaved.append(
            self._event(
                "done", status=status, duration_ms=duration_ms, exit_code=exit_code,
                truncated=self.truncated,
            )
        )  # fmt: skip
        changes = self._take_changes()
        changes.pop("truncated", None)
        changes.pop("details", None)  # `merged` is the final word
        updated = Execution.objects.filter(
            pk=self.execution.pk, status=self.execution.status
        ).update(
            status=status, finished_at=now, duration_ms=duration_ms, exit_code=exit_code,
            truncated=self.truncated, details=merged, last_seq=self.seq, **changes,
            **(usage.as_fields() if usage is not None else {}),
        )  # fmt: skip
        if updated:
            row = self.execution
            row.status, row.finished_at, row.duration_ms, row.exit_code = (
                status, now, duration_ms, exit_code,
            )  # fmt: skip
            row.truncated, row.details, row.last_seq = self.truncated, merged, self.seq
            row.error, row.results = self.error, list(self.results)
            if usage is not None:
                row.cpu_time_ms = usage.cpu_time_ms
                row.memory_peak_bytes = usage.memory_peak_bytes
            self.row_current = True
            self.unpublished.extend(self.unsaved)
        self.unsaved = []
        self._publish()
        if updated:
            run_finished(self.execution)


@dataclass
class RunOutcome:
    """How the SDK call ended: kind is ok, timeout, cancelled, lost (sandbox died during the
    run), gone (nothing ran: sandbox or context unknown) or unavailable."""

    kind: str
    detail: str = ""
    received_events: bool = False


class RunHandle:
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


_active: dict[uuid.UUID, RunHandle] = {}
_active_lock = threading.Lock()


def active_run(execution_id: uuid.UUID) -> RunHandle | None:
    """The handle of an execution running (or about to run) in this process, or None."""
    with _active_lock:
        return _active.get(execution_id)


def register_run(execution_id: uuid.UUID) -> RunHandle:
    """The handle of an execution this process is going to run, registered now: a wait or a
    cancel that comes before its background work starts still finds it."""
    with _active_lock:
        handle = _active.get(execution_id)
        if handle is None:
            handle = _active[execution_id] = RunHandle()
        return handle


async def _stream_run(
    sandbox: Sandbox,
    code: str,
    language: str,
    time_limit: float,
    push: queue.SimpleQueue[tuple[str, Any]],
    *,
    allow_input: bool = False,
    run_id: str | None = None,
) -> None:
    """Run the code through the contract, pushing ("stdout"|…, payload) items and finally
    ("end", RunOutcome). Never raises: cancellation is an outcome too. With `allow_input` the
    code may call input(): its requests come as ("input_request", {prompt, password}). A run
    that finishes is followed by ("listing", the workspace) and, with `run_id`, ("usage",
    RunUsage), both read together while the worker thread stores the last output."""
    received = False

    def on_event(event: SandboxEvent) -> None:
        nonlocal received
        received = True
        if event["kind"] == "result":
            push.put(("result", event["result"]))
        elif event["kind"] == "error":
            push.put(("error", event["error"]))
        elif event["kind"] == "input_request":
            push.put(("input_request", {"prompt": event["prompt"], "password": event["password"]}))
        else:
            push.put((event["kind"], event["text"]))

    started = time.monotonic()
    outcome = RunOutcome("ok")
    try:
        async with asyncio.timeout(time_limit + RUN_GRACE_SECONDS):
            await sandbox.run_code(
                code, language=language, time_limit=time_limit, on_event=on_event,
                allow_input=allow_input, run_id=run_id,
            )  # fmt: skip
        # The code is over: the runner stops flushing by the window and stores the rest of
        # the output with the final status.
        push.put(("finished", None))
        # List the workspace for file sync and read the run's usage here, while the worker
        # thread is still storing the last output: the round trips overlap the database
        # writes and each other.
        listing, usage = await asyncio.gather(
            sandbox.list_files(WORKSPACE_ROOT, depth=SYNC_DEPTH),
            read_run_usage(sandbox.sandbox_id, run_id) if run_id else asyncio.sleep(0),
            return_exceptions=True,
        )
        if isinstance(listing, SandboxError):
            logger.info("listing the workspace after a run failed", exc_info=listing)
        elif isinstance(listing, BaseException):
            raise listing
        else:
            push.put(("listing", listing))
        if isinstance(usage, RunUsage):
            push.put(("usage", usage))
    except asyncio.CancelledError:
        outcome = RunOutcome("cancelled")
    except (RunTimedOut, TimeoutError) as exc:
        outcome = RunOutcome("timeout", str(exc))
    except SandboxGone as exc:
        if time.monotonic() - started >= time_limit * 0.95:
            # A sandbox that stops answering right at the time limit was ended by it.
            outcome = RunOutcome("timeout", str(exc))
        else:
            # Refused before anything ran (unknown sandbox): safe to recover and run once
            # more; otherwise it died under the run.
            outcome = RunOutcome("lost" if received else "gone", str(exc))
    except SandboxUnavailable as exc:
        outcome = RunOutcome("unavailable", exc.reason)
    except Exception as exc:
        logger.exception("run failed unexpectedly")
        outcome = RunOutcome("unavailable", f"{type(exc).__name__}: {exc}")
    outcome.received_events = received
    push.put(("end", outcome))


def stdin_allowed(execution: Execution) -> bool:
    """Whether the run may call input(): Python, from the workspace page (someone is there
    to answer), on a backend whose sandboxes take answers (sandboxd, not E2B's cloud)."""
    return (
        execution.language == "python"
        and execution.source == "browser"
        and get_backend().accepts_input
    )


def _exit_code(error: dict[str, Any] | None) -> int:
    """The exit code of a failed run: a bash kernel reports the shell's own (E2B's and
    sandboxd's bash kernels send it as the error's value); any other failure is 1."""
    value = str((error or {}).get("value", ""))
    if (error or {}).get("name") == "CommandExitError" and value.isdigit():
        return int(value)
    return 1


def infra_error(code: str, message: str) -> dict[str, Any]:
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
        *,
        accepted: dict[str, Any] | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.publisher = publisher
        # The sink of the run, once it started (tells whether the caller's row is current).
        self.sink: EventSink | None = None
        # The run's `execution` event, when the caller left it to go out with the first batch.
        self.accepted = [accepted] if accepted is not None else []
        # The row just created by the caller (inline runs), to save reading it back.
        self.execution = execution
        # The workspace listing taken right after the run.
        self.listing: list[FileEntry] | None = None
        # What the run used, read right after it (sandboxd meters runs by execution id).
        self.usage: RunUsage | None = None

    @property
    def row_current(self) -> bool:
        """Whether the row given to the constructor now holds the run's final state (as
        stored), so the caller need not read it again."""
        return self.execution is not None and self.sink is not None and self.sink.row_current

    def run(self) -> None:
        handle = register_run(self.execution_id)
        try:
            self._run(handle)
        except Exception:
            logger.exception("execution %s crashed", self.execution_id)
            with contextlib.suppress(Exception):
                execution = Execution.objects.get(pk=self.execution_id)
                EventSink(execution, self.publisher, stored=self.accepted).finish(
                    Status.ERROR,
                    error=infra_error("internal_error", "The run failed unexpectedly."),
                )
        finally:
            handle.done.set()
            with _active_lock:
                _active.pop(self.execution_id, None)

    def _run(self, handle: RunHandle) -> None:
        execution = self.execution or Execution.objects.select_related("thread").get(
            pk=self.execution_id
        )
        thread = execution.thread
        sink = self.sink = EventSink(execution, self.publisher, stored=self.accepted)
        if thread is None:
            sink.finish(
                Status.ERROR, error=infra_error("thread_deleted", "The thread was deleted.")
            )
            return
        with sessions.thread_lock(thread.id):
            # A cancel while it waited for the thread is caught by running(), whose update
            # is conditional on `queued`.
            if handle.cancel.is_set():
                sink.finish(Status.CANCELLED)
                return
            try:
                lease = self._acquire(thread, fresh=self.execution is not None)
            except ToolError as exc:
                sink.finish(
                    Status.ERROR,
                    error=infra_error(exc.code, exc.message),
                    details={"reason": exc.details.get("reason", "")},
                )
                return
            details: dict[str, Any] = {"sandbox_id": lease.sandbox.sandbox_id}
            if lease.restored is not None:
                details["restored"] = lease.restored.as_dict()
            if not sink.running():
                sink.flush()  # cancelled while queued: what was stored still goes out
                return
            since = timezone.now()
            timeout = execution.timeout_seconds or settings.EXECUTION_DEFAULT_TIMEOUT
            outcome = self._stream(handle, sink, lease.sandbox, execution, timeout)
            if outcome.kind == "gone":
                # Nothing ran: the sandbox or the context is unknown to the server (killed
                # behind our back, server restarted). Recover once, then run for real.
                try:
                    outcome, lease, details = self._recover_and_rerun(
                        handle, sink, thread, execution, timeout, details
                    )
                except ToolError as exc:
                    sessions.forget(thread)
                    sink.finish(
                        Status.ERROR,
                        error=infra_error(exc.code, exc.message),
                        details={**details, "reason": exc.details.get("reason", "")},
                    )
                    return
            usage = self._usage(outcome, lease.sandbox)
            if outcome.kind in ("ok", "timeout", "cancelled"):
                details["file_sync"] = self._sync_files(sink, thread, lease, execution, since)
            now = timezone.now()
            # Idle reaping needs minutes, not milliseconds: skip the write on busy threads.
            if thread.last_used_at is None or now - thread.last_used_at > LAST_USED_RESOLUTION:
                Thread.objects.filter(pk=thread.pk).update(last_used_at=now)
            self._finish(sink, outcome, timeout, details, thread, usage)

    def _usage(self, outcome: RunOutcome, sandbox: Sandbox) -> RunUsage:
        """The run's usage: read with the listing when the code finished; read now when the
        run was stopped (a timeout's CPU time is the interesting one), up to its stop."""
        if self.usage is not None:
            return self.usage
        if outcome.kind in ("timeout", "cancelled"):
            with contextlib.suppress(Exception):
                return (
                    service_portal()
                    .submit(read_run_usage(sandbox.sandbox_id, str(self.execution_id)))
                    .result(timeout=USAGE_READ_SECONDS)
                )
        return RunUsage(note="not measured: the run did not finish in its sandbox")

    def _sync_files(
        self,
        sink: EventSink,
        thread: Thread,
        lease: SandboxLease,
        execution: Execution,
        since: dt.datetime,
    ) -> dict[str, Any]:
        """Sync the workspace back, unless its listing is the one the last sync of this
        sandbox ended with (most runs change no file: no database work for them)."""
        listing = self.listing
        if listing is not None and sessions.listing_unchanged(thread, lease.sandbox, listing):
            return SyncReport().as_dict()
        # A sync reads files and writes rows: the output so far should not wait for it.
        sink.flush()
        report = sync_workspace_back(
            thread=thread, sandbox=lease.sandbox, since=since, listing=listing,
            written_by=WorkspaceFile.WrittenBy.AGENT if execution.agent_id
            else WorkspaceFile.WrittenBy.CODE,
        )  # fmt: skip
        if listing is not None and report.error is None and not report.skipped:
            sessions.remember_listing(thread, lease.sandbox, listing)
        return report.as_dict()

    def _stream(
        self,
        handle: RunHandle,
        sink: EventSink,
        sandbox: Sandbox,
        execution: Execution,
        timeout: float,
    ) -> RunOutcome:
        items: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        handle.future = service_portal().submit(
            _stream_run(
                sandbox, execution.code, execution.language, timeout, items,
                allow_input=stdin_allowed(execution), run_id=str(execution.id),
            )
        )  # fmt: skip
        if handle.cancel.is_set():
            handle.future.cancel()
        next_poll = time.monotonic() + CANCEL_POLL_SECONDS
        finished = False
        while True:
            # Events wait at most BATCH_WINDOW_SECONDS to be stored and published together.
            wait = 0.25
            if sink.pending_since is not None and not finished:
                wait = max(0.0, sink.pending_since + BATCH_WINDOW_SECONDS - time.monotonic())
            try:
                first = items.get(timeout=wait)
            except queue.Empty:
                if sink.pending_since is not None and not finished:
                    sink.flush()
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
                elif kind == "usage":
                    self.usage = payload
                elif kind == "finished":
                    finished = True
            sink.output([(k, p) for k, p in batch if k not in NOT_OUTPUT])
            if end is not None:
                if end.kind == "cancelled" and not handle.cancel.is_set():
                    end.kind = "unavailable"
                return end

    @staticmethod
    def _acquire(thread: Thread, *, fresh: bool = False) -> SandboxLease:
        """The thread's sandbox. One that vanishes while it is being got (killed, expired)
        is replaced once. Raises ToolError (503)."""
        for attempt in range(2):
            try:
                return sessions.get_or_create(thread, fresh=fresh and attempt == 0)
            except SandboxGone as exc:
                sessions.forget(thread)
                if attempt == 1:
                    raise ToolError(
                        "sandbox_lost", "The sandbox vanished while it was being prepared.", 503,
                        {"reason": str(exc)}, headers={"Retry-After": "5"},
                    ) from exc  # fmt: skip
        raise AssertionError("unreachable")

    def _recover_and_rerun(
        self,
        handle: RunHandle,
        sink: EventSink,
        thread: Thread,
        execution: Execution,
        timeout: float,
        details: dict[str, Any],
    ) -> tuple[RunOutcome, SandboxLease, dict[str, Any]]:
        cached = self._acquire(thread)  # reconnects, or recreates and restores
        if not sessions.is_running(cached.sandbox):
            sessions.forget(thread)
        lease = self._acquire(thread)
        if lease.sandbox.sandbox_id != details.get("sandbox_id"):
            details = {**details, "sandbox_id": lease.sandbox.sandbox_id, "recreated": True}
            if lease.restored is not None:
                details["restored"] = lease.restored.as_dict()
        outcome = self._stream(handle, sink, lease.sandbox, execution, timeout)
        if outcome.kind == "gone":
            outcome.kind = "lost"
        return outcome, lease, details

    def _finish(
        self,
        sink: EventSink,
        outcome: RunOutcome,
        timeout: float,
        details: dict[str, Any],
        thread: Thread,
        usage: RunUsage,
    ) -> None:
        if outcome.kind == "ok":
            failed = sink.error is not None
            sink.finish(
                Status.FAILED if failed else Status.SUCCEEDED,
                exit_code=_exit_code(sink.error) if failed else 0,
                details=details,
                usage=usage,
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
                usage=usage,
            )
        elif outcome.kind == "cancelled":
            sink.finish(Status.CANCELLED, details=details, usage=usage)
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
                error=infra_error(code, message),
                details={**details, "reason": outcome.detail[:500]},
            )


def wait_for_background_runs(timeout: float = 60.0) -> bool:
    """Wait until no background work runs in this process (tests, orderly shutdown); True if
    none is left running."""
    return service_portal().wait_idle(timeout)
