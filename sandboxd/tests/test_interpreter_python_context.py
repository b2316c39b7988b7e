"""A Python context driven directly (no HTTP), to reach what the SDK cannot: a cell whose
`idle` status is lost on the way must still end, saying its output may be incomplete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandboxd.interpreter import RO_BINDS
from sandboxd.interpreter.events import Event
from sandboxd.interpreter.python_kernel import PythonContext
from sandboxd.jail.testing import jail_manager

pytestmark = pytest.mark.sandboxd


@pytest.fixture
async def context() -> AsyncIterator[PythonContext]:
    async with jail_manager(ro_binds=RO_BINDS) as manager:
        jail = await manager.create("ctx-python")
        started = PythonContext(jail)
        try:
            await started.ensure_started()
            yield started
        finally:
            await started.close()


async def run(context: PythonContext, code: str) -> list[Event]:
    got: list[Event] = []
    async with context.lock:
        await context.run(code, {}, got.append)
    return got


def text(events: list[Event], kind: str) -> str:
    return "".join(event["text"] for event in events if event["type"] == kind)


async def test_a_cell_runs_and_ends_on_its_idle_status(context: PythonContext) -> None:
    events = await run(context, "print('hi')\n6 * 7")
    assert text(events, "stdout") == "hi\n"
    assert [e["text"] for e in events if e["type"] == "result"] == ["42"]
    assert text(events, "stderr") == ""


async def test_a_lost_idle_status_ends_the_cell_after_its_reply_and_says_so(
    context: PythonContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatch = context._dispatch

    def losing_idle(run: Any, msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "status":
            return  # as if ZeroMQ had dropped it
        dispatch(run, msg)

    monkeypatch.setattr(context, "_dispatch", losing_idle)
    events = await run(context, "print('before the end')")
    assert text(events, "stdout") == "before the end\n"
    assert "end-of-cell message was lost" in text(events, "stderr")
    # The context goes on working once the status comes through again.
    monkeypatch.setattr(context, "_dispatch", dispatch)
    assert text(await run(context, "print('next')"), "stdout") == "next\n"
