"""Project-level pages: the home page and the health check."""

from __future__ import annotations

from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    """The landing page for visitors who are not logged in: what this is, where to log in.

    `/` serves it through execution.views.home, which shows logged-in people their threads.
    """
    return render(request, "home.html")


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Return 200 {"status": "ok"} when the database answers, else 503 with what failed.

    Unauthenticated on purpose (load balancers and `make run` poll it); it reveals nothing
    but whether the service works.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return JsonResponse({"status": "unavailable", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})
