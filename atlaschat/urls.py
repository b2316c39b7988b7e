"""The project's URL map: pages, accounts and JWT, the REST API and its docs, the admin."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views import defaults
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from atlaschat.views import healthz
from execution.api.exceptions import project_error_handler

urlpatterns = [
    # The browser workspace: `/` is the thread list for a logged-in person (the landing page
    # for anyone else), then each thread's workspace.
    path("", include("execution.urls")),
    path("healthz", healthz, name="healthz"),
    # /metrics (Prometheus, staff or METRICS_TOKEN), /readyz, the staff dashboard
    path("", include("execution.monitoring.urls")),
    # login/logout pages and /api/auth/… (JWT, who-am-I)
    path("", include("accounts.urls")),
    # The OpenAPI schema and Swagger UI (served from our own static files, see settings). The
    # split view serves Swagger UI's start-up script as a file, not inline, so the page
    # passes our Content-Security-Policy (atlaschat/csp.py).
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("execution.api.urls")),
    path("admin/", admin.site.urls),
]

# Under /api/ every answer is in the API's error shape, including those Django gives before
# any view runs: an unmatched URL (a malformed id), a body it cannot parse, a crash.
handler400 = project_error_handler(
    400, "malformed_request", "The request could not be parsed.", defaults.bad_request
)
handler404 = project_error_handler(404, "not_found", "Not found.", defaults.page_not_found)
handler500 = project_error_handler(
    500, "internal_error", "Something went wrong on our side.", defaults.server_error
)
