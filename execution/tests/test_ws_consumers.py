"""The websocket consumers through the project's real ASGI stack, in process.

`WebsocketCommunicator` drives `atlaschat.asgi.application` (origin check, session/JWT
authentication, routing) without a network: the refusal paths, the validation of client
frames, and the replay/forwarding rules of `ws/executions/<id>/` on rows and channel-layer
events shaped as the execution service writes and publishes them. Streaming real runs
through a real daphne and sandboxd is in `test_ws_live.py`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import cache
from django.db import connections
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken

from accounts.testing import bearer_headers_for
from atlaschat.asgi import application
from execution.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED, ExecutionConsumer
from execution.models import Execution, SecurityEvent, Source, Thread
from execution.services.events import execution_group, thread_group

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://127.0.0.1")
CLIENT_IP = "10.1.2.3"

Connect = Callable[..., Any]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Return an opener of communicators as `user` (JWT), closing every one at the end."""
    opened: list[WebsocketCommunicator] = []

    async def open_(
        path: str,
        user: AbstractBaseUser | None = None,
        origin: tuple[bytes, bytes] | None = ORIGIN,
    ) -> tuple[WebsocketCommunicator, bool]:
        headers = [origin] if origin else []
        if user is not None:
            token = (await sync_to_async(bearer_headers_for)(user))["Authorization"]
            headers.append((b"authorization", token.encode()))
        communicator = WebsocketCommunicator(application, path, headers=headers)
        # The peer address daphne would put in the scope (the communicator has none).
        communicator.scope["client"] = [CLIENT_IP, 50123]
        opened.append(communicator)
        connected, _ = await communicator.connect(timeout=5)
        return communicator, connected

    yield open_
    for communicator in opened:
        await communicator.disconnect()


@pytest.fixture(autouse=True)
async def close_worker_connections() -> AsyncIterator[None]:
    """Close what async ORM calls opened in asgiref's worker thread when a test ends.

    pytest-django only manages the main thread's connection; one left open elsewhere
    would keep PostgreSQL from dropping the test database at the end of the run.
    """
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
def alices_thread(alice: AbstractBaseUser) -> Thread:
    return Thread.objects.create(owner=alice, title="alice's")


async def close_code(communicator: WebsocketCommunicator) -> int:
    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close", output
    return output["code"]


async def reply(communicator: WebsocketCommunicator, frame: Any) -> dict[str, Any]:
    text = frame if isinstance(frame, str) else json.dumps(frame)
    await communicator.send_to(text_data=text)
    return await communicator.receive_json_from(timeout=5)


# --- refusals -------------------------------------------------------------------------------


async def test_it_closes_4401_for_an_anonymous_client_on_a_thread(
    connect: Connect, alices_thread: Thread
) -> None:
    communicator, connected = await connect(f"/ws/threads/{alices_thread.id}/")
    assert connected
    assert await close_code(communicator) == CLOSE_UNAUTHENTICATED


async def test_it_closes_4401_for_an_anonymous_client_on_an_execution(
    connect: Connect, alice: AbstractBaseUser, alices_thread: Thread
) -> None:
    execution = await Execution.objects.acreate(
        user=alice, thread=alices_thread, language="python", code="1"
    )
    communicator, _ = await connect(f"/ws/executions/{execution.id}/")
    assert await close_code(communicator) == CLOSE_UNAUTHENTICATED


async def test_it_closes_4401_for_a_forged_token(connect: Connect, alices_thread: Thread) -> None:
    headers = [ORIGIN, (b"authorization", b"Bearer not.a.token")]
    communicator = WebsocketCommunicator(
        application, f"/ws/threads/{alices_thread.id}/", headers=headers
    )
    try:
        await communicator.connect(timeout=5)
        assert await close_code(communicator) == CLOSE_UNAUTHENTICATED
    finally:
        await communicator.disconnect()


