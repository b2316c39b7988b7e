"""One tool call as an agent runtime makes it: arguments in, the text for the model out.

Both runtime adapters (`langchain.py`, `openai_agents.py`) go through `ToolCaller`, so the
rules are written once: the arguments the model emitted go to
`POST /api/agents/<id>/tool-calls` as they are (an object or its JSON string; the server
validates them against the same schema the model was given); a thread pinned by the caller is
sent only when the model named none (the server refuses two different ones); and a refusal
(`tool_not_allowed`, `invalid_arguments`, a 429, …) comes back as text the model can read,
`"<code>: <message>"`, as the MCP endpoint does, instead of ending the agent's run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from atlaschat_client.aio import AsyncClient
from atlaschat_client.client import Client
from atlaschat_client.errors import AtlasChatError
from atlaschat_client.models import ToolCallResult


@dataclass(frozen=True)
class ToolReply:
    """What a runtime hands back to its model: `text`, whether it is an error, and the
    structured result (None when the call was refused)."""

    text: str
    is_error: bool
    result: ToolCallResult | None
    code: str | None = None


def _names_thread(arguments: Mapping[str, Any] | str | None) -> bool:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return False  # the server answers arguments_malformed
    return isinstance(arguments, Mapping) and bool(arguments.get("thread_id"))


@dataclass
class ToolCaller:
    """Calls an agent's tools through a Client or AsyncClient.

    `thread_id`, when set, is the workspace used by calls whose arguments name none; with
    `follow_thread` the first thread a call creates becomes it, so later calls of the same
    agent run share files, packages and variables (the model may still name another).
    """

    client: Client | AsyncClient
    agent_id: str
    thread_id: str | None = None
    follow_thread: bool = True

    def _thread_for(self, arguments: Mapping[str, Any] | str | None) -> str | None:
        return None if _names_thread(arguments) else self.thread_id

    def _reply(self, result: ToolCallResult) -> ToolReply:
        if self.follow_thread and self.thread_id is None and result.thread_id:
            self.thread_id = result.thread_id
        return ToolReply(text=result.text, is_error=result.is_error, result=result)

    @staticmethod
    def _refused(error: AtlasChatError) -> ToolReply:
        return ToolReply(
            text=f"{error.code}: {error.message}", is_error=True, result=None, code=error.code
        )

    def call(self, name: str, arguments: Mapping[str, Any] | str | None) -> ToolReply:
        if not isinstance(self.client, Client):
            raise TypeError("an AsyncClient's tools are called with acall()")
        try:
            result = self.client.call_tool(
                self.agent_id, name, arguments, thread_id=self._thread_for(arguments)
            )
        except AtlasChatError as error:
            return self._refused(error)
        return self._reply(result)

    async def acall(self, name: str, arguments: Mapping[str, Any] | str | None) -> ToolReply:
        if not isinstance(self.client, AsyncClient):
            raise TypeError("a Client's tools are called with call()")
        try:
            result = await self.client.call_tool(
                self.agent_id, name, arguments, thread_id=self._thread_for(arguments)
            )
        except AtlasChatError as error:
            return self._refused(error)
        return self._reply(result)
