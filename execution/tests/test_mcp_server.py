"""The agents' MCP endpoint, through the official MCP client, a live daphne and a real sandboxd.

One daphne process serves `atlaschat.asgi:application` (the MCP router in front of Django)
against a database this process reads too (see live.py). The client is `mcp.Client` of the
same SDK over Streamable HTTP on loopback, with the user's JWT in `Authorization`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from execution.agents.tools import tool_input_schema
from execution.models import Agent, Execution, SecurityEvent, Source
from execution.tests.live import LiveUsers, bearer_headers, live_users_stack

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(240)]


class Live(LiveUsers):
    def mcp_url(self, agent: Agent) -> str:
        return f"{self.server.http_url}/api/agents/{agent.id}/mcp/"


@pytest.fixture(scope="module")
def live(
    django_db_setup: None,
    django_db_blocker: Any,
    sandboxd_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    """daphne + a shared database + alice and charlie, for this module's tests."""
    with (
        django_db_blocker.unblock(),
        live_users_stack(tmp_path_factory.mktemp("mcp-live"), sandboxd_server, Live) as live,
    ):
        yield live


async def make_agent(live: Live, tools: list[str], *, is_active: bool = True) -> Agent:
    count = await sync_to_async(Agent.objects.using(live.alias).count)()
    return await sync_to_async(Agent.objects.using(live.alias).create)(
        owner=live.alice,
        name=f"agent-{count}",
        allowed_tools=tools,
        is_active=is_active,
    )


@asynccontextmanager
async def mcp_client(
    live: Live, agent: Agent, headers: dict[str, str], mode: str = "auto"
) -> AsyncIterator[Client]:
    """The official MCP client connected to the agent's endpoint, sending `headers`."""
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(live.mcp_url(agent), http_client=http), mode=mode) as client,
    ):
        yield client


def result_text(result: Any) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


async def events(live: Live, **filters: Any) -> list[SecurityEvent]:
    query = SecurityEvent.objects.using(live.alias).filter(**filters)
    return await sync_to_async(list)(query)


# --- listing --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_client_lists_exactly_the_agents_allowed_tools_with_their_schemas(
    live: Live, mode: str
) -> None:
    agent = await make_agent(live, ["execute_code", "read_file"])
    async with mcp_client(live, agent, bearer_headers(live.alice), mode=mode) as client:
        listed = await client.list_tools()
    assert [tool.name for tool in listed.tools] == ["execute_code", "read_file"]
    for tool in listed.tools:
        assert tool.input_schema == tool_input_schema(tool.name)
        assert tool.description


async def test_an_agent_with_no_tools_lists_none(live: Live) -> None:
    agent = await make_agent(live, [])
    async with mcp_client(live, agent, bearer_headers(live.alice)) as client:
        listed = await client.list_tools()
    assert listed.tools == []


# --- calling --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_execute_code_returns_the_output_and_the_execution_names_the_agent(
    live: Live, mode: str
) -> None:
    agent = await make_agent(live, ["execute_code"])
    async with mcp_client(live, agent, bearer_headers(live.alice), mode=mode) as client:
        first = await client.call_tool(
            "execute_code", {"code": "x = 6 * 7\nprint(x)", "language": "python"}
        )
        assert first.is_error is False, result_text(first)
        assert "42" in result_text(first)
        thread_id = first.structured_content["thread_id"]
        # The same thread keeps the kernel's variables.
        second = await client.call_tool(
            "execute_code", {"code": "print(x + 1)", "language": "python", "thread_id": thread_id}
        )
    assert "43" in result_text(second)
    assert second.structured_content["thread_id"] == thread_id
    execution_id = first.structured_content["result"]["id"]
    row = await sync_to_async(Execution.objects.using(live.alias).get)(pk=execution_id)
    assert row.agent_id == agent.id
    assert row.user_id == live.alice.pk
    assert row.source == Source.AGENT
    assert row.stdout == "42\n"
    assert str(row.thread_id) == thread_id


async def test_a_failing_run_is_an_error_result_with_the_traceback(live: Live) -> None:
    agent = await make_agent(live, ["execute_code"])
    async with mcp_client(live, agent, bearer_headers(live.alice)) as client:
        result = await client.call_tool(
            "execute_code", {"code": "raise ValueError('boom')", "language": "python"}
        )
    assert result.is_error is True
    assert "ValueError: boom" in result_text(result)
    assert result.structured_content["result"]["status"] == "failed"


async def test_a_tool_the_agent_may_not_use_is_refused_and_audited(live: Live) -> None:
    agent = await make_agent(live, ["execute_code"])
    async with mcp_client(live, agent, bearer_headers(live.alice)) as client:
        result = await client.call_tool("install_packages", {"packages": ["six"]})
    assert result.is_error is True
    assert result_text(result).startswith("tool_not_allowed:")
    assert result.structured_content["error"]["code"] == "tool_not_allowed"
    refused = await events(live, agent_id=agent.id, code="tool_not_allowed")
    assert len(refused) == 1
    assert refused[0].kind == SecurityEvent.Kind.AUTHORIZATION
    assert refused[0].source == Source.AGENT
    assert refused[0].user_id == live.alice.pk


