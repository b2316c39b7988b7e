"""Typed views of the API's JSON answers.

Each class names the fields the API documents (see the project's README and
`/api/schema/`); ids are the UUID strings the API sends, times its ISO 8601 strings. A field
the server adds later is not an error: `from_json` ignores what it does not know, and the
whole answer stays in `raw`.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar

T = TypeVar("T")


class _FromJson:
    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """Build from an API answer, keeping the known fields (and all of it in `raw`)."""
        known = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "raw"}  # type: ignore[arg-type]
        values: dict[str, Any] = {key: value for key, value in data.items() if key in known}
        values["raw"] = data
        return cls(**values)


@dataclass(frozen=True)
class TokenPair(_FromJson):
    """`POST /api/auth/token/` and `…/refresh/` (which rotates: use the new refresh)."""

    access: str
    refresh: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class User(_FromJson):
    """`GET /api/auth/me/`."""

    id: int
    username: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Thread(_FromJson):
    """A workspace: one sandbox, its files, packages and runs."""

    id: str
    title: str = ""
    created_at: str | None = None
    updated_at: str | None = None
    last_used_at: str | None = None
    has_sandbox: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Execution(_FromJson):
    """One run. `status` is `queued`, `running`, `succeeded`, `failed` (the code raised),
    `timed_out`, `cancelled`, `error` or `rejected`; `error` has `name`, `value`,
    `traceback` when the code raised."""

    id: str
    status: str
    thread_id: str | None = None
    agent_id: str | None = None
    language: str = ""
    code: str = ""
    source: str = ""
    stdout: str = ""
    stderr: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    exit_code: int | None = None
    truncated: bool = False
    timeout_seconds: float | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: int | None = None
    last_seq: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    url: str = ""
    websocket_url: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ExecutionStarted(_FromJson):
    """The 202 answer of an execute that does not wait."""

    id: str
    thread_id: str
    status: str
    url: str = ""
    websocket_url: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class WorkspaceFile(_FromJson):
    """A file of a thread's workspace (its metadata)."""

    thread_id: str
    path: str
    size: int
    sha256: str = ""
    written_by: str = ""
    created_at: str | None = None
    updated_at: str | None = None
    download_url: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class FileContent(_FromJson):
    """`POST /api/code/read-file`: `content` is text (`encoding` utf-8) or base64."""

    thread_id: str
    path: str
    size: int
    encoding: str
    content: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def data(self) -> bytes:
        """The file's bytes, whatever the encoding of the answer."""
        if self.encoding == "base64":
            return base64.b64decode(self.content)
        return self.content.encode("utf-8")


@dataclass(frozen=True)
class PackageInstall(_FromJson):
    """A pip or npm install: `status` `succeeded` or `failed`, with the installer's `log`."""

    id: str
    thread_id: str
    language: str
    packages: list[str]
    status: str
    log: str = ""
    created_at: str | None = None
    finished_at: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Agent(_FromJson):
    """An agent definition: the tools it may call and whether it is active."""

    id: str
    name: str
    allowed_tools: list[str]
    is_active: bool = True
    description: str = ""
    created_at: str | None = None
    updated_at: str | None = None
    tools_url: str = ""
    tool_calls_url: str = ""
    mcp_url: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ToolCallResult(_FromJson):
    """`POST /api/agents/<id>/tool-calls`: `text` is what to hand the model, `result` the
    structured value; `is_error` says the tool ran and failed (the code raised)."""

    name: str
    thread_id: str | None
    is_error: bool
    text: str
    result: Any = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a paged list: `results` of this page, `count` in all, and the URLs of the
    `next` and `previous` pages (None at either end)."""

    count: int
    results: list[T]
    next: str | None = None
    previous: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Event:
    """One frame of a run's live stream (`type` is `execution`, `status`, `stdout`,
    `stderr`, `result`, `error` or `done`), in the order the run produced them (`seq`)."""

    type: str
    execution_id: str
    seq: int | None
    frame: dict[str, Any]

    @property
    def text(self) -> str:
        """The text of a `stdout`/`stderr` frame ("" for the others)."""
        return str(self.frame.get("text", ""))

    @property
    def status(self) -> str | None:
        return self.frame.get("status")

    @property
    def replay(self) -> bool:
        """True for a frame caught up from the database rather than seen live."""
        return bool(self.frame.get("replay"))

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> Event:
        return cls(
            type=str(frame.get("type")),
            execution_id=str(frame.get("execution_id")),
            seq=frame.get("seq"),
            frame=frame,
        )
