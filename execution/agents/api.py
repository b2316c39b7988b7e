"""REST endpoints of agents: their definitions, their tools, and their tool calls.

* `GET, POST /api/agents/` and `GET, PATCH, PUT, DELETE /api/agents/<id>/`: your agents.
* `GET /api/agents/<id>/tools?format=openai|anthropic`: the agent's allowed tools as
  function/tool definitions (schemas generated from the REST serializers, see tools.py).
* `POST /api/agents/<id>/tool-calls`: run one tool call as the agent (see calls.py).

Another user's agent is a 404 (audited), like every object of the API. Views stay thin:
lookups and checks are in calls.py, shared with the MCP server.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from execution.agents.calls import (
    call_tool,
    find_agent,
    require_active,
)
from execution.agents.tools import DIALECTS, TOOLS, tool_definitions
from execution.api.limits import refuse_oversized_body
from execution.api.serializers import ErrorSerializer
from execution.api.views import errors
from execution.caller import Caller
from execution.models import Agent, Source
from execution.services.errors import ToolError

# --- serializers ----------------------------------------------------------------------------


class AgentSerializer(serializers.ModelSerializer):
    """An agent definition; `allowed_tools` are names from the tool registry."""

    allowed_tools = serializers.ListField(
        child=serializers.ChoiceField(choices=Agent.TOOL_NAMES),
        required=False,
        allow_empty=True,
        help_text=f"Tools this agent may call: any of {', '.join(Agent.TOOL_NAMES)}.",
    )
    name = serializers.CharField(max_length=100)
    tools_url = serializers.SerializerMethodField()
    tool_calls_url = serializers.SerializerMethodField()
    mcp_url = serializers.SerializerMethodField()

    class Meta:
        model = Agent
        fields = [
            "id", "name", "description", "allowed_tools", "is_active", "created_at",
            "updated_at", "tools_url", "tool_calls_url", "mcp_url",
        ]  # fmt: skip
        read_only_fields = ["id", "created_at", "updated_at"]

    def validate_allowed_tools(self, tools: list[str]) -> list[str]:
        # Stored once each, in registry order, whatever order the client sent.
        return [name for name in Agent.TOOL_NAMES if name in set(tools)]

    def validate_name(self, name: str) -> str:
        name = name.strip()
        if not name:
            raise serializers.ValidationError("A name is required.")
        owner = self.context["request"].user
        clashes = Agent.objects.filter(owner=owner, name=name)
        if self.instance is not None:
            clashes = clashes.exclude(pk=self.instance.pk)
        if clashes.exists():
            raise serializers.ValidationError(f"You already have an agent named {name!r}.")
        return name

    def get_tools_url(self, agent: Agent) -> str:
        return reverse("api-agent-tools", kwargs={"agent_id": agent.id})

    def get_tool_calls_url(self, agent: Agent) -> str:
        return reverse("api-agent-tool-calls", kwargs={"agent_id": agent.id})

    def get_mcp_url(self, agent: Agent) -> str:
        # Served by the MCP app in front of Django (execution/agents/mcp.py), not a URLconf.
        return f"/api/agents/{agent.id}/mcp/"


class ToolDefinitionsSerializer(serializers.Serializer):
    agent_id = serializers.UUIDField()
    format = serializers.ChoiceField(choices=DIALECTS)
    tools = serializers.ListField(
        child=serializers.JSONField(),
        help_text="OpenAI: {type: function, function: {name, description, parameters}}; "
        "Anthropic: {name, description, input_schema}.",
    )


class ToolCallRequestSerializer(serializers.Serializer):
    name = serializers.CharField(help_text=f"One of {', '.join(TOOLS)}.")
    arguments = serializers.JSONField(
        required=False,
        allow_null=True,
        help_text="An object, or a string holding a JSON object (as models emit them).",
    )
    thread_id = serializers.UUIDField(
        required=False, allow_null=True, help_text="The thread to use; a new one when absent."
    )


class ToolCallResultSerializer(serializers.Serializer):
    name = serializers.CharField()
    thread_id = serializers.UUIDField(allow_null=True)
    is_error = serializers.BooleanField(
        help_text="The tool ran but failed (the code raised, the install failed)."
    )
    text = serializers.CharField(help_text="The result rendered for the model.")
    result = serializers.JSONField(help_text="The structured result (the REST API's shape).")


# --- views ----------------------------------------------------------------------------------


def _agent_caller(request: Request, agent: Agent | None = None) -> Caller:
    return Caller.from_request(request, source=Source.AGENT, agent=agent)


def _agent_of(request: Request, agent_id: Any) -> Agent:
    return find_agent(agent_id=agent_id, caller=Caller.from_request(request, source=Source.API))


@extend_schema_view(
    # 404 too: a page number past the end.
    get=extend_schema(responses={200: AgentSerializer(many=True), **errors(401, 404)}),
    post=extend_schema(responses={201: AgentSerializer, **errors(400, 401)}),
)
class AgentListView(generics.ListCreateAPIView):
    """List your agents or define one."""

    serializer_class = AgentSerializer

    def get_queryset(self) -> QuerySet[Agent]:
        caller = Caller.from_request(self.request, source=Source.API)
        return Agent.objects.filter(owner=caller.account).order_by("name", "id")

    def perform_create(self, serializer: serializers.BaseSerializer[Any]) -> None:
        serializer.save(owner=Caller.from_request(self.request, source=Source.API).account)


@extend_schema_view(
    get=extend_schema(responses={200: AgentSerializer, **errors(401, 404)}),
    put=extend_schema(responses={200: AgentSerializer, **errors(400, 401, 404)}),
    patch=extend_schema(responses={200: AgentSerializer, **errors(400, 401, 404)}),
    delete=extend_schema(responses={204: None, **errors(401, 404)}),
)
class AgentDetailView(generics.RetrieveUpdateDestroyAPIView):
    """One of your agents: read, change (name, tools, active flag), delete.

    Deleting an agent keeps its executions (they stay in the history, without the agent)."""

    serializer_class = AgentSerializer

    def get_object(self) -> Agent:
        return _agent_of(self.request, self.kwargs["agent_id"])


class _ToolFormatIsNotARenderer:
    """api_settings with no URL format override: on the tools endpoint `?format=` names the
    tool dialect (openai, anthropic), so DRF must not read it as a renderer's name."""

    URL_FORMAT_OVERRIDE = None

    def __getattr__(self, name: str) -> Any:
        return getattr(api_settings, name)