async def test_it_closes_4404_for_another_users_thread(
    connect: Connect, charlie: AbstractBaseUser, alices_thread: Thread
) -> None:
    communicator, connected = await connect(f"/ws/threads/{alices_thread.id}/", charlie)
    assert connected
    assert await close_code(communicator) == CLOSE_NOT_FOUND


async def test_it_closes_4404_for_a_thread_that_does_not_exist(
    connect: Connect, alice: AbstractBaseUser
) -> None:
    communicator, _ = await connect(f"/ws/threads/{uuid.uuid4()}/", alice)
    assert await close_code(communicator) == CLOSE_NOT_FOUND


async def test_it_closes_4404_for_another_users_execution(
    connect: Connect, alice: AbstractBaseUser, charlie: AbstractBaseUser, alices_thread: Thread
) -> None:
    execution = await Execution.objects.acreate(
        user=alice, thread=alices_thread, language="python", code="1"
    )
    communicator, _ = await connect(f"/ws/executions/{execution.id}/", charlie)
    assert await close_code(communicator) == CLOSE_NOT_FOUND
    event = await SecurityEvent.objects.aget(user=charlie, code="execution_not_owned")
    assert (event.source, event.details["object_id"]) == (Source.WEBSOCKET, str(execution.id))


async def test_it_refuses_the_handshake_from_another_sites_origin(
    connect: Connect, alice: AbstractBaseUser, alices_thread: Thread
) -> None:
    _, connected = await connect(
        f"/ws/threads/{alices_thread.id}/", alice, origin=(b"origin", b"https://evil.example")
    )
    assert not connected


async def test_it_accepts_the_owner_and_stays_open(
    connect: Connect, alice: AbstractBaseUser, alices_thread: Thread
) -> None:
    communicator, connected = await connect(f"/ws/threads/{alices_thread.id}/", alice)
    assert connected
    assert await communicator.receive_nothing(timeout=0.3)


# --- client frames on ws/threads/<id>/ ------------------------------------------------------


@pytest.fixture
async def alices_socket(
    connect: Connect, alice: AbstractBaseUser, alices_thread: Thread
) -> WebsocketCommunicator:
    communicator, connected = await connect(f"/ws/threads/{alices_thread.id}/", alice)
    assert connected
    return communicator


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ("{not json", "invalid_json", None),
        ("[1, 2]", "invalid_message", None),
        ({"code": "print(1)", "language": "python"}, "unknown_type", None),
        ({"type": "shutdown"}, "unknown_type", None),
        ({"type": "execute", "language": "python"}, "invalid_message", "code"),
        ({"type": "execute", "code": 42, "language": "python"}, "invalid_message", "code"),
        ({"type": "execute", "code": "1"}, "invalid_message", "language"),
        ({"type": "execute", "code": "1", "language": "python", "timeout": "5"}, None, "timeout"),
        ({"type": "execute", "code": "1", "language": "python", "timeout": True}, None, "timeout"),
        ({"type": "cancel"}, "invalid_message", "execution_id"),
        ({"type": "cancel", "execution_id": "42"}, "invalid_message", "execution_id"),
    ],
)
async def test_it_answers_a_malformed_frame_with_an_error_frame_and_stays_open(
    alices_socket: WebsocketCommunicator, frame: Any, code: str | None, field: str | None
) -> None:
    answer = await reply(alices_socket, frame)
    assert answer["type"] == "error"
    assert "execution_id" not in answer
    assert answer["error"]["code"] == (code or "invalid_message")
    assert answer["error"]["message"]
    if field:
        assert answer["error"]["details"]["field"] == field
    # Still usable: the next bad frame gets its answer too.
    assert (await reply(alices_socket, "{"))["error"]["code"] == "invalid_json"


async def test_it_answers_a_binary_frame_with_invalid_json(
    alices_socket: WebsocketCommunicator,
) -> None:
    await alices_socket.send_to(bytes_data=b"\x00\x01")
    answer = await alices_socket.receive_json_from(timeout=5)
    assert answer["error"]["code"] == "invalid_json"


