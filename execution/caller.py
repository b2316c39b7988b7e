"""Who is calling: one value built at every entry point, from a request or a websocket scope.

A `Caller` is the user, the agent acting for them (if any), the entry point (`source`) and
the client's address. Every entry point builds one here and hands it on; the ToolExecutor
(with the thread as its own argument), selectors, the audit and the throttle adapter take
it. This is the one place that reads the client's IP (`client_ip`): behind a proxy, have
the proxy (or daphne's `--proxy-headers`) set the address, and every entry point sees the
same value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from execution.models import Agent, Source

# The longest request path kept in the audit (a path is caller-chosen text).
AUDIT_PATH_CHARS = 300


def client_ip(origin: HttpRequest | Mapping[str, Any] | Any) -> str | None:
    """The client's address: REMOTE_ADDR of a request (Django's or DRF's), or the `client`
    of an ASGI scope. None when the server was not told one."""
    meta = getattr(origin, "META", None)
    if meta is not None:
        return meta.get("REMOTE_ADDR") or None
    client = origin.get("client") if isinstance(origin, Mapping) else None
    return client[0] if client else None


@dataclass(frozen=True)
class Caller:
    """The user, their agent (None when the user acts directly), the entry point and the
    client's IP; `where` is the request path or tool name kept in the audit."""

    user: User | AnonymousUser
    source: str = Source.API
    client_ip: str | None = None
    agent: Agent | None = None
    where: str = ""

    @classmethod
    def from_request(
        cls, request: HttpRequest | Any, *, source: str, agent: Agent | None = None
    ) -> Caller:
        """The caller of an HTTP request (a Django HttpRequest or a DRF Request)."""
        return cls(
            user=request.user,
            source=source,
            client_ip=client_ip(request),
            agent=agent,
            where=str(getattr(request, "path", ""))[:AUDIT_PATH_CHARS],
        )

    @classmethod
    def from_scope(
        cls, scope: Mapping[str, Any], *, source: str = Source.WEBSOCKET, agent: Agent | None = None
    ) -> Caller:
        """The caller of an ASGI connection (a websocket, or the MCP endpoint)."""
        return cls(
            user=scope.get("user") or AnonymousUser(),
            source=source,
            client_ip=client_ip(scope),
            agent=agent,
            where=str(scope.get("path", ""))[:AUDIT_PATH_CHARS],
        )

    @property
    def authenticated_user(self) -> User | None:
        """The user when signed in, else None (what an audit row's `user` holds)."""
        user = self.user
        return user if isinstance(user, User) and user.is_authenticated else None

    @property
    def account(self) -> User:
        """The signed-in user, for what only a signed-in caller may do (every entry point
        authenticates first; reaching here anonymous is a bug, refused as such)."""
        user = self.authenticated_user
        if user is None:
            raise PermissionDenied("an anonymous caller reached an owner-scoped operation")
        return user

    def acting_as(self, agent: Agent | None, *, source: str | None = None) -> Caller:
        """The same caller with `agent` acting (and, if given, another source)."""
        return replace(self, agent=agent, source=source or self.source)
