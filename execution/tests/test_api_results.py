"""GET /api/executions/<id>/results/<n>/: one stored result, or one format of it."""

from __future__ import annotations

import base64
from typing import Any

from accounts.testing import jwt_client_for
from execution.models import Execution, Thread


def _run_with(owner: Any, results: list[dict[str, Any]]) -> Execution:
    thread = Thread.objects.create(owner=owner)
    return Execution.objects.create(
        thread=thread, user=owner, language="python", code="x", results=results
    )


def test_a_png_part_is_served_decoded(alice: Any) -> None:
    png = b"\x89PNG\r\n\x1a\n fake"
    run = _run_with(alice, [{"png": base64.b64encode(png).decode()}])

    response = jwt_client_for(alice).get(f"/api/executions/{run.pk}/results/0/?part=png")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response.content == png


def test_a_png_part_that_is_not_base64_is_a_404_not_a_server_error(alice: Any) -> None:
    # Code can display any text under image/png (IPython's display(..., raw=True)).
    run = _run_with(alice, [{"png": "not base64 at all!"}])

    response = jwt_client_for(alice).get(f"/api/executions/{run.pk}/results/0/?part=png")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "result_not_found"
