"""An AtlasChat agent's allowed tools as OpenAI Agents SDK function tools. Needs the
`openai-agents` extra.

    tools = await function_tools(client, agent_id)          # client: an AsyncClient
    agent = Agent(name="coder", model=..., tools=tools)

Built from `GET /api/agents/<id>/tools` (OpenAI format): exactly the tools the agent
definition allows, with the server's JSON Schemas. The SDK hands each call's arguments as the
JSON string the model emitted; it goes to `POST /api/agents/<id>/tool-calls` unchanged, where
it is validated against the same schema and audited under the agent.
"""

from __future__ import annotations

from typing import Any

from agents import FunctionTool, RunContextWrapper

from atlaschat_client.aio import AsyncClient
from atlaschat_client.tool_calls import ToolCaller


def function_tool(caller: ToolCaller, definition: dict[str, Any]) -> FunctionTool:
    """One FunctionTool from one OpenAI-format tool definition, calling through `caller`.

    Not strict: the server's schemas have optional arguments (`thread_id`, `timeout`), which
    OpenAI's strict mode cannot express; the server validates every call anyway.
    """
    function = definition["function"]
    name = function["name"]

    async def invoke(context: RunContextWrapper[Any], arguments: str) -> str:
        return (await caller.acall(name, arguments or "{}")).text

    return FunctionTool(
        name=name,
        description=function.get("description", ""),
        params_json_schema=function["parameters"],
        on_invoke_tool=invoke,
        strict_json_schema=False,
    )


async def function_tools(
    client: AsyncClient, agent_id: str, *, thread_id: str | None = None
) -> list[FunctionTool]:
    """The agent's allowed tools as function tools (see ToolCaller for `thread_id`)."""
    definitions = await client.agent_tools(agent_id, format="openai")
    caller = ToolCaller(client, agent_id, thread_id)
    return [function_tool(caller, definition) for definition in definitions]
