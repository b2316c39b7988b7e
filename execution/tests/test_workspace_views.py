"""The workspace page's server side, fast tier: the last run's output in order, the time-limit
choices, the install list that polls alone, styled error pages, and the terminal socket's
refusals (no sandbox is reached by any of these)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connections
from django.test import Client
from django.urls import reverse

from accounts.testing import bearer_headers_for
from atlaschat.asgi import application
from execution.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from execution.models import Execution, Language, PackageInstall, SecurityEvent, Thread
from execution.views import timeout_choices

HTMX = {"HTTP_HX_REQUEST": "true"}
ORIGIN = (b"origin", b"http://127.0.0.1")


@pytest.fixture
def thread(alice: AbstractBaseUser) -> Thread:
    return Thread.objects.create(owner=alice, title="Work")


@pytest.mark.django_db
def test_the_workspace_shows_the_last_runs_output_in_the_order_it_was_produced(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    Execution.objects.create(
        thread=thread, user=alice, language=Language.PYTHON, code="…", status="failed",
        stdout="before\nafter\n", results=[{"png": "iVBORw0KGgo=", "is_main_result": False}],
        output_order="o7 r o6 x ", error={"name": "ValueError", "value": "end", "traceback": ""},
    )  # fmt: skip
    client.force_login(alice)
    page = client.get(reverse("workspace", args=[thread.id])).content.decode()
    body = page[page.index('class="run-body"') :]
    assert body.index("before") < body.index("result-image") < body.index("after")
    assert body.index("after") < body.index("ValueError")


@pytest.mark.django_db
def test_the_time_limits_offered_stop_at_the_servers_maximum(settings: object) -> None:
    settings.EXECUTION_MAX_TIMEOUT = 120.0  # type: ignore[attr-defined]
    settings.EXECUTION_DEFAULT_TIMEOUT = 45.0  # type: ignore[attr-defined]
    offered = [choice["seconds"] for choice in timeout_choices()]
    assert offered == [10, 30, 45.0, 60, 120]
    assert [choice["label"] for choice in timeout_choices()][-1] == "2 min"


@pytest.mark.django_db
def test_the_install_lists_own_poll_gets_the_list_without_the_form(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    PackageInstall.objects.create(
        thread=thread, user=alice, language=Language.PYTHON, packages=["six"],
        status=PackageInstall.Status.RUNNING, log="$ pip install six\nCollecting six\n",
    )  # fmt: skip
    client.force_login(alice)
    answer = client.get(reverse("workspace-packages", args=[thread.id]) + "?part=list", **HTMX)
    html = answer.content.decode()
    assert answer.status_code == 200
    assert 'id="install-list"' in html and "<form" not in html
    assert "Collecting six" in html  # the log so far, while it runs
    assert "part=list" in html  # and it keeps polling


@pytest.mark.django_db
def test_a_missing_thread_gets_the_styled_not_found_page(
    client: Client, alice: AbstractBaseUser, settings: object
) -> None:
    settings.DEBUG = False  # type: ignore[attr-defined]
    client.force_login(alice)
    answer = client.get("/threads/00000000-0000-0000-0000-000000000000/")
    assert answer.status_code == 404
    assert "Back to your threads" in answer.content.decode()


@pytest.fixture
async def close_worker_connections() -> AsyncIterator[None]:
    yield
    await sync_to_async(connections.close_all)()


async def terminal_close_code(path: str, headers: list[tuple[bytes, bytes]]) -> int:
    communicator = WebsocketCommunicator(application, path, headers=[ORIGIN, *headers])
    try:
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        output = await communicator.receive_output(timeout=5)
        assert output["type"] == "websocket.close", output
        return int(output["code"])
    finally:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_terminal_closes_4401_for_an_anonymous_client(
    thread: Thread, close_worker_connections: None
) -> None:
    code = await terminal_close_code(f"/ws/threads/{thread.id}/terminal/", [])
    assert code == CLOSE_UNAUTHENTICATED


@pytest.mark.django_db(transaction=True)
async def test_the_terminal_closes_4404_for_another_users_thread_and_audits_it(
    thread: Thread, bob: AbstractBaseUser, close_worker_connections: None
) -> None:
    token = (await sync_to_async(bearer_headers_for)(bob))["Authorization"]
    code = await terminal_close_code(
        f"/ws/threads/{thread.id}/terminal/", [(b"authorization", token.encode())]
    )
    assert code == CLOSE_NOT_FOUND
    assert await SecurityEvent.objects.filter(user=bob, code="thread_not_owned").aexists()


@pytest.mark.django_db(transaction=True)
async def test_an_answer_to_input_for_a_run_that_is_not_waiting_is_refused_with_a_code(
    thread: Thread, alice: AbstractBaseUser, close_worker_connections: None
) -> None:
    finished = await Execution.objects.acreate(
        thread=thread, user=alice, language=Language.PYTHON, code="input()", status="succeeded"
    )
    token = (await sync_to_async(bearer_headers_for)(alice))["Authorization"]
    communicator = WebsocketCommunicator(
        application,
        f"/ws/threads/{thread.id}/",
        headers=[ORIGIN, (b"authorization", token.encode())],
    )
    try:
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        frame = {"type": "input", "execution_id": str(finished.id), "value": "Ada"}
        await communicator.send_json_to(frame)
        answer = await communicator.receive_json_from(timeout=5)
        assert answer["type"] == "error"
        assert answer["error"]["code"] == "no_input_requested"
        await communicator.send_json_to({"type": "input", "execution_id": str(finished.id)})
        answer = await communicator.receive_json_from(timeout=5)
        assert answer["error"]["code"] == "invalid_message"
    finally:
        await communicator.disconnect()
