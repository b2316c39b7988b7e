"""The OpenAPI description at /api/schema/: valid, complete, and honest about answers."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

EXPECTED_PATHS = {
    "/api/code/execute": {"post"},
    "/api/code/write-file": {"post"},
    "/api/code/read-file": {"post"},
    "/api/code/install-packages": {"post"},
    "/api/threads/": {"get", "post"},
    "/api/threads/{thread_id}/": {"get", "patch", "delete"},
    "/api/threads/{thread_id}/executions/": {"get"},
    "/api/threads/{thread_id}/files/": {"get", "post"},
    "/api/threads/{thread_id}/files/{file_path}": {"get", "delete"},
    "/api/threads/{thread_id}/packages/": {"get"},
    "/api/executions/{execution_id}/": {"get"},
    "/api/executions/{execution_id}/cancel": {"post"},
}


@pytest.fixture
def schema(api_client: Any, db: None) -> dict[str, Any]:
    response = api_client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_the_schema_generates_without_warnings_or_errors() -> None:
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    assert out.getvalue().startswith("openapi: 3")


def test_the_schema_lists_every_execution_endpoint_and_method(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    for path, methods in EXPECTED_PATHS.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    assert "put" not in paths["/api/threads/{thread_id}/"]


def test_the_schema_documents_the_answers_of_execute(schema: dict[str, Any]) -> None:
    responses = schema["paths"]["/api/code/execute"]["post"]["responses"]
    assert {"201", "202", "400", "401", "403", "404", "413", "429", "503"} <= set(responses)
    error = responses["400"]["content"]["application/json"]["schema"]["$ref"]
    assert error.endswith("/Error")
    components = schema["components"]["schemas"]
    assert set(components["ErrorBody"]["properties"]) == {"code", "message", "details"}
    assert {"stdout", "status", "websocket_url", "truncated"} <= set(
        components["Execution"]["properties"]
    )


def test_the_schema_says_downloads_are_raw_bytes(schema: dict[str, Any]) -> None:
    download = schema["paths"]["/api/threads/{thread_id}/files/{file_path}"]["get"]
    assert "application/octet-stream" in download["responses"]["200"]["content"]


def test_a_run_refused_for_its_language_reads_back_within_the_schema(
    schema: dict[str, Any], jwt_client: Any, alice: Any
) -> None:
    # The refused run stores "" for the language it could not accept (the value asked for is
    # in the audit); GET must still answer inside the documented Execution schema.
    client = jwt_client(alice)
    refused = client.post(
        "/api/code/execute", {"code": "1", "language": "cobol"}, format="json"
    ).json()
    execution_id = refused["error"]["details"]["execution_id"]

    stored = client.get(f"/api/executions/{execution_id}/").json()

    assert stored["status"] == "rejected" and stored["language"] == ""
    language = schema["components"]["schemas"]["Execution"]["properties"]["language"]
    allowed = {
        value
        for choice in language["oneOf"]
        for value in schema["components"]["schemas"][choice["$ref"].rsplit("/", 1)[1]]["enum"]
    }
    assert "" in allowed and {"python", "javascript", "typescript", "bash"} <= allowed
