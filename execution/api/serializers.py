"""Request and response shapes of the execution API (also the OpenAPI schema's components).

Request serializers check types only: the policy (languages, sizes, paths, package specs)
lives in services/validation.py, so that every refusal is audited the same way whatever the
entry point (REST, websocket, agent).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from django.urls import reverse
from rest_framework import serializers

from execution.models import (
    Execution,
    Language,
    PackageInstall,
    SecurityEvent,
    Thread,
    WorkspaceFile,
)
from execution.services.errors import ToolError


def websocket_url(request: Any, execution_id: Any) -> str:
    """The absolute URL of the websocket that streams an execution (ws/executions/<id>/)."""
    scheme = "wss" if request is not None and request.is_secure() else "ws"
    host = request.get_host() if request is not None else "localhost"
    return f"{scheme}://{host}/ws/executions/{execution_id}/"


# --- errors ---------------------------------------------------------------------------------


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine-readable code, e.g. path_traversal.")
    message = serializers.CharField(help_text="What went wrong, for people.")
    details = serializers.JSONField(help_text="Facts about the error (limits, fields, ids).")


class ErrorSerializer(serializers.Serializer):
    """Every error answer of the API."""

    error = ErrorBodySerializer()


# --- threads --------------------------------------------------------------------------------


class ThreadSerializer(serializers.ModelSerializer):
    has_sandbox = serializers.SerializerMethodField()
    title = serializers.CharField(max_length=200, required=False)

    class Meta:
        model = Thread
        fields = ["id", "title", "created_at", "updated_at", "last_used_at", "has_sandbox"]
        read_only_fields = ["id", "created_at", "updated_at", "last_used_at", "has_sandbox"]

    def get_has_sandbox(self, thread: Thread) -> bool:
        return bool(thread.sandbox_id)


# --- executions -----------------------------------------------------------------------------


class ExecutionSerializer(serializers.ModelSerializer):
    thread_id = serializers.UUIDField(read_only=True, allow_null=True)
    agent_id = serializers.UUIDField(read_only=True, allow_null=True)
    websocket_url = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    # Declared rather than derived: a read-only field built from the model loses the
    # column's blank=True, and a run refused for its language stores "" (the value asked
    # for is in the audit), so the schema's enum must hold "" too.
    language = serializers.ChoiceField(
        choices=Language.choices,
        allow_blank=True,
        read_only=True,
        help_text='The run\'s language; "" for a run refused for an unsupported language.',
    )

    class Meta:
        model = Execution
        fields = [
            "id", "url", "thread_id", "agent_id", "language", "code", "status", "source",
            "stdout", "stderr", "results", "error", "exit_code", "truncated",
            "timeout_seconds", "created_at", "started_at", "finished_at", "duration_ms",
            "cpu_time_ms", "memory_peak_bytes", "last_seq", "details", "websocket_url",
        ]  # fmt: skip
        read_only_fields = fields

    def get_websocket_url(self, execution: Execution) -> str:
        return websocket_url(self.context.get("request"), execution.id)

    def get_url(self, execution: Execution) -> str:
        return reverse("api-execution-detail", kwargs={"execution_id": execution.id})


class ExecuteRequestSerializer(serializers.Serializer):
    code = serializers.CharField(allow_blank=True, trim_whitespace=False)
    language = serializers.CharField(
        help_text="python, javascript, typescript or bash (js, ts, py, sh accepted)."
    )
    thread_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="Run in this thread; a new one when absent."
    )
    agent_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="Run as this agent of yours."
    )
    timeout = serializers.FloatField(
        required=False,
        allow_null=True,
        help_text="Seconds; at most the server's EXECUTION_MAX_TIMEOUT.",
    )
    wait = serializers.BooleanField(
        default=True,
        help_text="true: answer with the finished execution; false: 202 at once with its "
        "id and the websocket URL to watch it.",
    )


class ExecutionStartedSerializer(serializers.Serializer):
    """The 202 answer of execute with wait=false."""

    id = serializers.UUIDField()
    thread_id = serializers.UUIDField()
    status = serializers.CharField()
    url = serializers.CharField()
    websocket_url = serializers.CharField()


# --- files ----------------------------------------------------------------------------------


class WorkspaceFileSerializer(serializers.ModelSerializer):
    thread_id = serializers.UUIDField(read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = WorkspaceFile
        fields = [
            "thread_id", "path", "size", "sha256", "written_by", "created_at", "updated_at",
            "download_url",
        ]  # fmt: skip
        read_only_fields = fields

    def get_download_url(self, row: WorkspaceFile) -> str:
        return reverse(
            "api-thread-file-detail", kwargs={"thread_id": row.thread_id, "file_path": row.path}
        )


ENCODINGS = (("utf-8", "utf-8 text"), ("base64", "base64 of the bytes"))


class WriteFileRequestSerializer(serializers.Serializer):
    thread_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="The thread; a new one when absent."
    )
    agent_id = serializers.UUIDField(required=False, allow_null=True)
    path = serializers.CharField(trim_whitespace=False, help_text="Relative to the workspace.")
    content = serializers.CharField(allow_blank=True, trim_whitespace=False)
    encoding = serializers.ChoiceField(choices=ENCODINGS, default="utf-8")


class ReadFileRequestSerializer(serializers.Serializer):
    thread_id = serializers.UUIDField()
    agent_id = serializers.UUIDField(required=False, allow_null=True)
    path = serializers.CharField(trim_whitespace=False)
    encoding = serializers.ChoiceField(
        choices=ENCODINGS,
        required=False,
        help_text="Default: utf-8 when the bytes are valid UTF-8, else base64.",
    )


class ReadFileResponseSerializer(serializers.Serializer):
    thread_id = serializers.UUIDField()
    path = serializers.CharField()
    size = serializers.IntegerField()
    encoding = serializers.CharField()
    content = serializers.CharField()


class UploadFileSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    path = serializers.CharField(
        required=False,
        trim_whitespace=False,
        help_text="Workspace path; the file's name if absent.",
    )


# --- packages -------------------------------------------------------------------------------


class PackageInstallSerializer(serializers.ModelSerializer):
    thread_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = PackageInstall
        fields = [
            "id", "thread_id", "language", "packages", "status", "log", "created_at",
            "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


class InstallPackagesRequestSerializer(serializers.Serializer):
    thread_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="The thread; a new one when absent."
    )
    agent_id = serializers.UUIDField(required=False, allow_null=True)
    language = serializers.CharField(
        default="python", help_text="python (pip) or javascript/typescript (npm)."
    )
    packages = serializers.ListField(
        child=serializers.CharField(trim_whitespace=False, allow_blank=True),
        help_text='e.g. ["requests==2.32.3"] or ["left-pad@^1.3.0"]',
    )


def write_file_content(data: Mapping[str, Any]) -> bytes | str:
    """The content of a validated write-file request: bytes for `base64`, else the text.

    Raises ToolError `invalid_base64` (400) when the base64 does not decode.
    """
    if data["encoding"] != "base64":
        return data["content"]
    try:
        return base64.b64decode(data["content"], validate=True)
    except (binascii.Error, ValueError):
        raise ToolError(
            "invalid_base64",
            "The content is not valid base64.",
            400,
            kind=SecurityEvent.Kind.VALIDATION,
        ) from None


def read_file_content(content: bytes, encoding: str | None) -> tuple[str, str]:
    """(encoding, text) of a read-file answer: UTF-8 when asked for or when the bytes decode
    (no encoding asked), base64 otherwise.

    Raises ToolError `file_not_text` (400) when UTF-8 was asked for and the file is not.
    """
    if encoding in (None, "utf-8"):
        try:
            return "utf-8", content.decode("utf-8")
        except UnicodeDecodeError:
            if encoding == "utf-8":
                raise ToolError(
                    "file_not_text", "The file is not valid UTF-8; ask for encoding base64.", 400
                ) from None
    return "base64", base64.b64encode(content).decode("ascii")
