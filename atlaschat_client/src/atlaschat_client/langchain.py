"""An AtlasChat agent's allowed tools as LangChain tools (for LangGraph and any LangChain
agent). Needs the `langchain` extra (`langchain-core`).

    tools = await langchain_tools(client, agent_id)        # client: AsyncClient or Client
    model = ChatOpenAI(...).bind_tools(tools)               # or LangGraph's ToolNode(tools)

The tools are built from `GET /api/agents/<id>/tools` (OpenAI format): exactly the tools the
agent definition allows, with the server's names, descriptions and JSON Schemas, so the
model sees what the server will validate. Each call goes to
`POST /api/agents/<id>/tool-calls` and is audited there under the agent.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from atlaschat_client.aio import AsyncClient
from atlaschat_client.client import Client
from atlaschat_client.tool_calls import ToolCaller, ToolReply


def _content_and_artifact(reply: ToolReply) -> tuple[str, dict[str, Any]]:
    """The text the model reads and, as the ToolMessage's artifact, the structured result
    (the execution, file or install, and its thread) for the program.

    A failed run or a refusal raises ToolException with the text: the tool's
    `handle_tool_error` turns it into a ToolMessage with status "error" and that text, as
    langchain-mcp-adapters does for an MCP error result, so both paths look alike to a graph.
    """
    if reply.is_error:
        raise ToolException(reply.text)
    assert reply.result is not None  # a success always has its result
    return reply.text, {"thread_id": reply.result.thread_id, "result": reply.result.result}


def langchain_tool(caller: ToolCaller, definition: dict[str, Any]) -> BaseTool:
    """One LangChain tool from one OpenAI-format tool definition, calling through `caller`.

    The definition's JSON Schema is the tool's `args_schema` as it is (LangChain accepts a
    JSON Schema dict), so nothing is lost in a translation to pydantic.
    """
    function = definition["function"]
    name = function["name"]

    def run(**arguments: Any) -> tuple[str, dict[str, Any]]:
        return _content_and_artifact(caller.call(name, arguments))

    async def arun(**arguments: Any) -> tuple[str, dict[str, Any]]:
        return _content_and_artifact(await caller.acall(name, arguments))

    is_async = isinstance(caller.client, AsyncClient)
    return StructuredTool.from_function(
        func=None if is_async else run,
        coroutine=arun if is_async else None,
        name=name,
        description=function.get("description", ""),
        args_schema=function["parameters"],
        response_format="content_and_artifact",
        handle_tool_error=True,
    )


def _tools(caller: ToolCaller, definitions: list[dict[str, Any]]) -> list[BaseTool]:
    return [langchain_tool(caller, definition) for definition in definitions]


async def langchain_tools(
    client: AsyncClient, agent_id: str, *, thread_id: str | None = None
) -> list[BaseTool]:
    """The agent's allowed tools as async LangChain tools (see ToolCaller for `thread_id`)."""
    definitions = await client.agent_tools(agent_id, format="openai")
    return _tools(ToolCaller(client, agent_id, thread_id), definitions)


def langchain_tools_sync(
    client: Client, agent_id: str, *, thread_id: str | None = None
) -> list[BaseTool]:
    """The agent's allowed tools as blocking LangChain tools."""
    definitions = client.agent_tools(agent_id, format="openai")
    return _tools(ToolCaller(client, agent_id, thread_id), definitions)
