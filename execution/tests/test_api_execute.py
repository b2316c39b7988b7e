"""POST /api/code/execute and the execution resources, through DRF with a real sandboxd."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.core.cache import cache

from execution.models import Execution, SecurityEvent, Thread, WorkspaceFile

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(180)]

EXECUTE = "/api/code/execute"


@pytest.fixture
def client(jwt_client: Any, alice: Any, sandboxd: Any) -> Any:
    return jwt_client(alice)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("language", "code", "stdout"),
    [
        ("python", "print(sum(range(10)))", "45\n"),
        ("javascript", "console.log([3, 4].reduce((a, b) => a * b))", "12\n"),
        (
            "typescript",
            "function twice(x: number): number { return 2 * x }\nconsole.log(twice(21))",
            "42\n",
        ),
        ("bash", "for i in 1 2 3; do printf $i; done; echo", "123\n"),
    ],
)
def test_it_runs_code_in_each_language_and_answers_201_with_the_finished_execution(
    client: Any, alice: Any, language: str, code: str, stdout: str
) -> None:
    response = client.post(EXECUTE, {"code": code, "language": language}, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["status"], body["stdout"], body["language"]) == ("succeeded", stdout, language)
    assert body["websocket_url"] == f"ws://testserver/ws/executions/{body['id']}/"
    assert body["url"] == f"/api/executions/{body['id']}/"
    thread = Thread.objects.get(pk=body["thread_id"])
    assert thread.owner == alice
    assert Execution.objects.get(pk=body["id"]).source == "api"


@pytest.mark.django_db
def test_it_keeps_variables_between_runs_of_a_thread(client: Any) -> None:
    first = client.post(EXECUTE, {"code": "answer = 42", "language": "python"}, format="json")
    thread_id = first.json()["thread_id"]
    second = client.post(
        EXECUTE,
        {"code": "print(answer)", "language": "python", "thread_id": thread_id},
        format="json",
    )

    assert second.status_code == 201
    assert (second.json()["stdout"], second.json()["thread_id"]) == ("42\n", thread_id)


@pytest.mark.django_db
def test_a_code_error_is_a_failed_execution_not_an_http_error(client: Any) -> None:
    response = client.post(
        EXECUTE, {"code": "raise ValueError('nope')", "language": "python"}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "failed"
    assert (body["error"]["name"], body["error"]["value"]) == ("ValueError", "nope")


@pytest.mark.django_db
def test_it_times_out_a_run_within_the_requested_timeout(client: Any) -> None:
    response = client.post(
        EXECUTE, {"code": "while True: pass", "language": "python", "timeout": 1}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["status"] == "timed_out"
    assert response.json()["timeout_seconds"] == 1.0


@pytest.mark.django_db(transaction=True)
def test_wait_false_answers_202_with_the_websocket_url_and_the_run_finishes(client: Any) -> None:
    response = client.post(
        EXECUTE,
        {
            "code": "import time\ntime.sleep(0.3)\nprint('later')",
            "language": "python",
            "wait": False,
        },
        format="json",
    )

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued"
    assert body["websocket_url"] == f"ws://testserver/ws/executions/{body['id']}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        detail = client.get(body["url"]).json()
        if detail["status"] == "succeeded":
            break
        time.sleep(0.1)
    assert (detail["status"], detail["stdout"]) == ("succeeded", "later\n")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"code": "print(1)", "language": "cobol"}, "unsupported_language"),
        ({"code": "   ", "language": "python"}, "code_empty"),
        ({"code": "print(1)", "language": "python", "timeout": 10_000}, "timeout_out_of_range"),
        ({"code": "print(1)", "language": "python", "timeout": -1}, "timeout_out_of_range"),
    ],
)
def test_it_refuses_invalid_runs_with_400_a_rejected_execution_and_an_audit_entry(
    client: Any, payload: dict[str, Any], code: str
) -> None:
    error = assert_error(client.post(EXECUTE, payload, format="json"), 400, code)

    rejected = Execution.objects.get(pk=error["details"]["execution_id"])
    assert rejected.status == "rejected"
    assert SecurityEvent.objects.filter(code=code, execution=rejected, kind="validation").exists()


@pytest.mark.django_db
def test_it_refuses_code_over_the_size_limit_with_413(client: Any, settings: Any) -> None:
    settings.EXECUTION_MAX_CODE_BYTES = 100
    response = client.post(EXECUTE, {"code": "#" * 101, "language": "python"}, format="json")

    assert_error(response, 413, "code_too_large")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"code": "print(1)"},
        {"language": "python"},
        {"code": 1, "language": "python", "thread_id": "x"},
    ],
)
def test_it_answers_malformed_requests_with_400_invalid_request(
    client: Any, payload: dict[str, Any]
) -> None:
    error = assert_error(client.post(EXECUTE, payload, format="json"), 400, "invalid_request")
    assert error["details"]


@pytest.mark.django_db
def test_it_answers_a_body_that_is_not_json_with_400(client: Any) -> None:
    response = client.post(EXECUTE, data="{not json", content_type="application/json")
    assert_error(response, 400, "malformed_request")


@pytest.mark.django_db
def test_it_answers_401_without_credentials(api_client: Any) -> None:
    response = api_client.post(EXECUTE, {"code": "print(1)", "language": "python"}, format="json")

    assert_error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_it_answers_404_for_another_users_thread_and_audits_it(client: Any, charlie: Any) -> None:
    theirs = Thread.objects.create(owner=charlie)
    response = client.post(
        EXECUTE,
        {"code": "print(1)", "language": "python", "thread_id": str(theirs.pk)},
        format="json",
    )

    assert_error(response, 404, "thread_not_found")
    assert SecurityEvent.objects.filter(kind="authorization", code="thread_not_owned").exists()
    assert not Execution.objects.filter(thread=theirs).exists()


@pytest.mark.django_db
def test_it_throttles_runs_per_user_with_429_and_retry_after(client: Any, settings: Any) -> None:
    settings.EXECUTION_THROTTLE_RATE = "2/minute"
    cache.clear()
    try:
        for _ in range(2):
            assert (
                client.post(EXECUTE, {"code": "1", "language": "python"}, format="json").status_code
                == 201
            )
        response = client.post(EXECUTE, {"code": "1", "language": "python"}, format="json")
    finally:
        cache.clear()

    assert_error(response, 429, "throttled")
    assert 0 < int(response["Retry-After"]) <= 60
    assert SecurityEvent.objects.filter(kind="quota", code="throttled").exists()


@pytest.mark.django_db
def test_it_answers_429_with_retry_after_at_the_concurrency_cap(
    client: Any, alice: Any, settings: Any
) -> None:
    settings.EXECUTION_USER_CONCURRENCY = 1
    thread = Thread.objects.create(owner=alice)
    Execution.objects.create(
        thread=thread, user=alice, language="python", code="x", status="running"
    )

    response = client.post(EXECUTE, {"code": "1", "language": "python"}, format="json")

    error = assert_error(response, 429, "concurrency_limit_user")
    assert response["Retry-After"] == str(settings.EXECUTION_CONCURRENCY_RETRY_AFTER)
    assert error["details"]["limit"] == 1


# --- executions as resources ----------------------------------------------------------------


@pytest.mark.django_db
def test_it_lists_a_threads_executions_newest_first_and_filtered(client: Any) -> None:
    thread_id = client.post(EXECUTE, {"code": "1", "language": "python"}, format="json").json()[
        "thread_id"
    ]
    for code, language in [("2", "python"), ("1/0", "python"), ("echo b", "bash")]:
        client.post(
            EXECUTE, {"code": code, "language": language, "thread_id": thread_id}, format="json"
        )
    url = f"/api/threads/{thread_id}/executions/"

    everything = client.get(url).json()
    failed = client.get(url, {"status": "failed"}).json()
    bash = client.get(url, {"language": "bash"}).json()

    assert everything["count"] == 4
    assert [e["code"] for e in everything["results"]] == ["echo b", "1/0", "2", "1"]
    assert [e["code"] for e in failed["results"]] == ["1/0"]
    assert [e["code"] for e in bash["results"]] == ["echo b"]
    assert_error(client.get(url, {"status": "exploded"}), 400, "invalid_filter")


@pytest.mark.django_db
def test_it_pages_a_threads_executions(client: Any, alice: Any) -> None:
    thread = Thread.objects.create(owner=alice)
    for i in range(55):
        Execution.objects.create(
            thread=thread, user=alice, language="python", code=str(i), status="succeeded"
        )

    first = client.get(f"/api/threads/{thread.pk}/executions/").json()
    second = client.get(first["next"]).json()

    assert (first["count"], len(first["results"]), len(second["results"])) == (55, 50, 5)
    assert second["next"] is None


@pytest.mark.django_db
def test_it_shows_one_execution_and_404s_another_users(
    client: Any, charlie: Any, jwt_client: Any
) -> None:
    body = client.post(
        EXECUTE, {"code": "print('mine')", "language": "python"}, format="json"
    ).json()

    assert client.get(f"/api/executions/{body['id']}/").json()["stdout"] == "mine\n"
    assert_error(
        jwt_client(charlie).get(f"/api/executions/{body['id']}/"), 404, "execution_not_found"
    )


@pytest.mark.django_db(transaction=True)
def test_it_cancels_a_running_execution(client: Any) -> None:
    started = client.post(
        EXECUTE,
        {
            "code": "import time\nprint('go', flush=True)\ntime.sleep(30)",
            "language": "python",
            "wait": False,
        },
        format="json",
    ).json()
    deadline = time.monotonic() + 30
    while client.get(started["url"]).json()["stdout"] != "go\n" and time.monotonic() < deadline:
        time.sleep(0.05)

    response = client.post(f"/api/executions/{started['id']}/cancel")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled"
    assert_error(
        client.post(f"/api/executions/{started['id']}/cancel"), 409, "execution_not_cancellable"
    )


@pytest.mark.django_db
def test_it_answers_429_at_the_global_cap_even_for_a_user_with_no_runs(
    client: Any, bob: Any, settings: Any
) -> None:
    settings.EXECUTION_GLOBAL_CONCURRENCY = 1
    thread = Thread.objects.create(owner=bob)
    Execution.objects.create(thread=thread, user=bob, language="python", code="x", status="queued")

    response = client.post(EXECUTE, {"code": "1", "language": "python"}, format="json")

    assert_error(response, 429, "concurrency_limit_global")
    assert "Retry-After" in response


@pytest.mark.django_db
def test_it_answers_403_when_the_agent_may_not_run_code_and_404_for_another_users_agent(
    client: Any, alice: Any, charlie: Any
) -> None:
    from execution.models import Agent

    reader = Agent.objects.create(owner=alice, name="reader", allowed_tools=["read_file"])
    theirs = Agent.objects.create(owner=charlie, name="coder", allowed_tools=["execute_code"])
    payload = {"code": "print(1)", "language": "python"}

    refused = client.post(EXECUTE, {**payload, "agent_id": str(reader.pk)}, format="json")
    foreign = client.post(EXECUTE, {**payload, "agent_id": str(theirs.pk)}, format="json")

    assert_error(refused, 403, "tool_not_allowed")
    assert_error(foreign, 404, "agent_not_found")
    assert SecurityEvent.objects.filter(kind="authorization", code="tool_not_allowed").exists()


@pytest.mark.django_db
def test_an_allowed_agent_runs_code_and_is_recorded_on_the_execution(
    client: Any, alice: Any
) -> None:
    from execution.models import Agent

    coder = Agent.objects.create(owner=alice, name="coder", allowed_tools=["execute_code"])
    response = client.post(
        EXECUTE,
        {"code": "print('agent')", "language": "python", "agent_id": str(coder.pk)},
        format="json",
    )

    assert response.status_code == 201
    assert (response.json()["agent_id"], response.json()["source"]) == (str(coder.pk), "agent")


@pytest.mark.django_db
def test_any_bytes_a_program_prints_are_stored_and_answered_exactly(client: Any) -> None:
    """NUL, bytes that are not UTF-8 (each arrives as the lone surrogate U+DC00+byte) and an
    exception whose message holds a lone surrogate: stored on this pass's database and
    answered as JSON that decodes to exactly what the program wrote."""
    printed = b"ok\xff\xfe\x00\x80 end \xc3\xa9\n"
    shell = "printf '" + "".join(f"\\{byte:03o}" for byte in printed) + "'"
    response = client.post(EXECUTE, {"code": shell, "language": "bash"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["stdout"].encode("utf-8", "surrogateescape") == printed
    stored = Execution.objects.get(pk=body["id"])
    assert stored.stdout.encode("utf-8", "surrogateescape") == printed

    code = "raise ValueError('nul \\x00 and \\udcff')"
    response = client.post(EXECUTE, {"code": code, "language": "python"}, format="json")
    body = response.json()
    assert body["status"] == "failed"
    assert body["error"]["value"] == "nul \x00 and \udcff"
    assert Execution.objects.get(pk=body["id"]).error["value"] == "nul \x00 and \udcff"


@pytest.mark.django_db
def test_a_file_name_that_is_not_utf8_is_skipped_by_the_sync_and_the_thread_goes_on(
    client: Any,
) -> None:
    """The sandbox lists a name that is not UTF-8 with U+FFFD (as E2B's envd does): the sync
    after the run stores the other files, reports that one as skipped, and the thread's next
    run works (issue 14, item 9)."""
    code = "printf x > \"bad-$(printf '\\xff').txt\"; echo kept > good.txt"
    response = client.post(EXECUTE, {"code": code, "language": "bash"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "succeeded"
    thread_id = body["thread_id"]
    stored = Execution.objects.get(pk=body["id"])
    sync = stored.details["file_sync"]
    assert sync["created"] == ["good.txt"]
    assert [(entry["path"], entry["reason"]) for entry in sync["skipped"]] == [
        ("bad-\ufffd.txt", "unreadable")
    ]
    assert list(
        WorkspaceFile.objects.filter(thread_id=thread_id).values_list("path", flat=True)
    ) == ["good.txt"]

    again = {"code": "print(open('good.txt').read(), end='')", "thread_id": thread_id}
    response = client.post(EXECUTE, {**again, "language": "python"}, format="json")
    assert (response.json()["status"], response.json()["stdout"]) == ("succeeded", "kept\n")
