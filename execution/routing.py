"""Websocket routes of the execution app, mounted by atlaschat.asgi.

`atlaschat.asgi` wraps these in the origin check and the session/JWT authentication
middleware, so the consumers receive an already resolved `scope["user"]`.
"""

from __future__ import annotations

from django.urls import path

from execution.consumers import ExecutionConsumer, ThreadConsumer
from execution.sandbox_terminal import TerminalConsumer

websocket_urlpatterns = [
    path("ws/threads/<uuid:thread_id>/", ThreadConsumer.as_asgi(), name="ws-thread"),
    path("ws/executions/<uuid:execution_id>/", ExecutionConsumer.as_asgi(), name="ws-execution"),
    path("ws/threads/<uuid:thread_id>/terminal/", TerminalConsumer.as_asgi(), name="ws-terminal"),
]
