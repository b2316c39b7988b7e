"""Every API call as data: its method, path, body and how to read the answer.

The sync `Client` and the async `AsyncClient` only send these `Call`s and hand the answer to
`Call.parse`, so each route, body shape and answer type is written once, here, for both.
Paths are those of the project's `execution/api/urls.py`, `execution/agents/api.py` and
`accounts/urls.py`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from atlaschat_client.models import (
    Agent,
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

T = TypeVar("T")

# The languages the API runs (it also accepts py, js, ts, sh).
LANGUAGES = ("python", "javascript", "typescript", "bash")
TOOL_FORMATS = ("openai", "anthropic")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the reader of its (successful) answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes]] | None = None
    data: Mapping[str, str] | None = None
    # Login and refresh carry their credentials in the body: no bearer token, and a 401
    # there is final (no refresh-and-retry).
    authenticated: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _body(response: httpx.Response) -> Any:
    return response.json()


def _none(response: httpx.Response) -> None:
    return None


def _content(response: httpx.Response) -> bytes:
    return response.content


def _list_of(cls: Any) -> Callable[[httpx.Response], list[Any]]:
    def parse(response: httpx.Response) -> list[Any]:
        body = response.json()
        # Paged lists answer {count, next, previous, results}; unpaged ones a list.
        items = body["results"] if isinstance(body, dict) else body
        return [cls.from_json(item) for item in items]

    return parse


def _page_of(cls: Any) -> Callable[[httpx.Response], Page[Any]]:
    def parse(response: httpx.Response) -> Page[Any]:
        body = response.json()
        return Page(
            count=body["count"],
            results=[cls.from_json(item) for item in body["results"]],
            next=body.get("next"),
            previous=body.get("previous"),
            raw=body,
        )

    return parse


def _one(cls: Any) -> Callable[[httpx.Response], Any]:
    return lambda response: cls.from_json(response.json())


def _segment(value: str) -> str:
    return quote(str(value), safe="")


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


# --- accounts -------------------------------------------------------------------------------


def login(username: str, password: str) -> Call[TokenPair]:
    return Call(
        "POST",
        "/api/auth/token/",
        _one(TokenPair),
        json={"username": username, "password": password},
        authenticated=False,
    )


def refresh(refresh_token: str) -> Call[TokenPair]:
    return Call(
        "POST",
        "/api/auth/token/refresh/",
        _one(TokenPair),
        json={"refresh": refresh_token},
        authenticated=False,
    )


def logout(refresh_token: str) -> Call[None]:
    return Call(
        "POST",
        "/api/auth/token/blacklist/",
        _none,
        json={"refresh": refresh_token},
        authenticated=False,
    )


def me() -> Call[User]:
    return Call("GET", "/api/auth/me/", _one(User))


# --- code -----------------------------------------------------------------------------------


def _execute_body(
    code: str,
    language: str,
    thread_id: str | None,
    agent_id: str | None,
    timeout: float | None,
    wait: bool,
) -> dict[str, Any]:
    body = _without_none(
        {
            "code": code,
            "language": language,
            "thread_id": thread_id,
            "agent_id": agent_id,
            "timeout": timeout,
        }
    )
    body["wait"] = wait
    return body


def execute(
    *,
    code: str,
    language: str,
    thread_id: str | None,
    agent_id: str | None,
    timeout: float | None,
) -> Call[Execution]:
    """Run and wait: 201 with the finished execution."""
    body = _execute_body(code, language, thread_id, agent_id, timeout, wait=True)
    return Call("POST", "/api/code/execute", _one(Execution), json=body)


def start_execution(
    *,
    code: str,
    language: str,
    thread_id: str | None,
    agent_id: str | None,
    timeout: float | None,
) -> Call[ExecutionStarted]:
    """Start without waiting: 202 with the execution's id and where to watch it."""
    body = _execute_body(code, language, thread_id, agent_id, timeout, wait=False)
    return Call("POST", "/api/code/execute", _one(ExecutionStarted), json=body)


def write_file(*, path: str, content: str | bytes, thread_id: str | None) -> Call[WorkspaceFile]:
    # Bytes travel as base64 so any content (not only UTF-8 text) arrives as it was.
    if isinstance(content, bytes):
        body = {"path": path, "content": base64.b64encode(content).decode(), "encoding": "base64"}
    else:
        body = {"path": path, "content": content, "encoding": "utf-8"}
    body.update(_without_none({"thread_id": thread_id}))
    return Call("POST", "/api/code/write-file", _one(WorkspaceFile), json=body)


def read_file(*, thread_id: str, path: str, encoding: str | None) -> Call[FileContent]:
    body = _without_none({"thread_id": thread_id, "path": path, "encoding": encoding})
    return Call("POST", "/api/code/read-file", _one(FileContent), json=body)


