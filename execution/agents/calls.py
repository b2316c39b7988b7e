"""Agent tool calls: one service used by the REST endpoint and by the MCP server.

`call_tool(...)` checks the agent (active, tool allowed), parses and validates the arguments
with the tool's serializer (see tools.py), resolves the thread, runs the tool through the
ToolExecutor as the agent's owner with source "agent" and the agent in the context (so the
Execution, WorkspaceFile and PackageInstall rows name it), and returns a `ToolCallOutcome`:
a text rendering for the model plus the structured result (the REST API's own shapes).

Every refusal is a ToolError with a stable code, and is recorded as a SecurityEvent naming
the agent: `agent_not_found` (404; another user's agent is "not found" too, audited as
`agent_not_owned`), `agent_inactive` (403), `tool_unknown` (400), `tool_not_allowed` (403),
`arguments_malformed` / `arguments_not_object` / `invalid_arguments` /
`thread_id_conflict` (400), `thread_not_found` (404). What the ToolExecutor refuses
(policy, sizes, quotas) it audits itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rest_framework.throttling import SimpleRateThrottle

from execution.agents.tools import TOOLS, ToolSpec, unknown_arguments
from execution.api.parsers import json_depth_exceeds, loads_bounded
from execution.api.serializers import (
    ExecutionSerializer,
    PackageInstallSerializer,
    ReadFileResponseSerializer,
    WorkspaceFileSerializer,
    read_file_content,
    write_file_content,
)
from execution.api.throttles import ExecuteRateThrottle, InstallRateThrottle
from execution.caller import Caller
from execution.models import Agent, Execution, PackageInstall, SecurityEvent, Source, Thread
from execution.selectors import agent_get_owned, thread_get_owned
from execution.services.errors import ToolError, execution_failure, not_found
from execution.services.tool_executor import (
    ExecutionContext,
    ToolExecutor,
    record_security_event,
)
from execution.terminal import strip_ansi
from execution.throttling import check_rate

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


@dataclass(frozen=True)
class RequestOrigin:
    """Where the caller reached us (scheme and host), to build absolute websocket URLs in
    results the same way the REST API does (duck-types the two methods it uses)."""

    host: str
    secure: bool = False

    def get_host(self) -> str:
        return self.host

    def is_secure(self) -> bool:
        return self.secure


# The request-rate limits of the REST endpoints the tools mirror: a tool call counts against
# the same per-user budget as /api/code/execute or /api/code/install-packages.
TOOL_THROTTLES: dict[str, type[SimpleRateThrottle]] = {
    "execute_code": ExecuteRateThrottle,
    "install_packages": InstallRateThrottle,
}


def check_tool_rate(*, name: str, caller: Caller) -> None:
    """Count one call of tool `name` against its REST endpoint's rate limit, for callers
    outside DRF (the MCP server; DRF views use the throttle classes themselves). Raises the
    audited 429 `throttled` of execution/throttling.py."""
    throttle_class = TOOL_THROTTLES.get(name)
    if throttle_class is not None:
        check_rate(throttle_class=throttle_class, caller=caller.acting_as(caller.agent))


def _refuse(error: ToolError, context: ExecutionContext) -> ToolError:
    """Record `error` as a SecurityEvent (kind from the error) and return it for raising."""
    record_security_event(error, context)
    return error


# --- the agent ------------------------------------------------------------------------------


def find_agent(*, agent_id: Any, caller: Caller) -> Agent:
    """The caller's agent with that id; ToolError 404 `agent_not_found` otherwise (another
    user's agent is audited by the selector as `agent_not_owned`)."""
    return agent_get_owned(caller=caller, agent_id=agent_id)


def require_active(agent: Agent, context: ExecutionContext) -> None:
    """Raise ToolError 403 `agent_inactive` (audited) unless the agent is active."""
    if not agent.is_active:
        raise _refuse(
            ToolError(
                "agent_inactive",
                f"Agent {agent.name!r} is inactive; it may not call tools.",
                403,
                {"agent_id": str(agent.id)},
                kind=SecurityEvent.Kind.AUTHORIZATION,
            ),
            context,
        )


