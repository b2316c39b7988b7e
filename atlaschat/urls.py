"""The project's URL map: pages, accounts and JWT, the REST API and its docs, the admin."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from atlaschat.views import healthz, home

urlpatterns = [
    path("", home, name="home"),
    path("healthz", healthz, name="healthz"),
    # login/logout pages and /api/auth/… (JWT, who-am-I)
    path("", include("accounts.urls")),
    # The OpenAPI schema and Swagger UI (served from our own static files, see settings).
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("execution.api.urls")),
    path("admin/", admin.site.urls),
]
