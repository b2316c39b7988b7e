"""What both examples need from AtlasChat: a logged-in client and the agent to act as.

Configuration is the environment (see the README, "The Python client and agent runtimes"):

* `ATLASCHAT_URL` (default `http://127.0.0.1:8000`, where `make run` serves);
* `ATLASCHAT_TOKEN`, an access token, or `ATLASCHAT_USERNAME` and `ATLASCHAT_PASSWORD` to log
  in (`make run` printed the admin's password);
* `ATLASCHAT_AGENT_ID`, an agent of yours; without it an agent named `ATLASCHAT_AGENT`
  (default `example-coder`) is used, or defined with the tools in `ATLASCHAT_AGENT_TOOLS`
  (default `execute_code,write_file,read_file,list_files`).

The model is any OpenAI-compatible endpoint: the OpenAI libraries read `OPENAI_BASE_URL`
and `OPENAI_API_KEY` themselves; `OPENAI_MODEL` names the model (default `gpt-4o-mini`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from atlaschat_client import AsyncClient

DEFAULT_TOOLS = "execute_code,write_file,read_file,list_files"


@dataclass(frozen=True)
class Connection:
    """A logged-in client, its access token (for the MCP endpoint) and the agent's id."""

    client: AsyncClient
    base_url: str
    token: str
    agent_id: str

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/api/agents/{self.agent_id}/mcp/"


async def find_or_define_agent(client: AsyncClient, name: str, tools: list[str]) -> str:
    for agent in await client.list_agents():
        if agent.name == name:
            return agent.id
    return (await client.create_agent(name, allowed_tools=tools)).id


@asynccontextmanager
async def connect() -> AsyncIterator[Connection]:
    """Log in (or use ATLASCHAT_TOKEN) and find the agent, from the environment."""
    base_url = os.environ.get("ATLASCHAT_URL", "http://127.0.0.1:8000").rstrip("/")
    async with AsyncClient(base_url, access_token=os.environ.get("ATLASCHAT_TOKEN")) as client:
        if not client.credentials.access:
            await client.login(os.environ["ATLASCHAT_USERNAME"], os.environ["ATLASCHAT_PASSWORD"])
        agent_id = os.environ.get("ATLASCHAT_AGENT_ID") or await find_or_define_agent(
            client,
            os.environ.get("ATLASCHAT_AGENT", "example-coder"),
            os.environ.get("ATLASCHAT_AGENT_TOOLS", DEFAULT_TOOLS).split(","),
        )
        assert client.credentials.access is not None
        yield Connection(client, base_url, client.credentials.access, agent_id)
