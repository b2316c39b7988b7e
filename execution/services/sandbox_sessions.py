"""One sandbox per thread, through the e2b SDK: create, reconnect, recreate, keep alive, kill.

The database is the source of truth and the sandbox a cache (DESIGN.md): a thread stores its
`sandbox_id` and per-language `context_ids`; when the sandbox is gone (killed, timed out,
sandboxd restarted) the next use creates a new one and restores the thread's WorkspaceFiles
and re-installs its succeeded PackageInstalls, so losing a sandbox loses nothing the user
asked for.

Which server the SDK talks to is configuration only: sandboxd (SANDBOXD_URL, api and sandbox
URL alike) by default, E2B's cloud when E2B_API_KEY is set (E2B_DOMAIN for a self-hosted E2B).

Concurrency: a per-thread lock in this process serialises creation and runs; across processes
the thread row's `sandbox_id` is switched with a compare-and-set update, and the loser of a
race kills its own sandbox and adopts the winner's.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from django.conf import settings
from django.utils import timezone
from e2b import (
    AuthenticationException,
    NotFoundException,
    RateLimitException,
    SandboxException,
    SandboxNotRunningException,
    ServiceBusyException,
)
from e2b_code_interpreter import E2B, AsyncSandbox, Context

from execution.models import PackageInstall, Thread, WorkspaceFile
from execution.monitoring import metrics
from execution.services.errors import ToolError, sandbox_unavailable
from execution.services.packages import run_install
from execution.services.runtime import run_sandbox_call
from execution.services.validation import WORKSPACE_ROOT

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Errors meaning "this sandbox (or context) does not exist any more": recreate, don't fail.
SANDBOX_GONE_ERRORS: tuple[type[BaseException], ...] = (
    NotFoundException,
    SandboxNotRunningException,
)


def sandbox_client_options() -> dict[str, str]:
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


@functools.lru_cache(maxsize=8)
def _sandbox_class_for(options: tuple[tuple[str, str], ...]) -> type[AsyncSandbox]:
    # E2B(...) binds the options to a subclass, so the process environment (E2B_* variables
    # the SDK would otherwise read) never changes where our sandboxes go.
    return E2B(**dict(options)).AsyncSandbox


def sandbox_class() -> type[AsyncSandbox]:
    """The SDK's AsyncSandbox bound to the configured server (re-read for settings overrides)."""
    return _sandbox_class_for(tuple(sorted(sandbox_client_options().items())))


def as_tool_error(exc: BaseException) -> ToolError:
    """Map an SDK or transport failure to the ToolError a client gets (503 unless it is ours)."""
    if isinstance(exc, ToolError):
        return exc
    if isinstance(exc, RateLimitException):
        return ToolError(
            "sandbox_rate_limited",
            "The sandbox service is rate limiting requests; try again shortly.",
            429,
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, AuthenticationException):
        return sandbox_unavailable("the sandbox service refused our credentials")
    if isinstance(exc, ServiceBusyException):
        return sandbox_unavailable("the sandbox service has no capacity right now")
    return sandbox_unavailable(f"{type(exc).__name__}: {exc}")


def is_unavailability(exc: BaseException) -> bool:
    """Whether `exc` means the sandbox server could not be reached or answered with failure."""
    return isinstance(
        exc,
        httpx.HTTPError
        | OSError
        | SandboxException
        | AuthenticationException
        | ServiceBusyException
        | TimeoutError,
    )


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

    sandbox: AsyncSandbox
    restored: RestoreReport | None = None


