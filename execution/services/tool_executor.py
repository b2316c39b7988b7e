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
published → files synced back → final status and the `done` event. The run itself is
carried by runs.py.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import functools
import logging
import time
import uuid
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import close_old_connections, connection, transaction
from django.db.models import F
from django.utils import timezone

from execution.audit import audit_refusal
from execution.caller import Caller
from execution.models import (
    Execution,
    PackageInstall,
    SecurityEvent,
    Thread,
    WorkspaceFile,
)
from execution.monitoring.budgets import check_daily_budget
from execution.sandbox.base import SandboxFileNotFound, SandboxGone, SandboxUnavailable
from execution.selectors import workspace_path_conflicts
from execution.services import validation
from execution.services.errors import ToolError, not_found, sandbox_unavailable
from execution.services.events import EventPublisher, server_event_loop
from execution.services.packages import (
    InstallLog,
    InstallOutcome,
    install_command,
    run_install,
)
from execution.services.quotas import check_run_concurrency
from execution.services.runs import ExecutionRunner, active_run, register_run
from execution.services.runtime import service_portal
from execution.services.sandbox_sessions import SandboxLease, as_tool_error, sessions
from execution.services.workers import current_worker_id

logger = logging.getLogger(__name__)

# One answer to input(), at most (characters).
MAX_INPUT_CHARS = 64 * 1024
# How often a running install's log is stored, so the page can show it as it grows.
INSTALL_LOG_FLUSH_SECONDS = 0.5

Status = Execution.Status


def record_security_event(
    error: ToolError,
    caller: Caller,
    *,
    thread: Thread | None = None,
    execution: Execution | None = None,
) -> SecurityEvent:
    """Store a refusal of `caller` (signed in: `Caller.account`) in `thread` for the audit
    (kind from the error, default validation), through the one audit writer
    (execution/audit.py: one shape, repeats aggregated). The services' refusals name no
    request path, so the caller's `where` is left out."""
    return audit_refusal(
        caller=replace(caller, user=caller.account, where=""),
        kind=error.kind or SecurityEvent.Kind.VALIDATION,
        code=error.code,
        message=error.message,
        details=error.details,
        thread=thread,
        execution=execution,
    )


# --- the service ------------------------------------------------------------------------------


