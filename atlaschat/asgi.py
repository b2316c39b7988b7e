"""ASGI entry point (daphne): Django for HTTP, Channels for websockets.

Django's ASGI app is built first so that the app registry is ready before any consumer,
model or auth module is imported. Websockets then pass through, outermost first:
the origin check (Origin must be one of ALLOWED_HOSTS, so another site's page cannot open
a socket with the visitor's cookie), authentication (session cookie or JWT, see
accounts.middleware), and the execution app's routes. HTTP requests for an agent's MCP
endpoint (`/api/agents/<id>/mcp/`) are served by the MCP SDK in front of Django
(execution/agents/mcp.py, which authenticates them with the same JWTs); all other HTTP
goes to Django, on pooled request threads that keep their database connections
(atlaschat/request_threads.py).
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atlaschat.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from accounts.middleware import JWTOrSessionAuthMiddleware  # noqa: E402
from atlaschat.request_threads import RequestThreads  # noqa: E402
from execution.agents.mcp import AgentMCPRouter  # noqa: E402
from execution.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": AgentMCPRouter(RequestThreads(django_asgi_app, keep=settings.REQUEST_THREADS)),
        "websocket": AllowedHostsOriginValidator(
            JWTOrSessionAuthMiddleware(URLRouter(websocket_urlpatterns))
        ),
    }
)
