"""The HTTP edge refuses hostile input with the API's one error shape and stays healthy:
malformed ids, broken multipart, JSON nested without bound, bodies over the limit, files in
each other's way; refusals are audited, repeats counted on one row, and a refusal racing a
thread delete is still recorded. No sandbox is needed: every case is decided at the edge
(files of a thread that has no sandbox yet live in the database only)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import httpx
import pytest
import time_machine
from asgiref.sync import sync_to_async
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connections
from django.utils import timezone

from accounts.testing import bearer_headers_for
from atlaschat.asgi import application
from execution.audit import audit_refusal
from execution.caller import Caller
from execution.models import Agent, Execution, SecurityEvent, Source, Thread, WorkspaceFile
from execution.services.errors import execution_failure, sandbox_unavailable

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def api(jwt_client: Any, alice: AbstractBaseUser) -> Any:
    return jwt_client(alice)


@pytest.fixture
def thread(alice: AbstractBaseUser) -> Thread:
    return Thread.objects.create(owner=alice, title="alice's")


def error_of(response: Any) -> tuple[int, str]:
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    return response.status_code, response.json()["error"]["code"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/api/threads/not-a-uuid/",
        "/api/threads/123/files/",
        "/api/executions/../../etc/passwd/",
        "/api/nothing-here",
    ],
)
def test_a_malformed_id_or_unknown_path_under_api_is_a_json_404(api: Any, path: str) -> None:
    assert error_of(api.get(path)) == (404, "not_found")


@pytest.mark.django_db
def test_broken_multipart_is_a_json_400(api: Any, thread: Thread) -> None:
    response = api.generic(
        "POST",
        f"/api/threads/{thread.pk}/files/",
        b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
        content_type="multipart/form-data; boundary=xyz",
    )
    status, _ = error_of(response)
    assert status == 400


@pytest.mark.django_db
def test_json_nested_100000_deep_is_a_400_and_the_server_stays_healthy(api: Any) -> None:
    response = api.generic(
        "POST", "/api/code/execute", DEEP.encode(), content_type="application/json"
    )
    assert error_of(response) == (400, "malformed_request")
    assert api.get("/api/threads/").status_code == 200
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_tool_call_arguments_nested_deep_are_refused_400_and_audited(
    api: Any, alice: AbstractBaseUser, thread: Thread
) -> None:
    agent = Agent.objects.create(owner=alice, name="a", allowed_tools=["list_files"])
    response = api.post(
        f"/api/agents/{agent.id}/tool-calls",
        {"name": "list_files", "arguments": DEEP},
        format="json",
    )
    assert error_of(response) == (400, "arguments_malformed")
    assert SecurityEvent.objects.filter(code="arguments_malformed", agent=agent).exists()


@pytest.mark.django_db
def test_write_file_accepts_a_file_far_over_djangos_own_2_5_mib_body_limit(
    api: Any, thread: Thread
) -> None:
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB, 4 MiB as base64
    response = api.post(
        "/api/code/write-file",
        {
            "thread_id": str(thread.pk),
            "path": "big.bin",
            "content": base64.b64encode(data).decode(),
            "encoding": "base64",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert WorkspaceFile.objects.get(thread=thread, path="big.bin").read_content() == data


@pytest.mark.django_db
def test_a_body_over_the_limit_is_refused_413_unread_and_audited(
    api: Any, thread: Thread, settings: Any
) -> None:
    settings.EXECUTION_MAX_FILE_BYTES = 100
    body = {"thread_id": str(thread.pk), "path": "a.txt", "content": "x" * 200_000}
    response = api.post("/api/code/write-file", body, format="json")
    assert error_of(response) == (413, "request_too_large")
    assert SecurityEvent.objects.filter(code="request_too_large").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("first", "second"), [("a", "a/b"), ("a/b/c", "a/b"), ("x/y", "x")])
def test_a_file_where_a_directory_must_be_is_refused_and_nothing_stored(
    api: Any, thread: Thread, first: str, second: str
) -> None:
    def write(path: str) -> Any:
        body = {"thread_id": str(thread.pk), "path": path, "content": "1"}
        return api.post("/api/code/write-file", body, format="json")

    assert write(first).status_code == 201
    assert error_of(write(second)) == (400, "path_conflict")
    assert list(WorkspaceFile.objects.filter(thread=thread).values_list("path", flat=True)) == [
        first
    ]
    assert SecurityEvent.objects.filter(code="path_conflict", thread=thread).exists()


@pytest.mark.django_db
def test_a_name_over_255_bytes_is_refused_before_it_is_stored(api: Any, thread: Thread) -> None:
    body = {"thread_id": str(thread.pk), "path": "é" * 128, "content": "1"}
    response = api.post("/api/code/write-file", body, format="json")
    assert error_of(response) == (400, "path_invalid")
    assert not WorkspaceFile.objects.exists()


@pytest.mark.django_db
def test_a_run_refused_for_its_size_or_language_does_not_keep_the_body_or_the_raw_value(
    api: Any, thread: Thread, settings: Any
) -> None:
    settings.EXECUTION_MAX_CODE_BYTES = 1000
    big = api.post(
        "/api/code/execute",
        {"thread_id": str(thread.pk), "code": "x" * 500_000, "language": "python"},
        format="json",
    )
    assert error_of(big) == (413, "code_too_large")
    odd = api.post(
        "/api/code/execute",
        {"thread_id": str(thread.pk), "code": "1", "language": "klingon" * 2},
        format="json",
    )
    assert error_of(odd) == (400, "unsupported_language")
    stored = {row.language: row.code for row in Execution.objects.filter(thread=thread)}
    assert len(stored) == 2 and max(len(code) for code in stored.values()) <= 1024
    # The history reads back inside the schema's language enum (or blank).
    history = api.get(f"/api/threads/{thread.pk}/executions/").json()["results"]
    assert {item["language"] for item in history} <= {"python", ""}


@pytest.mark.django_db
def test_repeated_refusals_count_up_on_one_row_per_window(
    jwt_client: Any, charlie: AbstractBaseUser, thread: Thread, settings: Any
) -> None:
    client = jwt_client(charlie)
    for _ in range(40):
        assert client.get(f"/api/threads/{thread.pk}/").status_code == 404
    event = SecurityEvent.objects.get(user=charlie)
    assert (event.code, event.count) == ("thread_not_owned", 40)
    later = timezone.now() + dt.timedelta(seconds=settings.SECURITY_EVENT_WINDOW_SECONDS + 1)
    with time_machine.travel(later):
        client.get(f"/api/threads/{thread.pk}/")
    assert list(SecurityEvent.objects.order_by("created_at").values_list("count", flat=True)) == [
        40,
        1,
    ]


@pytest.mark.django_db(transaction=True)
def test_a_refusal_racing_a_thread_delete_is_recorded_without_the_link(
    alice: AbstractBaseUser,
) -> None:
    thread = Thread.objects.create(owner=alice)
    thread_id = thread.pk
    Thread.objects.filter(pk=thread_id).delete()  # the delete wins the race
    row = audit_refusal(
        caller=Caller(user=alice, source=Source.API),
        kind="validation",
        code="path_invalid",
        message="refused",
        thread=thread,
    )
    stored = SecurityEvent.objects.get(pk=row.pk)
    assert stored.thread_id is None
    assert stored.details["thread_id"] == str(thread_id)


def test_a_sandbox_failure_never_shows_the_sandbox_servers_address() -> None:
    error = sandbox_unavailable(
        "ConnectError: cannot reach http://127.0.0.1:49982/sandboxes (10.0.0.5:49983)"
    )
    assert "127.0.0.1" not in json.dumps(error.as_dict())
    assert "10.0.0.5" not in json.dumps(error.as_dict())
    run = Execution(error={"code": "sandbox_unavailable", "value": "down"})
    run.details = {"reason": "http://sandboxd.internal:49982/ refused"}
    assert "sandboxd.internal" not in json.dumps(execution_failure(run).as_dict())
    assert execution_failure(run).status == 503


@pytest.mark.django_db(transaction=True)
async def test_a_get_on_the_mcp_endpoint_is_answered_at_once_with_405(
    alice: AbstractBaseUser,
) -> None:
    agent = await Agent.objects.acreate(owner=alice, name="a", allowed_tools=["list_files"])
    headers = await sync_to_async(bearer_headers_for)(alice)
    transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get(
            f"/api/agents/{agent.id}/mcp/",
            headers={**headers, "accept": "text/event-stream"},
            timeout=10,
        )
    await sync_to_async(connections.close_all)()
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