async def test_invalid_arguments_are_an_error_result_naming_the_field(live: Live) -> None:
    agent = await make_agent(live, ["execute_code"])
    async with mcp_client(live, agent, bearer_headers(live.alice)) as client:
        result = await client.call_tool("execute_code", {"language": "python"})
    assert result.is_error is True
    assert result.structured_content["error"]["code"] == "invalid_arguments"
    assert "code" in result.structured_content["error"]["details"]
    assert await events(live, agent_id=agent.id, code="invalid_arguments")


# --- authentication and authorisation -------------------------------------------------------


async def test_the_client_without_a_token_is_refused_and_nothing_runs(live: Live) -> None:
    agent = await make_agent(live, ["execute_code"])
    before = await sync_to_async(Execution.objects.using(live.alias).count)()
    statuses: list[int] = []

    async def record(response: Any) -> None:
        statuses.append(response.status_code)

    with pytest.raises(ExceptionGroup) as refused:
        async with create_mcp_http_client() as http:
            http.event_hooks["response"].append(record)
            transport = streamable_http_client(live.mcp_url(agent), http_client=http)
            async with Client(transport) as client:
                await client.call_tool("execute_code", {"code": "print(1)", "language": "python"})
    assert refused.group_contains(MCPError, depth=None)
    assert statuses and set(statuses) == {401}
    assert await sync_to_async(Execution.objects.using(live.alias).count)() == before


async def test_a_request_without_a_token_is_answered_401_in_the_api_error_shape(
    live: Live,
) -> None:
    agent = await make_agent(live, ["execute_code"])
    async with httpx.AsyncClient() as http:
        response = await http.post(live.mcp_url(agent), json={"jsonrpc": "2.0"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_bad_token_is_answered_401(live: Live) -> None:
    agent = await make_agent(live, ["execute_code"])
    async with httpx.AsyncClient() as http:
        response = await http.post(
            live.mcp_url(agent),
            json={"jsonrpc": "2.0"},
            headers={"Authorization": "Bearer not-a-token"},
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


async def test_another_users_agent_is_not_found_and_the_attempt_is_audited(live: Live) -> None:
    agent = await make_agent(live, ["execute_code"])
    async with httpx.AsyncClient() as http:
        response = await http.post(
            live.mcp_url(agent), json={"jsonrpc": "2.0"}, headers=bearer_headers(live.charlie)
        )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "agent_not_found"
    audited = await events(live, user_id=live.charlie.pk, code="agent_not_owned")
    assert audited and audited[-1].details["object_id"] == str(agent.id)


async def test_an_inactive_agent_is_refused_with_403_and_audited(live: Live) -> None:
    agent = await make_agent(live, ["execute_code"], is_active=False)
    async with httpx.AsyncClient() as http:
        response = await http.post(
            live.mcp_url(agent), json={"jsonrpc": "2.0"}, headers=bearer_headers(live.alice)
        )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "agent_inactive"
    assert await events(live, agent_id=agent.id, code="agent_inactive")


async def test_other_paths_still_reach_django(live: Live) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{live.server.http_url}/api/agents/", headers=bearer_headers(live.alice)
        )
    assert response.status_code == 200
    assert {"count", "results"} <= set(response.json())


# --- rate limits ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def throttled_live(
    django_db_setup: None,
    django_db_blocker: Any,
    sandboxd_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    """A second deployment whose execute rate limit is 2 per minute."""
    with (
        django_db_blocker.unblock(),
        live_users_stack(
            tmp_path_factory.mktemp("mcp-throttled"),
            sandboxd_server,
            Live,
            extra_env={"EXECUTION_THROTTLE_RATE": "2/minute"},
        ) as live,
    ):
        yield live


async def test_execute_code_calls_count_against_the_execute_rate_limit(
    throttled_live: Live,
) -> None:
    live = throttled_live
    agent = await make_agent(live, ["execute_code", "list_files"])
    arguments = {"language": "python"}  # refused after the rate check: cheap to count
    async with mcp_client(live, agent, bearer_headers(live.alice)) as client:
        first = [await client.call_tool("execute_code", arguments) for _ in range(2)]
        third = await client.call_tool("execute_code", arguments)
        other_tool = await client.call_tool("list_files", {})

    assert [r.structured_content["error"]["code"] for r in first] == ["invalid_arguments"] * 2
    assert third.is_error is True
    assert third.structured_content["error"]["code"] == "throttled"
    assert other_tool.structured_content["error"]["code"] == "invalid_arguments"
    throttled = await events(live, agent_id=agent.id, code="throttled")
    assert len(throttled) == 1
    assert throttled[0].kind == SecurityEvent.Kind.QUOTA


async def test_a_figure_comes_back_as_image_content(live: Live) -> None:
    agent = await make_agent(live, ["execute_code"])
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"
    async with mcp_client(live, agent, bearer_headers(live.alice)) as client:
        result = await client.call_tool("execute_code", {"code": code, "language": "python"})
    images = [block for block in result.content if block.type == "image"]
    assert result.is_error is False, result_text(result)
    assert [image.mime_type for image in images] == ["image/png"]
    assert images[0].data.startswith("iVBORw0KGgo")  # base64 of the PNG signature
    assert "[png image]" in result_text(result)


async def test_a_host_outside_allowed_hosts_is_refused(live: Live) -> None:
    agent = await make_agent(live, ["execute_code"])
    async with httpx.AsyncClient() as http:
        response = await http.post(
            live.mcp_url(agent),
            json={"jsonrpc": "2.0"},
            headers={**bearer_headers(live.alice), "Host": "evil.example"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "disallowed_host"
