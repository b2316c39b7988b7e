"""The tool registry of agents and the JSON Schema of each tool, generated from serializers.

Each tool's arguments are validated by a serializer that SUBCLASSES the request serializer
of the matching REST endpoint (`/api/code/execute`, `/api/code/write-file`, …), dropping
only what an agent does not choose itself (`agent_id`: the URL names the agent; `wait`: a
tool call always waits). The JSON Schema an agent runtime sees is generated from the very
same serializer by `serializer_json_schema`, so the schema, the REST API and the tool-call
validation cannot drift apart: change a field in `execution/api/serializers.py` and all
three change together.

`tool_definitions(agent, dialect)` gives the agent's allowed tools (only those) in OpenAI's
function-tool shape or Anthropic's tool shape; the MCP server uses `tool_input_schema`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rest_framework import serializers
from rest_framework.throttling import SimpleRateThrottle

from execution.agents import runners
from execution.agents.runners import ToolCallOutcome
from execution.api.serializers import (
    ExecuteRequestSerializer,
    InstallPackagesRequestSerializer,
    ReadFileRequestSerializer,
    WriteFileRequestSerializer,
)
from execution.api.throttles import ExecuteRateThrottle, InstallRateThrottle
from execution.caller import Caller
from execution.models import Agent, Thread

THREAD_HELP = (
    "The thread (workspace) to use: its files, packages and variables persist between calls. "
    "Every result names its thread_id; pass it back to keep working in the same place."
)

# --- argument serializers (subclasses of the REST API's request serializers) ---------------


class ExecuteCodeArguments(ExecuteRequestSerializer):
    """Arguments of `execute_code`: those of POST /api/code/execute, always waiting."""

    agent_id = None  # type: ignore[assignment]  # DRF: None removes an inherited field
    wait = None  # type: ignore[assignment]


class WriteFileArguments(WriteFileRequestSerializer):
    """Arguments of `write_file`: those of POST /api/code/write-file."""

    agent_id = None  # type: ignore[assignment]  # DRF: None removes an inherited field


class ReadFileArguments(ReadFileRequestSerializer):
    """Arguments of `read_file`: those of POST /api/code/read-file."""

    agent_id = None  # type: ignore[assignment]  # DRF: None removes an inherited field
    # Same field as the REST serializer's (required UUID); only a description is added.
    thread_id = serializers.UUIDField(help_text=THREAD_HELP)


class ListFilesArguments(serializers.Serializer):
    """Arguments of `list_files` (the REST API lists files at GET /api/threads/<id>/files/,
    where the thread is in the path; here it is the one argument)."""

    thread_id = serializers.UUIDField(help_text=THREAD_HELP)


class InstallPackagesArguments(InstallPackagesRequestSerializer):
    """Arguments of `install_packages`: those of POST /api/code/install-packages."""

    agent_id = None  # type: ignore[assignment]  # DRF: None removes an inherited field


class Runner(Protocol):
    """What runs a tool (runners.py): its validated arguments, the caller (the agent's owner
    with the agent acting), the thread (None: a new one where the tool makes one) and the
    request's origin (for absolute URLs in results)."""

    def __call__(
        self, data: dict[str, Any], *, caller: Caller, thread: Thread | None, origin: Any
    ) -> ToolCallOutcome: ...


@dataclass(frozen=True)
class ToolSpec:
    """One tool, all of it in one place: its registry name, what it does (for the model),
    its arguments (serializer and JSON Schema), what runs it, and the request-rate limit it
    counts against (that of the REST endpoint it mirrors; None: no rate limit)."""

    name: str
    description: str
    arguments: type[serializers.Serializer]
    runner: Runner
    throttle: type[SimpleRateThrottle] | None = None


TOOLS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            "execute_code",
            "Run code in a sandbox and return its output. Languages: python (a Jupyter "
            "kernel: variables persist between calls in the same thread), javascript, "
            "typescript, bash. The working directory is the thread's workspace (/home/user). "
            "Without thread_id a new thread is created.",
            ExecuteCodeArguments,
            runners.run_execute_code,
            ExecuteRateThrottle,
        ),
        ToolSpec(
            "write_file",
            "Write a file into the thread's workspace (path relative to /home/user). Content "
            "is utf-8 text, or base64 with encoding=base64. Without thread_id a new thread is "
            "created.",
            WriteFileArguments,
            runners.run_write_file,
        ),
        ToolSpec(
            "read_file",
            "Read a file of the thread's workspace: utf-8 text when it is text, else base64.",
            ReadFileArguments,
            runners.run_read_file,
        ),
        ToolSpec(
            "list_files",
            "List the files of the thread's workspace with their sizes.",
            ListFilesArguments,
            runners.run_list_files,
        ),
        ToolSpec(
            "install_packages",
            "Install packages into the thread's sandbox: pip for python, npm for "
            "javascript/typescript. Names with optional versions, e.g. requests==2.32.3. "
            "Without thread_id a new thread is created.",
            InstallPackagesArguments,
            runners.run_install_packages,
            InstallRateThrottle,
        ),
    )
}
# The registry and the model's list of tool names are one list, in one order: a tool added
# to one and not the other fails at import, not at an agent's first call.
if tuple(TOOLS) != Agent.TOOL_NAMES:
    raise RuntimeError(f"agent tools {tuple(TOOLS)} differ from Agent.TOOL_NAMES")

