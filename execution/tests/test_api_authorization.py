"""The authorization matrix: every REST endpoint by anonymous, the owner (alice), another user
(charlie) and a staff member. Another user's object is a 404 (never a 403, which would confirm
it exists), and the staff flag grants nothing in the API: staff read the audit in the admin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from execution.models import Execution, SecurityEvent, Thread, WorkspaceFile

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(120)]


@dataclass
class Objects:
    thread: Thread
    execution: Execution


Call = Callable[[Any, Objects], Any]

ENDPOINTS: dict[str, Call] = {
    "list threads": lambda c, o: c.get("/api/threads/"),
    "create thread": lambda c, o: c.post("/api/threads/", {"title": "t"}, format="json"),
    "get thread": lambda c, o: c.get(f"/api/threads/{o.thread.pk}/"),
    "rename thread": lambda c, o: c.patch(
        f"/api/threads/{o.thread.pk}/", {"title": "x"}, format="json"
    ),
    "delete thread": lambda c, o: c.delete(f"/api/threads/{o.thread.pk}/"),
    "list executions": lambda c, o: c.get(f"/api/threads/{o.thread.pk}/executions/"),
    "get execution": lambda c, o: c.get(f"/api/executions/{o.execution.pk}/"),
    "cancel execution": lambda c, o: c.post(f"/api/executions/{o.execution.pk}/cancel"),
    "get execution result": lambda c, o: c.get(f"/api/executions/{o.execution.pk}/results/0/"),
    "list files": lambda c, o: c.get(f"/api/threads/{o.thread.pk}/files/"),
    "upload file": lambda c, o: c.post(
        f"/api/threads/{o.thread.pk}/files/",
        {"file": SimpleUploadedFile("up.txt", b"up")},
        format="multipart",
    ),
    "download file": lambda c, o: c.get(f"/api/threads/{o.thread.pk}/files/a.txt"),
    "delete file": lambda c, o: c.delete(f"/api/threads/{o.thread.pk}/files/a.txt"),
    "list packages": lambda c, o: c.get(f"/api/threads/{o.thread.pk}/packages/"),
    "execute": lambda c, o: c.post(
        "/api/code/execute",
        {"code": "print(1)", "language": "python", "thread_id": str(o.thread.pk)},
        format="json",
    ),
    "write file": lambda c, o: c.post(
        "/api/code/write-file",
        {"thread_id": str(o.thread.pk), "path": "b.txt", "content": "b"},
        format="json",
    ),
    "read file": lambda c, o: c.post(
        "/api/code/read-file", {"thread_id": str(o.thread.pk), "path": "a.txt"}, format="json"
    ),
    "install packages": lambda c, o: c.post(
        "/api/code/install-packages",
        {"thread_id": str(o.thread.pk), "language": "python", "packages": ["six==1.17.0"]},
        format="json",
    ),
}

# Expected status per endpoint for: anonymous, alice (owner), charlie (other user), staff.
MATRIX: dict[str, tuple[int, int, int, int]] = {
    "list threads": (401, 200, 200, 200),
    "create thread": (401, 201, 201, 201),
    "get thread": (401, 200, 404, 404),
    "rename thread": (401, 200, 404, 404),
    "delete thread": (401, 204, 404, 404),
    "list executions": (401, 200, 404, 404),
    "get execution": (401, 200, 404, 404),
    "cancel execution": (401, 200, 404, 404),
    "get execution result": (401, 200, 404, 404),
    "list files": (401, 200, 404, 404),
    "upload file": (401, 201, 404, 404),
    "download file": (401, 200, 404, 404),
    "delete file": (401, 204, 404, 404),
    "list packages": (401, 200, 404, 404),
    "execute": (401, 201, 404, 404),
    "write file": (401, 201, 404, 404),
    "read file": (401, 200, 404, 404),
    "install packages": (401, 201, 404, 404),
}
WHO = ("anonymous", "alice", "charlie", "staff")


@pytest.fixture
def objects(alice: Any) -> Objects:
    thread = Thread.objects.create(owner=alice, title="alice's")
    row = WorkspaceFile(thread=thread, path="a.txt")
    row.set_content(b"alice's file")
    execution = Execution.objects.create(
        thread=thread,
        user=alice,
        language="python",
        code="print(1)",
        status="queued",
        results=[{"text": "1"}],
    )
    return Objects(thread, execution)


def test_the_matrix_covers_every_api_route() -> None:
    from execution.api.urls import urlpatterns

    # The execution API's 13 routes (the agents API, mounted beside them, has its own
    # matrix); several carry more than one method, all of which are in the matrix.
    ours = [p for p in urlpatterns if p.callback.view_class.__module__ == "execution.api.views"]
    assert len(ours) == 13
    assert set(MATRIX) == set(ENDPOINTS)


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", list(MATRIX))
@pytest.mark.parametrize("who", WHO)
def test_each_endpoint_answers_each_kind_of_user_as_the_matrix_says(
    endpoint: str,
    who: str,
    objects: Objects,
    api_client: Any,
    jwt_client: Any,
    alice: Any,
    charlie: Any,
    staff: Any,
    sandboxd: Any,
) -> None:
    users = {"alice": alice, "charlie": charlie, "staff": staff}
    client = api_client if who == "anonymous" else jwt_client(users[who])
    expected = MATRIX[endpoint][WHO.index(who)]

    response = ENDPOINTS[endpoint](client, objects)

    assert response.status_code == expected, response.content[:500]
    if expected >= 400:
        assert set(response.json()["error"]) == {"code", "message", "details"}
    if who in ("charlie", "staff") and expected == 404:
        # Nothing of alice's changed, and the attempt is in the audit trail.
        objects.thread.refresh_from_db()
        assert objects.thread.title == "alice's"
        assert WorkspaceFile.objects.filter(thread=objects.thread, path="a.txt").exists()
        assert Execution.objects.get(pk=objects.execution.pk).status == "queued"
        assert SecurityEvent.objects.filter(kind="authorization", user=users[who]).exists()


@pytest.mark.django_db
def test_other_users_lists_never_show_alices_threads(
    objects: Objects, jwt_client: Any, charlie: Any, staff: Any
) -> None:
    for user in (charlie, staff):
        assert jwt_client(user).get("/api/threads/").json()["results"] == []
