"""The ASGI application as daphne runs it: HTTP to Django; websockets through the origin
check and JWT/session authentication to the execution app's routes."""

from __future__ import annotations

import uuid
from unittest import mock

import pytest
from asgiref.sync import SyncToAsync
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.contrib.auth.base_user import AbstractBaseUser

from accounts.testing import token_pair_for
from atlaschat.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

ALLOWED_ORIGIN = (b"origin", b"http://127.0.0.1:8000")


@pytest.fixture
def alice_bearer(alice: AbstractBaseUser) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {token_pair_for(alice)['access']}".encode())


async def close_code_of(path: str, headers: list[tuple[bytes, bytes]]) -> int | None:
    """Connect, then return the close code the server sent (None if it kept the socket)."""
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect()
    try:
        if not connected:
            return code
        output = await communicator.receive_output(timeout=5)
        return output.get("code") if output["type"] == "websocket.close" else None
    finally:
        await communicator.disconnect()


async def test_http_requests_reach_django() -> None:
    communicator = HttpCommunicator(
        application, "GET", "/healthz", headers=[(b"host", b"127.0.0.1:8000")]
    )
    response = await communicator.get_response()
    assert response["status"] == 200
    assert response["body"] == b'{"status": "ok", "database": "ok"}'


async def test_an_api_request_runs_the_middleware_stack_in_one_thread(
    alice_bearer: tuple[bytes, bytes],
) -> None:
    # Each sync_to_async call is a switch to a worker thread and back. Django's own
    # middleware in an async stack cost up to two each (15 for this request); with the stack run
    # synchronously, what is left is Django's ASGI handler's own (6).
    switches = 0
    original = SyncToAsync.__call__

    async def counted(self: SyncToAsync, *args: object, **kwargs: object) -> object:
        nonlocal switches
        switches += 1
        return await original(self, *args, **kwargs)

    communicator = HttpCommunicator(
        application, "GET", "/api/auth/me/", headers=[(b"host", b"127.0.0.1:8000"), alice_bearer]
    )
    with mock.patch.object(SyncToAsync, "__call__", counted):
        response = await communicator.get_response()
    assert response["status"] == 200
    assert b'"username":"alice"' in response["body"].replace(b" ", b"")
    assert switches <= 6


async def test_a_websocket_from_another_origin_is_refused(
    alice_bearer: tuple[bytes, bytes],
) -> None:
    headers = [(b"origin", b"https://evil.example"), alice_bearer]
    communicator = WebsocketCommunicator(application, f"/ws/threads/{uuid.uuid4()}/", headers)
    connected, _ = await communicator.connect()
    await communicator.disconnect()
    assert connected is False


async def test_an_anonymous_websocket_is_closed_as_unauthenticated() -> None:
    assert await close_code_of(f"/ws/threads/{uuid.uuid4()}/", [ALLOWED_ORIGIN]) == 4401


async def test_an_authenticated_websocket_reaches_the_execution_routes(
    alice_bearer: tuple[bytes, bytes],
) -> None:
    # The consumer saw alice (not 4401) and looked the thread up for her: it is not hers.
    path = f"/ws/threads/{uuid.uuid4()}/"
    assert await close_code_of(path, [ALLOWED_ORIGIN, alice_bearer]) == 4404
