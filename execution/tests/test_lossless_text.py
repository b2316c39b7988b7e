"""Any text a program prints is stored and read back exactly, on SQLite and PostgreSQL:
NUL (which PostgreSQL text and jsonb refuse), lone surrogates (which no UTF-8 store takes)
and the escape character itself, in output, results, errors and details (see the escaping
stated in execution/models.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.base_user import AbstractBaseUser

from execution.models import Execution, SecurityEvent, Thread, escape_text, unescape_text
from execution.services.events import EventPublisher
from execution.services.runs import EventSink

pytestmark = pytest.mark.django_db

# NUL, a lone high and a lone low surrogate, the escape character, and the escape followed
# by what its codes look like: every case the escaping has to tell apart.
AWKWARD = "a\x00b \ud800 \udfff \ue000 \ue0000 \ue000\ue000 é 😀 end"


def test_the_escaping_round_trips_every_awkward_character_and_leaves_plain_text_alone() -> None:
    assert unescape_text(escape_text(AWKWARD)) == AWKWARD
    escape_text(AWKWARD).encode("utf-8")  # storable: no NUL, no surrogate left
    assert "\x00" not in escape_text(AWKWARD)
    assert escape_text("plain é 😀") == "plain é 😀"
    # Escaping piece by piece is escaping the whole: output appended in batches stays exact.
    halves = escape_text(AWKWARD[:7]) + escape_text(AWKWARD[7:])
    assert unescape_text(halves) == AWKWARD


@pytest.fixture
def run(alice: AbstractBaseUser) -> Execution:
    thread = Thread.objects.create(owner=alice)
    return Execution.objects.create(thread=thread, user=alice, language="python", code="1")


def test_output_results_errors_and_details_with_nul_and_lone_surrogates_are_stored_exactly(
    run: Execution,
) -> None:
    run.stdout = AWKWARD
    run.stderr = AWKWARD[::-1]
    run.results = [{"text": AWKWARD, AWKWARD: [AWKWARD, 1, None]}]
    run.error = {"name": "ValueError", "value": AWKWARD, "traceback": AWKWARD}
    run.details = {"reason": AWKWARD}
    run.save()
    stored = Execution.objects.get(pk=run.pk)
    assert stored.stdout == AWKWARD
    assert stored.stderr == AWKWARD[::-1]
    assert stored.results == [{"text": AWKWARD, AWKWARD: [AWKWARD, 1, None]}]
    assert stored.error["value"] == AWKWARD
    assert stored.details == {"reason": AWKWARD}


class RecordingPublisher(EventPublisher):
    """Keeps what would be published (no channel layer in this test)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.events: list[dict[str, Any]] = []

    def publish_many(self, *, execution_id: Any, thread_id: Any, events: Any) -> None:
        self.events.extend(events)


def test_output_appended_batch_by_batch_is_stored_exactly_and_published_as_printed(
    run: Execution,
) -> None:
    publisher = RecordingPublisher()
    sink = EventSink(run, publisher)
    sink.output([("stdout", AWKWARD[:5]), ("stderr", "\ud83d")])
    sink.flush()
    sink.output([("stdout", AWKWARD[5:]), ("result", {"text": "\x00"})])
    sink.flush()
    stored = Execution.objects.get(pk=run.pk)
    assert stored.stdout == AWKWARD
    assert stored.stderr == "\ud83d"
    assert stored.results == [{"text": "\x00"}]
    printed = "".join(e["text"] for e in publisher.events if e["type"] == "stdout")
    assert printed == AWKWARD


def test_the_api_answers_such_output_as_json_escapes_that_decode_to_the_same_text(
    run: Execution, jwt_client: Any, alice: AbstractBaseUser
) -> None:
    Execution.objects.filter(pk=run.pk).update(stdout=AWKWARD)
    response = jwt_client(alice).get(f"/api/executions/{run.pk}/")
    assert response.status_code == 200
    assert response.json()["stdout"] == AWKWARD
    # Escaped, so the body is valid UTF-8 whatever the output held.
    response.content.decode("utf-8")


def test_an_audit_message_with_nul_is_stored(alice: AbstractBaseUser) -> None:
    event = SecurityEvent.objects.create(
        kind="validation", code="code_invalid", message="bad \x00", details={"v": "\udc80"}
    )
    stored = SecurityEvent.objects.get(pk=event.pk)
    assert (stored.message, stored.details) == ("bad \x00", {"v": "\udc80"})
