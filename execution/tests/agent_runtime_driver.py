"""Runs one agent-runtime scenario and prints what happened as JSON (for test_agent_runtimes).

Runs with var/agent-runtimes-env's Python (the runtimes cannot share the server's
environment; see examples/requirements.txt), never imports Django, and drives the examples'
own code (`examples/connect.py`, `langgraph_agent.py`, `openai_agents_agent.py`) against the
live server named by ATLASCHAT_URL / ATLASCHAT_TOKEN / ATLASCHAT_AGENT_ID.

The model is the only stand-in:
* LangGraph: `ScriptedChatModel`, langchain-core's fake chat model (FakeMessagesListChatModel)
  taught `bind_tools`, which replays a fixed tool-calling conversation and records, for each
  turn, the tools it was bound with and the messages it was given;
* OpenAI Agents SDK: the SDK's real Chat Completions model and OpenAI client, pointed by
  OPENAI_BASE_URL at the test's stub server (execution/tests/openai_stub.py), which records.

    python agent_runtime_driver.py '{"runtime": "langgraph", "via": "mcp", "forbidden": {…}}'

`forbidden` is {"name", "definition" (OpenAI format), "arguments"}: a tool the agent does not
allow, which the scenario then calls anyway through the runtime's own channel (the MCP
session, or a tool built for it with the client) to show the server refuses it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

TASK = "Compute 6 * 7 with Python."


# --- LangGraph ------------------------------------------------------------------------------


def text_of(content: Any) -> str:
    """A message's text: its content is a string or a list of content blocks."""
    if isinstance(content, list):
        return "".join(
            block.get("text", "") if isinstance(block, dict) else str(block) for block in content
        )
    return str(content)


def scripted_chat_model(forbidden_name: str) -> Any:
    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.utils.function_calling import convert_to_openai_tool
    from pydantic import Field

    class ScriptedChatModel(FakeMessagesListChatModel):
        """Replays `responses` in order; records each turn's tools and messages in `turns`."""

        turns: list[dict[str, Any]] = Field(default_factory=list)

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self.bind(tools=[convert_to_openai_tool(tool) for tool in tools], **kwargs)

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
            self.turns.append(
                {
                    "tools": [tool["function"]["name"] for tool in kw.get("tools", [])],
                    "messages": [
                        {
                            "type": message.type,
                            "content": text_of(message.content),
                            "status": getattr(message, "status", None),
                            "name": getattr(message, "name", None),
                        }
                        for message in messages
                    ],
                }
            )
            return super()._generate(messages, stop, run_manager, **kw)

    return ScriptedChatModel(
        responses=[
            AIMessage(
                "",
                tool_calls=[
                    {
                        "name": "execute_code",
                        "args": {"code": "print(6 * 7)", "language": "python"},
                        "id": "call-1",
                    }
                ],
            ),
            # A model asking for a tool it was not given: the runtime refuses it itself.
            AIMessage(
                "",
                tool_calls=[
                    {"name": forbidden_name, "args": {"packages": ["six"]}, "id": "call-2"}
                ],
            ),
            AIMessage("The answer is 42."),
        ]
    )


async def langgraph(via: str, forbidden: dict[str, Any]) -> dict[str, Any]:
    from atlaschat_client.langchain import langchain_tool
    from atlaschat_client.tool_calls import ToolCaller
    from connect import connect
    from langchain_core.messages import HumanMessage
    from langchain_mcp_adapters.client import MultiServerMCPClient
    from langgraph_agent import atlaschat_tools, build_graph

    model = scripted_chat_model(forbidden["name"])
    async with connect() as connection, atlaschat_tools(connection, via) as tools:
        state = await build_graph(model, tools).ainvoke({"messages": [HumanMessage(TASK)]})
        # Now call the tool anyway, through the same channel the runtime's tools use.
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
            async with mcp.session("atlaschat") as session:
                result = await session.call_tool(forbidden["name"], forbidden["arguments"])
            forced = {
                "is_error": result.isError,
                "text": "\n".join(block.text for block in result.content if block.type == "text"),
            }
        else:
            caller = ToolCaller(connection.client, connection.agent_id)
            tool = langchain_tool(caller, forbidden["definition"])
            forced = {"text": await tool.ainvoke(forbidden["arguments"])}
    return {
        "tools_seen": [tool.name for tool in tools],
        "turns": model.turns,
        "final": state["messages"][-1].content,
        "forced": forced,
    }


def langchain_blocking(via: str, forbidden: dict[str, Any]) -> dict[str, Any]:
    """LangChain tools on the blocking Client, invoked as a synchronous program would."""
    from atlaschat_client.client import Client
    from atlaschat_client.langchain import langchain_tool, langchain_tools_sync
    from atlaschat_client.tool_calls import ToolCaller

    agent_id = os.environ["ATLASCHAT_AGENT_ID"]
    url, token = os.environ["ATLASCHAT_URL"], os.environ["ATLASCHAT_TOKEN"]
    with Client(url, access_token=token) as client:
        tools = {tool.name: tool for tool in langchain_tools_sync(client, agent_id)}
        output = tools["execute_code"].invoke({"code": "print(6 * 7)", "language": "python"})
        forbidden_tool = langchain_tool(ToolCaller(client, agent_id), forbidden["definition"])
        forced = {"text": forbidden_tool.invoke(forbidden["arguments"])}
    return {"tools_seen": list(tools), "output": output, "forced": forced}


# --- OpenAI Agents SDK ----------------------------------------------------------------------


async def openai_agents(via: str, forbidden: dict[str, Any]) -> dict[str, Any]:
    from agents import Runner, set_tracing_disabled
    from atlaschat_client.openai_agents import function_tool
    from atlaschat_client.tool_calls import ToolCaller
    from connect import connect
    from openai_agents_agent import atlaschat_agent, chat_model

    set_tracing_disabled(True)
    async with (
        connect() as connection,
        atlaschat_agent(connection, via, chat_model("stub-model")) as agent,
    ):
        result = await Runner.run(agent, TASK, max_turns=5)
        tools_seen = [tool.name for tool in await agent.get_all_tools(_run_context())]
        arguments = forbidden["arguments"]
        if via == "mcp":
            called = await agent.mcp_servers[0].call_tool(forbidden["name"], arguments)
            forced = {
                "is_error": called.isError,
                "text": "\n".join(block.text for block in called.content if block.type == "text"),
            }
        else:
            caller = ToolCaller(connection.client, connection.agent_id)
            tool = function_tool(caller, forbidden["definition"])
            forced = {"text": await tool.on_invoke_tool(_run_context(), json.dumps(arguments))}
    return {
        "tools_seen": tools_seen,
        "final": str(result.final_output),
        "tool_outputs": [
            str(item.output) for item in result.new_items if item.type == "tool_call_output_item"
        ],
        "forced": forced,
    }


def _run_context() -> Any:
    from agents import RunContextWrapper

    return RunContextWrapper(context=None)


def main() -> None:
    scenario = json.loads(sys.argv[1])
    via, forbidden = scenario["via"], scenario["forbidden"]
    if scenario["runtime"] == "langchain-blocking":
        outcome = langchain_blocking(via, forbidden)
    else:
        runner = {"langgraph": langgraph, "openai-agents": openai_agents}[scenario["runtime"]]
        outcome = asyncio.run(runner(via, forbidden))
    # One line, last: the test reads it (libraries may print before it).
    print("\n" + json.dumps(outcome, default=str))


if __name__ == "__main__":
    main()
