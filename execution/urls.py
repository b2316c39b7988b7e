"""Routes of the browser workspace (pages and their htmx partials), mounted at / by
atlaschat.urls. The REST API lives in execution.api.urls, websockets in execution.routing."""

from __future__ import annotations

from django.urls import path

from execution import views

urlpatterns = [
    path("", views.home, name="home"),
    path("threads/", views.thread_list, name="thread-list"),
    path("threads/new", views.thread_create, name="thread-create"),
    path("threads/<uuid:thread_id>/", views.workspace, name="workspace"),
    path("threads/<uuid:thread_id>/rename", views.thread_rename, name="thread-rename"),
    path("threads/<uuid:thread_id>/delete", views.thread_delete, name="thread-delete"),
    path("threads/<uuid:thread_id>/files/", views.files, name="workspace-files"),
    path("threads/<uuid:thread_id>/files/new", views.file_create, name="workspace-file-create"),
    path("threads/<uuid:thread_id>/files/save", views.file_save, name="workspace-file-save"),
    path("threads/<uuid:thread_id>/files/upload", views.file_upload, name="workspace-file-upload"),
    path("threads/<uuid:thread_id>/files/delete", views.file_delete, name="workspace-file-delete"),
    path("threads/<uuid:thread_id>/packages/", views.packages, name="workspace-packages"),
    path(
        "threads/<uuid:thread_id>/packages/install",
        views.package_install,
        name="workspace-package-install",
    ),
    path("threads/<uuid:thread_id>/runs/", views.history, name="workspace-history"),
    path(
        "threads/<uuid:thread_id>/runs/<uuid:execution_id>/",
        views.run_detail,
        name="workspace-run",
    ),
]
