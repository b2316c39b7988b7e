"""A typed Python client for AtlasChat's code-execution API.

    from atlaschat_client import Client

    with Client("http://127.0.0.1:8000") as atlas:
        atlas.login("alice", "…")
        run = atlas.execute("print(6 * 7)")
        print(run.status, run.stdout)

`AsyncClient` has the same methods, awaited. Errors are `AtlasChatError` subclasses carrying
the API's `code` and HTTP `status`. `atlaschat_client.langchain` and
`atlaschat_client.openai_agents` turn an agent's allowed tools into LangChain tools and
OpenAI Agents SDK function tools.
"""

from __future__ import annotations

from atlaschat_client.aio import AsyncClient
from atlaschat_client.client import Client
from atlaschat_client.errors import (
    AtlasChatError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    StreamError,
)
from atlaschat_client.models import (
    Agent,
    Event,
    Execution,
    ExecutionStarted,
    FileContent,
    PackageInstall,
    Page,
    Thread,
    TokenPair,
    ToolCallResult,
    User,
    WorkspaceFile,
)

__all__ = [
    "Agent",
    "AsyncClient",
    "AtlasChatError",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "Event",
    "Execution",
    "ExecutionStarted",
    "FileContent",
    "InvalidRequestError",
    "NotFoundError",
    "PackageInstall",
    "Page",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "ServiceUnavailableError",
    "StreamError",
    "Thread",
    "TokenPair",
    "ToolCallResult",
    "User",
    "WorkspaceFile",
]
