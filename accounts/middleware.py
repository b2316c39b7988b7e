"""Websocket authentication: the same identities as HTTP, for Channels consumers.

`JWTOrSessionAuthMiddleware(inner)` puts the connecting user in `scope["user"]` (an
`AnonymousUser` when nobody could be identified) and how they were identified in
`scope["auth_method"]` (`"jwt"`, `"session"` or `None`), then calls `inner`.

* An `Authorization: Bearer <access token>` header on the handshake wins: API clients and
  agents set it. A header that is present but not a valid, unexpired, non-blacklisted access
  token of an active user gives an anonymous scope. It never falls back to the session,
  so a wrong token cannot be masked by a cookie the client also happens to carry.
* Otherwise the Django session cookie identifies the user, as on the pages: a browser's
  WebSocket API cannot set headers but does send the cookie.
* A `?token=` query parameter is deliberately not accepted: query strings end up in access
  logs and browser history, and neither kind of client above needs it.
"""

from __future__ import annotations

from typing import Any

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

Scope = dict[str, Any]


def authorization_header(scope: Scope) -> bytes | None:
    """Return the raw value of a scope's Authorization header, if it has one: the one
    reader of that header for websockets, the MCP endpoint and token expiry."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            return value
    return None


@database_sync_to_async
def user_from_authorization_header(header: bytes) -> AbstractBaseUser | AnonymousUser:
    """Return the active user a Bearer access token names, or AnonymousUser.

    Reuses DRF simplejwt's own checks (signature, expiry, token type, user exists and is
    active), so a token is accepted on a websocket exactly when the REST API accepts it.
    """
    authentication = JWTAuthentication()
    try:
        raw_token = authentication.get_raw_token(header)
        if raw_token is None:
            return AnonymousUser()
        return authentication.get_user(authentication.get_validated_token(raw_token))
    except (InvalidToken, AuthenticationFailed, TokenError):
        return AnonymousUser()


class _ResolveUser(BaseMiddleware):
    """Sets scope["user"] and scope["auth_method"]; needs scope["session"], which the
    SessionMiddleware around it provides."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> Any:
        scope = dict(scope)
        header = authorization_header(scope)
        if header is not None:
            scope["user"] = await user_from_authorization_header(header)
            scope["auth_method"] = "jwt" if scope["user"].is_authenticated else None
        else:
            # Channels' own resolver: it also checks the session's auth hash, so a session
            # from before a password change no longer identifies anyone.
            scope["user"] = await get_user(scope)
            scope["auth_method"] = "session" if scope["user"].is_authenticated else None
        return await super().__call__(scope, receive, send)


class JWTOrSessionAuthMiddleware(BaseMiddleware):
    """Cookie + session + user resolution for websocket routes (see the module docstring)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(CookieMiddleware(SessionMiddleware(_ResolveUser(inner))))
