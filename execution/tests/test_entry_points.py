"""Every entry point answers another user's object the same way and audits it the same way.

charlie asks for alice's thread through each door: the REST API, a page (HTMX), the thread
websocket, an agent's REST tool call and the agent's MCP endpoint. Each answers "not found"
exactly as for a thread that does not exist, nothing of alice's changes, and each attempt is
one authorization SecurityEvent `thread_not_owned` of the same shape (kind, code, user,
object id), written by the one selector.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connections
from django.test import AsyncClient

from accounts.testing import bearer_headers_for
from atlaschat.asgi import application
from execution.consumers import CLOSE_NOT_FOUND
from execution.models import Agent, SecurityEvent, Thread

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1")
MCP_HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2025-06-18",
}


@pytest.fixture(autouse=True)
async def close_worker_connections() -> AsyncIterator[None]:
    yield
    await sync_to_async(connections.close_all)()


async def _bearer(user: AbstractBaseUser) -> str:
    return (await sync_to_async(bearer_headers_for)(user))["Authorization"]


async def rest(user: AbstractBaseUser, thread_id: str) -> tuple[int, str]:
    client = AsyncClient()
    response = await client.get(f"/api/threads/{thread_id}/", AUTHORIZATION=await _bearer(user))
    return response.status_code, response.json()["error"]["code"]


async def htmx(user: AbstractBaseUser, thread_id: str) -> tuple[int, str]:
    client = AsyncClient(headers={"hx-request": "true"})
    await sync_to_async(client.force_login)(user)
    response = await client.get(f"/threads/{thread_id}/")
    return response.status_code, "thread_not_found" if response.status_code == 404 else ""


async def websocket(user: AbstractBaseUser, thread_id: str) -> tuple[int, str]:
    headers = [ORIGIN, (b"authorization", (await _bearer(user)).encode())]
    communicator = WebsocketCommunicator(application, f"/ws/threads/{thread_id}/", headers=headers)
    communicator.scope["client"] = ["127.0.0.1", 50123]
    try:
        await communicator.connect(timeout=5)
        closed = await communicator.receive_output(timeout=5)
    finally:
        await communicator.disconnect()
    code = closed.get("code")
    return (404, "thread_not_found") if code == CLOSE_NOT_FOUND else (code, "")


async def tool_call(user: AbstractBaseUser, agent: Agent, thread_id: str) -> tuple[int, str]:
    response = await AsyncClient().post(
        f"/api/agents/{agent.id}/tool-calls",
        {"name": "list_files", "arguments": {"thread_id": thread_id}},
        content_type="application/json",
        AUTHORIZATION=await _bearer(user),
    )
    return response.status_code, response.json()["error"]["code"]


async def mcp(user: AbstractBaseUser, agent: Agent, thread_id: str) -> tuple[int, str]:
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "list_files", "arguments": {"thread_id": thread_id}},
    }
    transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 50123))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.post(
            f"/api/agents/{agent.id}/mcp/",
            content=json.dumps(call),
            headers={**MCP_HEADERS, "authorization": await _bearer(user)},
        )
    result = response.json()["result"]
    # MCP answers a refused tool call as an error result carrying the API's error object.
    assert result["isError"] is True
    return 404, result["structuredContent"]["error"]["code"]


@pytest.fixture
def alices_thread(alice: AbstractBaseUser) -> Thread:
    return Thread.objects.create(owner=alice, title="alice's")


@pytest.fixture
def charlies_agent(charlie: AbstractBaseUser) -> Agent:
    return Agent.objects.create(owner=charlie, name="helper", allowed_tools=["list_files"])


async def answers(
    charlie: AbstractBaseUser, agent: Agent, thread_id: str
) -> dict[str, tuple[int, str]]:
    return {
        "rest": await rest(charlie, thread_id),
        "htmx": await htmx(charlie, thread_id),
        "websocket": await websocket(charlie, thread_id),
        "tool_call": await tool_call(charlie, agent, thread_id),
        "mcp": await mcp(charlie, agent, thread_id),
    }


async def test_every_entry_point_answers_another_users_thread_as_not_found_and_audits_it_alike(
    charlie: AbstractBaseUser, alices_thread: Thread, charlies_agent: Agent
) -> None:
    thread_id = str(alices_thread.id)
    seen = await answers(charlie, charlies_agent, thread_id)
    missing = await answers(charlie, charlies_agent, str(uuid.uuid4()))

    # The same not-found as for a thread that does not exist, at every door.
    assert seen == missing
    assert set(seen.values()) == {(404, "thread_not_found")}
    events = await sync_to_async(list)(SecurityEvent.objects.filter(user=charlie))
    # One shape, from the one selector: only the source (and the agent) tell the doors apart.
    shapes = {(e.kind, e.code, e.user_id, e.details["object_id"]) for e in events}
    assert shapes == {("authorization", "thread_not_owned", charlie.pk, thread_id)}
    assert sum(e.count for e in events) == 5
    assert {e.source for e in events} == {"api", "browser", "websocket", "agent"}
    # A thread that does not exist is not an attempt on anyone's: nothing more was written.
    assert await sync_to_async(Thread.objects.filter(owner=charlie).count)() == 0
