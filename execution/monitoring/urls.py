"""The monitoring routes, included at the site's root by atlaschat/urls.py."""

from __future__ import annotations

from django.urls import path

from execution.monitoring import views

urlpatterns = [
    path("metrics", views.metrics_view, name="metrics"),
    path("readyz", views.readyz, name="readyz"),
    path("staff/dashboard/", views.staff_dashboard, name="staff-dashboard"),
    path("me/usage/", views.usage_badge, name="usage-badge"),
]
