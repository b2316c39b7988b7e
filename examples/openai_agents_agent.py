"""An OpenAI Agents SDK agent that runs code with an AtlasChat agent's tools.

    python examples/openai_agents_agent.py --via mcp "What is 2**100? Compute it."
    python examples/openai_agents_agent.py --via client "…"

`--via mcp` gives the SDK the agent's MCP endpoint (`MCPServerStreamableHttp`); `--via
client` gives it function tools built from the OpenAI-format schemas of
`GET /api/agents/<id>/tools`. Either way the model is offered exactly the tools the agent
definition allows, and every call runs and is audited on the server as that agent.
Configuration: see connect.py. The model goes through the Chat Completions API, which any
OpenAI-compatible endpoint (OPENAI_BASE_URL) serves; tracing is off, since its exporter
would send spans to OpenAI's platform.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
from agents.mcp import MCPServerStreamableHttp
from atlaschat_client.openai_agents import function_tools
from connect import Connection, connect
from openai import AsyncOpenAI

INSTRUCTIONS = (
    "You solve tasks by running code with your tools. Run code to find answers rather than "
    "guessing, then answer briefly."
)


def chat_model(name: str | None = None) -> OpenAIChatCompletionsModel:
    """The model on any OpenAI-compatible endpoint (AsyncOpenAI reads OPENAI_BASE_URL and
    OPENAI_API_KEY)."""
    return OpenAIChatCompletionsModel(
        model=name or os.environ.get("OPENAI_MODEL", "gpt-4o-mini"), openai_client=AsyncOpenAI()
    )


@asynccontextmanager
async def atlaschat_agent(
    connection: Connection, via: str, model: OpenAIChatCompletionsModel
) -> AsyncIterator[Agent[Any]]:
    """An SDK Agent whose tools are the AtlasChat agent's allowed tools."""
    if via == "mcp":
        async with MCPServerStreamableHttp(
            name="atlaschat",
            params={
                "url": connection.mcp_url,
                "headers": {"Authorization": f"Bearer {connection.token}"},
                "timeout": 30,
                # A run may take the server's EXECUTION_MAX_TIMEOUT (300 s by default).
                "sse_read_timeout": 360,
            },
            client_session_timeout_seconds=360,
            cache_tools_list=True,
        ) as server:
            yield Agent(name="coder", instructions=INSTRUCTIONS, model=model, mcp_servers=[server])
    elif via == "client":
        tools = await function_tools(connection.client, connection.agent_id)
        yield Agent(name="coder", instructions=INSTRUCTIONS, model=model, tools=list(tools))
    else:
        raise ValueError(f"via is mcp or client, not {via!r}")


async def run(task: str, via: str, model: OpenAIChatCompletionsModel) -> str:
    async with connect() as connection, atlaschat_agent(connection, via, model) as agent:
        result = await Runner.run(agent, task, max_turns=10)
        for item in result.new_items:
            if item.type == "tool_call_item":
                raw = item.raw_item
                print(f"[tool call] {getattr(raw, 'name', '')} {getattr(raw, 'arguments', '')}")
            elif item.type == "tool_call_output_item":
                print(f"[tool output] {item.output}")
        return str(result.final_output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task")
    parser.add_argument("--via", choices=["mcp", "client"], default="mcp")
    args = parser.parse_args()
    set_tracing_disabled(True)
    print(asyncio.run(run(args.task, args.via, chat_model())))


if __name__ == "__main__":
    main()