async def test_it_refuses_an_unsupported_language_as_the_api_does_and_audits_it(
    alices_socket: WebsocketCommunicator, alice: AbstractBaseUser, alices_thread: Thread
) -> None:
    answer = await reply(
        alices_socket, {"type": "execute", "code": "print(1)", "language": "cobol"}
    )
    assert answer["type"] == "error"
    assert answer["error"]["code"] == "unsupported_language"
    rejected = await sync_to_async(list)(
        Execution.objects.filter(thread=alices_thread, status=Execution.Status.REJECTED)
    )
    assert len(rejected) == 1
    assert rejected[0].source == Source.WEBSOCKET
    assert rejected[0].client_ip == CLIENT_IP
    assert await SecurityEvent.objects.filter(
        user=alice, code="unsupported_language", source=Source.WEBSOCKET, client_ip=CLIENT_IP
    ).aexists()


async def test_it_answers_cancel_of_an_execution_of_another_thread_with_not_found(
    alices_socket: WebsocketCommunicator, alice: AbstractBaseUser
) -> None:
    other_thread = await Thread.objects.acreate(owner=alice, title="other")
    elsewhere = await Execution.objects.acreate(
        user=alice, thread=other_thread, language="python", code="1"
    )
    answer = await reply(alices_socket, {"type": "cancel", "execution_id": str(elsewhere.id)})
    assert answer["error"]["code"] == "execution_not_found"
    await elsewhere.arefresh_from_db()
    assert elsewhere.status == Execution.Status.QUEUED
    assert not elsewhere.cancel_requested


async def test_it_answers_cancel_of_another_users_run_as_not_found_and_audits_it(
    alices_socket: WebsocketCommunicator, alice: AbstractBaseUser, charlie: AbstractBaseUser
) -> None:
    charlies_thread = await Thread.objects.acreate(owner=charlie, title="charlie's")
    theirs = await Execution.objects.acreate(
        user=charlie, thread=charlies_thread, language="python", code="1"
    )
    answer = await reply(alices_socket, {"type": "cancel", "execution_id": str(theirs.id)})
    assert answer["error"]["code"] == "execution_not_found"
    await theirs.arefresh_from_db()
    assert not theirs.cancel_requested
    event = await SecurityEvent.objects.aget(user=alice, code="execution_not_owned")
    assert (event.source, event.details["object_id"]) == (Source.WEBSOCKET, str(theirs.id))


async def test_json_nested_100000_deep_is_a_typed_refusal_and_the_socket_stays_usable(
    alices_socket: WebsocketCommunicator,
) -> None:
    answer = await reply(alices_socket, "[" * 100_000 + "]" * 100_000)
    assert answer["error"]["code"] == "invalid_json"
    nested = {"type": "execute", "code": "1", "language": "python", "x": []}
    for _ in range(100):
        nested = {"a": nested}
    assert (await reply(alices_socket, nested))["error"]["code"] == "invalid_json"
    # The socket still answers.
    assert (await reply(alices_socket, {"type": "nope"}))["error"]["code"] == "unknown_type"


@pytest.mark.parametrize("code", ["print('\ud800')", "print('a\x00b')"])
async def test_code_with_a_lone_surrogate_or_nul_is_a_typed_refusal_not_an_internal_error(
    alices_socket: WebsocketCommunicator, alice: AbstractBaseUser, code: str
) -> None:
    frame = json.dumps({"type": "execute", "code": code, "language": "python"})
    answer = await reply(alices_socket, frame)
    assert answer["error"]["code"] == "code_invalid"
    # The refusal is on record, with the code as it came.
    rejected = await Execution.objects.aget(user=alice, status=Execution.Status.REJECTED)
    assert rejected.code == code


