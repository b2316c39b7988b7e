"""The MCP server of agents: `/api/agents/<id>/mcp/`, Streamable HTTP, official `mcp` SDK.

`AgentMCPRouter(django_app)` is the HTTP app of `atlaschat/asgi.py`: requests for an agent's
MCP path are served here, everything else goes to Django unchanged. For each request it

1. checks the Host header against ALLOWED_HOSTS (this app sits in front of Django, so it
   must do Django's check itself);
2. authenticates `Authorization: Bearer <access token>` exactly like the REST API and the
   websockets (simplejwt through `accounts.middleware.user_from_authorization_header`):
   no or a bad token is a 401 in the API's error shape, with `WWW-Authenticate: Bearer`;
3. finds the caller's agent (another user's: 404, audited) and refuses an inactive one
   (403, audited) - see calls.py;
4. hands the request, with the caller attached to the ASGI scope, to the SDK's
   `StreamableHTTPSessionManager`.

The MCP `Server` is one per process and knows no agent: its handlers read the caller from
the HTTP request the SDK passes them (`ctx.request.scope`), so every request is
authenticated and authorised on its own. The manager runs stateless with JSON responses:
any daphne process can answer any request (no session affinity), and both the handshake
era (initialize) and the per-request 2026-07-28 era of the protocol are served.

`tools/list` answers exactly the agent's allowed tools with the input schemas of tools.py;
`tools/call` goes through `calls.call_tool`, the service behind the REST tool calls, so MCP
calls are validated, executed and audited the same way (Execution rows with the agent and
source "agent"; refusals as SecurityEvents). A refusal or failure comes back as a tool
result with `isError` and the error's code and message, so the model can see and correct it.

Daphne does not run the ASGI lifespan protocol, so the session manager's task group is
started on first use in the serving event loop and lives as long as that loop.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection
from django.http.request import split_domain_port, validate_host
from mcp.server import Server, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from accounts.middleware import authorization_header, user_from_authorization_header
from execution.agents.calls import (
    RequestOrigin,
    call_tool,
    check_tool_rate,
    find_agent,
    require_active,
)
from execution.agents.runners import ToolCallOutcome
from execution.agents.tools import allowed_tool_specs, serializer_json_schema
from execution.api.limits import max_body_bytes
from execution.caller import Caller
from execution.models import Agent, Source
from execution.services.errors import ToolError

MCP_PATH = re.compile(r"^/api/agents/(?P<agent_id>[0-9A-Fa-f-]{32,36})/mcp/?$")
# Where the router leaves the authenticated caller for the MCP handlers.
CALLER_SCOPE_KEY = "atlaschat.mcp_caller"
SERVER_INSTRUCTIONS = (
    "AtlasChat code execution for one agent: run code (python, javascript, typescript, bash) "
    "in a sandbox and work with its files and packages. Results name a thread_id; pass it to "
    "later calls to keep variables, files and packages."
)

Scope = dict[str, Any]


@dataclass(frozen=True)
class MCPCaller:
    """Who is calling the MCP endpoint (the caller, with their agent acting) and the origin
    the request reached us at (for absolute URLs in results)."""

    caller: Caller
    agent: Agent
    origin: RequestOrigin


# --- the MCP server -------------------------------------------------------------------------


def _caller_of(ctx: ServerRequestContext[Any, Any]) -> MCPCaller:
    request = ctx.request
    caller = request.scope.get(CALLER_SCOPE_KEY) if request is not None else None
    if not isinstance(caller, MCPCaller):
        # Only reachable if the SDK were mounted without AgentMCPRouter in front of it.
        raise RuntimeError("MCP request without an authenticated caller")
    return caller


async def list_agent_tools(
    ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    """`tools/list`: the caller's agent's allowed tools, nothing else."""
    agent = _caller_of(ctx).agent
    tools = [
        types.Tool(
            name=spec.name,
            description=spec.description,
            input_schema=serializer_json_schema(spec.arguments),
        )
        for spec in allowed_tool_specs(agent)
    ]
    return types.ListToolsResult(tools=tools)


def _call_in_worker(mcp_caller: MCPCaller, name: str, arguments: Any) -> ToolCallOutcome:
    # A worker thread of its own (not Django's one thread-sensitive thread): a run may take
    # minutes and must not hold up the rest of this process's synchronous work.
    close_old_connections()
    try:
        check_tool_rate(name=name, caller=mcp_caller.caller)
        return call_tool(
            agent=mcp_caller.agent,
            caller=mcp_caller.caller,
            name=name,
            arguments=arguments,
            origin=mcp_caller.origin,
        )
    finally:
        connection.close()


async def call_agent_tool(
    ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
) -> types.CallToolResult:
    """`tools/call`: run the tool as the caller's agent through `calls.call_tool`."""
    caller = _caller_of(ctx)
    try:
        outcome = await sync_to_async(_call_in_worker, thread_sensitive=False)(
            caller, params.name, params.arguments
        )
    except ToolError as error:
        return types.CallToolResult(
            content=[types.TextContent(text=f"{error.code}: {error.message}")],
            structured_content={"error": error.as_dict()},
            is_error=True,
        )
    content: list[types.ContentBlock] = [types.TextContent(text=outcome.text)]
    content += [types.ImageContent(data=data, mime_type=mime) for mime, data in outcome.images]
    structured = outcome.as_dict()
    # The text is already the first content block; the structured copy carries the rest.
    structured.pop("text")
    return types.CallToolResult(
        content=content, structured_content=structured, is_error=outcome.is_error
    )