DIALECTS = ("openai", "anthropic")


# --- serializer → JSON Schema ---------------------------------------------------------------


def _field_schema(field: serializers.Field) -> dict[str, Any]:
    """The JSON Schema of one serializer field (its type and the limits DRF enforces).

    Raises TypeError for a field type this walker does not know, so a new field type in a
    request serializer fails the schema tests instead of producing a wrong schema.
    """
    schema: dict[str, Any]
    # Order matters: subclasses before their bases (MultipleChoiceField before ChoiceField;
    # ChoiceField and UUIDField before CharField).
    if isinstance(field, serializers.BooleanField):
        schema = {"type": "boolean"}
    elif isinstance(field, serializers.MultipleChoiceField):
        choices = [str(choice) for choice in field.choices]
        schema = {"type": "array", "items": {"type": "string", "enum": choices}}
        schema["uniqueItems"] = True
        if not field.allow_empty:
            schema["minItems"] = 1
    elif isinstance(field, serializers.ChoiceField):
        schema = {"type": "string", "enum": [str(choice) for choice in field.choices]}
    elif isinstance(field, serializers.UUIDField):
        schema = {"type": "string", "format": "uuid"}
    elif isinstance(field, serializers.CharField):
        schema = {"type": "string"}
        if field.max_length is not None:
            schema["maxLength"] = field.max_length
        min_length = field.min_length or (0 if field.allow_blank else 1)
        if min_length:
            schema["minLength"] = min_length
    elif isinstance(field, serializers.IntegerField | serializers.FloatField):
        schema = {"type": "integer" if isinstance(field, serializers.IntegerField) else "number"}
        if field.min_value is not None:
            schema["minimum"] = field.min_value
        if field.max_value is not None:
            schema["maximum"] = field.max_value
    elif isinstance(field, serializers.ListField):
        schema = {"type": "array", "items": _field_schema(field.child)}
        min_items = field.min_length or (0 if field.allow_empty else 1)
        if min_items:
            schema["minItems"] = min_items
        if field.max_length is not None:
            schema["maxItems"] = field.max_length
    elif isinstance(field, serializers.JSONField):
        schema = {}
    else:
        raise TypeError(f"no JSON Schema mapping for {type(field).__name__}")
    if getattr(field, "allow_null", False) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    if field.help_text:
        schema["description"] = str(field.help_text)
    default = field.default
    if default is not serializers.empty and not callable(default):
        schema["default"] = default
    return schema


def serializer_json_schema(serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    """The JSON Schema (an object schema) of what `serializer_class` accepts as input.

    Writable fields only, `required` exactly as DRF requires them, and no other properties
    (`additionalProperties: false`, which `validate_arguments` enforces too).
    """
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, field in serializer_class().fields.items():
        if field.read_only:
            continue
        properties[name] = _field_schema(field)
        if field.required:
            required.append(name)
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def tool_input_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of tool `name`'s arguments (KeyError for an unknown tool)."""
    return serializer_json_schema(TOOLS[name].arguments)


def allowed_tool_specs(agent: Agent) -> list[ToolSpec]:
    """The tools `agent` may call now, in registry order (none when it is inactive)."""
    return [spec for name, spec in TOOLS.items() if agent.allows(name)]


def tool_definition(spec: ToolSpec, dialect: str) -> dict[str, Any]:
    """One tool as OpenAI's function tool or Anthropic's tool definition.

    openai:    {"type": "function", "function": {"name", "description", "parameters"}}
    anthropic: {"name", "description", "input_schema"}
    Raises ValueError for another dialect.
    """
    schema = serializer_json_schema(spec.arguments)
    if dialect == "openai":
        return {
            "type": "function",
            "function": {"name": spec.name, "description": spec.description, "parameters": schema},
        }
    if dialect == "anthropic":
        return {"name": spec.name, "description": spec.description, "input_schema": schema}
    raise ValueError(f"unknown tool format {dialect!r}; use one of {', '.join(DIALECTS)}")


def tool_definitions(agent: Agent, dialect: str) -> list[dict[str, Any]]:
    """The agent's allowed tools as definitions in `dialect` (see `tool_definition`)."""
    return [tool_definition(spec, dialect) for spec in allowed_tool_specs(agent)]


def unknown_arguments(spec: ToolSpec, arguments: Mapping[str, Any]) -> list[str]:
    """The argument names `spec`'s schema does not declare (sorted)."""
    declared = {name for name, field in spec.arguments().fields.items() if not field.read_only}
    return sorted(set(arguments) - declared)
