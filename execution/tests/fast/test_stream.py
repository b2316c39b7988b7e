"""The stream protocol's frames stay under the websocket transport's limit (execution/stream.py)."""

from __future__ import annotations

import json
import uuid

from execution.models import Execution
from execution.stream import (
    FRAME_TEXT_CHARS,
    RESULT_INLINE_BYTES,
    StreamCursor,
    result_reference,
    split_text,
)

# daphne (autobahn) refuses to send a websocket message over 1 MiB.
TRANSPORT_LIMIT = 1024 * 1024


def frame_bytes(frame: dict) -> int:
    return len(json.dumps(frame, separators=(",", ":")).encode("utf-8"))


def finished_execution(**fields: object) -> Execution:
    return Execution(
        id=uuid.uuid4(), thread_id=uuid.uuid4(), language="python", code="",
        status=Execution.Status.SUCCEEDED, last_seq=5, **fields,
    )  # fmt: skip


def test_split_text_gives_pieces_that_join_back_to_the_text() -> None:
    text = "x" * (FRAME_TEXT_CHARS * 2 + 3)
    pieces = list(split_text(text))
    assert [len(p) for p in pieces] == [FRAME_TEXT_CHARS, FRAME_TEXT_CHARS, 3]
    assert "".join(pieces) == text
    assert list(split_text("")) == []


def test_a_replayed_5_mb_line_of_the_worst_escaping_comes_in_frames_under_the_limit() -> None:
    # An astral character escapes to 12 bytes of JSON, a control character to 6.
    line = ("\U0001f600\x01" * (5 * 1024 * 1024 // 8)) + "\n"
    execution = finished_execution(stdout=line, stderr="e" * 3_000_000, truncated=True)
    frames = StreamCursor(str(execution.id)).catch_up(execution)
    assert max(frame_bytes(f) for f in frames) < TRANSPORT_LIMIT
    stdout = "".join(f["text"] for f in frames if f["type"] == "stdout")
    stderr = "".join(f["text"] for f in frames if f["type"] == "stderr")
    assert (stdout, stderr) == (execution.stdout, execution.stderr)
    assert frames[-1]["type"] == "done" and frames[-1]["truncated"] is True


def test_a_cursor_that_sent_part_of_the_output_replays_only_the_rest_in_pieces() -> None:
    execution = finished_execution(stdout="a" * (FRAME_TEXT_CHARS + 10))
    cursor = StreamCursor(str(execution.id), seq=2, sent_execution=True, sent_running=True)
    cursor.stdout_chars = 10
    frames = cursor.catch_up(execution)
    texts = [f["text"] for f in frames if f["type"] == "stdout"]
    assert texts == ["a" * FRAME_TEXT_CHARS]


def test_a_large_result_travels_as_a_reference_to_its_rest_url() -> None:
    execution_id = uuid.uuid4()
    png = {"png": "A" * (RESULT_INLINE_BYTES + 1), "text": "<Figure>", "is_main_result": False}
    reference = result_reference(execution_id, 3, png)
    assert reference["ref"] == f"/api/executions/{execution_id}/results/3/"
    assert reference["formats"] == ["text", "png"]
    assert reference["text"] == "<Figure>"
    assert "png" not in reference
    small = {"text": "1", "is_main_result": True}
    assert result_reference(execution_id, 0, small) is small


def test_a_replay_of_a_10_mb_png_result_sends_its_reference() -> None:
    execution = finished_execution(results=[{"png": "B" * 13_400_000, "is_main_result": False}])
    frames = StreamCursor(str(execution.id)).catch_up(execution)
    (result,) = [f["result"] for f in frames if f["type"] == "result"]
    assert result["ref"].endswith("/results/0/")
    assert max(frame_bytes(f) for f in frames) < TRANSPORT_LIMIT
