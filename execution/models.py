"""The domain of code execution: threads, runs, files, packages, agents and the audit trail."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any, TypedDict

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import models, transaction

# --- text any program may print -------------------------------------------------------------
#
# Output, errors and results are whatever a program wrote: they may hold NUL, which neither
# PostgreSQL text nor jsonb can store, and lone surrogates (a str can hold them; JavaScript
# strings often do), which no UTF-8 database or driver accepts. Rather than lose or mangle
# them, the columns below store them with a stated, reversible escaping, applied on the way
# in and undone on the way out, identically on SQLite and PostgreSQL, so Python code always
# sees the program's exact text:
#
#   U+E000 (a private-use character, the escape)  →  U+E000 U+E000
#   U+0000 (NUL)                                  →  U+E000 "0"
#   a lone surrogate U+D800..U+DFFF               →  U+E000 U+E800..U+EFFF (same offset)
#
# Text without these characters (nearly all of it) is stored unchanged.

_ESCAPE = "\ue000"
_UNSTORABLE = re.compile("[\x00\ue000\ud800-\udfff]")
_ESCAPED = re.compile("\ue000(.)", re.DOTALL)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group(0)
    if char == "\x00":
        return _ESCAPE + "0"
    if char == _ESCAPE:
        return _ESCAPE + _ESCAPE
    return _ESCAPE + chr(0xE800 + ord(char) - 0xD800)


def _unescape_char(match: re.Match[str]) -> str:
    code = match.group(1)
    if code == "0":
        return "\x00"
    if 0xE800 <= ord(code) <= 0xEFFF:
        return chr(0xD800 + ord(code) - 0xE800)
    return code  # the escape itself (and, defensively, anything else after it)


def escape_text(value: str) -> str:
    """`value` in the storable form described above (unchanged when nothing needs it)."""
    return _UNSTORABLE.sub(_escape_char, value) if _UNSTORABLE.search(value) else value


def unescape_text(value: str) -> str:
    """The exact text `escape_text` stored."""
    return _ESCAPED.sub(_unescape_char, value) if _ESCAPE in value else value


def _map_strings(value: Any, convert: Any) -> Any:
    # Keys too: a result's dict may be keyed by program output.
    if isinstance(value, str):
        return convert(value)
    if isinstance(value, dict):
        return {_map_strings(k, convert): _map_strings(v, convert) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_map_strings(item, convert) for item in value]
    return value


class LosslessTextField(models.TextField):
    """A TextField that stores any str, NUL and lone surrogates included (see above)."""

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return escape_text(value) if isinstance(value, str) else value

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return unescape_text(value) if isinstance(value, str) else value


class LosslessJSONField(models.JSONField):
    """A JSONField whose strings may hold NUL and lone surrogates (see above)."""

    def get_prep_value(self, value: Any) -> Any:
        return super().get_prep_value(_map_strings(value, escape_text))

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return _map_strings(super().from_db_value(value, expression, connection), unescape_text)


# --- what the JSON columns of a run hold, parsed in one place ---------------------------------


class RunError(TypedDict, total=False):
    """`Execution.error`: what the code raised (`name`, `value`, `traceback`; `code` too when
    the service ended the run), or for a refused run its `code` and `message`."""

    name: str
    value: str
    traceback: str
    code: str
    message: str


class RunDetails(TypedDict, total=False):
    """`Execution.details`: facts about the run beyond its output (all optional)."""

    reason: str  # why the sandbox service failed it
    restored: dict[str, Any]  # what a new sandbox got back (files, packages, failures)
    file_sync: dict[str, Any]  # files synced back after the run, and those skipped


_RUN_ERROR_KEYS = ("name", "value", "traceback", "code", "message")


def parse_run_error(value: Any) -> RunError | None:
    """`Execution.error` as a RunError (its text fields as str), or None when there is none.
    Rows written by older code may hold other shapes: anything else is kept as its text."""
    if not value:
        return None
    if not isinstance(value, dict):
        return RunError(message=str(value))
    parsed = RunError()
    for key in _RUN_ERROR_KEYS:
        if value.get(key) not in (None, ""):
            parsed[key] = str(value[key])  # type: ignore[literal-required]
    return parsed


def parse_run_details(value: Any) -> RunDetails:
    """`Execution.details` as RunDetails (an empty one for anything that is not a dict)."""
    if not isinstance(value, dict):
        return RunDetails()
    parsed = RunDetails()
    if isinstance(value.get("reason"), str):
        parsed["reason"] = value["reason"]
    for key in ("restored", "file_sync"):
        if isinstance(value.get(key), dict):
            parsed[key] = value[key]
    return parsed


class Language(models.TextChoices):
    PYTHON = "python", "Python"
    JAVASCRIPT = "javascript", "JavaScript"
    TYPESCRIPT = "typescript", "TypeScript"
    BASH = "bash", "Bash"


class Source(models.TextChoices):
    BROWSER = "browser", "Browser"
    API = "api", "API"
    WEBSOCKET = "websocket", "Websocket"
    AGENT = "agent", "Agent"
    SYSTEM = "system", "System"


class Thread(models.Model):
    """A user's workspace: one sandbox at a time, its files, packages and executions."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="threads"
    )
    title = models.CharField(max_length=200, default="Untitled thread")
    sandbox_id = models.CharField(max_length=128, blank=True, default="")
    # Per-language code-interpreter context ids in the current sandbox: {"python": "…"}.
    context_ids = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.title