def install_packages(
    *, packages: list[str], language: str, thread_id: str | None
) -> Call[PackageInstall]:
    body = _without_none({"packages": packages, "language": language, "thread_id": thread_id})
    return Call("POST", "/api/code/install-packages", _one(PackageInstall), json=body)


# --- threads, executions, files, packages ---------------------------------------------------


def list_threads(*, page: int | None) -> Call[Page[Thread]]:
    params = {"page": str(page)} if page else None
    return Call("GET", "/api/threads/", _page_of(Thread), params=params)


def create_thread(*, title: str | None) -> Call[Thread]:
    return Call("POST", "/api/threads/", _one(Thread), json=_without_none({"title": title}))


def get_thread(thread_id: str) -> Call[Thread]:
    return Call("GET", f"/api/threads/{_segment(thread_id)}/", _one(Thread))


def rename_thread(thread_id: str, title: str) -> Call[Thread]:
    return Call(
        "PATCH", f"/api/threads/{_segment(thread_id)}/", _one(Thread), json={"title": title}
    )


def delete_thread(thread_id: str) -> Call[None]:
    return Call("DELETE", f"/api/threads/{_segment(thread_id)}/", _none)


def list_executions(
    thread_id: str, *, status: str | None, language: str | None, page: int | None
) -> Call[Page[Execution]]:
    params = _without_none(
        {"status": status, "language": language, "page": str(page) if page else None}
    )
    return Call(
        "GET", f"/api/threads/{_segment(thread_id)}/executions/", _page_of(Execution), params=params
    )


def get_execution(execution_id: str) -> Call[Execution]:
    return Call("GET", f"/api/executions/{_segment(execution_id)}/", _one(Execution))


def cancel_execution(execution_id: str) -> Call[Execution]:
    return Call("POST", f"/api/executions/{_segment(execution_id)}/cancel", _one(Execution))


def list_files(thread_id: str) -> Call[list[WorkspaceFile]]:
    return Call("GET", f"/api/threads/{_segment(thread_id)}/files/", _list_of(WorkspaceFile))


def upload_file(thread_id: str, path: str, content: bytes) -> Call[WorkspaceFile]:
    name = path.rsplit("/", 1)[-1] or "upload"
    return Call(
        "POST",
        f"/api/threads/{_segment(thread_id)}/files/",
        _one(WorkspaceFile),
        files={"file": (name, content)},
        data={"path": path},
    )


def _file_path(thread_id: str, path: str) -> str:
    # The workspace path stays a path (its slashes kept), each segment quoted.
    return f"/api/threads/{_segment(thread_id)}/files/{quote(path.lstrip('/'), safe='/')}"


def download_file(thread_id: str, path: str) -> Call[bytes]:
    return Call("GET", _file_path(thread_id, path), _content)


def delete_file(thread_id: str, path: str) -> Call[None]:
    return Call("DELETE", _file_path(thread_id, path), _none)


def list_packages(thread_id: str) -> Call[list[PackageInstall]]:
    return Call("GET", f"/api/threads/{_segment(thread_id)}/packages/", _list_of(PackageInstall))


# --- agents ---------------------------------------------------------------------------------


def list_agents() -> Call[list[Agent]]:
    return Call("GET", "/api/agents/", _list_of(Agent))


def create_agent(
    *, name: str, allowed_tools: list[str], description: str | None, is_active: bool
) -> Call[Agent]:
    body = _without_none(
        {
            "name": name,
            "allowed_tools": allowed_tools,
            "description": description,
            "is_active": is_active,
        }
    )
    return Call("POST", "/api/agents/", _one(Agent), json=body)


def get_agent(agent_id: str) -> Call[Agent]:
    return Call("GET", f"/api/agents/{_segment(agent_id)}/", _one(Agent))


def update_agent(agent_id: str, changes: Mapping[str, Any]) -> Call[Agent]:
    return Call("PATCH", f"/api/agents/{_segment(agent_id)}/", _one(Agent), json=dict(changes))


def delete_agent(agent_id: str) -> Call[None]:
    return Call("DELETE", f"/api/agents/{_segment(agent_id)}/", _none)


def agent_tools(agent_id: str, *, format: str) -> Call[list[dict[str, Any]]]:
    if format not in TOOL_FORMATS:
        raise ValueError(f"format must be one of {', '.join(TOOL_FORMATS)}, not {format!r}")
    return Call(
        "GET",
        f"/api/agents/{_segment(agent_id)}/tools",
        lambda response: list(response.json()["tools"]),
        params={"format": format},
    )


def call_tool(
    agent_id: str, *, name: str, arguments: Mapping[str, Any] | str | None, thread_id: str | None
) -> Call[ToolCallResult]:
    body = _without_none(
        {
            "name": name,
            "arguments": dict(arguments) if isinstance(arguments, Mapping) else arguments,
            "thread_id": thread_id,
        }
    )
    return Call(
        "POST", f"/api/agents/{_segment(agent_id)}/tool-calls", _one(ToolCallResult), json=body
    )
