"""WSGI entry point, for plain-HTTP deployments (websockets need the ASGI app in asgi.py)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atlaschat.settings")
application = get_wsgi_application()