@dataclass
class _Live:
    sandbox: AsyncSandbox
    # monotonic time of the last call that proved the sandbox alive and extended its timeout
    refreshed_at: float


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
        """Run one SDK coroutine on the service loop; unavailability becomes a 503 ToolError,
        "gone" errors (SANDBOX_GONE_ERRORS) propagate for the caller to recover from."""
        try:
            return run_sandbox_call(coro, timeout)
        except SANDBOX_GONE_ERRORS:
            raise
        except Exception as exc:
            if is_unavailability(exc):
                raise as_tool_error(exc) from exc
            raise

    # --- the lifecycle ----------------------------------------------------------------------

    def get_or_create(self, thread: Thread, *, fresh: bool = False) -> SandboxLease:
        """Return a live sandbox for `thread`: the cached one, a reconnected one, or a new one
        with the thread's files and packages restored. `fresh` says the caller read the
        thread row just now (saves reading it again). Raises ToolError (503) when the
        sandbox server cannot be reached."""
        with self.thread_lock(thread.id):
            if not fresh:
                thread.refresh_from_db(fields=["sandbox_id", "context_ids"])
            live = self._live.get(thread.id)
            live_matches = live is not None and live.sandbox.sandbox_id == thread.sandbox_id
            if live_matches and self._keep_alive(thread, live):
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
            self.call(live.sandbox.set_timeout(settings.SANDBOX_TIMEOUT_SECONDS))
        except SANDBOX_GONE_ERRORS:
            self._live.pop(thread.id, None)
            return False
        live.refreshed_at = time.monotonic()
        return True

    def _reconnect(self, sandbox_id: str) -> AsyncSandbox | None:
        try:
            return self.call(
                sandbox_class().connect(sandbox_id, timeout=settings.SANDBOX_TIMEOUT_SECONDS)
            )
        except SANDBOX_GONE_ERRORS:
            logger.info("sandbox %s is gone; a new one will be created", sandbox_id)
            return None

    def _create(self, thread: Thread) -> SandboxLease:
        previous_id = thread.sandbox_id
        sandbox: AsyncSandbox = self.call(
            sandbox_class().create(
                template=settings.SANDBOX_TEMPLATE,
                timeout=settings.SANDBOX_TIMEOUT_SECONDS,
                metadata={"atlaschat_thread": thread.id.hex},
            )
        )
        try:
            report = self._restore(thread, sandbox)
        except BaseException:
            self._kill_quietly(sandbox)
            raise
        # Compare-and-set: only the process that saw the old id switches it.
        switched = Thread.objects.filter(id=thread.id, sandbox_id=previous_id).update(
            sandbox_id=sandbox.sandbox_id, context_ids={}, last_used_at=timezone.now()
        )
        if not switched:
            # Another process replaced the sandbox meanwhile: use theirs, drop ours.
            self._kill_quietly(sandbox)
            thread.refresh_from_db(fields=["sandbox_id", "context_ids"])
            other = self._reconnect(thread.sandbox_id) if thread.sandbox_id else None
            if other is None:
                raise sandbox_unavailable("the thread's sandbox changed while it was created")
            self._live[thread.id] = _Live(other, time.monotonic())
            return SandboxLease(other)
        thread.sandbox_id, thread.context_ids = sandbox.sandbox_id, {}
        self._live[thread.id] = _Live(sandbox, time.monotonic())
        # "restored": the thread had a sandbox before, its files and packages were put back.
        metrics.record_sandbox_session("restored" if previous_id else "created")
        if previous_id:
            logger.info(
                "thread %s: sandbox %s replaced by %s", thread.id, previous_id, sandbox.sandbox_id
            )
        return SandboxLease(sandbox, restored=report)

    def _restore(self, thread: Thread, sandbox: AsyncSandbox) -> RestoreReport:
        """Write the thread's files and re-install its succeeded packages, in their order."""
        report = RestoreReport()
        files = list(WorkspaceFile.objects.filter(thread=thread).order_by("path"))
        if files:
            entries = [
                {"path": f"{WORKSPACE_ROOT}/{f.path}", "data": f.read_content()} for f in files
            ]
            self.call(sandbox.files.write_files(entries))
            report.files = len(files)
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

    def context_for(self, thread: Thread, sandbox: AsyncSandbox, language: str) -> Context:
        """Return the thread's code context for `language` in `sandbox`, creating it (and
        storing its id on the thread) on first use. One context per language keeps state
        between runs: a variable set in one run is there in the next."""
        context_id = (thread.context_ids or {}).get(language)
        if context_id:
            return Context(context_id, language, WORKSPACE_ROOT)
        context = self.call(sandbox.create_code_context(cwd=WORKSPACE_ROOT, language=language))
        with self.thread_lock(thread.id):
            thread.refresh_from_db(fields=["context_ids"])
            ids = dict(thread.context_ids or {})
            ids[language] = context.id
            Thread.objects.filter(id=thread.id).update(context_ids=ids)
            thread.context_ids = ids
        return context

    def forget_context(self, thread: Thread, language: str) -> None:
        """Drop a context id that the sandbox no longer knows."""
        with self.thread_lock(thread.id):
            thread.refresh_from_db(fields=["context_ids"])
            ids = dict(thread.context_ids or {})
            if ids.pop(language, None) is not None:
                Thread.objects.filter(id=thread.id).update(context_ids=ids)
            thread.context_ids = ids

    def forget_all(self, *, kill: bool = False) -> None:
        """Forget every cached sandbox (e.g. when settings point at another server); with
        kill=True kill them too (tests, shutdown)."""
        with self._guard:
            live = list(self._live.values())
            self._live.clear()
        if kill:
            for entry in live:
                self._kill_quietly(entry.sandbox)

    def forget(self, thread: Thread) -> None:
        """Forget the cached sandbox of `thread`, so the next use reconnects (or recreates)."""
        self._live.pop(thread.id, None)

    def is_running(self, sandbox: AsyncSandbox) -> bool:
        """Whether the sandbox still answers; False also when it cannot be asked."""
        try:
            return bool(run_sandbox_call(sandbox.is_running(), 15))
        except Exception:
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
                killed = bool(self.call(sandbox_class().kill(sandbox_id)))
            except SANDBOX_GONE_ERRORS:
                killed = False
            Thread.objects.filter(id=thread.id, sandbox_id=sandbox_id).update(
                sandbox_id="", context_ids={}
            )
            thread.sandbox_id, thread.context_ids = "", {}
            return killed

    def _kill_quietly(self, sandbox: AsyncSandbox) -> None:
        try:
            run_sandbox_call(sandbox.kill(), 15)
        except Exception:
            logger.warning("could not kill sandbox %s", sandbox.sandbox_id, exc_info=True)


sessions = SandboxSessions()
