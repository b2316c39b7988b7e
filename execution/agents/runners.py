"""What each agent tool does once its call is admitted: run it through the ToolExecutor and
render the outcome for the model. The registry (tools.py) names each tool's runner here;
calls.py admits the call (agent, arguments, thread) before any of these run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from execution.api.serializers import (
    ExecutionSerializer,
    PackageInstallSerializer,
    ReadFileResponseSerializer,
    WorkspaceFileSerializer,
    read_file_content,
    write_file_content,
)
from execution.caller import Caller
from execution.models import Execution, PackageInstall, Thread
from execution.services.errors import ToolError, execution_failure
from execution.services.tool_executor import ToolExecutor, record_security_event
from execution.terminal import strip_ansi

# Result formats a model client can be handed as images (MCP image content).
IMAGE_FORMATS = {"png": "image/png", "jpeg": "image/jpeg"}
# How much of an installer's log the text rendering carries (the full log is in `result`).
INSTALL_LOG_TAIL_CHARS = 4000


@dataclass
class ToolCallOutcome:
    """What a tool call gives back to the model.

    `text` is the rendering to feed back as the tool result; `result` the structured result
    (the REST API's shape for the same operation); `is_error` says the tool ran but the
    outcome is a failure the model should see (code raised, install failed). `images` are
    (mime type, base64) pairs of image results, for clients that show them (MCP).
    """

    name: str
    thread_id: str | None
    is_error: bool
    text: str
    result: Any
    images: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON body of the REST answer."""
        return {
            "name": self.name,
            "thread_id": self.thread_id,
            "is_error": self.is_error,
            "text": self.text,
            "result": self.result,
        }


def refuse(error: ToolError, caller: Caller, *, thread: Thread | None = None) -> ToolError:
    """Record `error` as a SecurityEvent (kind from the error) and return it for raising."""
    record_security_event(error, caller, thread=thread)
    return error


def _thread_or_new(caller: Caller, thread: Thread | None) -> Thread:
    return thread or Thread.objects.create(owner=caller.account)


def _plain(data: Any) -> Any:
    # Serializer output (ReturnDict/ReturnList, lazy strings) as plain JSON values.
    return json.loads(json.dumps(data, default=str))


# --- the tools ------------------------------------------------------------------------------


def run_execute_code(
    data: dict[str, Any], *, caller: Caller, thread: Thread | None, origin: Any
) -> ToolCallOutcome:
    execution = ToolExecutor().execute_code(
        code=data["code"],
        language=data["language"],
        caller=caller,
        thread=thread,
        timeout=data.get("timeout"),
    )
    if execution.status == Execution.Status.ERROR:
        # The sandbox service failed, not the code: the same 503 as the REST API gives.
        raise execution_failure(execution)
    result = _plain(ExecutionSerializer(execution, context={"request": origin}).data)
    images = [
        (mime, item[fmt])
        for item in execution.results or []
        for fmt, mime in IMAGE_FORMATS.items()
        if isinstance(item.get(fmt), str)
    ]
    return ToolCallOutcome(
        name="execute_code",
        thread_id=str(execution.thread_id),
        is_error=execution.status != Execution.Status.SUCCEEDED,
        text=render_execution(execution),
        result=result,
        images=images,
    )


def render_execution(execution: Execution) -> str:
    """A run as a model reads it: status line, stdout, stderr, results, error, notes."""
    facts = [f"status: {execution.status}"]
    if execution.exit_code is not None:
        facts.append(f"exit code {execution.exit_code}")
    if execution.duration_ms is not None:
        facts.append(f"{execution.duration_ms} ms")
    facts.append(f"thread_id {execution.thread_id}")
    parts = [" · ".join(facts)]
    if execution.stdout:
        parts.append(f"stdout:\n{execution.stdout.rstrip()}")
    if execution.stderr:
        parts.append(f"stderr:\n{execution.stderr.rstrip()}")
    for item in execution.results or []:
        shown = [f"[{fmt} image]" for fmt in ("png", "jpeg", "svg") if item.get(fmt)]
        if item.get("text"):
            shown.insert(0, str(item["text"]))
        if shown:
            parts.append("result:\n" + "\n".join(shown))
    error = execution.error_data
    if error:
        if "name" in error:
            traceback = strip_ansi(error.get("traceback", "")).strip()
            parts.append(f"error: {error.get('name')}: {error.get('value', '')}")
            if traceback:
                parts.append(f"traceback:\n{traceback}")
        else:
            parts.append(f"error: {error.get('code')}: {error.get('message')}")
    if execution.status == Execution.Status.TIMED_OUT:
        parts.append(f"The run was stopped after {execution.timeout_seconds:g} s.")
    if execution.truncated:
        parts.append("The output was cut at the server's limit.")
    if len(parts) == 1:
        parts.append("(no output)")
    return "\n\n".join(parts)


def run_write_file(
    data: dict[str, Any], *, caller: Caller, thread: Thread | None, origin: Any
) -> ToolCallOutcome:
    try:
        content = write_file_content(data)
    except ToolError as exc:
        raise refuse(exc, caller, thread=thread) from None
    thread = _thread_or_new(caller, thread)
    row = ToolExecutor().write_file(
        file_path=data["path"], content=content, caller=caller, thread=thread
    )
    return ToolCallOutcome(
        name="write_file",
        thread_id=str(thread.id),
        is_error=False,
        text=f"Wrote {row.size} bytes to {row.path} (thread_id {thread.id}).",
        result=_plain(WorkspaceFileSerializer(row).data),
    )


def run_read_file(
    data: dict[str, Any], *, caller: Caller, thread: Thread | None, origin: Any
) -> ToolCallOutcome:
    assert thread is not None  # thread_id is a required argument of read_file
    path, content = ToolExecutor().read_file(file_path=data["path"], caller=caller, thread=thread)
    encoding, text = read_file_content(content, data.get("encoding"))
    body = {
        "thread_id": thread.id, "path": path, "size": len(content),
        "encoding": encoding, "content": text,
    }  # fmt: skip
    heading = f"{path} ({len(content)} bytes, {encoding}, thread_id {thread.id}):"
    return ToolCallOutcome(
        name="read_file",
        thread_id=str(thread.id),
        is_error=False,
        text=f"{heading}\n{text}",
        result=_plain(ReadFileResponseSerializer(body).data),
    )


def run_list_files(
    data: dict[str, Any], *, caller: Caller, thread: Thread | None, origin: Any
) -> ToolCallOutcome:
    assert thread is not None  # thread_id is a required argument of list_files
    rows = ToolExecutor().list_files(caller=caller, thread=thread)
    lines = [f"{len(rows)} file(s) in thread_id {thread.id}:"]
    lines += [f"{row.path} ({row.size} bytes)" for row in rows]
    return ToolCallOutcome(
        name="list_files",
        thread_id=str(thread.id),
        is_error=False,
        text="\n".join(lines),
        result=_plain(WorkspaceFileSerializer(rows, many=True).data),
    )


def run_install_packages(
    data: dict[str, Any], *, caller: Caller, thread: Thread | None, origin: Any
) -> ToolCallOutcome:
    thread = _thread_or_new(caller, thread)
    install = ToolExecutor().install_packages(
        packages=data["packages"], language=data["language"], caller=caller, thread=thread
    )
    log = install.log or ""
    if len(log) > INSTALL_LOG_TAIL_CHARS:
        log = "…" + log[-INSTALL_LOG_TAIL_CHARS:]
    text = (
        f"Install of {' '.join(install.packages)} ({install.language}): {install.status} "
        f"(thread_id {thread.id})."
    )
    if log.strip():
        text += f"\n\nlog:\n{log.strip()}"
    return ToolCallOutcome(
        name="install_packages",
        thread_id=str(thread.id),
        is_error=install.status != PackageInstall.Status.SUCCEEDED,
        text=text,
        result=_plain(PackageInstallSerializer(install).data),
    )