async def test_a_flood_of_refused_frames_writes_one_audit_row_per_refusal_with_its_count(
    alices_socket: WebsocketCommunicator, alice: AbstractBaseUser, settings: Any
) -> None:
    settings.EXECUTION_THROTTLE_RATE = "5/minute"
    await sync_to_async(cache.clear)()
    frame = {"type": "execute", "code": "print(1)", "language": "cobol"}
    for _ in range(60):
        await reply(alices_socket, frame)
    events = await sync_to_async(list)(SecurityEvent.objects.filter(user=alice))
    counts = {event.code: event.count for event in events}
    # Five runs got as far as validation, the other 55 met the rate limit: two rows.
    assert counts == {"unsupported_language": 5, "throttled": 55}


async def test_it_forwards_the_events_of_its_thread_and_no_other(
    alices_socket: WebsocketCommunicator, alice: AbstractBaseUser, alices_thread: Thread
) -> None:
    other_thread = await Thread.objects.acreate(owner=alice, title="other")
    layer = get_channel_layer()
    mine = {"type": "stdout", "execution_id": str(uuid.uuid4()), "text": "mine\n", "seq": 2}
    theirs = {"type": "stdout", "execution_id": str(uuid.uuid4()), "text": "no\n", "seq": 2}
    await layer.group_send(
        thread_group(other_thread.id), {"type": "execution.event", "event": theirs}
    )
    await layer.group_send(
        thread_group(alices_thread.id), {"type": "execution.event", "event": mine}
    )
    assert await alices_socket.receive_json_from(timeout=5) == mine
    assert await alices_socket.receive_nothing(timeout=0.3)


# --- ws/executions/<id>/: replay from the row, then live --------------------------------------


async def test_it_replays_a_finished_execution_from_its_row_and_closes(
    connect: Connect, alice: AbstractBaseUser, alices_thread: Thread
) -> None:
    now = timezone.now()
    execution = await Execution.objects.acreate(
        user=alice,
        thread=alices_thread,
        language="python",
        code="print('hi'); 1 / 0",
        status=Execution.Status.FAILED,
        stdout="hi\n",
        stderr="warning\n",
        results=[{"text": "42", "is_main_result": True}],
        error={"name": "ZeroDivisionError", "value": "division by zero", "traceback": "tb"},
        started_at=now,
        finished_at=now,
        duration_ms=12,
        last_seq=7,
    )
    communicator, _ = await connect(f"/ws/executions/{execution.id}/", alice)
    frames = [await communicator.receive_json_from(timeout=5) for _ in range(7)]
    assert [frame["type"] for frame in frames] == [
        "execution",
        "status",
        "stdout",
        "stderr",
        "result",
        "error",
        "done",
    ]
    assert {frame["seq"] for frame in frames} == {7}
    assert all(frame["replay"] is True for frame in frames)
    assert all(frame["execution_id"] == str(execution.id) for frame in frames)
    assert frames[0]["thread_id"] == str(alices_thread.id)
    assert frames[2]["text"] == "hi\n"
    assert frames[3]["text"] == "warning\n"
    assert frames[4]["result"] == {"text": "42", "is_main_result": True}
    assert frames[5]["error"]["name"] == "ZeroDivisionError"
    assert frames[6] | {"replay": True} == {
        "type": "done",
        "execution_id": str(execution.id),
        "status": "failed",
        "duration_ms": 12,
        "exit_code": None,
        "truncated": False,
        "seq": 7,
        "replay": True,
    }
    assert await close_code(communicator) == 1000


