"""The synchronous client: `Client(base_url)`; the same methods as `AsyncClient`, blocking.

Every method sends one call of `routes.py` and returns its typed answer, or raises the
`AtlasChatError` subclass of the answer's status with the API's error code. Streams use the
websocket routes (`ws/threads/<id>/`, `ws/executions/<id>/`) with the same bearer token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from atlaschat_client import routes
from atlaschat_client.auth import Credentials
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

# A run that waits may take the server's EXECUTION_MAX_TIMEOUT (300 s by default) and its
# file sync: reads wait longer than that; connecting does not.
DEFAULT_TIMEOUT = httpx.Timeout(360.0, connect=10.0)


class Client:
    """A blocking AtlasChat API client.

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
        http_client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = Credentials(access_token, refresh_token, on_tokens)
        self._own_http = http_client is None
        self._http = http_client or httpx.Client(base_url=self.base_url, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    # --- sending ----------------------------------------------------------------------------

    def _request(self, call: routes.Call[Any]) -> httpx.Response:
        headers = self.credentials.headers() if call.authenticated else {}
        return self._http.request(
            call.method,
            f"{self.base_url}{call.path}",
            json=call.json,
            params=call.params,
            files=call.files,
            data=call.data,
            headers=headers,
        )

    def send(self, call: routes.Call[T]) -> T:
        """Send one call; its parsed answer, or the AtlasChatError of its status."""
        if call.authenticated and self.credentials.should_refresh():
            self.refresh()
        response = self._request(call)
        if response.status_code == 401 and call.authenticated and self.credentials.can_refresh():
            self.refresh()
            response = self._request(call)
        if response.status_code >= 400:
            raise error_from_response(response)
        return call.parse(response)

    # --- accounts ---------------------------------------------------------------------------

    def login(self, username: str, password: str) -> TokenPair:
        """Log in with a username and password; the client keeps the pair."""
        pair = self.send(routes.login(username, password))
        self.credentials.store(pair)
        return pair

    def refresh(self) -> TokenPair:
        """Exchange the refresh token for a new pair (the old refresh token stops working)."""
        if not self.credentials.refresh:
            raise AtlasChatError("no_refresh_token", "The client holds no refresh token.")
        pair = self.send(routes.refresh(self.credentials.refresh))
        self.credentials.store(pair)
        return pair

    def logout(self) -> None:
        """Blacklist the refresh token and forget both tokens."""
        if self.credentials.refresh:
            self.send(routes.logout(self.credentials.refresh))
        self.credentials.access = self.credentials.refresh = None

    def me(self) -> User:
        return self.send(routes.me())

    # --- code -------------------------------------------------------------------------------

    def execute(
        self,
        code: str,
        *,
        language: str = "python",
        thread_id: str | None = None,
        agent_id: str | None = None,
        timeout: float | None = None,
    ) -> Execution:
        """Run code and wait for it. A run whose code raised is `status == "failed"` (not an
        exception); a sandbox failure raises ServiceUnavailableError."""
        call = routes.execute(
            code=code, language=language, thread_id=thread_id, agent_id=agent_id,
            timeout=timeout,
        )  # fmt: skip
        return self.send(call)

    def start_execution(
        self,
        code: str,
        *,
        language: str = "python",
        thread_id: str | None = None,
        agent_id: str | None = None,
        timeout: float | None = None,
    ) -> ExecutionStarted:
        """Start a run without waiting (202); follow it with `watch` or `get_execution`."""
        call = routes.start_execution(
            code=code, language=language, thread_id=thread_id, agent_id=agent_id,
            timeout=timeout,
        )  # fmt: skip
        return self.send(call)

    def stream(
        self,
        code: str,
        *,
        thread_id: str,
        language: str = "python",
        timeout: float | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> Iterator[Event]:
        """Run code over the thread's websocket and yield its events as they happen, in
        order (`execution`, `status`, `stdout`/`stderr`/`result`/`error`…, `done`).

        Raises StreamError for a refused request (its `code`, e.g. `unsupported_language`)
        or a refused socket (`not_authenticated`, `not_found`); TimeoutError when no frame
        comes for `idle_timeout` seconds.
        """
        follower = RunFollower(language)
        with self._socket(f"ws/threads/{thread_id}/") as socket:
            try:
                socket.send(execute_message(code, language, timeout))
            except ConnectionClosed as closed:  # refused at once (4401, 4404)
                raise error_from_close(closed) from None
            yield from self._events(socket, follower, idle_timeout)

    def watch(
        self, execution_id: str, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    ) -> Iterator[Event]:
        """Yield one run's events from `ws/executions/<id>/`: what it did so far (frames with
        `replay` true), then live ones, until `done`."""
        watcher = ExecutionWatcher(execution_id)
        with self._socket(f"ws/executions/{execution_id}/") as socket:
            yield from self._events(socket, watcher, idle_timeout)

    @contextlib.contextmanager
    def _socket(self, path: str) -> Iterator[ClientConnection]:
        if self.credentials.should_refresh():
            self.refresh()
        socket = connect(
            websocket_url(self.base_url, path),
            additional_headers=self.credentials.headers(),
            origin=Origin(origin_of(self.base_url)),
            max_size=MAX_FRAME_BYTES,
            open_timeout=30,
        )
        with socket:
            yield socket

    @staticmethod
    def _events(
        socket: ClientConnection, follower: RunFollower | ExecutionWatcher, idle_timeout: float
    ) -> Iterator[Event]:
        while not follower.finished:
            try:
                raw = socket.recv(timeout=idle_timeout)
            except ConnectionClosed as closed:
                raise error_from_close(closed) from None
            event = follower.accept(raw)
            if event is not None:
                yield event

    def get_execution(self, execution_id: str) -> Execution:
        return self.send(routes.get_execution(execution_id))

    def cancel_execution(self, execution_id: str) -> Execution:
        """Interrupt a queued or running run (ConflictError when it is already over)."""
        return self.send(routes.cancel_execution(execution_id))

    # --- threads ----------------------------------------------------------------------------

    def list_threads(self, *, page: int | None = None) -> Page[Thread]:
        """One page of your threads, most recently used first (`page` counts from 1)."""
        return self.send(routes.list_threads(page=page))

    def create_thread(self, title: str | None = None) -> Thread:
        return self.send(routes.create_thread(title=title))

    def get_thread(self, thread_id: str) -> Thread:
        return self.send(routes.get_thread(thread_id))

    def rename_thread(self, thread_id: str, title: str) -> Thread:
        return self.send(routes.rename_thread(thread_id, title))

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread (its sandbox is killed; its runs stay in the history)."""
        self.send(routes.delete_thread(thread_id))

    def list_executions(
        self,
        thread_id: str,
        *,
        status: str | None = None,
        language: str | None = None,
        page: int | None = None,
    ) -> Page[Execution]:
        return self.send(
            routes.list_executions(thread_id, status=status, language=language, page=page)
        )

    # --- files ------------------------------------------------------------------------------

    def write_file(
        self, path: str, content: str | bytes, *, thread_id: str | None = None
    ) -> WorkspaceFile:
        """Write a workspace file (text as UTF-8, bytes as they are); a new thread when no
        `thread_id`."""
        return self.send(routes.write_file(path=path, content=content, thread_id=thread_id))

    def read_file(self, thread_id: str, path: str, *, encoding: str | None = None) -> FileContent:
        return self.send(routes.read_file(thread_id=thread_id, path=path, encoding=encoding))

    def list_files(self, thread_id: str) -> list[WorkspaceFile]:
        return self.send(routes.list_files(thread_id))

    def upload_file(self, thread_id: str, path: str, content: bytes) -> WorkspaceFile:
        return self.send(routes.upload_file(thread_id, path, content))

    def download_file(self, thread_id: str, path: str) -> bytes:
        return self.send(routes.download_file(thread_id, path))

    def delete_file(self, thread_id: str, path: str) -> None:
        self.send(routes.delete_file(thread_id, path))

    # --- packages ---------------------------------------------------------------------------

    def install_packages(
        self, packages: list[str], *, language: str = "python", thread_id: str | None = None
    ) -> PackageInstall:
        """Install pip (python) or npm (javascript/typescript) packages; a failed install is
        `status == "failed"` with the installer's log, not an exception."""
        return self.send(
            routes.install_packages(packages=packages, language=language, thread_id=thread_id)
        )

    def list_packages(self, thread_id: str) -> list[PackageInstall]:
        return self.send(routes.list_packages(thread_id))

    # --- agents -----------------------------------------------------------------------------

    def list_agents(self) -> list[Agent]:
        return self.send(routes.list_agents())

    def create_agent(
        self,
        name: str,
        *,
        allowed_tools: list[str],
        description: str | None = None,
        is_active: bool = True,
    ) -> Agent:
        return self.send(
            routes.create_agent(
                name=name, allowed_tools=allowed_tools, description=description,
                is_active=is_active,
            )
        )  # fmt: skip

    def get_agent(self, agent_id: str) -> Agent:
        return self.send(routes.get_agent(agent_id))

    def update_agent(self, agent_id: str, **changes: Any) -> Agent:
        """Change fields of an agent (`name`, `description`, `allowed_tools`, `is_active`)."""
        return self.send(routes.update_agent(agent_id, changes))

    def delete_agent(self, agent_id: str) -> None:
        self.send(routes.delete_agent(agent_id))

    def agent_tools(self, agent_id: str, *, format: str = "openai") -> list[dict[str, Any]]:
        """The agent's allowed tools as tool definitions (`openai` or `anthropic` format),
        ready to hand to a model."""
        return self.send(routes.agent_tools(agent_id, format=format))

    def call_tool(
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
        return self.send(
            routes.call_tool(agent_id, name=name, arguments=arguments, thread_id=thread_id)
        )