# --- arguments ------------------------------------------------------------------------------


def _invalid(code: str, message: str, details: dict[str, Any] | None = None) -> ToolError:
    return ToolError(code, message, 400, details, kind=SecurityEvent.Kind.VALIDATION)


def parse_arguments(raw: Any) -> dict[str, Any]:
    """The arguments as a dict: a JSON object, or a string holding one (as models emit
    them); None or "" means no arguments. Raises `arguments_malformed` (not JSON) or
    `arguments_not_object` (JSON, but not an object)."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = loads_bounded(raw)
        except ValueError as exc:
            raise _invalid(
                "arguments_malformed",
                f"The arguments are not valid JSON: {exc}.",
                {"position": getattr(exc, "pos", None)},
            ) from None
    if json_depth_exceeds(raw):
        raise _invalid("arguments_malformed", "The arguments are nested too deeply.")
    if not isinstance(raw, dict):
        raise _invalid(
            "arguments_not_object",
            "The arguments must be a JSON object of named arguments.",
            {"type": type(raw).__name__},
        )
    return raw


def validate_arguments(spec: ToolSpec, arguments: dict[str, Any]) -> dict[str, Any]:
    """Validate `arguments` with the tool's serializer; return its validated data.

    Raises `invalid_arguments` for names the schema does not declare (the schema says
    `additionalProperties: false`) or for values the serializer refuses (per-field messages
    in details, as the REST API gives them).
    """
    extra = unknown_arguments(spec, arguments)
    if extra:
        raise _invalid(
            "invalid_arguments",
            f"Unknown argument(s) for {spec.name}: {', '.join(extra)}.",
            {"unknown": extra},
        )
    serializer = spec.arguments(data=arguments)
    if not serializer.is_valid():
        fields = ", ".join(sorted(serializer.errors))
        raise _invalid(
            "invalid_arguments",
            f"Invalid arguments for {spec.name} ({fields}); see details.",
            json.loads(json.dumps(serializer.errors)),
        )
    return dict(serializer.validated_data)


# --- the call -------------------------------------------------------------------------------


def call_tool(
    *,
    agent: Agent,
    caller: Caller,
    name: Any,
    arguments: Any,
    thread_id: uuid.UUID | str | None = None,
    origin: Any = None,
) -> ToolCallOutcome:
    """Run tool `name` for `agent` (owned by the caller's user) and return its outcome.

    `arguments` is an object or a JSON string; `thread_id`, when given, is the thread to use
    (the same as an argument `thread_id`; both given and different is a conflict). Raises
    ToolError for every refusal (see the module docstring) and for what the ToolExecutor
    raises (policy 400/413, quota 429, sandbox 503).
    """
    caller = caller.acting_as(agent, source=Source.AGENT)
    context = caller.for_thread(None)
    if agent.owner_id != caller.user.pk:
        # Callers look agents up by owner; this guards a caller that did not.
        raise not_found("agent")
    require_active(agent, context)
    if not isinstance(name, str) or name not in TOOLS:
        raise _refuse(
            _invalid(
                "tool_unknown",
                f"There is no tool named {str(name)[:100]!r}.",
                {"tool": str(name)[:100], "tools": list(TOOLS)},
            ),
            context,
        )
    if not agent.allows(name):
        raise _refuse(
            ToolError(
                "tool_not_allowed",
                f"Agent {agent.name!r} may not use the {name} tool.",
                403,
                {"agent_id": str(agent.id), "tool": name},
                kind=SecurityEvent.Kind.AUTHORIZATION,
            ),
            context,
        )
    spec = TOOLS[name]
    try:
        args = parse_arguments(arguments)
        if thread_id is not None:
            given = args.get("thread_id")
            if given not in (None, "") and str(given).lower() != str(thread_id).lower():
                raise _invalid(
                    "thread_id_conflict",
                    "thread_id is given twice with different values.",
                    {"thread_id": str(thread_id), "argument": str(given)[:100]},
                )
            args = {**args, "thread_id": str(thread_id)}
        data = validate_arguments(spec, args)
    except ToolError as error:
        raise _refuse(error, context) from None
    given = data.get("thread_id")
    thread = None if given is None else thread_get_owned(caller=caller, thread_id=given)
    return _RUNNERS[name](data, caller.for_thread(thread), origin)


def _thread_or_new(context: ExecutionContext) -> Thread:
    return context.thread or Thread.objects.create(owner=context.user)


def _plain(data: Any) -> Any:
    # Serializer output (ReturnDict/ReturnList, lazy strings) as plain JSON values.
    return json.loads(json.dumps(data, default=str))


# --- the tools ------------------------------------------------------------------------------


def _run_execute_code(
    data: dict[str, Any], context: ExecutionContext, origin: Any
) -> ToolCallOutcome:
    execution = ToolExecutor().execute_code(
        code=data["code"], language=data["language"], context=context, timeout=data.get("timeout")
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
    error = execution.error or {}
    if error:
        if "name" in error:
            traceback = strip_ansi(str(error.get("traceback") or "")).strip()
            parts.append(f"error: {error.get('name')}: {error.get('value')}")
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


def _run_write_file(
    data: dict[str, Any], context: ExecutionContext, origin: Any
) -> ToolCallOutcome:
    try:
        content = write_file_content(data)
    except ToolError as exc:
        raise _refuse(exc, context) from None
    thread = _thread_or_new(context)
    context = ExecutionContext(
        user=context.user, thread=thread, agent=context.agent,
        source=context.source, client_ip=context.client_ip,
    )  # fmt: skip
    row = ToolExecutor().write_file(file_path=data["path"], content=content, context=context)
    return ToolCallOutcome(
        name="write_file",
        thread_id=str(thread.id),
        is_error=False,
        text=f"Wrote {row.size} bytes to {row.path} (thread_id {thread.id}).",
        result=_plain(WorkspaceFileSerializer(row).data),
    )


def _run_read_file(data: dict[str, Any], context: ExecutionContext, origin: Any) -> ToolCallOutcome:
    thread = context.thread
    assert thread is not None  # thread_id is a required argument of read_file
    path, content = ToolExecutor().read_file(file_path=data["path"], context=context)
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


def _run_list_files(
    data: dict[str, Any], context: ExecutionContext, origin: Any
) -> ToolCallOutcome:
    thread = context.thread
    assert thread is not None  # thread_id is a required argument of list_files
    rows = ToolExecutor().list_files(context=context)
    lines = [f"{len(rows)} file(s) in thread_id {thread.id}:"]
    lines += [f"{row.path} ({row.size} bytes)" for row in rows]
    return ToolCallOutcome(
        name="list_files",
        thread_id=str(thread.id),
        is_error=False,
        text="\n".join(lines),
        result=_plain(WorkspaceFileSerializer(rows, many=True).data),
    )


def _run_install_packages(
    data: dict[str, Any], context: ExecutionContext, origin: Any
) -> ToolCallOutcome:
    thread = _thread_or_new(context)
    context = ExecutionContext(
        user=context.user, thread=thread, agent=context.agent,
        source=context.source, client_ip=context.client_ip,
    )  # fmt: skip
    install = ToolExecutor().install_packages(
        packages=data["packages"], language=data["language"], context=context
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


_RUNNERS: dict[str, Callable[[dict[str, Any], ExecutionContext, Any], ToolCallOutcome]] = {
    "execute_code": _run_execute_code,
    "write_file": _run_write_file,
    "read_file": _run_read_file,
    "list_files": _run_list_files,
    "install_packages": _run_install_packages,
}
