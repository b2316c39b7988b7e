"""The code interpreter's wire events: one JSON object per line of an ``/execute`` body.

The shapes are the ones ``e2b_code_interpreter.models.parse_output`` reads: ``stdout`` /
``stderr`` (``text``, ``timestamp``), ``result`` (one field per MIME type present, plus
``is_main_result``), ``error`` (``name``, ``value``, ``traceback``), ``number_of_executions``,
``keepalive`` and ``end_of_execution``. Every kernel (Python, Node, Bash) produces these dicts
through the builders below, so the format is decided in one place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

Event = dict[str, Any]

# Jupyter MIME types → the Result field the SDK reads. Anything else goes to `extra`.
_MIME_FIELDS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
    "e2b/data": "data",
    "e2b/chart": "chart",
}

END_OF_EXECUTION: Event = {"type": "end_of_execution"}
KEEPALIVE: Event = {"type": "keepalive"}


def now_iso() -> str:
    """The current time as ISO 8601 with a timezone, the form Jupyter headers carry."""
    return datetime.now(UTC).isoformat()


def stream(name: str, text: str, timestamp: str | None = None) -> Event:
    """A ``stdout`` or ``stderr`` event; `name` must be one of those two."""
    if name not in ("stdout", "stderr"):
        raise ValueError(f"unknown stream {name!r}")
    return {"type": name, "text": text, "timestamp": timestamp or now_iso()}


def number_of_executions(count: int) -> Event:
    """The execution counter of the context, sent when the kernel accepts the code."""
    return {"type": "number_of_executions", "execution_count": count}


def error(name: str, value: str, traceback: str) -> Event:
    """A failed run: the exception's class name, its message and the formatted traceback."""
    return {"type": "error", "name": name, "value": value, "traceback": traceback}


def _quoted(text: str) -> bool:
    return len(text) >= 2 and text[0] == text[-1] == "'"


def result(bundle: Mapping[str, Any], *, is_main_result: bool) -> Event:
    """A ``result`` event from a Jupyter MIME bundle (``execute_result`` / ``display_data``).

    Only the formats present are included. A plain-text repr of a ``str`` loses its quotes, as
    E2B's own server does, so ``'abc'`` reads as ``abc``. Unknown MIME types are kept under
    ``extra`` rather than dropped.
    """
    event: Event = {"type": "result", "is_main_result": is_main_result}
    extra: dict[str, Any] = {}
    for mime, value in bundle.items():
        field = _MIME_FIELDS.get(mime)
        if field is None:
            extra[mime] = value
            continue
        if field == "text" and isinstance(value, str) and _quoted(value):
            value = value[1:-1]
        event[field] = value
    if extra:
        event["extra"] = extra
    return event


# A cell waiting in input() (Python): sent as a `result` whose only content is this MIME type
# under `extra`, the one event shape the SDK passes on whole (it drops unknown event types).
# Only runs that asked for stdin (see service.STDIN_ENV) ever get one.
INPUT_REQUEST_MIME = "application/vnd.sandboxd.input-request+json"


def input_request(prompt: str, password: bool) -> Event:
    """The event of a cell waiting for a line of input; answer it with POST .../input."""
    return result(
        {INPUT_REQUEST_MIME: {"prompt": prompt, "password": password}}, is_main_result=False
    )


# Characters that JSON leaves raw inside strings but that str.splitlines() (which the SDK's
# httpx iter_lines uses) takes for line ends: raw, they cut an event in two and the SDK's
# json.loads fails (JavaScript `0\x85` made its SyntaxError's message such an event).
_LINE_BREAKS_IN_STRINGS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def encode(event: Event) -> bytes:
    """One event as a line of the streamed body (compact JSON, UTF-8, newline-terminated),
    with no character inside it that a line splitter could take for a line end."""
    text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    if "\x85" in text or "\u2028" in text or "\u2029" in text:
        text = text.translate(_LINE_BREAKS_IN_STRINGS)
    try:
        return text.encode() + b"\n"
    except UnicodeEncodeError:
        # A lone surrogate (a kernel may send "\\ud800"): escaped, the line stays valid JSON.
        return json.dumps(event, separators=(",", ":")).encode() + b"\n"
