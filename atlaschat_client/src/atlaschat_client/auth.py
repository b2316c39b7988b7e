"""The JWT pair a client holds, and when to renew it.

AtlasChat's access tokens live `JWT_ACCESS_MINUTES` (15 by default) and its refresh tokens
rotate: each refresh answers a new pair and blacklists the refresh token it was given, so the
client must keep the new one (`on_tokens` lets the caller persist it too). The client renews
ahead of time (a websocket opened with a token about to expire would be closed with 4401 when
it does) and once more after a 401.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from atlaschat_client.models import TokenPair

# Renew an access token this close to its expiry, so a request or a socket opened now does
# not meet it expiring mid-way.
REFRESH_LEEWAY_SECONDS = 30.0


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (seconds since the epoch), read without verifying it (the
    server verifies; this only decides when to renew). None when it cannot be read."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError, binascii.Error):
        return None


@dataclass
class Credentials:
    """The current token pair; `on_tokens` is called with each new pair."""

    access: str | None = None
    refresh: str | None = None
    on_tokens: Callable[[TokenPair], None] | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"} if self.access else {}

    def can_refresh(self) -> bool:
        return bool(self.refresh)

    def should_refresh(self, *, now: float | None = None) -> bool:
        """True when a refresh token is held and the access token is missing or expires
        within REFRESH_LEEWAY_SECONDS."""
        if not self.refresh:
            return False
        if not self.access:
            return True
        expiry = token_expiry(self.access)
        current = time.time() if now is None else now
        return expiry is not None and expiry - current < REFRESH_LEEWAY_SECONDS

    def store(self, pair: TokenPair) -> None:
        self.access, self.refresh = pair.access, pair.refresh
        if self.on_tokens is not None:
            self.on_tokens(pair)