def build_mcp_server() -> Server[Any]:
    """The process's MCP server: tools/list and tools/call for the requesting agent."""
    return Server(
        "AtlasChat",
        version="1",
        instructions=SERVER_INSTRUCTIONS,
        on_list_tools=list_agent_tools,
        on_call_tool=call_agent_tool,
    )


class _SessionManagerHost:
    """One running StreamableHTTPSessionManager per event loop, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._manager: StreamableHTTPSessionManager | None = None
        self._ready: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    async def get(self) -> StreamableHTTPSessionManager:
        """The manager of the running loop, running; raises what stopped it from starting."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._failure = loop, None
            self._ready = asyncio.Event()
            self._manager = StreamableHTTPSessionManager(
                app=build_mcp_server(),
                json_response=True,
                stateless=True,
                max_request_body_size=max_body_bytes(),
            )
            self._task = loop.create_task(self._run(self._manager, self._ready))
        assert self._ready is not None and self._manager is not None
        await self._ready.wait()
        if self._failure is not None:
            raise RuntimeError("the MCP session manager did not start") from self._failure
        return self._manager

    async def _run(self, manager: StreamableHTTPSessionManager, ready: asyncio.Event) -> None:
        try:
            async with manager.run():
                ready.set()
                # Hold the manager's task group open for as long as the loop serves.
                await asyncio.Event().wait()
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            ready.set()


# --- the router in front of Django ----------------------------------------------------------


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


def _host_allowed(scope: Scope) -> bool:
    raw = _header(scope, b"host")
    domain, _port = split_domain_port(raw.decode("latin-1")) if raw else ("", "")
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # Django's own default in DEBUG
    return bool(domain) and validate_host(domain, allowed)


async def _send_error(
    send: Any, status: int, code: str, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@database_sync_to_async
def _agent_for(agent_id: str, caller: Caller) -> Agent:
    agent = find_agent(agent_id=agent_id, caller=caller)
    require_active(agent, caller.acting_as(agent))
    return agent


class AgentMCPRouter:
    """ASGI app: the agents' MCP endpoints, and `inner` (Django) for every other request."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.managers = _SessionManagerHost()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        match = MCP_PATH.match(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None:
            await self.inner(scope, receive, send)
            return
        await self.serve(match["agent_id"], scope, receive, send)

    async def serve(self, agent_id: str, scope: Scope, receive: Any, send: Any) -> None:
        """Authenticate, authorise and hand one request to the MCP session manager."""
        if not _host_allowed(scope):
            await _send_error(send, 400, "disallowed_host", "The Host header is not allowed.")
            return
        if scope.get("method") == "GET":
            # The stateless server pushes nothing outside a request's answer: a GET (the
            # optional server-to-client stream) would be held open forever with nothing sent.
            await _send_error(
                send, 405, "method_not_allowed",
                "This MCP endpoint answers POST only (stateless, JSON responses).",
                [(b"allow", b"POST, DELETE")],
            )  # fmt: skip
            return
        challenge = [(b"www-authenticate", b'Bearer realm="api"')]
        header = authorization_header(scope)
        if header is None:
            await _send_error(
                send, 401, "not_authenticated",
                "Authentication credentials were not provided: send Authorization: Bearer "
                "<access token>.", challenge,
            )  # fmt: skip
            return
        user = await user_from_authorization_header(header)
        if not user.is_authenticated:
            await _send_error(
                send, 401, "authentication_failed",
                "The token is invalid or expired.", challenge,
            )  # fmt: skip
            return
        caller = Caller.from_scope({**scope, "user": user}, source=Source.AGENT)
        try:
            agent = await _agent_for(agent_id, caller)
        except ToolError as error:
            await _send_error(send, error.status, error.code, error.message)
            return
        host = (_header(scope, b"host") or b"localhost").decode("latin-1")
        origin = RequestOrigin(host=host, secure=scope.get("scheme") == "https")
        mcp_caller = MCPCaller(caller=caller.acting_as(agent), agent=agent, origin=origin)
        manager = await self.managers.get()
        await manager.handle_request({**scope, CALLER_SCOPE_KEY: mcp_caller}, receive, send)
