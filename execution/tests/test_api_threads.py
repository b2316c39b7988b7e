"""Threads through the API: create, list, rename, delete (which kills the sandbox)."""

from __future__ import annotations

from typing import Any

import pytest
from e2b import NotFoundException

from execution.models import Execution, Thread, WorkspaceFile
from execution.sandbox.e2b import E2BBackend
from execution.services.sandbox_sessions import sessions

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(120)]


@pytest.fixture
def client(jwt_client: Any, alice: Any, sandboxd: Any) -> Any:
    return jwt_client(alice)


@pytest.mark.django_db
def test_it_creates_lists_and_renames_threads(client: Any, alice: Any) -> None:
    created = client.post("/api/threads/", {"title": "Data cleaning"}, format="json")
    assert created.status_code == 201
    thread_id = created.json()["id"]
    assert created.json()["has_sandbox"] is False

    client.post("/api/threads/", {}, format="json")
    titles = [t["title"] for t in client.get("/api/threads/").json()["results"]]
    assert titles == ["Untitled thread", "Data cleaning"]

    renamed = client.patch(f"/api/threads/{thread_id}/", {"title": "Cleaning v2"}, format="json")
    assert renamed.json()["title"] == "Cleaning v2"
    assert Thread.objects.get(pk=thread_id).title == "Cleaning v2"


@pytest.mark.django_db
def test_it_refuses_a_title_that_is_too_long(client: Any) -> None:
    response = client.post("/api/threads/", {"title": "x" * 201}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert "title" in response.json()["error"]["details"]


@pytest.mark.django_db
def test_put_is_not_offered_only_patch(client: Any, alice: Any) -> None:
    thread = Thread.objects.create(owner=alice)
    response = client.put(f"/api/threads/{thread.pk}/", {"title": "x"}, format="json")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.django_db
def test_deleting_a_thread_kills_its_sandbox_removes_its_files_and_keeps_its_runs(
    client: Any, alice: Any
) -> None:
    run = client.post(
        "/api/code/execute",
        {"code": "open('f.txt', 'w').write('x')", "language": "python"},
        format="json",
    ).json()
    thread = Thread.objects.get(pk=run["thread_id"])
    assert thread.sandbox_id and WorkspaceFile.objects.filter(thread=thread).exists()
    storage_name = WorkspaceFile.objects.get(thread=thread).content.name

    response = client.delete(f"/api/threads/{thread.pk}/")

    assert response.status_code == 204
    assert not Thread.objects.filter(pk=thread.pk).exists()
    assert not WorkspaceFile.objects.filter(path="f.txt").exists()
    assert not WorkspaceFile.content.field.storage.exists(storage_name)
    assert Execution.objects.get(pk=run["id"]).thread is None
    with pytest.raises(NotFoundException):
        sessions.call(E2BBackend().sdk_class.connect(thread.sandbox_id))
