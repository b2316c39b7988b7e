"""Bringing files that code created, changed or deleted in a sandbox back into WorkspaceFile.

After each run the workspace (`/home/user`) is listed; a file is read back when it is new or
its size or modification time says it changed, and stored when its content differs. It is
bounded: at most EXECUTION_SYNC_MAX_FILES files, each at most EXECUTION_MAX_FILE_BYTES and
EXECUTION_SYNC_MAX_BYTES together; everything left out is reported (never silently dropped)
in the execution's `details["file_sync"]`.

Not synced, by design: symlinks (a link is the sandbox's business; following one could read
what it points at), hidden files and directories (`.cache`, `.local`, `.ipython`, … are the
tools' state, not the user's work) and dependency/cache directories (`node_modules`,
`__pycache__`). A file recorded in the database disappears from it only when code deleted it
from the workspace during the run.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from execution.models import Thread, WorkspaceFile
from execution.sandbox.base import FileEntry, Sandbox, SandboxError
from execution.services.errors import ToolError
from execution.services.validation import WORKSPACE_ROOT, validate_workspace_path

logger = logging.getLogger(__name__)

# How deep the workspace is listed; deeper files are reported as not synced.
SYNC_DEPTH = 12
SKIPPED_DIRECTORIES = frozenset({"node_modules", "__pycache__"})


def is_synced_path(relative: str) -> bool:
    """Whether a workspace path is one that sync brings back (see the module docstring)."""
    parts = relative.split("/")
    return not any(p.startswith(".") or p in SKIPPED_DIRECTORIES for p in parts)


@dataclass
class SyncReport:
    """What one sync did; `as_dict` is stored in the execution's details."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "skipped": self.skipped,
        }
        if self.error:
            data["error"] = self.error
        return data

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted or self.skipped or self.error)


def sync_workspace_back(
    *,
    thread: Thread,
    sandbox: Sandbox,
    since: dt.datetime,
    written_by: str = WorkspaceFile.WrittenBy.CODE,
    listing: list[FileEntry] | None = None,
) -> SyncReport:
    """Store files that code created or changed in `sandbox` since `since` as the thread's
    WorkspaceFiles and drop those it deleted. `listing` is the workspace listing when the
    caller already took it. Never raises for sandbox trouble: a failure is recorded in the
    report, because the run itself already finished."""
    from execution.services.sandbox_sessions import sessions

    report = SyncReport()
    try:
        entries = listing
        if entries is None:
            entries = sessions.call(sandbox.list_files(WORKSPACE_ROOT, depth=SYNC_DEPTH))
    except ToolError as exc:
        report.error = exc.message
        return report
    except SandboxError as exc:
        report.error = f"could not list the workspace: {type(exc).__name__}"
        logger.warning("file sync of thread %s failed", thread.id, exc_info=True)
        return report

    existing = {f.path: f for f in WorkspaceFile.objects.filter(thread=thread)}
    seen: set[str] = set()
    listed_dirs_at_limit: list[str] = []
    count = total = 0
    max_files = settings.EXECUTION_SYNC_MAX_FILES
    max_file = settings.EXECUTION_MAX_FILE_BYTES
    max_total = settings.EXECUTION_SYNC_MAX_BYTES
    prefix = WORKSPACE_ROOT + "/"

    for entry in sorted(entries, key=lambda e: e.path):
        if not entry.path.startswith(prefix):
            continue
        relative = entry.path[len(prefix) :]
        if not is_synced_path(relative):
            continue
        if entry.type == "dir":
            if relative.count("/") + 1 >= SYNC_DEPTH:
                listed_dirs_at_limit.append(relative)
            continue
        seen.add(relative)
        if entry.type != "file":
            report.skipped.append({"path": relative, "reason": "symlink"})
            continue
        try:
            validate_workspace_path(relative)
        except ToolError as exc:
            report.skipped.append({"path": relative[:300], "reason": exc.code})
            continue
        row = existing.get(relative)
        # Unchanged since stored: same size and not modified after the row was saved (a row
        # is saved after its bytes reach the sandbox). No clock slack: a sandbox clock ahead
        # of ours only costs one read, after which the row takes the file's own time.
        if row is not None and row.size == entry.size and entry.modified_time <= row.updated_at:
            continue
        if count >= max_files:
            report.skipped.append(
                {"path": relative, "reason": "too_many_files", "limit": max_files}
            )
            continue
        if entry.size > max_file:
            report.skipped.append(
                {
                    "path": relative,
                    "reason": "file_too_large",
                    "size": entry.size,
                    "limit": max_file,
                }
            )
            continue
        if total + entry.size > max_total:
            report.skipped.append(
                {
                    "path": relative,
                    "reason": "total_too_large",
                    "size": entry.size,
                    "limit": max_total,
                }
            )
            continue
        try:
            data = sessions.call(sandbox.read_file(entry.path))
        except (ToolError, SandboxError) as exc:
            report.skipped.append(
                {"path": relative, "reason": "unreadable", "error": type(exc).__name__}
            )
            continue
        if len(data) > max_file:  # it grew between listing and reading
            report.skipped.append(
                {"path": relative, "reason": "file_too_large", "size": len(data), "limit": max_file}
            )
            continue
        count += 1
        total += len(data)
        _, digest = WorkspaceFile.digest(data)
        if row is not None and row.sha256 == digest:
            # Same bytes (e.g. rewritten unchanged): refresh the time so the next sync skips it.
            WorkspaceFile.objects.filter(pk=row.pk).update(updated_at=entry.modified_time)
            continue
        if row is None:
            row = WorkspaceFile(thread=thread, path=relative, written_by=written_by)
            report.created.append(relative)
        else:
            row.written_by = written_by
            report.updated.append(relative)
        row.set_content(data)

    # Deletions: a stored file absent from the listing was deleted by the code, unless it was
    # stored after the run started (a concurrent write) or sits below the listing's depth.
    for path, row in existing.items():
        if path in seen or not is_synced_path(path) or row.updated_at >= since:
            continue
        if any(path.startswith(d + "/") for d in listed_dirs_at_limit):
            continue
        if path.count("/") + 1 > SYNC_DEPTH:
            continue
        row.content.delete(save=False)
        row.delete()
        report.deleted.append(path)
    return report
