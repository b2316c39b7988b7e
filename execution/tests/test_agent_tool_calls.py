"""POST /api/agents/<id>/tool-calls through DRF, the ToolExecutor and a real sandboxd.

Every tool runs for real; every refusal is checked for its status, its code and its audit
entry naming the agent; every row a call leaves (Execution, WorkspaceFile, PackageInstall)
names the agent.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.core.cache import cache

from execution.models import (
    Agent,
    Execution,
    PackageInstall,
    SecurityEvent,
    Source,
    Thread,
    WorkspaceFile,
)

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(240)]


@pytest.fixture
def agent(alice: Any) -> Agent:
    return Agent.objects.create(owner=alice, name="coder", allowed_tools=list(Agent.TOOL_NAMES))


@pytest.fixture
def client(jwt_client: Any, alice: Any, sandboxd: Any) -> Any:
    return jwt_client(alice)


def call(client: Any, agent: Agent, name: str, arguments: Any = None, **extra: Any) -> Any:
    body = {"name": name, "arguments": arguments, **extra}
    return client.post(f"/api/agents/{agent.id}/tool-calls", body, format="json")


def ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"name", "thread_id", "is_error", "text", "result"}
    return body


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return error


def audited(agent: Agent, code: str) -> SecurityEvent:
    event = SecurityEvent.objects.filter(agent=agent, code=code).latest("created_at")
    assert event.source == Source.AGENT
    return event


# --- each tool ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_execute_code_answers_text_and_the_execution_and_the_row_names_the_agent(
    client: Any, alice: Any, agent: Agent
) -> None:
    body = ok(call(client, agent, "execute_code", {"code": "print(6 * 7)", "language": "python"}))

    assert body["is_error"] is False
    assert body["text"].startswith("status: succeeded")
    assert "stdout:\n42" in body["text"]
    assert body["result"]["stdout"] == "42\n"
    assert body["result"]["agent_id"] == str(agent.id)
    row = Execution.objects.get(pk=body["result"]["id"])
    assert (row.agent, row.user, row.source) == (agent, alice, Source.AGENT)
    assert str(row.thread_id) == body["thread_id"]
    assert row.thread.owner == alice


@pytest.mark.django_db
def test_arguments_may_be_a_json_string_as_models_emit_them(client: Any, agent: Agent) -> None:
    arguments = json.dumps({"code": "console.log(2 ** 10)", "language": "javascript"})

    body = ok(call(client, agent, "execute_code", arguments))

    assert body["result"]["stdout"] == "1024\n"


@pytest.mark.django_db
def test_a_thread_id_keeps_the_kernel_state_between_calls(client: Any, agent: Agent) -> None:
    first = ok(call(client, agent, "execute_code", {"code": "n = 41", "language": "python"}))
    thread_id = first["thread_id"]

    top_level = ok(
        call(
            client, agent, "execute_code", {"code": "print(n + 1)", "language": "py"},
            thread_id=thread_id,
        )
    )  # fmt: skip
    in_arguments = ok(
        call(
            client, agent, "execute_code",
            {"code": "print(n + 2)", "language": "python", "thread_id": thread_id},
        )
    )  # fmt: skip

    assert (top_level["result"]["stdout"], top_level["thread_id"]) == ("42\n", thread_id)
    assert (in_arguments["result"]["stdout"], in_arguments["thread_id"]) == ("43\n", thread_id)


@pytest.mark.django_db
def test_a_code_error_is_a_tool_error_result_not_an_http_error(client: Any, agent: Agent) -> None:
    body = ok(call(client, agent, "execute_code", {"code": "1 / 0", "language": "python"}))

    assert body["is_error"] is True
    assert body["result"]["status"] == "failed"
    assert "error: ZeroDivisionError" in body["text"]
    assert "\x1b[" not in body["text"]


@pytest.mark.django_db
def test_a_run_over_its_timeout_is_an_error_result_saying_so(client: Any, agent: Agent) -> None:
    arguments = {"code": "import time\ntime.sleep(30)", "language": "python", "timeout": 1}

    body = ok(call(client, agent, "execute_code", arguments))

    assert body["is_error"] is True
    assert body["result"]["status"] == "timed_out"
    assert "The run was stopped after 1 s." in body["text"]


@pytest.mark.django_db
def test_write_read_and_list_files_work_in_one_thread_and_name_the_agent(
    client: Any, agent: Agent
) -> None:
    written = ok(
        call(client, agent, "write_file", {"path": "data/notes.txt", "content": "hello agent\n"})
    )
    thread_id = written["thread_id"]
    binary = base64.b64encode(b"\x00\xff\x10").decode()
    ok(
        call(
            client, agent, "write_file",
            {"path": "blob.bin", "content": binary, "encoding": "base64"}, thread_id=thread_id,
        )
    )  # fmt: skip

    read = ok(call(client, agent, "read_file", {"path": "data/notes.txt"}, thread_id=thread_id))
    read_binary = ok(call(client, agent, "read_file", {"path": "blob.bin"}, thread_id=thread_id))
    listed = ok(call(client, agent, "list_files", {"thread_id": thread_id}))
    code_sees_it = ok(
        call(
            client, agent, "execute_code",
            {"code": "cat data/notes.txt", "language": "bash"}, thread_id=thread_id,
        )
    )  # fmt: skip

    assert written["result"]["path"] == "data/notes.txt"
    assert read["result"]["content"] == "hello agent\n"
    assert read["text"].endswith("\nhello agent\n")
    assert (read_binary["result"]["encoding"], read_binary["result"]["content"]) == (
        "base64",
        binary,
    )
    assert [item["path"] for item in listed["result"]] == ["blob.bin", "data/notes.txt"]
    assert "data/notes.txt (12 bytes)" in listed["text"]
    assert code_sees_it["result"]["stdout"] == "hello agent\n"
    row = WorkspaceFile.objects.get(thread_id=thread_id, path="data/notes.txt")
    assert row.written_by == WorkspaceFile.WrittenBy.AGENT


@pytest.mark.django_db
def test_install_packages_installs_and_the_install_names_the_agent(
    client: Any, agent: Agent
) -> None:
    body = ok(call(client, agent, "install_packages", {"packages": ["six==1.17.0"]}))
    thread_id = body["thread_id"]
    used = ok(
        call(
            client, agent, "execute_code",
            {"code": "import six; print(six.__version__)", "language": "python"},
            thread_id=thread_id,
        )
    )  # fmt: skip

    assert body["is_error"] is False, body["text"]
    assert body["result"]["status"] == "succeeded"
    assert used["result"]["stdout"] == "1.17.0\n"
    install = PackageInstall.objects.get(pk=body["result"]["id"])
    assert install.agent == agent


# --- malformed and oversized ----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ('{"code": "print(1)", "language": ', "arguments_malformed"),
        ("[1, 2]", "arguments_not_object"),
        (["print(1)", "python"], "arguments_not_object"),
        ({"language": "python"}, "invalid_arguments"),
        ({"code": "print(1)", "language": "python", "shell": True}, "invalid_arguments"),
        ({"code": "print(1)", "language": "python", "thread_id": "nope"}, "invalid_arguments"),
    ],
)
def test_malformed_arguments_are_a_clear_400_and_audited(
    client: Any, agent: Agent, arguments: Any, code: str
) -> None:
    error = assert_error(call(client, agent, "execute_code", arguments), 400, code)

    assert audited(agent, code).kind == SecurityEvent.Kind.VALIDATION
    assert not Execution.objects.exists()
    if code == "invalid_arguments":
        assert error["details"]


@pytest.mark.django_db
def test_two_different_thread_ids_are_a_conflict(client: Any, alice: Any, agent: Agent) -> None:
    one, two = Thread.objects.create(owner=alice), Thread.objects.create(owner=alice)

    response = call(client, agent, "list_files", {"thread_id": str(one.id)}, thread_id=str(two.id))

    assert_error(response, 400, "thread_id_conflict")


@pytest.mark.django_db
def test_an_oversized_body_is_refused_with_413_before_it_is_read(
    client: Any, agent: Agent, settings: Any
) -> None:
    settings.EXECUTION_MAX_FILE_BYTES = 1000
    content = "x" * (70 * 1024)

    response = call(client, agent, "write_file", {"path": "big.txt", "content": content})

    error = assert_error(response, 413, "request_too_large")
    assert error["details"]["limit"] < error["details"]["size"]
    assert not WorkspaceFile.objects.exists()


@pytest.mark.django_db
def test_code_over_the_limit_is_a_413_and_a_rejected_run_naming_the_agent(
    client: Any, agent: Agent, settings: Any
) -> None:
    settings.EXECUTION_MAX_CODE_BYTES = 100

    response = call(client, agent, "execute_code", {"code": "#" * 200, "language": "python"})

    assert_error(response, 413, "code_too_large")
    run = Execution.objects.get()
    assert (run.status, run.agent, run.source) == (Execution.Status.REJECTED, agent, Source.AGENT)
    assert audited(agent, "code_too_large").execution == run


@pytest.mark.django_db
def test_a_policy_refusal_keeps_its_code_and_names_the_agent(client: Any, agent: Agent) -> None:
    response = call(client, agent, "write_file", {"path": "../escape.txt", "content": "x"})

    assert_error(response, 400, "path_traversal")
    assert audited(agent, "path_traversal").kind == SecurityEvent.Kind.VALIDATION


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_tool_the_agent_may_not_use_is_403_audited_and_not_run(client: Any, alice: Any) -> None:
    reader = Agent.objects.create(owner=alice, name="reader", allowed_tools=["list_files"])

    response = call(client, reader, "execute_code", {"code": "print(1)", "language": "python"})

    error = assert_error(response, 403, "tool_not_allowed")
    assert error["details"] == {"agent_id": str(reader.id), "tool": "execute_code"}
    event = audited(reader, "tool_not_allowed")
    assert (event.kind, event.user) == (SecurityEvent.Kind.AUTHORIZATION, alice)
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_an_unknown_tool_is_a_400_listing_the_tools(client: Any, agent: Agent) -> None:
    error = assert_error(call(client, agent, "delete_everything", {}), 400, "tool_unknown")

    assert error["details"]["tools"] == list(Agent.TOOL_NAMES)
    assert audited(agent, "tool_unknown")


@pytest.mark.django_db
def test_an_inactive_agent_is_403_and_audited(client: Any, agent: Agent) -> None:
    agent.is_active = False
    agent.save()

    response = call(client, agent, "execute_code", {"code": "print(1)", "language": "python"})

    assert_error(response, 403, "agent_inactive")
    assert audited(agent, "agent_inactive").kind == SecurityEvent.Kind.AUTHORIZATION
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_another_users_agent_is_404_and_audited(
    jwt_client: Any, charlie: Any, agent: Agent, sandboxd: Any
) -> None:
    response = call(
        jwt_client(charlie), agent, "execute_code", {"code": "print(1)", "language": "python"}
    )

    assert_error(response, 404, "agent_not_found")
    assert SecurityEvent.objects.get(code="agent_not_owned").user == charlie
    assert not Execution.objects.exists()


@pytest.mark.django_db
def test_another_users_thread_is_404_and_audited(client: Any, charlie: Any, agent: Agent) -> None:
    foreign = Thread.objects.create(owner=charlie)

    response = call(client, agent, "list_files", {"thread_id": str(foreign.id)})

    assert_error(response, 404, "thread_not_found")
    assert audited(agent, "thread_not_owned").details["object_id"] == str(foreign.id)


# --- rate limits ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_execute_code_calls_share_the_execute_rate_limit(
    client: Any, agent: Agent, settings: Any
) -> None:
    settings.EXECUTION_THROTTLE_RATE = "2/minute"
    cache.clear()
    arguments = {"language": "python"}  # refused after the throttle: cheap to count

    statuses = [call(client, agent, "execute_code", arguments).status_code for _ in range(2)]
    third = call(client, agent, "execute_code", arguments)
    other_tool = call(client, agent, "list_files", {"thread_id": None})

    assert statuses == [400, 400]
    assert_error(third, 429, "throttled")
    assert int(third["Retry-After"]) >= 1
    assert other_tool.status_code == 400  # list_files has no rate limit of its own
    cache.clear()
