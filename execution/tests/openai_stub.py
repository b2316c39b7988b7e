"""A stand-in for a model service: an OpenAI-compatible Chat Completions endpoint on loopback.

No model service is reachable from the tests, so this replays a fixed tool-calling
conversation at the network boundary, where the OpenAI client (the Agents SDK's, or
langchain-openai's) sends its real requests: the first request is answered with a call of
`execute_code`, the next with a final answer that quotes the tool's output it was sent (so the
answer shows what the model was given). Every request body is recorded, so a test sees
exactly which tools the runtime offered and which messages the model's next turn received.

It serves `POST /v1/chat/completions` (non-streaming) and nothing else, answers at most
`MAX_REQUESTS` requests (then 503), and runs in a daemon thread for one test.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The replayed conversation is two turns; anything beyond a handful of requests is a runtime
# looping, which the test should see fail rather than spin.
MAX_REQUESTS = 8
# The largest request body read (a conversation with tool schemas and outputs is far smaller).
MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass
class StubModel:
    """The running stub: its base URL (OPENAI_BASE_URL) and the requests it received."""

    base_url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tool_names_offered(self, index: int) -> list[str]:
        return [tool["function"]["name"] for tool in self.requests[index].get("tools", [])]

    def tool_messages(self, index: int) -> list[dict[str, Any]]:
        return [m for m in self.requests[index]["messages"] if m.get("role") == "tool"]


def _completion(message: dict[str, Any], finish_reason: str, number: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-stub-{number}",
        "object": "chat.completion",
        "created": 0,
        "model": "stub-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _tool_output_text(content: Any) -> str:
    # A tool message's content is a string or a list of text parts, depending on the client.
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def reply_to(body: dict[str, Any], number: int) -> dict[str, Any]:
    """The scripted answer to request `number` (0-based) with this body."""
    tool_messages = [m for m in body.get("messages", []) if m.get("role") == "tool"]
    if not tool_messages:
        call = {
            "id": f"call-{number}",
            "type": "function",
            "function": {
                "name": "execute_code",
                "arguments": json.dumps({"code": "print(6 * 7)", "language": "python"}),
            },
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return _completion(message, "tool_calls", number)
    quoted = _tool_output_text(tool_messages[-1].get("content"))
    return _completion({"role": "assistant", "content": f"The tool said: {quoted}"}, "stop", number)


@contextlib.contextmanager
def running_stub_model() -> Iterator[StubModel]:
    """Serve the stub on a free loopback port until the block ends."""
    stub: StubModel

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._answer(404, {"error": {"message": f"no route {self.path}"}})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._answer(413, {"error": {"message": "request too large"}})
                return
            body = json.loads(self.rfile.read(length) or b"{}")
            with stub.lock:
                number = len(stub.requests)
                if number >= MAX_REQUESTS:
                    self._answer(503, {"error": {"message": "the stub's script is over"}})
                    return
                stub.requests.append(body)
            self._answer(200, reply_to(body, number))

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test asserts on the recorded requests, not on a log

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub = StubModel(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1")
    thread = threading.Thread(target=server.serve_forever, name="stub-model", daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
