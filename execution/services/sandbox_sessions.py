"""One sandbox per thread, through the sandbox contract: create, reconnect, recreate, keep
alive, kill.

The database is the source of truth and the sandbox a cache (README, "Architecture"): a
thread stores its `sandbox_id` (its `context_ids` column is no longer used); when the sandbox
is gone (killed, timed out, sandboxd restarted) the next use creates a new one and restores
the thread's WorkspaceFiles and re-installs its succeeded PackageInstalls, so losing a
sandbox loses nothing the user asked for.

Sandboxes come from the configured backend (execution/sandbox/, SANDBOX_BACKEND): the e2b SDK
in production. Code runs in each sandbox's default context per language, which a pooled
sandbox has already started: a new thread's first run starts no kernel.

Concurrency: a per-thread lock in this process serialises creation and runs; across processes
the thread row's `sandbox_id` is switched with a compare-and-set update, and the loser of a
race kills its own sandbox and adopts the winner's.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.conf import settings
from django.utils import timezone

from execution.models import PackageInstall, Thread, WorkspaceFile
from execution.monitoring import metrics
from execution.sandbox import get_backend
from execution.sandbox.base import (
    FileEntry,
    InputNotRequested,
    Sandbox,
    SandboxError,
    SandboxGone,
    SandboxRateLimited,
    SandboxUnavailable,
)
from execution.services.errors import ToolError, sandbox_unavailable
from execution.services.packages import run_install
from execution.services.quotas import sandbox_admission, sandbox_limit_reached
from execution.services.runtime import run_sandbox_call
from execution.services.validation import WORKSPACE_ROOT

logger = logging.getLogger(__name__)
T = TypeVar("T")


def as_tool_error(exc: SandboxError) -> ToolError:
    """The ToolError a client gets for a sandbox failure: 429 when the server rate limits us,
    else 503 with the reason."""
    if isinstance(exc, SandboxRateLimited):
        return ToolError(
            "sandbox_rate_limited",
            "The sandbox service is rate limiting requests; try again shortly.",
            429,
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, SandboxUnavailable):
        return sandbox_unavailable(exc.reason)
    return sandbox_unavailable(f"{type(exc).__name__}: {exc}")


@dataclass
class RestoreReport:
    """What a new sandbox got back: files written, packages re-installed, and what failed."""

    files: int = 0
    packages: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "packages": self.packages, "failures": self.failures}


@dataclass
class SandboxLease:
    """A live sandbox for a thread; `restored` is set when it was created for this use."""

    sandbox: Sandbox
    restored: RestoreReport | None = None


@dataclass
class _Live:
    sandbox: Sandbox
    # monotonic time of the last call that proved the sandbox alive and extended its timeout
    refreshed_at: float
    # The workspace as the last complete file sync left it: (path, type, size, mtime).
    synced_listing: frozenset[tuple[str, str, int, dt.datetime]] | None = None


# How long a sandbox admission waits for an idle thread's lock before it counts as in use.
RELEASE_WAIT_SECONDS = 2.0


class SandboxSessions:
    """The process-wide registry of threads' live sandboxes (use the module's `sessions`)."""

    def __init__(self) -> None:
        self._live: dict[uuid.UUID, _Live] = {}
        self._locks: dict[uuid.UUID, threading.RLock] = {}
        self._guard = threading.Lock()

    # --- locking ----------------------------------------------------------------------------

    def thread_lock(self, thread_id: uuid.UUID) -> threading.RLock:
        """The lock that serialises sandbox creation and runs of one thread in this process."""
        with self._guard:
            lock = self._locks.get(thread_id)
            if lock is None:
                lock = self._locks[thread_id] = threading.RLock()
            return lock

    # --- calls --------------------------------------------------------------------------

    @staticmethod
    def call(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run one sandbox coroutine on the service portal; unavailability becomes a ToolError
        (503, or 429 when rate limited); SandboxGone and SandboxFileNotFound propagate for
        the caller to act on."""
        try:
            return run_sandbox_call(coro, timeout)
        except SandboxUnavailable as exc:
            raise as_tool_error(exc) from exc
        except TimeoutError as exc:
            raise sandbox_unavailable(str(exc)) from exc

    # --- the lifecycle ----------------------------------------------------------------------

    def get_or_create(self, thread: Thread, *, fresh: bool = False) -> SandboxLease:
        """Return a live sandbox for `thread`: the cached one, a reconnected one, or a new one
        with the thread's files and packages restored. `fresh` says the caller read the
        thread row just now (saves reading it again). Raises ToolError (503) when the
        sandbox server cannot be reached."""
        with self.thread_lock(thread.id):
            if not fresh:
                thread.refresh_from_db(fields=["sandbox_id"])
            live = self._live.get(thread.id)
            if (
                live is not None
                and live.sandbox.sandbox_id == thread.sandbox_id
                and self._keep_alive(thread, live)
            ):
                return SandboxLease(live.sandbox)
            if thread.sandbox_id:
                sandbox = self._reconnect(thread.sandbox_id)
                if sandbox is not None:
                    self._live[thread.id] = _Live(sandbox, time.monotonic())
                    metrics.record_sandbox_session("reconnected")
                    return SandboxLease(sandbox)
            return self._create(thread)

    def _keep_alive(self, thread: Thread, live: _Live) -> bool:
        # A sandbox dies at its timeout unless extended; extend it once per third of the
        # timeout rather than on every run, which would add a round trip to each.
        if time.monotonic() - live.refreshed_at < settings.SANDBOX_TIMEOUT_SECONDS / 3:
            return True
        try:
            self.call(live.sandbox.keep_alive(settings.SANDBOX_TIMEOUT_SECONDS))
        except SandboxGone:
            self._live.pop(thread.id, None)
            return False
        live.refreshed_at = time.monotonic()
        return True

    def _reconnect(self, sandbox_id: str) -> Sandbox | None:
        try:
            return self.call(
                get_backend().connect(sandbox_id, lifetime=settings.SANDBOX_TIMEOUT_SECONDS)
            )
        except SandboxGone:
            logger.info("sandbox %s is gone; a new one will be created", sandbox_id)
            return None

    def _create(self, thread: Thread) -> SandboxLease:
        # The owner's cap on live sandboxes (quotas.py decides): their oldest idle sandboxes
        # are released first; 429 when all of them are running code.
        with sandbox_admission(thread) as to_release:
            for other in to_release:
                if not self._release_if_free(other):
                    raise sandbox_limit_reached()
            return self._create_admitted(thread)

    def _release_if_free(self, thread: Thread) -> bool:
        """Kill another thread's sandbox for its owner's cap, unless that thread is in use
        right now. The database says it is idle, but its runner may still hold its lock for
        the tail of a run already stored as finished (file sync, usage readings): wait for
        that briefly. Only briefly: a holder waiting for its own admission would deadlock
        with us, so past RELEASE_WAIT_SECONDS the thread counts as in use."""
        lock = self.thread_lock(thread.id)
        if not lock.acquire(timeout=RELEASE_WAIT_SECONDS):
            return False
        try:
            self.kill(thread)
            logger.info("thread %s: sandbox released for its owner's sandbox cap", thread.id)
            return True
        finally:
            lock.release()

    def _create_admitted(self, thread: Thread) -> SandboxLease:
        previous_id = thread.sandbox_id
        sandbox = self.call(
            get_backend().create(
                metadata={"atlaschat_thread": thread.id.hex},
                lifetime=settings.SANDBOX_TIMEOUT_SECONDS,
            )
        )
        try:
            report = self._restore(thread, sandbox)
        except BaseException:
            self._kill_quietly(sandbox)
            raise
        # Compare-and-set: only the process that saw the old id switches it.
        switched = Thread.objects.filter(id=thread.id, sandbox_id=previous_id).update(
            sandbox_id=sandbox.sandbox_id, last_used_at=timezone.now()
        )
        if not switched:
            # Another process replaced the sandbox meanwhile: use theirs, drop ours.
            self._kill_quietly(sandbox)
            thread.refresh_from_db(fields=["sandbox_id"])
            other = self._reconnect(thread.sandbox_id) if thread.sandbox_id else None
            if other is None:
                raise sandbox_unavailable("the thread's sandbox changed while it was created")
            self._live[thread.id] = _Live(other, time.monotonic())
            return SandboxLease(other)
        thread.sandbox_id = sandbox.sandbox_id
        self._live[thread.id] = _Live(sandbox, time.monotonic())
        # "restored": the thread had a sandbox before, its files and packages were put back.
        metrics.record_sandbox_session("restored" if previous_id else "created")
        if previous_id:
            logger.info(
                "thread %s: sandbox %s replaced by %s", thread.id, previous_id, sandbox.sandbox_id
            )
        return SandboxLease(sandbox, restored=report)

    def _restore_files(
        self, sandbox: Sandbox, files: list[WorkspaceFile], report: RestoreReport
    ) -> int:
        """Write the files in one call; if that fails, one by one, so that one file the
        sandbox cannot hold (stored before validation refused such files) is reported in
        `report.failures` and skipped instead of failing every later run. Returns how many
        were written; re-raises when none can be (the server, not a file, is the problem)."""
        contents = {f"{WORKSPACE_ROOT}/{f.path}": f.read_content() for f in files}
        try:
            self.call(sandbox.write_files(contents))
            return len(files)
        except (ToolError, SandboxError) as batch_error:
            written = 0
            for (path, data), row in zip(contents.items(), files, strict=True):
                try:
                    self.call(sandbox.write_files({path: data}))
                    written += 1
                except (ToolError, SandboxError) as exc:
                    reason = exc.details.get("reason") if isinstance(exc, ToolError) else str(exc)
                    report.failures.append(
                        {"path": row.path, "reason": str(reason or type(exc).__name__)[:300]}
                    )
            if written == 0:
                raise batch_error from None
            logger.warning("restore skipped %d file(s) the sandbox refused", len(files) - written)
            return written

    def _restore(self, thread: Thread, sandbox: Sandbox) -> RestoreReport:
        """Write the thread's files and re-install its succeeded packages, in their order."""
        report = RestoreReport()
        files = list(WorkspaceFile.objects.filter(thread=thread).order_by("path"))
        if files:
            report.files = self._restore_files(sandbox, files, report)
        installs = PackageInstall.objects.filter(
            thread=thread, status=PackageInstall.Status.SUCCEEDED
        ).order_by("created_at")
        for install in installs:
            manager = "pip" if install.language == "python" else "npm"
            outcome = self.call(
                run_install(
                    sandbox, manager, list(install.packages),
                    time_limit=settings.PACKAGE_INSTALL_TIMEOUT,
                )
            )  # fmt: skip
            if outcome.succeeded:
                report.packages.extend(install.packages)
            else:
                report.failures.append(
                    {"packages": install.packages, "exit_code": outcome.exit_code,
                     "log": outcome.log[-2000:]}
                )  # fmt: skip
        return report

    def current_sandbox(self, thread: Thread) -> Sandbox | None:
        """The thread's sandbox as it is now (cached, or reconnected to by id), without the
        thread's lock, which a run holds for as long as it runs: for what must reach the
        sandbox during a run (an answer to input(), a terminal). None when it has none."""
        thread.refresh_from_db(fields=["sandbox_id"])
        live = self._live.get(thread.id)
        if live is not None and live.sandbox.sandbox_id == thread.sandbox_id:
            return live.sandbox
        return self._reconnect(thread.sandbox_id) if thread.sandbox_id else None

    def send_input(self, thread: Thread, language: str, value: str) -> None:
        """Answer the input() the thread's running `language` cell waits for (the contract's
        `send_input`). Raises ToolError: 409 `no_input_requested` when no cell waits (or the
        sandbox is gone), 503 when the sandbox cannot be reached."""
        sandbox = self.current_sandbox(thread)
        try:
            if sandbox is None:
                raise InputNotRequested("the thread has no sandbox")
            self.call(sandbox.send_input(language, value))
        except (InputNotRequested, SandboxGone) as exc:
            raise ToolError(
                "no_input_requested", "No run of this thread waits for input.", 409
            ) from exc

    def forget_all(self, *, kill: bool = False) -> None:
        """Forget every cached sandbox (e.g. when settings point at another server); with
        kill=True kill them too (tests, shutdown)."""
        with self._guard:
            live = list(self._live.values())
            self._live.clear()
        if kill:
            for entry in live:
                self._kill_quietly(entry.sandbox)

    @staticmethod
    def _listing_key(listing: list[FileEntry]) -> frozenset[tuple[str, str, int, dt.datetime]]:
        return frozenset((e.path, e.type, e.size, e.modified_time) for e in listing)

    def listing_unchanged(self, thread: Thread, sandbox: Sandbox, listing: list[FileEntry]) -> bool:
        """Whether `listing` of `sandbox` is what the last complete sync of it left: no file
        was created, changed or deleted since (by code, or through the file tools, whose
        writes change the listing too)."""
        live = self._live.get(thread.id)
        return (
            live is not None
            and live.sandbox is sandbox
            and live.synced_listing == self._listing_key(listing)
        )

    def remember_listing(self, thread: Thread, sandbox: Sandbox, listing: list[FileEntry]) -> None:
        """Record the listing a complete sync of `sandbox` ended with."""
        live = self._live.get(thread.id)
        if live is not None and live.sandbox is sandbox:
            live.synced_listing = self._listing_key(listing)

    def forget(self, thread: Thread) -> None:
        """Forget the cached sandbox of `thread`, so the next use reconnects (or recreates)."""
        self._live.pop(thread.id, None)

    def is_running(self, sandbox: Sandbox) -> bool:
        """Whether the sandbox still answers; False also when it cannot be asked."""
        try:
            return run_sandbox_call(sandbox.is_running(), 15)
        except (SandboxError, TimeoutError):
            return False

    def kill(self, thread: Thread) -> bool:
        """Kill the thread's sandbox (if any) and clear it from the thread; True if one was
        killed. Raises ToolError (503) when the server cannot be reached."""
        with self.thread_lock(thread.id):
            self._live.pop(thread.id, None)
            thread.refresh_from_db(fields=["sandbox_id"])
            sandbox_id = thread.sandbox_id
            if not sandbox_id:
                return False
            try:
                killed = self.call(get_backend().kill(sandbox_id))
            except SandboxGone:
                killed = False
            Thread.objects.filter(id=thread.id, sandbox_id=sandbox_id).update(sandbox_id="")
            thread.sandbox_id = ""
            return killed

    def _kill_quietly(self, sandbox: Sandbox) -> None:
        try:
            run_sandbox_call(sandbox.kill(), 15)
        except (SandboxError, TimeoutError):
            logger.warning("could not kill sandbox %s", sandbox.sandbox_id, exc_info=True)


sessions = SandboxSessions()