class Worker(models.Model):
    """A server process that runs executions and installs. Its heartbeat is its lease: work
    of a worker whose lease ran out (or whose process on this host is gone) is recovered by
    the others (execution/services/workers.py)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(auto_now_add=True)
    heartbeat_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}"


class Agent(models.Model):
    """A named agent; every tool call it makes is checked against `allowed_tools`."""

    TOOL_NAMES = ("execute_code", "write_file", "read_file", "list_files", "install_packages")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agents"
    )
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    allowed_tools = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="agent_name_unique_per_owner")
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Refuse allowed_tools that is not a list of known tool names (ValidationError)."""
        tools = self.allowed_tools
        # A bare string would pass an "in" check character by character: require a list.
        if not isinstance(tools, list) or not all(isinstance(tool, str) for tool in tools):
            raise ValidationError({"allowed_tools": "Must be a list of tool names."})
        unknown = sorted(set(tools) - set(self.TOOL_NAMES))
        if unknown:
            raise ValidationError({"allowed_tools": f"Unknown tools: {', '.join(unknown)}"})

    def allows(self, tool: str) -> bool:
        """Return whether this agent may call `tool` now (it is active and the tool is listed)."""
        tools = self.allowed_tools
        return self.is_active and isinstance(tools, list) and tool in tools


