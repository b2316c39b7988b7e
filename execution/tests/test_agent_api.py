"""Agent definitions over the API and their tool definitions (OpenAI and Anthropic formats).

The tool schemas are checked three ways: against the published shape of each format, as
valid JSON Schema (Draft 2020-12, with `jsonschema`), and against the serializers they are
generated from (what the schema accepts, the serializer accepts, and the other way round).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from rest_framework import serializers

from execution.agents.tools import TOOLS, serializer_json_schema
from execution.api.serializers import ExecuteRequestSerializer, WriteFileRequestSerializer
from execution.models import Agent, Execution, SecurityEvent, Thread

AGENTS = "/api/agents/"

# The published shapes: OpenAI's function tool and Anthropic's tool definition.
OPENAI_TOOL_SHAPE = {
    "type": "object",
    "required": ["type", "function"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name", "description", "parameters"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                "description": {"type": "string", "minLength": 1},
                "parameters": {
                    "type": "object",
                    "required": ["type", "properties"],
                    "properties": {"type": {"const": "object"}},
                },
            },
        },
    },
}
ANTHROPIC_TOOL_SHAPE = {
    "type": "object",
    "required": ["name", "description", "input_schema"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
        "description": {"type": "string", "minLength": 1},
        "input_schema": {
            "type": "object",
            "required": ["type", "properties"],
            "properties": {"type": {"const": "object"}},
        },
    },
}


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture
def agent(alice: Any) -> Agent:
    return Agent.objects.create(
        owner=alice, name="coder", allowed_tools=["execute_code", "read_file"]
    )


def tools_url(agent: Agent, dialect: str | None = None) -> str:
    url = f"{AGENTS}{agent.id}/tools"
    return f"{url}?format={dialect}" if dialect else url


# --- definitions ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_creates_an_agent_owned_by_the_caller_with_tools_in_registry_order(
    jwt_client: Any, alice: Any
) -> None:
    response = jwt_client(alice).post(
        AGENTS,
        {"name": "analyst", "allowed_tools": ["read_file", "execute_code", "read_file"]},
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["allowed_tools"] == ["execute_code", "read_file"]
    assert body["is_active"] is True
    assert body["tools_url"] == f"/api/agents/{body['id']}/tools"
    assert body["tool_calls_url"] == f"/api/agents/{body['id']}/tool-calls"
    assert body["mcp_url"] == f"/api/agents/{body['id']}/mcp/"
    stored = Agent.objects.get(pk=body["id"])
    assert (stored.owner, stored.allowed_tools) == (alice, ["execute_code", "read_file"])


@pytest.mark.django_db
def test_it_refuses_a_tool_that_is_not_in_the_registry(jwt_client: Any, alice: Any) -> None:
    response = jwt_client(alice).post(
        AGENTS, {"name": "x", "allowed_tools": ["execute_code", "rm_rf"]}, format="json"
    )

    error = assert_error(response, 400, "invalid_request")
    assert "allowed_tools" in error["details"]
    assert not Agent.objects.exists()


@pytest.mark.django_db
def test_it_refuses_a_second_agent_with_the_same_name(
    jwt_client: Any, alice: Any, agent: Agent
) -> None:
    response = jwt_client(alice).post(AGENTS, {"name": "coder"}, format="json")

    assert "name" in assert_error(response, 400, "invalid_request")["details"]


@pytest.mark.django_db
def test_the_list_shows_only_the_callers_agents(
    jwt_client: Any, alice: Any, charlie: Any, agent: Agent
) -> None:
    Agent.objects.create(owner=charlie, name="charlies")

    body = jwt_client(alice).get(AGENTS).json()

    assert [item["name"] for item in body["results"]] == ["coder"]


@pytest.mark.django_db
def test_the_owner_changes_tools_and_the_active_flag(
    jwt_client: Any, alice: Any, agent: Agent
) -> None:
    response = jwt_client(alice).patch(
        f"{AGENTS}{agent.id}/",
        {"allowed_tools": ["list_files"], "is_active": False},
        format="json",
    )

    assert response.status_code == 200, response.content
    agent.refresh_from_db()
    assert (agent.allowed_tools, agent.is_active) == (["list_files"], False)


@pytest.mark.django_db
def test_deleting_an_agent_keeps_its_executions(jwt_client: Any, alice: Any, agent: Agent) -> None:
    thread = Thread.objects.create(owner=alice)
    run = Execution.objects.create(
        thread=thread, user=alice, agent=agent, language="python", code="1", source="agent"
    )

    response = jwt_client(alice).delete(f"{AGENTS}{agent.id}/")

    assert response.status_code == 204
    run.refresh_from_db()
    assert run.agent is None
    assert not Agent.objects.filter(pk=agent.id).exists()


# Every agent endpoint, with a request that would succeed or change something for alice.
AGENT_ENDPOINTS = [
    ("get", "/", None),
    ("patch", "/", {"allowed_tools": ["install_packages"]}),
    ("put", "/", {"name": "renamed", "allowed_tools": []}),
    ("delete", "/", None),
    ("get", "/tools", None),
    ("post", "/tool-calls", {"name": "list_files", "arguments": {}}),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "suffix", "payload"), AGENT_ENDPOINTS)
@pytest.mark.parametrize("who", ["charlie", "staff"])
def test_another_users_agent_is_not_found_unchanged_and_audited(
    jwt_client: Any,
    charlie: Any,
    staff: Any,
    agent: Agent,
    who: str,
    method: str,
    suffix: str,
    payload: Any,
) -> None:
    user = {"charlie": charlie, "staff": staff}[who]
    url = f"{AGENTS}{agent.id}{suffix}"
    response = getattr(jwt_client(user), method)(url, payload, format="json")

    assert_error(response, 404, "agent_not_found")
    agent.refresh_from_db()
    assert (agent.name, agent.allowed_tools) == ("coder", ["execute_code", "read_file"])
    event = SecurityEvent.objects.get(code="agent_not_owned")
    assert (event.user, event.kind) == (user, SecurityEvent.Kind.AUTHORIZATION)
    assert event.details["object_id"] == str(agent.id)


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "suffix", "payload"), [("get", "", None), *AGENT_ENDPOINTS])
def test_anonymous_requests_are_refused(
    api_client: Any, agent: Agent, method: str, suffix: str, payload: Any
) -> None:
    url = f"{AGENTS}{agent.id}{suffix}" if suffix else AGENTS
    response = getattr(api_client, method)(url, payload, format="json")

    assert_error(response, 401, "not_authenticated")
    assert Agent.objects.filter(pk=agent.id, name="coder").exists()


# --- tool definitions -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("dialect", "shape", "schema_of"),
    [
        ("openai", OPENAI_TOOL_SHAPE, lambda tool: tool["function"]["parameters"]),
        ("anthropic", ANTHROPIC_TOOL_SHAPE, lambda tool: tool["input_schema"]),
    ],
)
def test_each_format_has_its_published_shape_and_valid_json_schema_parameters(
    jwt_client: Any, alice: Any, dialect: str, shape: dict[str, Any], schema_of: Any
) -> None:
    agent = Agent.objects.create(owner=alice, name="all", allowed_tools=list(Agent.TOOL_NAMES))

    response = jwt_client(alice).get(tools_url(agent, dialect))

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["agent_id"], body["format"]) == (str(agent.id), dialect)
    assert len(body["tools"]) == len(Agent.TOOL_NAMES)
    for tool in body["tools"]:
        jsonschema.validate(tool, shape)
        parameters = schema_of(tool)
        jsonschema.Draft202012Validator.check_schema(parameters)
        name = tool["function"]["name"] if dialect == "openai" else tool["name"]
        assert parameters == serializer_json_schema(TOOLS[name].arguments)


@pytest.mark.django_db
def test_tools_the_agent_may_not_use_are_absent(jwt_client: Any, alice: Any, agent: Agent) -> None:
    openai = jwt_client(alice).get(tools_url(agent, "openai")).json()["tools"]
    anthropic = jwt_client(alice).get(tools_url(agent, "anthropic")).json()["tools"]

    assert [tool["function"]["name"] for tool in openai] == ["execute_code", "read_file"]
    assert [tool["name"] for tool in anthropic] == ["execute_code", "read_file"]


@pytest.mark.django_db
def test_the_default_format_is_openai_and_an_unknown_one_is_refused(
    jwt_client: Any, alice: Any, agent: Agent
) -> None:
    default = jwt_client(alice).get(tools_url(agent)).json()
    assert default["format"] == "openai"
    assert default["tools"][0]["type"] == "function"

    error = assert_error(jwt_client(alice).get(tools_url(agent, "gemini")), 400, "invalid_format")
    assert error["details"]["allowed"] == ["openai", "anthropic"]


@pytest.mark.django_db
def test_an_inactive_agent_has_no_tools_to_offer(jwt_client: Any, alice: Any, agent: Agent) -> None:
    agent.is_active = False
    agent.save()

    assert_error(jwt_client(alice).get(tools_url(agent)), 403, "agent_inactive")
    assert SecurityEvent.objects.filter(agent=agent, code="agent_inactive").exists()


# --- one source of truth --------------------------------------------------------------------


def test_the_execute_code_schema_is_the_rest_serializer_without_agent_id_and_wait() -> None:
    schema = serializer_json_schema(TOOLS["execute_code"].arguments)
    rest_fields = set(ExecuteRequestSerializer().fields)

    assert set(schema["properties"]) == rest_fields - {"agent_id", "wait"}
    assert schema["required"] == ["code", "language"]
    assert schema["properties"]["thread_id"]["format"] == "uuid"
    assert schema["properties"]["timeout"]["type"] == ["number", "null"]


def test_the_write_file_schema_carries_the_serializers_choices_and_default() -> None:
    schema = serializer_json_schema(TOOLS["write_file"].arguments)
    encoding = WriteFileRequestSerializer().fields["encoding"]

    assert schema["properties"]["encoding"]["enum"] == list(encoding.choices)
    assert schema["properties"]["encoding"]["default"] == encoding.default


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("execute_code", {"code": "print(1)", "language": "python"}),
        (
            "execute_code",
            {"code": "print(1)", "language": "python", "timeout": 5, "thread_id": None},
        ),
        ("execute_code", {"language": "python"}),
        ("execute_code", {"code": "print(1)", "language": "python", "wait": False}),
        ("write_file", {"path": "a.txt", "content": "x", "encoding": "base64"}),
        ("write_file", {"path": "a.txt", "content": "x", "encoding": "latin-1"}),
        ("read_file", {"path": "a.txt"}),
        ("read_file", {"path": "a.txt", "thread_id": "00000000-0000-4000-8000-000000000000"}),
        ("read_file", {"path": "a.txt", "thread_id": "not-a-uuid"}),
        ("list_files", {}),
        ("install_packages", {"packages": ["six"]}),
        ("install_packages", {"packages": "six"}),
    ],
)
def test_the_schema_and_the_serializer_accept_and_refuse_the_same_arguments(
    name: str, arguments: dict[str, Any]
) -> None:
    # (DRF is more lenient than the schema in one way only: it coerces numbers to strings,
    # so a model that follows the schema never meets a refusal the schema did not predict.)
    spec = TOOLS[name]
    schema = serializer_json_schema(spec.arguments)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    serializer = spec.arguments(data=arguments)
    # An argument the schema does not declare is refused by the tool-call service (and the
    # schema says additionalProperties: false); DRF alone would ignore it.
    declared = set(serializer.fields) >= set(arguments)

    assert validator.is_valid(arguments) == (serializer.is_valid() and declared)


class EveryFieldKind(serializers.Serializer):
    flag = serializers.BooleanField(default=False)
    colours = serializers.MultipleChoiceField(choices=["red", "blue"], allow_empty=False)
    mode = serializers.ChoiceField(choices=["a", "b"], allow_null=True, required=False)
    count = serializers.IntegerField(min_value=1, max_value=9, help_text="How many.")
    ratio = serializers.FloatField(required=False)
    name = serializers.CharField(max_length=5)
    names = serializers.ListField(child=serializers.CharField(), max_length=3, allow_empty=False)
    anything = serializers.JSONField(required=False)
    created = serializers.DateTimeField(read_only=True)


def test_the_schema_walker_maps_each_field_kind_with_its_limits() -> None:
    schema = serializer_json_schema(EveryFieldKind)

    assert schema["properties"] == {
        "flag": {"type": "boolean", "default": False},
        "colours": {
            "type": "array",
            "items": {"type": "string", "enum": ["red", "blue"]},
            "uniqueItems": True,
            "minItems": 1,
        },
        "mode": {"type": ["string", "null"], "enum": ["a", "b", None]},
        "count": {"type": "integer", "minimum": 1, "maximum": 9, "description": "How many."},
        "ratio": {"type": "number"},
        "name": {"type": "string", "maxLength": 5, "minLength": 1},
        "names": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                  "maxItems": 3},
        "anything": {},
    }  # fmt: skip
    assert schema["required"] == ["colours", "count", "name", "names"]
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_schema_walker_refuses_a_field_kind_it_cannot_describe() -> None:
    class WithDate(serializers.Serializer):
        when = serializers.DateTimeField()

    with pytest.raises(TypeError, match="DateTimeField"):
        serializer_json_schema(WithDate)
