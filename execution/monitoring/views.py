"""`/metrics` (Prometheus, never public), `/readyz` (each part's state), the staff dashboard."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from execution.monitoring import dashboard, health, metrics
from execution.templatetags.monitoring import usage_badge as usage_badge_context


def bearer_token(request: HttpRequest) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def may_scrape(request: HttpRequest) -> bool:
    """Staff with a session, or a caller presenting METRICS_TOKEN (when one is set)."""
    user = request.user
    if user.is_authenticated and user.is_active and user.is_staff:
        return True
    token = bearer_token(request)
    expected = settings.METRICS_TOKEN
    return bool(expected and token) and hmac.compare_digest(
        token.encode("utf-8"),  # type: ignore[union-attr]
        expected.encode("utf-8"),
    )


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text format of every web worker's metrics; 401 without credentials,
    403 for a logged-in non-staff user."""
    if not may_scrape(request):
        if request.user.is_authenticated and bearer_token(request) is None:
            return JsonResponse(
                {"error": {"code": "permission_denied", "message": "Staff only."}}, status=403
            )
        response = JsonResponse(
            {
                "error": {
                    "code": "not_authenticated",
                    "message": "Log in as staff, or send Authorization: Bearer <METRICS_TOKEN>.",
                }
            },
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database, the channel layer and the sandbox backend all work, else 503
    with `failing` naming the parts that do not. Unauthenticated like /healthz: it says what
    is down and what to do, never a secret."""
    results = health.run_checks(health.READINESS_CHECKS)
    failing = [result.name for result in results if not result.ok]
    body = {
        "status": "unavailable" if failing else "ready",
        "failing": failing,
        "checks": {result.name: result.as_dict() for result in results},
    }
    return JsonResponse(body, status=503 if failing else 200)


@never_cache
@require_safe
def staff_dashboard(request: HttpRequest) -> HttpResponse:
    """The fleet over the last hour, day or week (?range=); staff only: anyone else logged in
    gets 403, a visitor the login page."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not (request.user.is_active and request.user.is_staff):
        raise PermissionDenied("The dashboard is for staff.")
    window = dashboard.WINDOWS.get(request.GET.get("range", "hour"), dashboard.WINDOWS["hour"])
    summary = dashboard.fleet_summary(window)
    return render(
        request,
        "monitoring/dashboard.html",
        {
            "summary": summary,
            "sandboxd": dashboard.sandboxd_metrics(),
            "windows": list(dashboard.WINDOWS),
            "chart_data": {
                "labels": summary["labels"],
                "series": summary["series"],
                "bucket_minutes": summary["bucket_minutes"],
            },
        },
    )


@never_cache
@login_required
@require_safe
def usage_badge(request: HttpRequest) -> HttpResponse:
    """The page header's "Today: N runs" badge, again: the workspace asks for it after each
    run (htmx), so the count a person sees is never the one from when the page loaded."""
    return render(request, "monitoring/usage_badge.html", usage_badge_context({"request": request}))
