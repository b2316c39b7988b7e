"""sandboxd's log: untrusted text stays on its line, refusals are summarised, files rotate."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxd import logs


@pytest.fixture
def records() -> Iterator[list[str]]:
    """Lines a OneLineFormatter writes for the `sandboxd.test` logger."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(logs.OneLineFormatter(logs.LOG_FORMAT))
    logger = logging.getLogger("sandboxd.test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)


def test_untrusted_text_is_quoted_escaped_and_cut() -> None:
    shown = logs.untrusted("a\r\nb\u2028c" + "x" * 500, limit=10)

    assert shown == "'a\\r\\nb\\u2028cxxxx'…(+496 chars)"


def test_a_message_cannot_start_a_forged_record(records: list[str]) -> None:
    logging.getLogger("sandboxd.test").info("got %s", "x\n2026-01-01 00:00:00 ERROR forged\x1b[2J")

    assert len(records) == 1
    assert "\n" not in records[0]
    assert records[0].endswith("got x\\n2026-01-01 00:00:00 ERROR forged\\x1b[2J")


def test_a_long_message_is_cut(records: list[str]) -> None:
    logging.getLogger("sandboxd.test").info("%s", "y" * (logs.MESSAGE_MAX_CHARS * 3))

    assert len(records[0]) < logs.MESSAGE_MAX_CHARS + 200


def test_refusals_are_logged_once_then_summarised_per_target(records: list[str]) -> None:
    async def refuse() -> None:
        summary = logs.RefusalSummary(logging.getLogger("sandboxd.test"), "egress of sandbox s1")
        for _ in range(500):
            summary.refused("evil.example:443")
        for index in range(logs.REFUSAL_TARGETS_MAX + 5):
            summary.refused(f"host{index}.example:443")
        summary.flush()

    asyncio.run(refuse())

    assert len(records) == 1 + logs.REFUSAL_TARGETS_MAX + 1
    assert "egress of sandbox s1 refused a request to 'evil.example:443'" in records[0]
    assert records[1].endswith("500 refused requests to 'evil.example:443' in the last minute")
    assert records[-1].endswith("6 refused requests to other targets in the last minute")


def test_the_log_file_rotates_at_its_size(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    log_file = tmp_path / "sandboxd.log"
    try:
        logs.configure("info", log_file)
        for _ in range(logs.LOG_FILE_BYTES // 1000 + 10):
            logging.getLogger("sandboxd.test").info("%s", "z" * 1000)
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)

    assert log_file.with_name("sandboxd.log.1").exists()
    assert log_file.stat().st_size <= logs.LOG_FILE_BYTES
