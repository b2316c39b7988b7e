"""LOG_FORMAT=json: one JSON line per request and per run, with their ids, duration, outcome."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from django.test import Client

from execution.monitoring.logs import JsonFormatter

FORMATTER = JsonFormatter()


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[dict[str, Any]]:
    """The captured records of `logger` as the JSON formatter writes them (one line each)."""
    formatted = [FORMATTER.format(r) for r in caplog.records if r.name == logger]
    assert all("\n" not in line for line in formatted)
    return [json.loads(line) for line in formatted]


@pytest.mark.django_db
def test_each_request_gets_one_json_line_with_its_ids_duration_and_outcome(
    client: Client, alice: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.LOG_FORMAT = "json"
    client.force_login(alice)
    with caplog.at_level(logging.INFO, logger="atlaschat.request"):
        response = client.get("/api/auth/me/", HTTP_X_REQUEST_ID="req-123")
        missing = client.get(f"/api/threads/{'0' * 8}-0000-0000-0000-{'0' * 12}/")
    assert response["X-Request-ID"] == "req-123"
    first, second = lines(caplog, "atlaschat.request")
    assert first["request_id"] == "req-123"
    assert (first["event"], first["method"], first["path"]) == ("request", "GET", "/api/auth/me/")
    assert (first["status"], first["outcome"], first["user_id"]) == (200, "ok", alice.pk)
    assert isinstance(first["duration_ms"], float)
    # A request id is made when none (or a malformed one) comes; the thread id is logged.
    assert second["request_id"] == missing["X-Request-ID"]
    assert len(second["request_id"]) == 32
    assert (second["status"], second["outcome"]) == (404, "refused")
    assert second["thread_id"] == f"{'0' * 8}-0000-0000-0000-{'0' * 12}"


@pytest.mark.django_db
def test_plain_text_logs_have_no_request_lines(
    client: Client, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.LOG_FORMAT = "text"
    with caplog.at_level(logging.INFO, logger="atlaschat.request"):
        response = client.get("/healthz", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert lines(caplog, "atlaschat.request") == []
    # An id that could forge log lines is replaced.
    assert "\n" not in response["X-Request-ID"] and len(response["X-Request-ID"]) == 32


@pytest.mark.sandboxd
@pytest.mark.timeout(180)
@pytest.mark.django_db
def test_each_run_gets_one_json_line_with_its_ids_duration_and_outcome(
    jwt_client: Any, alice: Any, sandboxd: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="atlaschat.run"):
        body = (
            jwt_client(alice)
            .post("/api/code/execute", {"code": "print(1)", "language": "python"}, format="json")
            .json()
        )
    (line,) = lines(caplog, "atlaschat.run")
    assert line["event"] == "run"
    assert line["execution_id"] == body["id"]
    assert line["thread_id"] == body["thread_id"]
    assert line["user_id"] == alice.pk
    assert line["sandbox_id"] == body["details"]["sandbox_id"]
    assert line["outcome"] == "succeeded"
    assert line["duration_ms"] == body["duration_ms"]
    assert line["cpu_time_ms"] == body["cpu_time_ms"]
    assert (line["language"], line["source"]) == ("python", "api")
