"""A LangGraph agent that runs code with an AtlasChat agent's tools.

    python examples/langgraph_agent.py --via mcp "What is 2**100? Compute it."
    python examples/langgraph_agent.py --via client "…"

`--via mcp` reaches the agent's MCP endpoint with langchain-mcp-adapters; `--via client`
builds LangChain tools from `GET /api/agents/<id>/tools` with atlaschat_client. Either way
the model is offered exactly the tools the agent definition allows, and every call runs and
is audited on the server as that agent. Configuration: see connect.py. The model is
langchain-openai's ChatOpenAI on any OpenAI-compatible endpoint (OPENAI_BASE_URL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from atlaschat_client.langchain import langchain_tools
from connect import Connection, connect
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.client import MultiServerMCPClient
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

INSTRUCTIONS = (
    "You solve tasks by running code with your tools. Run code to find answers rather than "
    "guessing, then answer briefly."
)


@asynccontextmanager
async def atlaschat_tools(connection: Connection, via: str) -> AsyncIterator[list[BaseTool]]:
    """The agent's allowed tools as LangChain tools, through MCP or through the client."""
    if via == "mcp":
        mcp = MultiServerMCPClient(
            {
                "atlaschat": {
                    "transport": "streamable_http",
                    "url": connection.mcp_url,
                    "headers": {"Authorization": f"Bearer {connection.token}"},
                }
            }
        )
        yield await mcp.get_tools()
    elif via == "client":
        yield await langchain_tools(connection.client, connection.agent_id)
    else:
        raise ValueError(f"via is mcp or client, not {via!r}")


def build_graph(model: BaseChatModel, tools: list[BaseTool]) -> Any:
    """The classic tool-calling loop: the model, then the tools it asked for, until it
    answers without asking for one."""
    bound = model.bind_tools(tools)

    async def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    return graph.compile()


async def run(task: str, via: str, model: BaseChatModel) -> str:
    async with connect() as connection, atlaschat_tools(connection, via) as tools:
        print("tools:", ", ".join(tool.name for tool in tools))
        graph = build_graph(model, tools)
        state = await graph.ainvoke(
            {"messages": [SystemMessage(INSTRUCTIONS), HumanMessage(task)]},
            {"recursion_limit": 20},
        )
        for message in state["messages"][2:-1]:
            print(f"[{message.type}] {message.content or getattr(message, 'tool_calls', '')}")
        return str(state["messages"][-1].content)


def main() -> None:
    from langchain_openai import ChatOpenAI

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task")
    parser.add_argument("--via", choices=["mcp", "client"], default="mcp")
    args = parser.parse_args()
    model = ChatOpenAI(model=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"), temperature=0)
    print(asyncio.run(run(args.task, args.via, model)))


if __name__ == "__main__":
    main()