async def test_it_forwards_only_live_events_newer_than_the_replay_then_closes_after_done(
    connect: Connect, alice: AbstractBaseUser, alices_thread: Thread
) -> None:
    execution = await Execution.objects.acreate(
        user=alice,
        thread=alices_thread,
        language="python",
        code="...",
        status=Execution.Status.RUNNING,
        stdout="a\nb\n",
        started_at=timezone.now(),
        last_seq=3,
    )
    communicator, _ = await connect(f"/ws/executions/{execution.id}/", alice)
    replayed = [await communicator.receive_json_from(timeout=5) for _ in range(3)]
    assert [frame["type"] for frame in replayed] == ["execution", "status", "stdout"]
    assert replayed[2]["text"] == "a\nb\n"

    def event(seq: int, **fields: Any) -> dict[str, Any]:
        return {"execution_id": str(execution.id), "seq": seq, **fields}

    layer = get_channel_layer()
    group = execution_group(execution.id)
    # seq 2 and 3 are already in the row (a publication that raced the join): dropped.
    for frame in (
        event(2, type="stdout", text="a\n"),
        event(3, type="stdout", text="b\n"),
        event(4, type="stdout", text="c\n"),
        event(5, type="done", status="succeeded", duration_ms=3, exit_code=None, truncated=False),
    ):
        await layer.group_send(group, {"type": "execution.event", "event": frame})
    assert await communicator.receive_json_from(timeout=5) == event(4, type="stdout", text="c\n")
    done = await communicator.receive_json_from(timeout=5)
    assert done["type"] == "done"
    assert done["seq"] == 5
    assert await close_code(communicator) == 1000


async def test_it_answers_a_frame_sent_to_an_execution_socket_with_unknown_type(
    connect: Connect, alice: AbstractBaseUser, alices_thread: Thread
) -> None:
    execution = await Execution.objects.acreate(
        user=alice, thread=alices_thread, language="python", code="1"
    )
    communicator, _ = await connect(f"/ws/executions/{execution.id}/", alice)
    first = await communicator.receive_json_from(timeout=5)
    assert first["type"] == "execution"
    assert first["status"] == "queued"
    answer = await reply(communicator, {"type": "execute", "code": "1", "language": "python"})
    assert answer["error"]["code"] == "unknown_type"


async def test_it_refuses_a_timeout_beyond_the_maximum_with_the_services_code(
    alices_socket: WebsocketCommunicator, settings: Any
) -> None:
    settings.EXECUTION_MAX_TIMEOUT = 10.0
    answer = await reply(
        alices_socket,
        {"type": "execute", "code": "print(1)", "language": "python", "timeout": 11},
    )
    assert answer["error"]["code"] == "timeout_out_of_range"


async def test_it_refuses_a_run_over_the_users_concurrency_cap_with_retry_after(
    alices_socket: WebsocketCommunicator,
    alice: AbstractBaseUser,
    alices_thread: Thread,
    settings: Any,
) -> None:
    settings.EXECUTION_USER_CONCURRENCY = 1
    await Execution.objects.acreate(
        user=alice, thread=alices_thread, language="python", code="busy", status="running"
    )
    answer = await reply(
        alices_socket, {"type": "execute", "code": "print(1)", "language": "python"}
    )
    assert answer["error"]["code"] == "concurrency_limit_user"
    assert answer["error"]["details"]["retry_after"] >= 1
    assert await SecurityEvent.objects.filter(user=alice, kind="quota").aexists()


async def test_cancel_of_a_queued_execution_of_the_thread_streams_its_done(
    alices_socket: WebsocketCommunicator, alice: AbstractBaseUser, alices_thread: Thread
) -> None:
    queued = await Execution.objects.acreate(
        user=alice, thread=alices_thread, language="python", code="1"
    )
    await alices_socket.send_json_to({"type": "cancel", "execution_id": str(queued.id)})
    # Queued before this socket opened: it is introduced (from the row) before its end.
    introduced = await alices_socket.receive_json_from(timeout=5)
    assert (introduced["type"], introduced["execution_id"]) == ("execution", str(queued.id))
    done = await alices_socket.receive_json_from(timeout=5)
    assert done["type"] == "done"
    assert done["execution_id"] == str(queued.id)
    assert done["status"] == "cancelled"
    await queued.arefresh_from_db()
    assert queued.status == Execution.Status.CANCELLED


