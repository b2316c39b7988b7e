"""Agent tool calls: one service used by the REST endpoint and by the MCP server.

`call_tool(...)` checks the agent (active, tool allowed), parses and validates the arguments
with the tool's serializer (see tools.py), resolves the thread, runs the tool through the
ToolExecutor as a Caller: the agent's owner, with the agent acting and source "agent" (so the
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
from dataclasses import dataclass
from typing import Any

from execution.agents.runners import ToolCallOutcome, refuse
from execution.agents.tools import TOOLS, ToolSpec, unknown_arguments
from execution.api.parsers import json_depth_exceeds, loads_bounded
from execution.caller import Caller
from execution.models import Agent, SecurityEvent, Source
from execution.selectors import agent_get_owned, thread_get_owned
from execution.services.errors import ToolError, not_found
from execution.throttling import check_rate


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


def check_tool_rate(*, name: str, caller: Caller) -> None:
    """Count one call of tool `name` against its REST endpoint's rate limit (the registry's
    `throttle`), for callers outside DRF (the MCP server; DRF views use the throttle
    classes themselves). Raises the audited 429 `throttled` of execution/throttling.py."""
    spec = TOOLS.get(name)
    throttle_class = spec.throttle if spec is not None else None
    if throttle_class is not None:
        check_rate(throttle_class=throttle_class, caller=caller.acting_as(caller.agent))


# --- the agent ------------------------------------------------------------------------------


def find_agent(*, agent_id: Any, caller: Caller) -> Agent:
    """The caller's agent with that id; ToolError 404 `agent_not_found` otherwise (another
    user's agent is audited by the selector as `agent_not_owned`)."""
    return agent_get_owned(caller=caller, agent_id=agent_id)


def require_active(agent: Agent, caller: Caller) -> None:
    """Raise ToolError 403 `agent_inactive` (audited as `caller`'s) unless the agent is
    active."""
    if not agent.is_active:
        raise refuse(
            ToolError(
                "agent_inactive",
                f"Agent {agent.name!r} is inactive; it may not call tools.",
                403,
                {"agent_id": str(agent.id)},
                kind=SecurityEvent.Kind.AUTHORIZATION,
            ),
            caller,
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
    if agent.owner_id != caller.account.pk:
        # Callers look agents up by owner; this guards a caller that did not.
        raise not_found("agent")
    require_active(agent, caller)
    if not isinstance(name, str) or name not in TOOLS:
        raise refuse(
            _invalid(
                "tool_unknown",
                f"There is no tool named {str(name)[:100]!r}.",
                {"tool": str(name)[:100], "tools": list(TOOLS)},
            ),
            caller,
        )
    if not agent.allows(name):
        raise refuse(
            ToolError(
                "tool_not_allowed",
                f"Agent {agent.name!r} may not use the {name} tool.",
                403,
                {"agent_id": str(agent.id), "tool": name},
                kind=SecurityEvent.Kind.AUTHORIZATION,
            ),
            caller,
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
        raise refuse(error, caller) from None
    given = data.get("thread_id")
    thread = None if given is None else thread_get_owned(caller=caller, thread_id=given)
    return spec.runner(data, caller=caller, thread=thread, origin=origin)
