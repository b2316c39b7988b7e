"""The asyncio client: `AsyncClient(base_url)`; the same methods as `Client`, awaited.

Kept line for line parallel to client.py: every request, body and answer is defined once in
routes.py, the websocket logic once in streaming.py, so the two differ only in `await`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

from atlaschat_client import routes
from atlaschat_client.auth import Credentials
from atlaschat_client.client import DEFAULT_TIMEOUT
from atlaschat_client.errors import AtlasChatError, error_from_close, error_from_response
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
from atlaschat_client.streaming import (
    DEFAULT_IDLE_TIMEOUT,
    MAX_FRAME_BYTES,
    ExecutionWatcher,
    RunFollower,
    execute_message,
    origin_of,
    websocket_url,
)

T = TypeVar("T")


class AsyncClient:
    """An asyncio AtlasChat API client (the same methods as `Client`, awaited).

    Give it tokens you have (`access_token`, `refresh_token`) or call `login()`. With a
    refresh token it renews the access token before it expires and once after a 401, keeping
    the rotated pair (and passing it to `on_tokens`). Close it (or use it as a context
    manager) to release its connections.
    """

    def __init__(
        self,
        base_url: str,
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        on_tokens: Callable[[TokenPair], None] | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = Credentials(access_token, refresh_token, on_tokens)
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    # --- sending ----------------------------------------------------------------------------

    async def _request(self, call: routes.Call[Any]) -> httpx.Response:
        headers = self.credentials.headers() if call.authenticated else {}
        return await self._http.request(
            call.method,
            f"{self.base_url}{call.path}",
            json=call.json,
            params=call.params,
            files=call.files,
            data=call.data,
            headers=headers,
        )

    async def send(self, call: routes.Call[T]) -> T:
        """Send one call; its parsed answer, or the AtlasChatError of its status."""
        if call.authenticated and self.credentials.should_refresh():
            await self.refresh()
        response = await self._request(call)
        if response.status_code == 401 and call.authenticated and self.credentials.can_refresh():
            await self.refresh()
            response = await self._request(call)
        if response.status_code >= 400:
            raise error_from_response(response)
        return call.parse(response)

    # --- accounts ---------------------------------------------------------------------------

    async def login(self, username: str, password: str) -> TokenPair:
        """Log in with a username and password; the client keeps the pair."""
        pair = await self.send(routes.login(username, password))
        self.credentials.store(pair)
        return pair

    async def refresh(self) -> TokenPair:
        """Exchange the refresh token for a new pair (the old refresh token stops working)."""
        if not self.credentials.refresh:
            raise AtlasChatError("no_refresh_token", "The client holds no refresh token.")
        pair = await self.send(routes.refresh(self.credentials.refresh))
        self.credentials.store(pair)
        return pair

    async def logout(self) -> None:
        """Blacklist the refresh token and forget both tokens."""
        if self.credentials.refresh:
            await self.send(routes.logout(self.credentials.refresh))
        self.credentials.access = self.credentials.refresh = None

    async def me(self) -> User:
        return await self.send(routes.me())

    # --- code -------------------------------------------------------------------------------

    async def execute(
        self,
        code: str,
        *,
        language: str = "python",
        thread_id: str | None = None,
        agent_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the run's limit on the server
    ) -> Execution:
        """Run code and wait for it. A run whose code raised is `status == "failed"` (not an
        exception); a sandbox failure raises ServiceUnavailableError."""
        call = routes.execute(
            code=code, language=language, thread_id=thread_id, agent_id=agent_id,
            timeout=timeout,
        )  # fmt: skip
        return await self.send(call)

    async def start_execution(
        self,
        code: str,
        *,
        language: str = "python",
        thread_id: str | None = None,
        agent_id: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the run's limit on the server
    ) -> ExecutionStarted:
        """Start a run without waiting (202); follow it with `watch` or `get_execution`."""
        call = routes.start_execution(
            code=code, language=language, thread_id=thread_id, agent_id=agent_id,
            timeout=timeout,
        )  # fmt: skip
        return await self.send(call)

    async def stream(
        self,
        code: str,
        *,
        thread_id: str,
        language: str = "python",
        timeout: float | None = None,  # noqa: ASYNC109 - the run's limit on the server
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> AsyncIterator[Event]:
        """Run code over the thread's websocket and yield its events as they happen, in
        order (`execution`, `status`, `stdout`/`stderr`/`result`/`error`…, `done`).

        Raises StreamError for a refused request (its `code`, e.g. `unsupported_language`)
        or a refused socket (`not_authenticated`, `not_found`); TimeoutError when no frame
        comes for `idle_timeout` seconds.
        """
        follower = RunFollower(language)
        async with self._socket(f"ws/threads/{thread_id}/") as socket:
            try:
                await socket.send(execute_message(code, language, timeout))
            except ConnectionClosed as closed:  # refused at once (4401, 4404)
                raise error_from_close(closed) from None
            async for event in self._events(socket, follower, idle_timeout):
                yield event

    async def watch(
        self, execution_id: str, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    ) -> AsyncIterator[Event]:
        """Yield one run's events from `ws/executions/<id>/`: what it did so far (frames with
        `replay` true), then live ones, until `done`."""
        watcher = ExecutionWatcher(execution_id)
        async with self._socket(f"ws/executions/{execution_id}/") as socket:
            async for event in self._events(socket, watcher, idle_timeout):
                yield event

    @contextlib.asynccontextmanager
    async def _socket(self, path: str) -> AsyncIterator[ClientConnection]:
        if self.credentials.should_refresh():
            await self.refresh()
        async with connect(
            websocket_url(self.base_url, path),
            additional_headers=self.credentials.headers(),
            origin=Origin(origin_of(self.base_url)),
            max_size=MAX_FRAME_BYTES,
            open_timeout=30,
        ) as socket:
            yield socket

    @staticmethod
    async def _events(
        socket: ClientConnection, follower: RunFollower | ExecutionWatcher, idle_timeout: float
    ) -> AsyncIterator[Event]:
        while not follower.finished:
            try:
                async with asyncio.timeout(idle_timeout):
                    raw = await socket.recv()
            except ConnectionClosed as closed:
                raise error_from_close(closed) from None
            event = follower.accept(raw)
            if event is not None:
                yield event

    async def get_execution(self, execution_id: str) -> Execution:
        return await self.send(routes.get_execution(execution_id))

    async def cancel_execution(self, execution_id: str) -> Execution:
        """Interrupt a queued or running run (ConflictError when it is already over)."""
        return await self.send(routes.cancel_execution(execution_id))

    # --- threads ----------------------------------------------------------------------------

    async def list_threads(self, *, page: int | None = None) -> Page[Thread]:
        """One page of your threads, most recently used first (`page` counts from 1)."""
        return await self.send(routes.list_threads(page=page))

    async def create_thread(self, title: str | None = None) -> Thread:
        return await self.send(routes.create_thread(title=title))

    async def get_thread(self, thread_id: str) -> Thread:
        return await self.send(routes.get_thread(thread_id))

    async def rename_thread(self, thread_id: str, title: str) -> Thread:
        return await self.send(routes.rename_thread(thread_id, title))

    async def delete_thread(self, thread_id: str) -> None:
        """Delete a thread (its sandbox is killed; its runs stay in the history)."""
        await self.send(routes.delete_thread(thread_id))

    async def list_executions(
        self,
        thread_id: str,
        *,
        status: str | None = None,
        language: str | None = None,
        page: int | None = None,
    ) -> Page[Execution]:
        return await self.send(
            routes.list_executions(thread_id, status=status, language=language, page=page)
        )

    # --- files ------------------------------------------------------------------------------

    async def write_file(
        self, path: str, content: str | bytes, *, thread_id: str | None = None
    ) -> WorkspaceFile:
        """Write a workspace file (text as UTF-8, bytes as they are); a new thread when no
        `thread_id`."""
        return await self.send(routes.write_file(path=path, content=content, thread_id=thread_id))

    async def read_file(
        self, thread_id: str, path: str, *, encoding: str | None = None
    ) -> FileContent:
        return await self.send(routes.read_file(thread_id=thread_id, path=path, encoding=encoding))

    async def list_files(self, thread_id: str) -> list[WorkspaceFile]:
        return await self.send(routes.list_files(thread_id))

    async def upload_file(self, thread_id: str, path: str, content: bytes) -> WorkspaceFile:
        return await self.send(routes.upload_file(thread_id, path, content))

    async def download_file(self, thread_id: str, path: str) -> bytes:
        return await self.send(routes.download_file(thread_id, path))

    async def delete_file(self, thread_id: str, path: str) -> None:
        await self.send(routes.delete_file(thread_id, path))

    # --- packages ---------------------------------------------------------------------------

    async def install_packages(
        self, packages: list[str], *, language: str = "python", thread_id: str | None = None
    ) -> PackageInstall:
        """Install pip (python) or npm (javascript/typescript) packages; a failed install is
        `status == "failed"` with the installer's log, not an exception."""
        return await self.send(
            routes.install_packages(packages=packages, language=language, thread_id=thread_id)
        )

    async def list_packages(self, thread_id: str) -> list[PackageInstall]:
        return await self.send(routes.list_packages(thread_id))

    # --- agents -----------------------------------------------------------------------------

    async def list_agents(self) -> list[Agent]:
        return await self.send(routes.list_agents())

    async def create_agent(
        self,
        name: str,
        *,
        allowed_tools: list[str],
        description: str | None = None,
        is_active: bool = True,
    ) -> Agent:
        return await self.send(
            routes.create_agent(
                name=name, allowed_tools=allowed_tools, description=description,
                is_active=is_active,
            )
        )  # fmt: skip

    async def get_agent(self, agent_id: str) -> Agent:
        return await self.send(routes.get_agent(agent_id))

    async def update_agent(self, agent_id: str, **changes: Any) -> Agent:
        """Change fields of an agent (`name`, `description`, `allowed_tools`, `is_active`)."""
        return await self.send(routes.update_agent(agent_id, changes))

    async def delete_agent(self, agent_id: str) -> None:
        await self.send(routes.delete_agent(agent_id))

    async def agent_tools(self, agent_id: str, *, format: str = "openai") -> list[dict[str, Any]]:
        """The agent's allowed tools as tool definitions (`openai` or `anthropic` format),
        ready to hand to a model."""
        return await self.send(routes.agent_tools(agent_id, format=format))

    async def call_tool(
        self,
        agent_id: str,
        name: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        thread_id: str | None = None,
    ) -> ToolCallResult:
        """Run one tool call as the agent (arguments as an object or the JSON string a model
        emitted). A tool the agent may not use raises PermissionDeniedError
        (`tool_not_allowed`); a run whose code raised is `is_error` True."""
        return await self.send(
            routes.call_tool(agent_id, name=name, arguments=arguments, thread_id=thread_id)
        )
