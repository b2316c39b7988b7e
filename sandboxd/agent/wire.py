"""Frames between sandboxd (host) and the in-sandbox agent, over the agent's stdin/stdout.

A frame is an 8-byte header (two big-endian u32: JSON length, payload length), a JSON object,
then the binary payload. Standard library only: the agent imports this file inside the sandbox
as the top-level module `wire`, the host as `sandboxd.agent.wire`.

Host -> agent: requests {"id": n, "op": ...}; the agent answers each with {"id": n, "ok": {...}}
or {"id": n, "error": {"code", "message"}}. Also {"op": "ack", "pid", "bytes"} (output credit).
Agent -> host: answers, and events {"ev": "out", "pid", "fd"} + payload, {"ev": "exit", "pid",
"code", "signal"}, {"ev": "ready"}.
"""

from __future__ import annotations

import json
import struct

HEADER = struct.Struct(">II")
MAX_JSON = 8 << 20  # a directory listing of 20,000 entries fits; larger is a violation
MAX_PAYLOAD = 1 << 20  # file and output chunks are at most this big
CHUNK = 256 << 10  # size of one file-transfer chunk
OUTPUT_CREDIT = 1 << 20  # unacknowledged output bytes allowed per process (backpressure)


class WireError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(message: dict, payload: bytes = b"") -> bytes:
    """Return one frame carrying `message` (a JSON-able dict) and `payload`."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_JSON or len(payload) > MAX_PAYLOAD:
        raise WireError("frame too large")
    return HEADER.pack(len(body), len(payload)) + body + payload


def decode_header(header: bytes) -> tuple[int, int]:
    """Return (json_length, payload_length) of a frame header, checking the bounds."""
    json_len, payload_len = HEADER.unpack(header)
    if json_len == 0 or json_len > MAX_JSON or payload_len > MAX_PAYLOAD:
        raise WireError(f"bad frame header ({json_len}, {payload_len})")
    return json_len, payload_len


def decode_body(body: bytes) -> dict:
    """Parse a frame's JSON part; it must be an object."""
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise WireError(f"bad frame json: {exc}") from None
    if not isinstance(message, dict):
        raise WireError("frame json is not an object")
    return message


class FrameBuffer:
    """Incremental decoder: feed bytes, take complete (message, payload) frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict, bytes]]:
        """Add received bytes; return every frame now complete, in order."""
        self._buf += data
        frames: list[tuple[dict, bytes]] = []
        while len(self._buf) >= HEADER.size:
            json_len, payload_len = decode_header(bytes(self._buf[: HEADER.size]))
            total = HEADER.size + json_len + payload_len
            if len(self._buf) < total:
                break
            body = bytes(self._buf[HEADER.size : HEADER.size + json_len])
            payload = bytes(self._buf[HEADER.size + json_len : total])
            del self._buf[:total]
            frames.append((decode_body(body), payload))
        return frames
