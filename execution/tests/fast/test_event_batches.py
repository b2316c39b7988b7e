"""How a run's events are stored and published: in batches, each stored before it is sent,
and no file-sync database work for a run that changed no file."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from execution.caller import Caller
from execution.models import Execution, Thread
from execution.sandbox.memory import MemoryBackend, MemoryRun
from execution.services.events import EventPublisher
from execution.services.runs import ExecutionRunner
from execution.services.tool_executor import ToolExecutor

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


class RecordingPublisher(EventPublisher):
    """Keeps each published batch, checking that the row already stores all of it."""

    def __init__(self, on_batch: Any = None) -> None:
        super().__init__()
        self.batches: list[list[dict[str, Any]]] = []
        self.on_batch = on_batch

    def publish_many(
        self, *, execution_id: uuid.UUID | str, thread_id: Any, events: list[dict[str, Any]]
    ) -> None:
        stored = Execution.objects.get(pk=execution_id).last_seq
        assert stored >= max(event["seq"] for event in events), "published before stored"
        self.batches.append(events)
        if self.on_batch:
            self.on_batch(events)


def queued_run(thread: Thread, alice: Any) -> Execution:
    return Execution.objects.create(
        thread=thread, user=alice, language="python", code="x", status="queued", last_seq=0
    )


def test_a_quick_runs_status_output_and_done_are_one_write_and_one_publication(
    thread: Thread, alice: Any, memory_sandboxes: MemoryBackend
) -> None:
    async def quick(r: MemoryRun) -> None:
        r.stdout("1\n")

    memory_sandboxes.script = quick
    ExecutionRunner(queued_run(thread, alice).id, RecordingPublisher()).run()  # sandbox warm
    execution = queued_run(thread, alice)
    publisher = RecordingPublisher()

    with CaptureQueriesContext(connection) as queries:
        ExecutionRunner(execution.id, publisher).run()

    (batch,) = publisher.batches
    assert [(e["type"], e["seq"]) for e in batch] == [("status", 1), ("stdout", 2), ("done", 3)]
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(writes) == 2  # queued → running, then output and the final status together
    stored = Execution.objects.get(pk=execution.pk)
    assert (stored.status, stored.stdout, stored.last_seq) == ("succeeded", "1\n", 3)


def test_a_long_runs_output_is_published_while_it_still_runs(
    thread: Thread, alice: Any, memory_sandboxes: MemoryBackend
) -> None:
    first_line_out = threading.Event()

    def on_batch(events: list[dict[str, Any]]) -> None:
        if any(e.get("text") == "first\n" for e in events):
            first_line_out.set()

    async def slow(r: MemoryRun) -> None:
        r.stdout("first\n")
        await r.until(first_line_out)  # the run goes on only once its first line is out
        r.stdout("second\n")

    memory_sandboxes.script = slow
    publisher = RecordingPublisher(on_batch)
    ExecutionRunner(queued_run(thread, alice).id, publisher).run()

    texts = [[e["text"] for e in batch if e["type"] == "stdout"] for batch in publisher.batches]
    assert texts[0] == ["first\n"]
    assert [text for later in texts[1:] for text in later] == ["second\n"]
    assert publisher.batches[-1][-1]["type"] == "done"
    seqs = [e["seq"] for batch in publisher.batches for e in batch]
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_run_that_changes_no_file_does_no_file_sync_database_work(
    caller: Caller, thread: Thread, memory_sandboxes: MemoryBackend
) -> None:
    async def writes_once(r: MemoryRun) -> None:
        if not r.sandbox.files:
            r.write_file("/home/user/made.txt", b"x")

    memory_sandboxes.script = writes_once
    executor = ToolExecutor()
    first = executor.execute_code(code="1", language="python", caller=caller, thread=thread)
    assert first.details["file_sync"]["created"] == ["made.txt"]

    with CaptureQueriesContext(connection) as queries:
        second = executor.execute_code(code="2", language="python", caller=caller, thread=thread)

    assert second.status == "succeeded"
    assert not [q for q in queries.captured_queries if "execution_workspacefile" in q["sql"]]
    executor.write_file(file_path="made.txt", content="changed", caller=caller, thread=thread)

    async def deletes(r: MemoryRun) -> None:
        del r.sandbox.files["/home/user/made.txt"]

    memory_sandboxes.script = deletes
    third = executor.execute_code(code="3", language="python", caller=caller, thread=thread)
    assert third.details["file_sync"]["deleted"] == ["made.txt"]


def test_a_batch_travels_as_few_channel_messages_in_order_within_their_bounds() -> None:
    from execution.services.events import MESSAGE_EVENTS, MESSAGE_TEXT_CHARS, message_batches

    def stdout(n: int, size: int = 10) -> dict[str, Any]:
        return {"type": "stdout", "seq": n, "text": "x" * size}

    quick = [{"type": "status", "seq": 1}, stdout(2), {"type": "done", "seq": 3}]
    assert message_batches(quick) == [quick]  # one message, not three

    many = [stdout(n) for n in range(MESSAGE_EVENTS * 2 + 5)]
    big = [stdout(n, MESSAGE_TEXT_CHARS // 3) for n in range(7)]
    result = {"type": "result", "seq": 99, "result": {"text/plain": "1"}}
    for events in (many, big, [stdout(1), result, stdout(2)]):
        batches = message_batches(events)
        assert [e for batch in batches for e in batch] == events  # all, in order
        for batch in batches:
            text = sum(len(e.get("text", "")) for e in batch)
            assert len(batch) <= MESSAGE_EVENTS
            assert len(batch) == 1 or text <= MESSAGE_TEXT_CHARS
    assert len(message_batches(many)) == 3
    assert [len(b) for b in message_batches([stdout(1), result, stdout(2)])] == [1, 1, 1]
