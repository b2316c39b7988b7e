"""The event-loop watchdog names where a blocked loop is stuck, and says when it recovers."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from sandboxd.watchdog import LoopWatchdog


def a_call_that_blocks_the_loop(seconds: float) -> None:
    time.sleep(seconds)


async def test_a_blocked_loop_is_reported_with_its_stack_then_its_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sandboxd.watchdog")
    watchdog = LoopWatchdog(asyncio.get_running_loop(), threshold=0.3, interval=0.1)
    watchdog.start()
    try:
        await asyncio.sleep(0.3)
        assert [r for r in caplog.records if r.name == "sandboxd.watchdog"] == []  # answers
        a_call_that_blocks_the_loop(1.2)
        await asyncio.sleep(0.5)
    finally:
        watchdog.stop()
    messages = [record.getMessage() for record in caplog.records]
    stalls = [m for m in messages if m.startswith("event loop blocked")]
    assert len(stalls) == 1  # once per stall, not once per ping
    assert "a_call_that_blocks_the_loop" in stalls[0]
    assert "time.sleep(seconds)" in stalls[0]
    assert any(m.startswith("event loop answers again after") for m in messages)


async def test_a_busy_but_answering_loop_is_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sandboxd.watchdog")
    watchdog = LoopWatchdog(asyncio.get_running_loop(), threshold=0.3, interval=0.1)
    watchdog.start()
    try:
        for _ in range(10):
            a_call_that_blocks_the_loop(0.1)  # short blocks: the pings still get answers
            await asyncio.sleep(0)
    finally:
        watchdog.stop()
    # Only the watchdog's own records: the suite's other threads (a Django worker's
    # heartbeat, say) may log at the same time in this process.
    assert [r for r in caplog.records if r.name == "sandboxd.watchdog"] == []
