"""A run's output in the order it was produced: stored by the event sink, replayed in that
order from the row, whatever point a client replays from."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from e2b_code_interpreter.models import Result

from execution.consumers import StreamCursor
from execution.models import Execution, Language, Thread
from execution.sandbox.e2b import result_data
from execution.services.events import EventPublisher
from execution.services.runs import EventSink

pytestmark = pytest.mark.django_db

CHART = {"png": "iVBORw0KGgo=", "is_main_result": False}
ERROR = {"name": "ValueError", "value": "boom", "traceback": "Traceback…"}


@pytest.fixture
def execution(alice: AbstractBaseUser) -> Execution:
    thread = Thread.objects.create(owner=alice)
    return Execution.objects.create(
        thread=thread, user=alice, language=Language.PYTHON, code="…", status="running"
    )


def store(execution: Execution, batches: list[list[tuple[str, Any]]]) -> Execution:
    sink = EventSink(execution, EventPublisher())
    for batch in batches:
        sink.output(batch)
        sink.flush()  # each batch stored in its own UPDATE, as a long run's are
    execution.refresh_from_db()
    return execution


def test_the_row_keeps_prints_a_chart_more_prints_and_the_error_in_their_order(
    execution: Execution,
) -> None:
    row = store(
        execution,
        [
            [("stdout", "before\n"), ("stderr", "warn\n"), ("stdout", "still\n")],
            [("result", CHART), ("stdout", "after\n")],
            [("error", ERROR)],
        ],
    )
    pieces = [(p.kind, p.text or p.result or p.error) for p in row.ordered_output()]
    assert pieces == [
        ("stdout", "before\n"),
        ("stderr", "warn\n"),
        ("stdout", "still\n"),
        ("result", CHART),
        ("stdout", "after\n"),
        ("error", ERROR),
    ]
    assert row.stdout == "before\nstill\nafter\n"


def test_a_replay_from_the_row_sends_the_output_in_order(execution: Execution) -> None:
    row = store(execution, [[("stdout", "one\n"), ("result", CHART), ("stderr", "two\n")]])
    frames = StreamCursor(str(row.id)).catch_up(row)
    kinds = [(f["type"], f.get("text")) for f in frames if f["type"] != "execution"]
    assert kinds == [("stdout", "one\n"), ("result", None), ("stderr", "two\n")]


def test_a_replay_midway_sends_only_what_the_cursor_has_not_sent(execution: Execution) -> None:
    row = store(execution, [[("stdout", "abc"), ("result", CHART), ("stdout", "def")]])
    cursor = StreamCursor(str(row.id), seq=1, sent_execution=True, sent_running=True)
    cursor.stdout_chars = 2  # it had seen "ab" live
    frames = cursor.catch_up(row)
    assert [(f["type"], f.get("text")) for f in frames] == [
        ("stdout", "c"),
        ("result", None),
        ("stdout", "def"),
    ]
    assert cursor.stdout_chars == 6 and cursor.results == 1


def test_a_run_stored_before_the_order_existed_replays_streams_then_results(
    execution: Execution,
) -> None:
    Execution.objects.filter(pk=execution.pk).update(
        stdout="out\n", stderr="err\n", results=[CHART], error=ERROR
    )
    execution.refresh_from_db()
    assert [p.kind for p in execution.ordered_output()] == ["stdout", "stderr", "result", "error"]


def test_e2b_chart_data_is_kept_with_a_result_for_the_page_to_draw() -> None:
    chart = {
        "type": "line",
        "title": "Growth",
        "x_label": "x",
        "y_label": "y",
        "x_unit": None,
        "y_unit": None,
        "x_ticks": [0, 1],
        "x_tick_labels": ["0", "1"],
        "x_scale": "linear",
        "y_ticks": [0, 1],
        "y_tick_labels": ["0", "1"],
        "y_scale": "linear",
        "elements": [{"label": "a", "points": [[0, 0], [1, 1]]}],
    }
    stored = result_data(Result(png="iVBORw0KGgo=", chart=chart, is_main_result=False))
    assert stored["chart"]["type"] == "line"
    assert stored["chart"]["elements"] == [{"label": "a", "points": [[0, 0], [1, 1]]}]
    assert stored["png"] == "iVBORw0KGgo="


def test_a_waiting_input_is_replayed_to_a_page_that_reloads_until_it_is_answered(
    execution: Execution,
) -> None:
    row = store(execution, [[("stdout", "start\n"), ("input_request", {"prompt": "Name: "})]])
    frames = StreamCursor(str(row.id)).catch_up(row)
    asked = [f for f in frames if f["type"] == "input_request"]
    assert asked == [
        {
            "type": "input_request",
            "execution_id": str(row.id),
            "prompt": "Name: ",
            "password": False,
            "seq": row.last_seq,
            "replay": True,
        }
    ]
    assert row.ordered_output()[0].text == "start\n"  # the request itself is not output
    # Answered: its echo is output, and nothing waits any more.
    row = store(row, [[("stdout", "Name: Ada\n")]])
    assert "input_request" not in row.details
    assert not [f for f in StreamCursor(str(row.id)).catch_up(row) if f["type"] == "input_request"]
