"""Websocket authentication: scope["user"] from a Bearer JWT or the session cookie.

A tiny consumer reports what the middleware put in the scope (the project's ASGI wiring is
tested in atlaschat/tests/test_asgi.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client
from django.urls import path
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken

from accounts.middleware import JWTOrSessionAuthMiddleware
from accounts.testing import token_pair_for

pytestmark = pytest.mark.django_db(transaction=True)


class WhoAmIConsumer(AsyncJsonWebsocketConsumer):
    """Accepts, sends {"user": username or None, "auth": scope["auth_method"]}."""

    async def connect(self) -> None:
        await self.accept()
        user = self.scope["user"]
        await self.send_json(
            {
                "user": user.get_username() if user.is_authenticated else None,
                "auth": self.scope["auth_method"],
            }
        )


application = JWTOrSessionAuthMiddleware(URLRouter([path("ws/whoami/", WhoAmIConsumer.as_asgi())]))


async def who_am_i(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    communicator = WebsocketCommunicator(application, "/ws/whoami/", headers=headers)
    connected, _ = await communicator.connect()
    try:
        assert connected
        return await communicator.receive_json_from()
    finally:
        await communicator.disconnect()


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


@pytest.fixture
def alice_session_cookie(alice: AbstractBaseUser) -> list[tuple[bytes, bytes]]:
    client = Client()
    client.force_login(alice)
    session_id = client.cookies[settings.SESSION_COOKIE_NAME].value
    return [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_id}".encode())]


@pytest.fixture
def alice_access(alice: AbstractBaseUser) -> str:
    return token_pair_for(alice)["access"]


async def test_a_bearer_access_token_identifies_the_user(alice_access: str) -> None:
    assert await who_am_i(bearer(alice_access)) == {"user": "alice", "auth": "jwt"}


async def test_the_session_cookie_identifies_the_user(
    alice_session_cookie: list[tuple[bytes, bytes]],
) -> None:
    assert await who_am_i(alice_session_cookie) == {"user": "alice", "auth": "session"}


async def test_no_credentials_give_an_anonymous_scope() -> None:
    assert await who_am_i([]) == {"user": None, "auth": None}


async def test_a_forged_token_gives_an_anonymous_scope(alice_access: str) -> None:
    header, payload, _signature = alice_access.split(".")
    assert await who_am_i(bearer(f"{header}.{payload}.AAAA")) == {"user": None, "auth": None}


@pytest.fixture
def expired_access(alice: AbstractBaseUser) -> str:
    token = AccessToken.for_user(alice)
    token.set_exp(from_time=timezone.now() - timedelta(hours=1))
    return str(token)


async def test_an_expired_token_gives_an_anonymous_scope(expired_access: str) -> None:
    assert await who_am_i(bearer(expired_access)) == {"user": None, "auth": None}


@pytest.fixture
def alice_refresh(alice: AbstractBaseUser) -> str:
    return token_pair_for(alice)["refresh"]


async def test_a_refresh_token_is_not_an_access_token(alice_refresh: str) -> None:
    assert await who_am_i(bearer(alice_refresh)) == {"user": None, "auth": None}


async def test_a_bad_token_does_not_fall_back_to_the_session(
    alice_session_cookie: list[tuple[bytes, bytes]],
) -> None:
    headers = [*alice_session_cookie, *bearer("not-a-jwt")]
    assert await who_am_i(headers) == {"user": None, "auth": None}


async def test_a_token_in_the_query_string_is_ignored(alice_access: str) -> None:
    communicator = WebsocketCommunicator(application, f"/ws/whoami/?token={alice_access}")
    connected, _ = await communicator.connect()
    try:
        assert connected
        assert await communicator.receive_json_from() == {"user": None, "auth": None}
    finally:
        await communicator.disconnect()


@pytest.fixture
def deactivated_alice_access(alice: AbstractBaseUser) -> str:
    access = token_pair_for(alice)["access"]
    alice.is_active = False
    alice.save()
    return access


async def test_a_token_of_a_deactivated_user_is_refused(deactivated_alice_access: str) -> None:
    assert await who_am_i(bearer(deactivated_alice_access)) == {"user": None, "auth": None}


@pytest.fixture
def stale_session_cookie(
    alice: AbstractBaseUser, alice_session_cookie: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    # A password change invalidates the sessions made before it.
    alice.set_password("a-brand-new-password-for-alice")
    alice.save()
    return alice_session_cookie


async def test_a_session_from_before_a_password_change_is_refused(
    stale_session_cookie: list[tuple[bytes, bytes]],
) -> None:
    assert await who_am_i(stale_session_cookie) == {"user": None, "auth": None}
