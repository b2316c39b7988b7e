"""The websocket stream protocol of the execution app: client requests, server frames, and how
a socket catches up from a row — independent of any consumer class.

Frames the server sends (see the README's "Websocket protocol"): `execution`, `status`,
`stdout`, `stderr`, `result`, `error`, `done`, each with `execution_id` and `seq`, plus the
request-refusal frame `{"type": "error", "error": {...}}` without `execution_id`.

No frame is larger than a websocket transport allows (daphne refuses to send a message over
1 MiB): text is cut into frames of at most FRAME_TEXT_CHARS characters, live (the execution
service emits them that way) and on replay (`StreamCursor.catch_up`), and a rich result whose
JSON is over RESULT_INLINE_BYTES travels as a reference the client fetches with `GET`
(`result_reference`). Everything here is pure: no database, no channel layer.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.urls import reverse

from execution.api.parsers import loads_bounded
from execution.models import Execution

# Characters of stdout/stderr text per frame. JSON escaping grows a character to at most 12
# bytes (an astral character as two \\u escapes), so 64 Ki characters stay under 768 KiB:
# below daphne's 1 MiB websocket payload limit with room for the frame's other fields.
FRAME_TEXT_CHARS = 64 * 1024
# A result whose JSON is larger than this is sent as a reference, not inline.
RESULT_INLINE_BYTES = 256 * 1024
# Short text of a referenced result kept inline, so a plain-text client still shows something.
REFERENCE_TEXT_CHARS = 1024
# Result formats and their MIME types (the E2B result formats).
RESULT_MIME_TYPES: dict[str, str] = {
    "text": "text/plain",
    "html": "text/html",
    "markdown": "text/markdown",
    "svg": "image/svg+xml",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "pdf": "application/pdf",
    "latex": "text/latex",
    "json": "application/json",
    "javascript": "application/javascript",
    "data": "application/json",
    "extra": "application/json",
}
# Base64-encoded formats: the GET of a referenced result serves them decoded.
BINARY_FORMATS = frozenset({"png", "jpeg", "pdf"})

# Upper bound on a client frame: code size is checked by the execution service against
# EXECUTION_MAX_CODE_BYTES; this only stops a client from making us parse megabytes of JSON.
MAX_CLIENT_FRAME_CHARS = 4 * 1024 * 1024


# --- text and results in frames ---------------------------------------------------------------


def split_text(text: str, size: int = FRAME_TEXT_CHARS) -> Iterator[str]:
    """Cut `text` into pieces of at most `size` characters (nothing for an empty text)."""
    for start in range(0, len(text), size):
        yield text[start : start + size]


def result_size(result: dict[str, Any]) -> int:
    """The size of a result as stored: the bytes of its compact JSON."""
    return len(json.dumps(result, separators=(",", ":")).encode("utf-8"))


def result_mime_types(result: dict[str, Any]) -> list[str]:
    """The MIME types of the formats a result has, in RESULT_MIME_TYPES order."""
    return [mime for name, mime in RESULT_MIME_TYPES.items() if name in result]


def result_reference(execution_id: uuid.UUID | str, index: int, result: dict[str, Any]) -> dict:
    """What a frame carries for result number `index` of an execution: the result itself when
    small, else `{"ref": URL, "formats": [...], "size": bytes, "is_main_result", "text"?}`.

    The URL is the REST API's `GET /api/executions/<id>/results/<index>/` (the same ownership
    check as the execution; `?part=png` serves one format decoded)."""
    size = result_size(result)
    if size <= RESULT_INLINE_BYTES:
        return result
    reference: dict[str, Any] = {
        "ref": reverse("api-execution-result", args=[str(execution_id), index]),
        "formats": [name for name in RESULT_MIME_TYPES if name in result],
        "size": size,
        "is_main_result": bool(result.get("is_main_result")),
    }
    text = result.get("text")
    if isinstance(text, str) and len(text) <= REFERENCE_TEXT_CHARS:
        reference["text"] = text
    return reference


# --- client requests --------------------------------------------------------------------------


class ProtocolError(Exception):
    """A client frame that is not a valid request; answered with an error frame."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}


