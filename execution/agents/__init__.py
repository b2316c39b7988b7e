"""Agents: the tools an agent may call, as tool definitions, REST tool calls and MCP.

* `tools.py`  - the tool registry: each tool's name, description and argument serializer
  (a subclass of the REST API's own request serializer), and the JSON Schema generated from
  it for the OpenAI and Anthropic tool formats and for MCP. One source of truth.
* `calls.py`  - the service: find the caller's agent, check it, validate the arguments with
  the tool's serializer, run the tool through the ToolExecutor as the agent's owner (source
  "agent"), and render the outcome for a model (text + structured result).
* `api.py`    - DRF views: agent definitions (CRUD), `GET …/tools`, `POST …/tool-calls`.
* `mcp.py`    - the MCP server (official `mcp` SDK, Streamable HTTP), one endpoint per
  agent at `/api/agents/<id>/mcp/`, mounted ahead of Django in `atlaschat/asgi.py`.
"""
