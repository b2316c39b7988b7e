"""REST API routes of the execution app, mounted under /api/ by atlaschat.urls."""

from __future__ import annotations

from django.urls import path

from execution.agents import api as agents
from execution.api import views

urlpatterns = [
    # The seed's tool endpoints.
    path("code/execute", views.ExecuteView.as_view(), name="api-code-execute"),
    path("code/write-file", views.WriteFileView.as_view(), name="api-code-write-file"),
    path("code/read-file", views.ReadFileView.as_view(), name="api-code-read-file"),
    path(
        "code/install-packages",
        views.InstallPackagesView.as_view(),
        name="api-code-install-packages",
    ),
    # Resources.
    path("threads/", views.ThreadListView.as_view(), name="api-thread-list"),
    path("threads/<uuid:thread_id>/", views.ThreadDetailView.as_view(), name="api-thread-detail"),
    path(
        "threads/<uuid:thread_id>/executions/",
        views.ThreadExecutionListView.as_view(),
        name="api-thread-executions",
    ),
    path(
        "threads/<uuid:thread_id>/files/",
        views.ThreadFileListView.as_view(),
        name="api-thread-files",
    ),
    path(
        "threads/<uuid:thread_id>/files/<path:file_path>",
        views.ThreadFileDetailView.as_view(),
        name="api-thread-file-detail",
    ),
    path(
        "threads/<uuid:thread_id>/packages/",
        views.ThreadPackageListView.as_view(),
        name="api-thread-packages",
    ),
    path(
        "executions/<uuid:execution_id>/",
        views.ExecutionDetailView.as_view(),
        name="api-execution-detail",
    ),
    path(
        "executions/<uuid:execution_id>/results/<int:index>/",
        views.ExecutionResultView.as_view(),
        name="api-execution-result",
    ),
    path(
        "executions/<uuid:execution_id>/cancel",
        views.ExecutionCancelView.as_view(),
        name="api-execution-cancel",
    ),
    # Agents (execution/agents/); their MCP endpoint, /api/agents/<id>/mcp/, is served ahead
    # of Django by atlaschat/asgi.py.
    path("agents/", agents.AgentListView.as_view(), name="api-agent-list"),
    path("agents/<uuid:agent_id>/", agents.AgentDetailView.as_view(), name="api-agent-detail"),
    path("agents/<uuid:agent_id>/tools", agents.AgentToolsView.as_view(), name="api-agent-tools"),
    path(
        "agents/<uuid:agent_id>/tool-calls",
        agents.AgentToolCallView.as_view(),
        name="api-agent-tool-calls",
    ),
]