async def test_cancel_of_a_finished_execution_is_refused_as_not_cancellable(
    alices_socket: WebsocketCommunicator, alice: AbstractBaseUser, alices_thread: Thread
) -> None:
    finished = await Execution.objects.acreate(
        user=alice, thread=alices_thread, language="python", code="1", status="succeeded"
    )
    answer = await reply(alices_socket, {"type": "cancel", "execution_id": str(finished.id)})
    assert answer["error"]["code"] == "execution_not_cancellable"
    assert answer["error"]["details"] == {"status": "succeeded"}


async def test_it_applies_the_rest_execute_rate_limit_to_websocket_runs(
    alices_socket: WebsocketCommunicator, alice: AbstractBaseUser, settings: Any
) -> None:
    settings.EXECUTION_THROTTLE_RATE = "1/minute"
    await sync_to_async(cache.clear)()
    refused = {"type": "execute", "code": "print(1)", "language": "cobol"}
    # The first request counts against the limit even though validation refuses it.
    assert (await reply(alices_socket, refused))["error"]["code"] == "unsupported_language"
    answer = await reply(alices_socket, refused)
    assert answer["error"]["code"] == "throttled"
    assert answer["error"]["details"]["retry_after"] >= 1
    assert await SecurityEvent.objects.filter(
        user=alice, code="throttled", kind="quota", source=Source.WEBSOCKET
    ).aexists()


async def test_it_closes_a_socket_with_4401_once_its_access_token_has_expired(
    alice: AbstractBaseUser, alices_thread: Thread
) -> None:
    token = AccessToken.for_user(alice)
    token.set_exp(lifetime=timedelta(seconds=1))
    communicator = WebsocketCommunicator(
        application,
        f"/ws/threads/{alices_thread.id}/",
        headers=[ORIGIN, (b"authorization", f"Bearer {token}".encode())],
    )
    try:
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        await asyncio.sleep(2.1)
        answer = await reply(
            communicator, {"type": "execute", "code": "print(1)", "language": "python"}
        )
        assert answer["error"]["code"] == "token_expired"
        assert await close_code(communicator) == CLOSE_UNAUTHENTICATED
        assert not await Execution.objects.filter(thread=alices_thread).aexists()
    finally:
        await communicator.disconnect()


# --- recovering what the channel layer dropped -----------------------------------------------


async def store_and_publish(execution: Execution, *events: dict[str, Any], **row: Any) -> None:
    """Do what the service does: store the effect (with last_seq) first, then publish."""
    await Execution.objects.filter(pk=execution.pk).aupdate(**row)
    layer = get_channel_layer()
    for event in events:
        for group in (execution_group(execution.id), thread_group(execution.thread_id)):
            await layer.group_send(group, {"type": "execution.event", "event": event})


async def test_a_gap_in_live_events_is_filled_from_the_row_without_duplicates(
    connect: Connect, alice: AbstractBaseUser, alices_thread: Thread
) -> None:
    execution = await Execution.objects.acreate(
        user=alice,
        thread=alices_thread,
        language="python",
        code="...",
        status=Execution.Status.RUNNING,
        stdout="a\n",
        started_at=timezone.now(),
        last_seq=2,
    )
    communicator, _ = await connect(f"/ws/executions/{execution.id}/", alice)
    replayed = [await communicator.receive_json_from(timeout=5) for _ in range(3)]
    assert replayed[2]["text"] == "a\n"
    eid = str(execution.id)
    # Events 3 ("b") and 4 ("c") are stored, but only 4 is delivered: 3 was dropped.
    await store_and_publish(
        execution,
        {"type": "stdout", "execution_id": eid, "text": "c\n", "seq": 4},
        stdout="a\nb\nc\n",
        last_seq=4,
    )
    caught_up = await communicator.receive_json_from(timeout=5)
    assert caught_up == {
        "type": "stdout",
        "execution_id": eid,
        "text": "b\nc\n",
        "seq": 4,
        "replay": True,
    }
    await store_and_publish(
        execution,
        {"type": "stdout", "execution_id": eid, "text": "d\n", "seq": 5},
        stdout="a\nb\nc\nd\n",
        last_seq=5,
    )
    assert (await communicator.receive_json_from(timeout=5))["text"] == "d\n"
    assert await communicator.receive_nothing(timeout=0.3)


