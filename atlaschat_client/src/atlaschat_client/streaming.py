"""The thread websocket (`ws/threads/<id>/`), as both clients use it.

Protocol (see the project's README, "Websocket protocol"): the handshake carries
`Authorization: Bearer <access>` and an `Origin` naming an allowed host (the server's own
address); the client sends `{"type": "execute", "code", "language", "timeout"?}`; the server
then sends every event of every run of the thread, each with `execution_id` and `seq`, ending
a run with `done`. A refused request is an error frame without `execution_id`, and the socket
stays open; an unauthenticated or unknown thread is closed with 4401 or 4404.

`RunFollower` is the one piece of logic that picks our run out of the thread's traffic; the
sync and async clients only move frames into it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from atlaschat_client.errors import error_from_frame
from atlaschat_client.models import Event

# Largest frame accepted: a run's output is capped by the server (1 MiB by default), but a
# rich result (a PNG figure) travels in one frame.
MAX_FRAME_BYTES = 32 * 1024 * 1024
# How long a stream waits for the next frame before giving up. A run is bounded by the
# server's EXECUTION_MAX_TIMEOUT (300 s by default); this is above it.
DEFAULT_IDLE_TIMEOUT = 360.0
# The short names the API accepts (its validation's list); its frames name the language in
# full, so our run is recognised whichever name the caller used.
LANGUAGE_ALIASES = {
    "py": "python", "python3": "python", "js": "javascript", "node": "javascript",
    "ts": "typescript", "sh": "bash", "shell": "bash",
}  # fmt: skip


def websocket_url(base_url: str, path: str) -> str:
    """`http://host/` + `ws/threads/<id>/` → `ws://host/ws/threads/<id>/` (https → wss)."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    prefix = parts.path.rstrip("/")
    return urlunsplit((scheme, parts.netloc, f"{prefix}/{path.lstrip('/')}", "", ""))


def origin_of(base_url: str) -> str:
    """The Origin the server expects: its own scheme and host (it must be in ALLOWED_HOSTS)."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def execute_message(code: str, language: str, timeout: float | None) -> str:
    message: dict[str, Any] = {"type": "execute", "code": code, "language": language}
    if timeout is not None:
        message["timeout"] = timeout
    return json.dumps(message)


@dataclass
class RunFollower:
    """Follows the run our `execute` message started, among every run of the thread.

    The protocol has no request id: our run is the first run announced (a live `execution`
    frame, seq 0) after our request, in our language. A run started at the same moment by
    another client of the same thread in the same language could be taken for ours; to
    follow one run exactly, start it with `start_execution` and `watch` its id.
    """

    language: str
    execution_id: str | None = None
    finished: bool = False

    def __post_init__(self) -> None:
        name = self.language.strip().lower()
        self.language = LANGUAGE_ALIASES.get(name, name)

    def accept(self, raw: str | bytes) -> Event | None:
        """The event of our run in this frame, or None for another run's frame.

        Raises StreamError for an error frame addressed to us (no `execution_id`): the
        refusal of our request, or the socket's token expiring.
        """
        frame = json.loads(raw)
        if not isinstance(frame, dict):
            return None
        if frame.get("type") == "error" and "execution_id" not in frame:
            raise error_from_frame(frame)
        if self.execution_id is None:
            if (
                frame.get("type") == "execution"
                and not frame.get("replay")
                and frame.get("language", self.language) == self.language
            ):
                self.execution_id = str(frame.get("execution_id"))
            else:
                return None
        if str(frame.get("execution_id")) != self.execution_id:
            return None
        event = Event.from_frame(frame)
        if event.type == "done":
            self.finished = True
        return event


@dataclass
class ExecutionWatcher:
    """Follows one run on `ws/executions/<id>/`: replayed frames first, then live ones,
    until `done` (after which the server closes the socket with 1000)."""

    execution_id: str
    finished: bool = False

    def accept(self, raw: str | bytes) -> Event | None:
        frame = json.loads(raw)
        if not isinstance(frame, dict):
            return None
        if frame.get("type") == "error" and "execution_id" not in frame:
            raise error_from_frame(frame)
        event = Event.from_frame(frame)
        if event.type == "done":
            self.finished = True
        return event