class Execution(models.Model):
    """One run of code: the job history and the audit trail. Never deleted by normal use."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        TIMED_OUT = "timed_out", "Timed out"
        CANCELLED = "cancelled", "Cancelled"
        REJECTED = "rejected", "Rejected"
        ERROR = "error", "Error"

    FINAL_STATUSES = frozenset(
        {
            Status.SUCCEEDED,
            Status.FAILED,
            Status.TIMED_OUT,
            Status.CANCELLED,
            Status.REJECTED,
            Status.ERROR,
        }
    )
    # Which status may follow which; a final status never changes again.
    TRANSITIONS: dict[str, frozenset[str]] = {
        Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED, Status.REJECTED, Status.ERROR}),
        Status.RUNNING: frozenset(
            {Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.CANCELLED, Status.ERROR}
        ),
    }

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    thread = models.ForeignKey(
        Thread, on_delete=models.SET_NULL, null=True, blank=True, related_name="executions"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="executions"
    )
    agent = models.ForeignKey(
        Agent, on_delete=models.SET_NULL, null=True, blank=True, related_name="executions"
    )
    # Blank only for a run refused for its language: the unknown value is kept in the audit,
    # never here, so the column only ever holds one of the languages (or nothing).
    language = models.CharField(max_length=16, choices=Language.choices, blank=True)
    code = LosslessTextField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    stdout = LosslessTextField(blank=True, default="")
    stderr = LosslessTextField(blank=True, default="")
    # Rich results as the sandbox gave them: [{"text": …, "png": …, "html": …}, …]
    results = LosslessJSONField(default=list, blank=True)
    # {"name": …, "value": …, "traceback": …} or, for a rejection, {"code": …, "message": …}
    error = LosslessJSONField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    truncated = models.BooleanField(default=False)
    timeout_seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # The seq of the last live event whose effect is stored in this row (0 = the "execution"
    # event). Written in the same UPDATE as that effect and before the event is published, so
    # a websocket replay from the row plus live events with seq > last_seq has no gap or dup.
    last_seq = models.PositiveIntegerField(default=0)
    # Facts about the run that are not output: files not synced back, sandbox id, … (JSON).
    details = LosslessJSONField(default=dict, blank=True)
    # Set by a cancel request; the process running the execution watches it, so a cancel
    # reaches the run even when it was asked through another server process.
    cancel_requested = models.BooleanField(default=False)
    # The Worker running it (no foreign key: a worker row may go once its work is recovered).
    worker_id = models.UUIDField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["thread", "-created_at"]),
            models.Index(fields=["user", "-created_at"]),
            models.Index(fields=["status"]),
            models.Index(fields=["agent", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.language} run {self.id} ({self.status})"

    @property
    def error_data(self) -> RunError | None:
        """The error column, parsed (see RunError)."""
        return parse_run_error(self.error)

    @property
    def details_data(self) -> RunDetails:
        """The details column, parsed (see RunDetails)."""
        return parse_run_details(self.details)

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES

    def can_transition_to(self, status: str) -> bool:
        return status in self.TRANSITIONS.get(self.status, frozenset())

    def transition_to(self, status: str) -> None:
        """Set a new status in memory; raises ValueError for a transition that is not allowed."""
        if not self.can_transition_to(status):
            raise ValueError(f"execution {self.id}: {self.status} -> {status} is not allowed")
        self.status = status


def workspace_file_upload_to(instance: WorkspaceFile, filename: str) -> str:
    # Content is stored by thread and a random name: the workspace path never becomes a
    # storage path, so no user-chosen name can traverse the media directory.
    return f"workspaces/{instance.thread_id}/{uuid.uuid4().hex}"


class WorkspaceFile(models.Model):
    """A file of a thread. The database is the source of truth; the sandbox is a cache."""

    class WrittenBy(models.TextChoices):
        USER = "user", "User"
        CODE = "code", "Code"
        AGENT = "agent", "Agent"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=1024)
    content = models.FileField(upload_to=workspace_file_upload_to, max_length=255)
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, default="")
    written_by = models.CharField(max_length=8, choices=WrittenBy.choices, default=WrittenBy.USER)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["thread", "path"], name="workspace_file_path_unique")
        ]

    def __str__(self) -> str:
        return self.path

    @staticmethod
    def digest(data: bytes) -> tuple[int, str]:
        """Return (size, sha256 hex) of some content."""
        return len(data), hashlib.sha256(data).hexdigest()

    def set_content(self, data: bytes, *, save: bool = True) -> None:
        """Store `data` as this file's content and set `size` and `sha256` from it.

        The bytes go to a new storage name (see workspace_file_upload_to); the previous
        content, if any, is deleted only once the transaction that saves the row commits, so
        a rolled-back write never leaves the row pointing at a missing file. With
        save=False the caller saves the row (it must, or the new stored file is orphaned).
        """
        previous_name = self.content.name if self.content else ""
        self.size, self.sha256 = self.digest(data)
        self.content.save(self.path or "content", ContentFile(data), save=False)
        if save:
            self.save()
        if previous_name and previous_name != self.content.name:
            storage = self.content.storage
            transaction.on_commit(lambda: storage.delete(previous_name))

    def read_content(self) -> bytes:
        """Return the stored bytes of this file."""
        with self.content.open("rb") as stored:
            return stored.read()


class PackageInstall(models.Model):
    """A requested install; a new sandbox for an old thread re-installs these."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="packages")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="package_installs"
    )
    agent = models.ForeignKey(Agent, on_delete=models.SET_NULL, null=True, blank=True)
    language = models.CharField(max_length=16, choices=Language.choices)
    packages = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    log = LosslessTextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    worker_id = models.UUIDField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["thread", "status"])]

    def __str__(self) -> str:
        return f"{self.language}: {' '.join(self.packages)} ({self.status})"


class SecurityEvent(models.Model):
    """A refused request (validation, authorization, quota), kept for the audit."""

    class Kind(models.TextChoices):
        VALIDATION = "validation", "Validation"
        AUTHORIZATION = "authorization", "Authorization"
        QUOTA = "quota", "Quota"

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    code = models.CharField(
        max_length=64, help_text="Stable error code, e.g. path_outside_workspace"
    )
    message = LosslessTextField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    agent = models.ForeignKey(Agent, on_delete=models.SET_NULL, null=True, blank=True)
    thread = models.ForeignKey(Thread, on_delete=models.SET_NULL, null=True, blank=True)
    execution = models.ForeignKey(Execution, on_delete=models.SET_NULL, null=True, blank=True)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.API)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    details = LosslessJSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Repeats of the same refusal within SECURITY_EVENT_WINDOW_SECONDS count up on one row
    # (execution/audit.py): how many there were, and when the last one came.
    count = models.PositiveIntegerField(default=1)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["kind", "-created_at"]), models.Index(fields=["code"])]

    def __str__(self) -> str:
        return f"{self.kind}: {self.code}"