class ToolExecutor:
    """The tools of the execution service. Every method takes keyword arguments only and
    raises ToolError for anything the caller should be told.

    A tool is called by a `Caller` (the signed-in user, who owns everything touched, the
    agent acting for them, the source and the client's IP) in a `thread` (for runs, None is
    a new thread). An anonymous caller gets no further: every tool that takes a caller starts
    with `_check_agent`, which reads `Caller.account` (PermissionDenied when not signed in).
    """

    # --- guards ---------------------------------------------------------------------------

    def _check_agent(self, caller: Caller, tool: str, thread: Thread | None) -> None:
        owner = caller.account  # first in every tool: an anonymous caller is refused here
        agent = caller.agent
        if agent is None:
            return
        if agent.owner_id != owner.pk or not agent.allows(tool):
            error = ToolError(
                "tool_not_allowed",
                f"Agent {agent.name!r} may not use the {tool} tool.",
                403,
                {"agent_id": str(agent.id), "tool": tool},
                kind=SecurityEvent.Kind.AUTHORIZATION,
            )
            record_security_event(error, caller, thread=thread)
            raise error

    def _check_thread(self, caller: Caller, thread: Thread | None) -> Thread | None:
        if thread is not None and thread.owner_id != caller.account.pk:
            raise not_found("thread")
        return thread

    def _validated(self, caller: Caller, thread: Thread | None, check, *args, **kwargs):
        """Run a validation function; on refusal record a SecurityEvent and re-raise."""
        try:
            return check(*args, **kwargs)
        except ToolError as error:
            record_security_event(error, caller, thread=thread)
            raise

    # --- runs ---------------------------------------------------------------------------

    def start_execution(
        self,
        *,
        code: str,
        language: str,
        caller: Caller,
        thread: Thread | None = None,
        timeout: float | None = None,
    ) -> Execution:
        """Validate, create `Execution(queued)`, publish its `execution` event and run it as
        the service portal's background work (runtime.py); return the queued row at once.

        Raises ToolError: a validation refusal (after storing a `rejected` Execution and a
        SecurityEvent), 403 for an agent without the tool, 404 for another user's thread,
        429 when a concurrency cap is reached.
        """
        execution, publisher = self._create_execution(
            code=code, language=language, caller=caller, thread=thread, timeout=timeout
        )
        # Published at once: the client learns the run's id before it waits for a worker.
        publisher.publish(
            execution_id=execution.id,
            thread_id=execution.thread_id,
            event=self._accepted_event(execution),
        )
        register_run(execution.id)
        service_portal().start_background(
            functools.partial(self._run_in_background, execution.id, publisher),
            name=f"execution-{execution.id.hex[:8]}",
        )
        return execution

    def _create_execution(
        self,
        *,
        code: str,
        language: str,
        caller: Caller,
        thread: Thread | None,
        timeout: float | None,
    ) -> tuple[Execution, EventPublisher]:
        """Validate, check quotas and create the queued row (its `execution` event is the
        caller's to publish)."""
        self._check_agent(caller, "execute_code", thread)
        thread = self._check_thread(caller, thread)
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
            self._record_rejected_run(error, caller, thread=thread, code=code, language=language)
            raise
        try:
            # The count and the insert share one transaction (see quotas.py).
            with transaction.atomic():
                check_run_concurrency(caller.account)
                check_daily_budget(caller.account)
                execution = self._insert_execution(thread, caller, language, code, timeout)
        except ToolError as error:
            # Recorded outside the rolled-back transaction, or the audit entry would vanish.
            record_security_event(error, caller, thread=thread)
            raise
        publisher = EventPublisher(server_event_loop())
        return execution, publisher

    @staticmethod
    def _accepted_event(execution: Execution) -> dict[str, Any]:
        """The `execution` event (seq 0) of a queued run; the row stores it once inserted."""
        return {
            "type": "execution", "execution_id": str(execution.id),
            "thread_id": str(execution.thread_id), "status": Status.QUEUED,
            "language": execution.language, "seq": 0,
        }  # fmt: skip

    @staticmethod
    def _insert_execution(
        thread: Thread | None,
        caller: Caller,
        language: str,
        code: str,
        timeout: float,
    ) -> Execution:
        if thread is None:
            thread = Thread.objects.create(owner=caller.account)
        return Execution.objects.create(
            thread=thread, user=caller.account, agent=caller.agent, language=language,
            code=code, status=Status.QUEUED, source=caller.source,
            client_ip=caller.client_ip, timeout_seconds=timeout, last_seq=0,
            worker_id=current_worker_id(),
        )  # fmt: skip

    @staticmethod
    def _run_in_background(execution_id: uuid.UUID, publisher: EventPublisher) -> None:
        close_old_connections()
        try:
            ExecutionRunner(execution_id, publisher).run()
        finally:
            connection.close()

    def _record_rejected_run(
        self,
        error: ToolError,
        caller: Caller,
        *,
        thread: Thread | None,
        code: object,
        language: object,
    ) -> None:
        stored_code, stored_language = validation.refused_run_record(code, language)
        execution = Execution.objects.create(
            thread=thread,
            user=caller.account,
            agent=caller.agent,
            language=stored_language,
            code=stored_code,
            status=Status.REJECTED,
            source=caller.source,
            client_ip=caller.client_ip,
            error={"code": error.code, "message": error.message},
            finished_at=timezone.now(),
        )
        record_security_event(error, caller, thread=thread, execution=execution)
        error.details = {**error.details, "execution_id": str(execution.id)}

    def execute_code(
        self,
        *,
        code: str,
        language: str,
        caller: Caller,
        thread: Thread | None = None,
        timeout: float | None = None,
    ) -> Execution:
        """Run code to a final status in the calling thread and return the stored Execution.

        Raises what start_execution raises; a run that fails for sandbox reasons is not an
        exception: it comes back with status `error` (the API turns that into a 503).
        """
        execution, publisher = self._create_execution(
            code=code, language=language, caller=caller, thread=thread, timeout=timeout
        )
        # The `execution` event goes out with the run's first batch: one publication fewer.
        runner = ExecutionRunner(
            execution.id, publisher, execution, accepted=self._accepted_event(execution)
        )
        runner.run()
        if not runner.row_current:  # ended some other way (cancelled, crashed): read it
            execution.refresh_from_db()
        return execution

    def wait_for(self, execution_id: uuid.UUID, timeout: float) -> bool:
        """Wait until an execution running in this process finishes; True when it did (or
        when it is not running here)."""
        handle = active_run(execution_id)
        return True if handle is None else handle.done.wait(timeout)

    def send_run_input(self, *, execution_id: uuid.UUID | str, value: str, user: User) -> None:
        """Answer the input() a running execution of `user` waits for (sandboxd only).

        Raises ToolError: 404 (not the user's), 400 `input_too_large`, 409
        `no_input_requested` (not running, or nothing waits), 503 (sandbox unreachable).
        """
        try:
            execution = Execution.objects.select_related("thread").get(pk=execution_id, user=user)
        except (Execution.DoesNotExist, ValueError, TypeError):
            raise not_found("execution") from None
        if len(value) > MAX_INPUT_CHARS:
            raise ToolError(
                "input_too_large",
                f"A line of input may have at most {MAX_INPUT_CHARS} characters.",
                400,
            )
        if execution.status != Status.RUNNING or execution.thread is None:
            raise ToolError("no_input_requested", "This run does not wait for input.", 409)
        sessions.send_input(execution.thread, execution.language, value)

    def cancel_execution(self, *, execution_id: uuid.UUID | str, user: User) -> Execution:
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
            EventPublisher(server_event_loop()).publish(
                execution_id=execution.id,
                thread_id=execution.thread_id,
                event={
                    "type": "done", "execution_id": str(execution.id),
                    "status": Status.CANCELLED, "duration_ms": None, "exit_code": None,
                    "truncated": False, "seq": execution.last_seq,
                },
            )  # fmt: skip
            return execution
        handle = active_run(execution.pk)
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

    def _file_path(self, caller: Caller, thread: Thread, file_path: object) -> str:
        return self._validated(
            caller,
            thread,
            validation.validate_workspace_path,
            file_path,
            suspicious_extensions=settings.EXECUTION_SUSPICIOUS_EXTENSIONS,
        )

    def write_file(
        self, *, file_path: str, content: bytes | str, caller: Caller, thread: Thread | None
    ) -> WorkspaceFile:
        """Store a file in the thread's workspace (database and, when the thread has a sandbox,
        the sandbox too) and return its row. Raises ToolError: path rules, 413 too large,
        403/404 as for every tool, 503 when the thread's sandbox cannot be reached."""
        self._check_agent(caller, "write_file", thread)
        thread = self._require_thread(caller, thread)
        path = self._file_path(caller, thread, file_path)
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        self._validated(
            caller, thread, validation.validate_file_size, len(data),
            max_bytes=settings.EXECUTION_MAX_FILE_BYTES,
        )  # fmt: skip
        self._validated(
            caller, thread, validation.validate_path_fits, path,
            conflicts=workspace_path_conflicts(thread=thread, path=path),
        )  # fmt: skip
        with sessions.thread_lock(thread.id):
            thread.refresh_from_db(fields=["sandbox_id"])
            if thread.sandbox_id:
                # Write through to the live sandbox; a thread without one gets the file when
                # its sandbox is created (restore), so no sandbox is started just for this.
                lease = sessions.get_or_create(thread)
                sessions.call(
                    lease.sandbox.write_files({f"{validation.WORKSPACE_ROOT}/{path}": data})
                )
            row = WorkspaceFile.objects.filter(thread=thread, path=path).first()
            if row is None:
                row = WorkspaceFile(thread=thread, path=path)
            row.written_by = (
                WorkspaceFile.WrittenBy.AGENT if caller.agent else WorkspaceFile.WrittenBy.USER
            )
            with transaction.atomic():
                row.set_content(data)
        return row

    def read_file(
        self, *, file_path: str, caller: Caller, thread: Thread | None
    ) -> tuple[str, bytes]:
        """Return (normalised path, bytes) of a workspace file: from the database, or, for a
        file code made that was not synced (e.g. over the sync limits), from the sandbox.
        Raises ToolError 404 `file_not_found`, path rules, 413, 503."""
        self._check_agent(caller, "read_file", thread)
        thread = self._require_thread(caller, thread)
        path = self._file_path(caller, thread, file_path)
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
                info = sessions.call(lease.sandbox.file_info(full))
                if info.type != "file":
                    raise not_found("file")
                validation.validate_file_size(
                    info.size, max_bytes=settings.EXECUTION_MAX_FILE_BYTES
                )
                data = sessions.call(lease.sandbox.read_file(full))
            except SandboxFileNotFound:
                raise not_found("file") from None
        return path, data

    def list_files(self, *, caller: Caller, thread: Thread | None) -> list[WorkspaceFile]:
        """Return the thread's workspace files (database rows, ordered by path)."""
        self._check_agent(caller, "list_files", thread)
        thread = self._require_thread(caller, thread)
        return list(WorkspaceFile.objects.filter(thread=thread).order_by("path"))

    def delete_file(self, *, file_path: str, caller: Caller, thread: Thread | None) -> None:
        """Delete a workspace file from the database and the thread's sandbox. Raises ToolError
        404 `file_not_found`, 503 when the sandbox exists but cannot be reached (so the file
        cannot come back on the next sync)."""
        self._check_agent(caller, "write_file", thread)
        thread = self._require_thread(caller, thread)
        path = self._file_path(caller, thread, file_path)
        with sessions.thread_lock(thread.id):
            row = WorkspaceFile.objects.filter(thread=thread, path=path).first()
            if row is None:
                raise not_found("file")
            thread.refresh_from_db(fields=["sandbox_id"])
            if thread.sandbox_id:
                lease = sessions.get_or_create(thread)
                with contextlib.suppress(SandboxFileNotFound):
                    sessions.call(lease.sandbox.remove_file(f"{validation.WORKSPACE_ROOT}/{path}"))
            row.content.delete(save=False)
            row.delete()

    def _require_thread(self, caller: Caller, thread: Thread | None) -> Thread:
        thread = self._check_thread(caller, thread)
        if thread is None:
            raise ToolError("thread_required", "A thread is required for file operations.", 400)
        return thread

    # --- packages -----------------------------------------------------------------------

    def install_packages(
        self, *, packages: list[str], language: str, caller: Caller, thread: Thread | None
    ) -> PackageInstall:
        """Install pip (python) or npm (javascript/typescript) packages in the thread's
        sandbox and return the PackageInstall (status succeeded or failed, with its log).

        Raises ToolError: validation (after storing a `rejected` PackageInstall and a
        SecurityEvent), 403/404 as for every tool, 503 when the sandbox cannot be reached
        (the install is then stored as failed).
        """
        self._check_agent(caller, "install_packages", thread)
        thread = self._require_thread(caller, thread)
        try:
            language = validation.validate_language(language)
            manager, specs = validation.validate_package_specs(
                packages, language=language, deny_list=settings.PACKAGE_DENY_LIST
            )
        except ToolError as error:
            PackageInstall.objects.create(
                thread=thread, user=caller.account, agent=caller.agent,
                language=language if language in validation.LANGUAGES else "python",
                packages=[str(p)[:200] for p in packages] if isinstance(packages, list) else [],
                status=PackageInstall.Status.REJECTED, log=f"{error.code}: {error.message}",
                finished_at=timezone.now(),
            )  # fmt: skip
            record_security_event(error, caller, thread=thread)
            raise
        install = PackageInstall.objects.create(
            thread=thread, user=caller.account, agent=caller.agent, language=language,
            packages=specs, status=PackageInstall.Status.RUNNING, worker_id=current_worker_id(),
        )  # fmt: skip
        try:
            with sessions.thread_lock(thread.id):
                lease = sessions.get_or_create(thread)
                outcome = self._install_streaming_log(install, lease, manager, specs)
        except ToolError as error:
            self._finish_install(
                install, PackageInstall.Status.FAILED, f"{error.code}: {error.message}"
            )
            raise
        except SandboxGone as exc:
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
    def _install_streaming_log(
        install: PackageInstall, lease: SandboxLease, manager: str, specs: list[str]
    ) -> InstallOutcome:
        """Run the install, storing its log in the row every INSTALL_LOG_FLUSH_SECONDS while it
        runs, so the page shows it line by line; errors as `sessions.call` raises them."""
        log = InstallLog(f"$ {install_command(manager, specs)}\n")
        future = service_portal().submit(
            run_install(
                lease.sandbox, manager, specs,
                time_limit=settings.PACKAGE_INSTALL_TIMEOUT, on_output=log.add,
            )
        )  # fmt: skip
        while True:
            try:
                return future.result(timeout=INSTALL_LOG_FLUSH_SECONDS)
            except concurrent.futures.TimeoutError as exc:
                if future.done():  # the install itself raised TimeoutError (not our wait)
                    raise sandbox_unavailable(f"the install timed out: {exc}") from exc
                text = log.take()
                if text is not None:
                    PackageInstall.objects.filter(pk=install.pk).update(log=text)
            except SandboxUnavailable as exc:
                # As sessions.call maps it: a 503 (or 429) ToolError; SandboxGone propagates.
                raise as_tool_error(exc) from exc

    @staticmethod
    def _finish_install(install: PackageInstall, status: str, log: str) -> None:
        install.status, install.log, install.finished_at = status, log, timezone.now()
        install.save(update_fields=["status", "log", "finished_at"])

    # --- threads ------------------------------------------------------------------------

    def delete_thread(self, *, thread: Thread, user: User) -> None:
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
        storage_names = [
            f.content.name for f in WorkspaceFile.objects.filter(thread=thread) if f.content.name
        ]
        thread.delete()
        for name in storage_names:
            with contextlib.suppress(Exception):
                WorkspaceFile.content.field.storage.delete(name)


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
