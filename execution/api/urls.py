"""REST API routes of the execution app, mounted under /api/ by atlaschat.urls."""

from __future__ import annotations

urlpatterns: list = []