class ToolDialectNegotiation(DefaultContentNegotiation):
    settings = _ToolFormatIsNotARenderer()  # type: ignore[assignment]  # duck-typed on purpose


class AgentToolsView(APIView):
    """The agent's allowed tools as tool definitions for a model."""

    content_negotiation_class = ToolDialectNegotiation

    @extend_schema(
        operation_id="agent_tools",
        parameters=[
            OpenApiParameter(
                "format", str, enum=list(DIALECTS), description="Tool format (default openai)."
            )
        ],
        responses={
            200: ToolDefinitionsSerializer,
            403: OpenApiResponse(ErrorSerializer, description="The agent is inactive."),
            **errors(400, 401, 404),
        },
    )
    def get(self, request: Request, agent_id: Any) -> Response:
        agent = _agent_of(request, agent_id)
        require_active(agent, _agent_caller(request, agent))
        dialect = request.query_params.get("format", "openai")
        if dialect not in DIALECTS:
            raise ToolError(
                "invalid_format",
                f"Unknown tool format {dialect[:50]!r}; use one of: {', '.join(DIALECTS)}.",
                400,
                {"allowed": list(DIALECTS)},
            )
        body = {"agent_id": agent.id, "format": dialect, "tools": tool_definitions(agent, dialect)}
        return Response(ToolDefinitionsSerializer(body).data)


class AgentToolCallView(APIView):
    """Run one tool call as the agent, as its owner, audited."""

    def get_throttles(self) -> list[BaseThrottle]:
        # The same request-rate limits as the REST endpoints the tools mirror. Reading the
        # body here is safe: DRF parses it once and keeps it for the view.
        name = self.request.data.get("name") if isinstance(self.request.data, dict) else None
        spec = TOOLS.get(name) if isinstance(name, str) else None
        throttle_class = spec.throttle if spec is not None else None
        return [throttle_class()] if throttle_class is not None else []

    def check_throttles(self, request: Request) -> None:
        # After authentication, before anything reads the body (get_throttles does): an
        # oversized body is refused unread.
        refuse_oversized_body(request, caller=Caller.from_request(request, source=Source.AGENT))
        super().check_throttles(request)

    @extend_schema(
        operation_id="agent_tool_call",
        request=ToolCallRequestSerializer,
        responses={
            200: ToolCallResultSerializer,
            403: OpenApiResponse(
                ErrorSerializer, description="The agent is inactive or may not use the tool."
            ),
            413: OpenApiResponse(ErrorSerializer, description="Arguments over a size limit."),
            **errors(400, 401, 404, 429, 503),
        },
        description="Validates the arguments with the tool's schema and runs the tool through "
        "the execution service as the agent's owner. Answers 200 with `text` (for the model) "
        "and `result` (structured); a failed run or install is `is_error: true`, not an HTTP "
        "error. Refusals use the API's error shape and are audited.",
    )
    def post(self, request: Request, agent_id: Any) -> Response:
        agent = _agent_of(request, agent_id)
        params = ToolCallRequestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        outcome = call_tool(
            agent=agent,
            caller=Caller.from_request(request, source=Source.AGENT),
            name=data["name"],
            arguments=data.get("arguments"),
            thread_id=data.get("thread_id"),
            origin=request,
        )
        return Response(ToolCallResultSerializer(outcome.as_dict()).data)
