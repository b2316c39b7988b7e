"""Websocket routes of the execution app, mounted by atlaschat.asgi."""

from __future__ import annotations

websocket_urlpatterns: list = []