@dataclass(frozen=True)
class ExecuteRequest:
    """`{"type": "execute", "code", "language", "timeout"?}`."""

    code: str
    language: str
    timeout: float | None


@dataclass(frozen=True)
class CancelRequest:
    """`{"type": "cancel", "execution_id"}`."""

    execution_id: uuid.UUID


@dataclass(frozen=True)
class InputRequest:
    """`{"type": "input", "execution_id", "value"}`: the answer to a run's input()."""

    execution_id: uuid.UUID
    value: str


def error_frame(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the frame that refuses a client request (the API's error shape, typed)."""
    return {"type": "error", "error": {"code": code, "message": message, "details": details or {}}}


def parse_thread_message(
    text: str | None, binary: bytes | None
) -> ExecuteRequest | CancelRequest | InputRequest:
    """Parse one client frame of `ws/threads/<id>/`.

    Checks only the shape of the request (types and presence of fields); what the values
    may be (languages, code size, timeout bounds) is decided by the execution service's
    validation, so the websocket and the REST API refuse exactly the same things.
    Raises ProtocolError with a stable code.
    """
    if text is None:
        raise ProtocolError("invalid_json", "Frames must be JSON text, not binary.")
    if len(text) > MAX_CLIENT_FRAME_CHARS:
        raise ProtocolError(
            "invalid_message",
            "The frame is too large.",
            {"max_chars": MAX_CLIENT_FRAME_CHARS},
        )
    try:
        message = loads_bounded(text)
    except ValueError as exc:
        raise ProtocolError("invalid_json", f"The frame is not valid JSON: {exc}.") from exc
    if not isinstance(message, dict):
        raise ProtocolError("invalid_message", "The frame must be a JSON object.")
    kind = message.get("type")
    if kind == "execute":
        code = _required_str(message, "code")
        language = _required_str(message, "language")
        timeout = message.get("timeout")
        # Only the type here; its range is the service's rule (timeout_out_of_range).
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
        ):
            raise ProtocolError(
                "invalid_message", "`timeout` must be a number of seconds.", {"field": "timeout"}
            )
        return ExecuteRequest(
            code=code, language=language, timeout=None if timeout is None else float(timeout)
        )
    if kind in ("cancel", "input"):
        raw_id = _required_str(message, "execution_id")
        try:
            execution_id = uuid.UUID(raw_id)
        except ValueError as exc:
            raise ProtocolError(
                "invalid_message",
                "`execution_id` must be a UUID.",
                {"field": "execution_id"},
            ) from exc
        if kind == "input":
            return InputRequest(execution_id=execution_id, value=_required_str(message, "value"))
        return CancelRequest(execution_id=execution_id)
    raise ProtocolError(
        "unknown_type",
        f"Unknown message type {kind!r}; expected 'execute', 'cancel' or 'input'.",
        {"allowed": ["execute", "cancel", "input"]},
    )


def _required_str(message: dict[str, Any], field: str) -> str:
    value = message.get(field)
    if not isinstance(value, str):
        raise ProtocolError(
            "invalid_message", f"`{field}` is required and must be a string.", {"field": field}
        )
    return value


# --- following one execution ------------------------------------------------------------------


@dataclass
class StreamCursor:
    """How much of one execution a socket has sent, so it can catch up from the row.

    The service stores each event's effect (and `last_seq`) before publishing it, so the
    row always holds at least every published event. A socket that missed events (it
    joined late, or a full channel dropped some) sends, from the row, exactly what lies
    beyond this cursor, then carries on with live events newer than the row: every line
    once, none lost. Counters follow the row's shape: output texts are appended, results
    listed in order, one error, one final status.
    """

    execution_id: str
    seq: int = -1
    sent_execution: bool = False
    sent_running: bool = False
    stdout_chars: int = 0
    stderr_chars: int = 0
    results: int = 0
    sent_error: bool = False
    input_seq: int = -1  # the seq of the last input_request sent
    done: bool = False

    def classify(self, event: dict[str, Any]) -> str:
        """ "forward" (the next event), "duplicate" (already covered) or "gap" (some missed)."""
        seq = event.get("seq", -1)
        if seq <= self.seq:
            return "duplicate"
        if seq > self.seq + 1:
            return "gap"
        return "forward"

    def advance(self, event: dict[str, Any]) -> None:
        """Account for a live event that is being sent."""
        kind = event.get("type")
        self.seq = event.get("seq", self.seq)
        if kind == "execution":
            self.sent_execution = True
        elif kind == "status":
            self.sent_running = True
        elif kind == "stdout":
            self.stdout_chars += len(event.get("text", ""))
        elif kind == "stderr":
            self.stderr_chars += len(event.get("text", ""))
        elif kind == "result":
            self.results += 1
        elif kind == "error":
            self.sent_error = True
        elif kind == "input_request":
            self.input_seq = event.get("seq", self.input_seq)
        elif kind == "done":
            self.done = True

    def catch_up(self, execution: Execution) -> list[dict[str, Any]]:
        """Return the frames for what `execution`'s row holds beyond this cursor, and move
        the cursor to the row's `last_seq`.

        The frames carry `seq = last_seq` and `"replay": true`. Output comes in the order
        the run produced it (the row's `output_order`, see Execution.ordered_output):
        `stdout` and `stderr` frames of at most FRAME_TEXT_CHARS characters each, results
        (large ones by reference) and the error, interleaved as they happened; then an
        input() still waiting for its answer, and `done`. Nothing when the cursor is already
        at or past the row.
        """
        seq = execution.last_seq
        if seq <= self.seq:
            return []
        execution_id = str(execution.id)

        def frame(kind: str, **fields: Any) -> dict[str, Any]:
            return {
                "type": kind,
                "execution_id": execution_id,
                **fields,
                "seq": seq,
                "replay": True,
            }

        frames: list[dict[str, Any]] = []
        if not self.sent_execution:
            thread_id = str(execution.thread_id) if execution.thread_id else None
            frames.append(
                frame(
                    "execution",
                    thread_id=thread_id,
                    status=execution.status,
                    language=execution.language,
                )
            )
            self.sent_execution = True
        if not self.sent_running and execution.started_at is not None:
            frames.append(frame("status", status=Execution.Status.RUNNING))
            self.sent_running = True
        sent = {"stdout": self.stdout_chars, "stderr": self.stderr_chars}
        for piece in execution.ordered_output():
            if piece.kind in sent:
                end = piece.position + len(piece.text)
                if end <= sent[piece.kind]:
                    continue
                text = piece.text[max(0, sent[piece.kind] - piece.position) :]
                frames.extend(frame(piece.kind, text=part) for part in split_text(text))
                sent[piece.kind] = end
            elif piece.kind == "result" and piece.position >= self.results:
                reference = result_reference(execution_id, piece.position, piece.result or {})
                frames.append(frame("result", result=reference))
                self.results = piece.position + 1
            elif piece.kind == "error" and not self.sent_error:
                frames.append(frame("error", error=piece.error))
                self.sent_error = True
        self.stdout_chars, self.stderr_chars = sent["stdout"], sent["stderr"]
        # An input() still waiting for its answer (a page that reloaded must be able to).
        waiting = execution.details_data.get("input_request")
        if waiting and not execution.is_final and waiting.get("seq", 0) > self.input_seq:
            frames.append(
                frame("input_request", prompt=waiting["prompt"], password=waiting["password"])
            )
            self.input_seq = waiting.get("seq", 0)
        if execution.is_final and not self.done:
            frames.append(done_frame(execution, replay=True))
            self.done = True
        self.seq = seq
        return frames


def done_frame(execution: Execution, *, replay: bool = False) -> dict[str, Any]:
    """Return the `done` frame of a finished execution, built from its row."""
    frame: dict[str, Any] = {
        "type": "done",
        "execution_id": str(execution.id),
        "status": execution.status,
        "duration_ms": execution.duration_ms,
        "exit_code": execution.exit_code,
        "truncated": execution.truncated,
        "seq": execution.last_seq,
    }
    if replay:
        frame["replay"] = True
    return frame
