"""The OpenAPI schema (/api/schema/) driven by schemathesis against a live server: whatever
the generated request, the answer is never a 5xx and never outside the schema (a status the
operation does not document, another content type, a body that does not match). Runs
against pytest-django's live server (a real HTTP server thread) with a real sandboxd behind
it, authenticated as alice, with the rate limits lifted; bounded by its examples per
operation and the test's timeout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.testing import bearer_headers_for
from execution.models import Execution, Thread, WorkspaceFile
from execution.services.runs import wait_for_background_runs
from execution.services.sandbox_sessions import sessions

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(600)]


@pytest.fixture
def fuzz_settings(sandbox_settings: Any, settings: Any) -> Iterator[None]:
    # Generated runs are arbitrary: keep them short and the rate limits out of the way,
    # so that the examples reach the code paths behind them.
    settings.EXECUTION_MAX_TIMEOUT = 3.0
    settings.EXECUTION_DEFAULT_TIMEOUT = 3.0
    settings.EXECUTION_THROTTLE_RATE = "100000/minute"
    settings.INSTALL_THROTTLE_RATE = "100000/minute"
    yield
    assert wait_for_background_runs(60)
    sessions.forget_all(kill=True)


def operations(live_server: Any) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json")
    return [
        result.ok()
        for result in schema.get_all_operations()
        if not result.ok().path.startswith("/api/auth/")  # accounts' own endpoints
    ]


# Random ids only ever meet 404s: half of the examples are pointed at alice's real objects
# (and, for runs, a real language), so the generated values reach the code behind the lookups.
aims = st.tuples(st.booleans(), st.sampled_from(["python", "bash", "javascript", "typescript"]))


def aim_at_real_objects(case: Any, user: Any, real: bool, language: str) -> None:
    if not real:
        return
    thread = Thread.objects.filter(owner=user).order_by("created_at").first()
    if thread is None:
        thread = Thread.objects.create(owner=user, title="fuzzed")
    execution = Execution.objects.filter(user=user).first() or Execution.objects.create(
        thread=thread, user=user, language="python", code="1", status="queued"
    )
    row = WorkspaceFile.objects.filter(thread=thread).first()
    params = case.path_parameters or {}
    if "thread_id" in params:
        params["thread_id"] = str(thread.pk)
    if "execution_id" in params:
        params["execution_id"] = str(execution.pk)
    if "file_path" in params and row is not None:
        params["file_path"] = row.path
    if isinstance(case.body, dict):
        if "thread_id" in case.body:
            case.body["thread_id"] = str(thread.pk)
        if "language" in case.body:
            case.body["language"] = language
        case.body.pop("agent_id", None)


SCHEMA_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.django_db(transaction=True)
def test_no_generated_request_makes_the_api_answer_5xx_or_outside_its_schema(
    live_server: Any, fuzz_settings: None, alice: Any
) -> None:
    headers = bearer_headers_for(alice)
    covered = []
    for operation in operations(live_server):

        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), aim=aims)
        def no_server_error(case: Any, aim: tuple[bool, str]) -> None:
            aim_at_real_objects(case, alice, *aim)
            try:
                response = case.call(base_url=live_server.url, headers=headers)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:500]}"
                )
                case.validate_response(response, checks=SCHEMA_CHECKS)
            finally:
                # Runs made by generated requests each get a sandbox: release them as we go.
                wait_for_background_runs(30)
                sessions.forget_all(kill=True)

        no_server_error()
        covered.append(f"{operation.method.upper()} {operation.path}")

    assert len(covered) >= 17, covered
