"""File sync never takes a link for a file, however envd reports it (E2B's envd and sandboxd
report a link with its target's type and `symlink_target` set), through a real sandboxd."""

from __future__ import annotations

from typing import Any

import pytest

from execution.models import WorkspaceFile

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(180)]


@pytest.mark.django_db
def test_a_link_made_by_code_is_skipped_and_its_target_never_synced(
    jwt_client: Any, alice: Any, sandboxd: Any
) -> None:
    code = (
        "import os\n"
        "open('real.txt', 'w').write('mine')\n"
        "os.symlink('/etc/passwd', 'passwd-link')\n"
        "os.symlink('real.txt', 'inner-link')\n"
        "print('ok')"
    )
    body = (
        jwt_client(alice)
        .post("/api/code/execute", {"code": code, "language": "python"}, format="json")
        .json()
    )
    assert body["stdout"] == "ok\n", body
    synced = set(
        WorkspaceFile.objects.filter(thread_id=body["thread_id"]).values_list("path", flat=True)
    )
    assert synced == {"real.txt"}
    skipped = {entry["path"]: entry["reason"] for entry in body["details"]["file_sync"]["skipped"]}
    assert skipped == {"passwd-link": "symlink", "inner-link": "symlink"}