async def test_a_thread_socket_catches_up_on_a_run_it_first_sees_midway(
    alices_socket: WebsocketCommunicator, alice: AbstractBaseUser, alices_thread: Thread
) -> None:
    execution = await Execution.objects.acreate(
        user=alice,
        thread=alices_thread,
        language="python",
        code="...",
        status=Execution.Status.RUNNING,
        stdout="first\nsecond\n",
        started_at=timezone.now(),
        last_seq=3,
    )
    eid = str(execution.id)
    await store_and_publish(
        execution,
        {"type": "stdout", "execution_id": eid, "text": "second\n", "seq": 3},
    )
    frames = [await alices_socket.receive_json_from(timeout=5) for _ in range(3)]
    assert [(f["type"], f.get("text"), f["seq"]) for f in frames] == [
        ("execution", None, 3),
        ("status", None, 3),
        ("stdout", "first\nsecond\n", 3),
    ]
    assert await alices_socket.receive_nothing(timeout=0.3)


async def test_a_lost_done_is_found_by_the_periodic_check_and_the_socket_closes(
    connect: Connect,
    alice: AbstractBaseUser,
    alices_thread: Thread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ExecutionConsumer, "check_interval", 0.2)
    execution = await Execution.objects.acreate(
        user=alice,
        thread=alices_thread,
        language="python",
        code="...",
        status=Execution.Status.RUNNING,
        started_at=timezone.now(),
        last_seq=1,
    )
    communicator, _ = await connect(f"/ws/executions/{execution.id}/", alice)
    assert [(await communicator.receive_json_from(timeout=5))["type"] for _ in range(2)] == [
        "execution",
        "status",
    ]
    # The run ends and its `done` is stored, but the publication never arrives.
    await store_and_publish(
        execution,
        status=Execution.Status.SUCCEEDED,
        stdout="late\n",
        finished_at=timezone.now(),
        duration_ms=5,
        last_seq=3,
    )
    stdout = await communicator.receive_json_from(timeout=5)
    done = await communicator.receive_json_from(timeout=5)
    assert (stdout["type"], stdout["text"]) == ("stdout", "late\n")
    assert (done["type"], done["status"], done["seq"]) == ("done", "succeeded", 3)
    assert await close_code(communicator) == 1000


# --- the websocket part of the authorization matrix -------------------------------------------


@pytest.mark.parametrize("route", ["thread", "execution"])
@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("anonymous", CLOSE_UNAUTHENTICATED),
        ("alice", "open"),
        ("charlie", CLOSE_NOT_FOUND),
        # Staff read the audit in the admin; the live routes grant them nothing extra.
        ("staff", CLOSE_NOT_FOUND),
    ],
)
async def test_each_websocket_route_by_each_kind_of_user(
    connect: Connect,
    alice: AbstractBaseUser,
    charlie: AbstractBaseUser,
    staff: AbstractBaseUser,
    alices_thread: Thread,
    route: str,
    who: str,
    expected: int | str,
) -> None:
    user = {"anonymous": None, "alice": alice, "charlie": charlie, "staff": staff}[who]
    execution = await Execution.objects.acreate(
        user=alice, thread=alices_thread, language="python", code="1"
    )
    path = (
        f"/ws/threads/{alices_thread.id}/"
        if route == "thread"
        else f"/ws/executions/{execution.id}/"
    )
    communicator, connected = await connect(path, user)
    assert connected
    if expected == "open":
        if route == "execution":
            first = await communicator.receive_json_from(timeout=5)
            assert (first["type"], first["execution_id"]) == ("execution", str(execution.id))
        assert await communicator.receive_nothing(timeout=0.3)
    else:
        assert await close_code(communicator) == expected
