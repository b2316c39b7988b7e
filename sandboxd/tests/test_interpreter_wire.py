"""The interpreter's parsers of what a kernel (the sandbox's own code) sends the host."""

from __future__ import annotations

import json

import pytest
from jupyter_client.session import Session

from sandboxd.interpreter import events
from sandboxd.interpreter.node_kernel import FRAME_MARK, MAX_FRAME_CHARS, FrameParser
from sandboxd.interpreter.python_kernel import decode_message


def _frames(session: Session, msg_type: str, content: dict[str, object]) -> list[bytes]:
    parts = session.serialize(session.msg(msg_type, content))
    return [part if isinstance(part, bytes) else part.encode() for part in parts]


def test_a_signed_kernel_message_is_decoded_with_its_iso_date() -> None:
    session = Session(key=b"secret", signature_scheme="hmac-sha256")

    msg = decode_message(b"secret", _frames(session, "stream", {"name": "stdout", "text": "hi"}))

    assert msg["msg_type"] == "stream"
    assert msg["content"] == {"name": "stdout", "text": "hi"}
    assert isinstance(msg["header"]["date"], str) and "T" in msg["header"]["date"]


def test_a_message_signed_with_another_key_is_refused() -> None:
    forged = _frames(Session(key=b"guess", signature_scheme="hmac-sha256"), "status", {})

    with pytest.raises(ValueError, match="signature"):
        decode_message(b"secret", forged)


def test_a_truncated_message_is_refused() -> None:
    frames = _frames(Session(key=b"secret", signature_scheme="hmac-sha256"), "status", {})

    with pytest.raises(ValueError):
        decode_message(b"secret", frames[:3])


def test_frames_split_across_chunks_come_out_whole_and_in_order() -> None:
    stream = (
        "raw child output\n"
        + FRAME_MARK
        + json.dumps({"t": "out", "s": "stdout", "x": "hi\n"})
        + "\n"
        + FRAME_MARK
        + json.dumps({"t": "done", "id": 1})
        + "\n"
    ).encode()
    parser = FrameParser()

    items = []
    for i in range(0, len(stream), 3):  # three bytes at a time: marks and UTF-8 get split
        items.extend(parser.feed(stream[i : i + 3]))

    texts = "".join(item for item in items if isinstance(item, str))
    frames = [item for item in items if isinstance(item, dict)]
    assert texts == "raw child output\n"
    assert frames == [{"t": "out", "s": "stdout", "x": "hi\n"}, {"t": "done", "id": 1}]


def test_a_forged_or_broken_frame_is_just_text() -> None:
    parser = FrameParser()

    items = parser.feed((FRAME_MARK + "{not json\n" + "é".encode().decode()).encode())

    assert items == ["{not json\n", "é"]


def test_a_string_result_loses_its_repr_quotes_like_e2b() -> None:
    event = events.result({"text/plain": "'abc'", "text/html": "<b>x</b>"}, is_main_result=True)

    assert event == {
        "type": "result",
        "is_main_result": True,
        "text": "abc",
        "html": "<b>x</b>",
    }


def test_unknown_mime_types_are_kept_as_extra() -> None:
    event = events.result({"application/vnd.custom+json": {"a": 1}}, is_main_result=False)

    assert event["extra"] == {"application/vnd.custom+json": {"a": 1}}
    assert "text" not in event


def test_a_frame_that_never_ends_is_not_held_without_bound() -> None:
    parser = FrameParser()
    chunk = "y" * (1 << 20)

    held = parser.feed(FRAME_MARK.encode())
    for _ in range(MAX_FRAME_CHARS // len(chunk) + 1):
        held += parser.feed(chunk.encode())

    assert sum(len(item) for item in held if isinstance(item, str)) > MAX_FRAME_CHARS
    assert parser.feed(b"") == []
