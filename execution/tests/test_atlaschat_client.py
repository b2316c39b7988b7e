"""The Python client (`atlaschat_client/`) against a live daphne and a real sandboxd.

One daphne process serves the project in front of the session's sandboxd, on a database this
process reads too (live.py). Each client method is called over real HTTP and websockets and
its typed answer, or the exception it maps an error to, is checked against the rows the server
wrote. The install throttle is low on this server (INSTALL_THROTTLE_RATE) so a 429 is cheap to
reach.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from atlaschat_client.errors import ServerError, error_from_response
from rest_framework_simplejwt.tokens import AccessToken

from atlaschat_client import (
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    StreamError,
    TokenPair,
)
from execution.models import Execution, SecurityEvent, Source
from execution.tests.live import LiveUsers, create_user, live_users_stack

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(300)]

PASSWORD = "a-long-test-password-for-the-client"
INSTALL_RATE = 3


@pytest.fixture(scope="module")
def live(
    django_db_setup: None,
    django_db_blocker: Any,
    sandboxd_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveUsers]:
    """daphne + a shared database + alice (whose password is PASSWORD) and charlie."""
    with (
        django_db_blocker.unblock(),
        live_users_stack(
            tmp_path_factory.mktemp("client-live"),
            sandboxd_server,
            extra_env={"INSTALL_THROTTLE_RATE": f"{INSTALL_RATE}/minute"},
        ) as live,
    ):
        live.alice.set_password(PASSWORD)
        live.alice.save(using=live.alias)
        yield live


def access_token(user: Any, *, expired: bool = False) -> str:
    token = AccessToken.for_user(user)
    if expired:
        token.set_exp(lifetime=-timedelta(minutes=1))
    return str(token)


@pytest.fixture
def alice(live: LiveUsers) -> Iterator[Client]:
    with Client(live.server.http_url, access_token=access_token(live.alice)) as client:
        yield client


@pytest.fixture
def charlie(live: LiveUsers) -> Iterator[Client]:
    with Client(live.server.http_url, access_token=access_token(live.charlie)) as client:
        yield client


def execution_row(live: LiveUsers, execution_id: str) -> Execution:
    return Execution.objects.using(live.alias).get(pk=execution_id)


# --- accounts -------------------------------------------------------------------------------


def test_login_keeps_the_token_pair_and_authenticates_the_next_calls(live: LiveUsers) -> None:
    with Client(live.server.http_url) as client:
        pair = client.login("alice", PASSWORD)
        assert client.credentials.access == pair.access
        assert client.me().username == "alice"


def test_a_wrong_password_raises_authentication_error_with_the_apis_code(live: LiveUsers) -> None:
    with Client(live.server.http_url) as client, pytest.raises(AuthenticationError) as refused:
        client.login("alice", "not-the-password")
    assert refused.value.status == 401
    assert refused.value.code == refused.value.body["error"]["code"]
    assert client.credentials.access is None


def test_refresh_rotates_the_pair_and_the_old_refresh_token_stops_working(
    live: LiveUsers,
) -> None:
    seen: list[TokenPair] = []
    with Client(live.server.http_url, on_tokens=seen.append) as client:
        first = client.login("alice", PASSWORD)
        second = client.refresh()
        assert second.refresh != first.refresh
        assert client.credentials.refresh == second.refresh
        assert seen == [first, second]
        with (
            Client(live.server.http_url, refresh_token=first.refresh) as stale,
            pytest.raises(AuthenticationError) as refused,
        ):
            stale.refresh()
        assert refused.value.status == 401
        assert client.me().username == "alice"


def test_an_expired_access_token_is_renewed_before_the_call(live: LiveUsers) -> None:
    seen: list[TokenPair] = []
    with Client(live.server.http_url) as login:
        pair = login.login("alice", PASSWORD)
    with Client(
        live.server.http_url,
        access_token=access_token(live.alice, expired=True),
        refresh_token=pair.refresh,
        on_tokens=seen.append,
    ) as client:
        assert client.me().username == "alice"
    assert len(seen) == 1
    assert seen[0].refresh != pair.refresh


def test_a_401_is_retried_once_after_a_refresh(live: LiveUsers) -> None:
    with Client(live.server.http_url) as login:
        pair = login.login("alice", PASSWORD)
    # A token whose expiry cannot be read ahead: the server's 401 makes the client refresh.
    with Client(
        live.server.http_url, access_token="not.a-token.at-all", refresh_token=pair.refresh
    ) as client:
        assert client.me().username == "alice"
        assert client.credentials.access != "not.a-token.at-all"


def test_no_token_raises_authentication_error(live: LiveUsers) -> None:
    with Client(live.server.http_url) as client, pytest.raises(AuthenticationError) as refused:
        client.list_threads()
    assert refused.value.code == "not_authenticated"


def test_logout_blacklists_the_refresh_token(live: LiveUsers) -> None:
    with Client(live.server.http_url) as client:
        pair = client.login("alice", PASSWORD)
        client.logout()
        assert client.credentials.refresh is None
    with (
        Client(live.server.http_url, refresh_token=pair.refresh) as stale,
        pytest.raises(AuthenticationError),
    ):
        stale.refresh()


# --- executing ------------------------------------------------------------------------------


def test_execute_waits_for_the_run_and_keeps_the_threads_variables(
    live: LiveUsers, alice: Client
) -> None:
    first = alice.execute("x = 6 * 7\nprint(x)")
    assert first.status == "succeeded"
    assert first.stdout == "42\n"
    assert first.thread_id
    second = alice.execute("print(x + 1)", thread_id=first.thread_id)
    assert second.stdout == "43\n"
    row = execution_row(live, second.id)
    assert row.source == Source.API
    assert str(row.thread_id) == first.thread_id
    alice.delete_thread(first.thread_id)


def test_a_failing_run_is_a_failed_execution_with_the_error(alice: Client) -> None:
    run = alice.execute("raise ValueError('boom')")
    assert run.status == "failed"
    assert run.error is not None
    assert run.error["name"] == "ValueError"
    assert run.thread_id
    alice.delete_thread(run.thread_id)


def test_a_refused_run_raises_invalid_request_with_the_policy_code(alice: Client) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        alice.execute("print(1)", language="cobol")
    assert refused.value.status == 400
    assert refused.value.code == "unsupported_language"
    assert "python" in refused.value.details["allowed"]


def test_stream_yields_the_runs_events_in_order_as_they_happen(
    live: LiveUsers, alice: Client
) -> None:
    thread = alice.create_thread("streaming")
    code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.2)\n"
    events = list(alice.stream(code, thread_id=thread.id))
    types = [event.type for event in events]
    assert types[0] == "execution"
    assert types[1] == "status" and events[1].status == "running"
    assert types[-1] == "done" and events[-1].status == "succeeded"
    assert "".join(event.text for event in events if event.type == "stdout") == "0\n1\n2\n"
    # In order: seqs never go back (frames caught up from the database, should the channel
    # layer drop some under load, share the seq of the last stored event, hence not strict).
    seqs = [event.seq for event in events]
    assert seqs == sorted(seqs) and seqs[0] == 0 and seqs[-1] > seqs[0]
    assert {event.execution_id for event in events} == {events[0].execution_id}
    row = execution_row(live, events[0].execution_id)
    assert row.stdout == "0\n1\n2\n"
    assert row.source == Source.WEBSOCKET
    alice.delete_thread(thread.id)


def test_a_refused_stream_request_raises_stream_error_with_the_code(alice: Client) -> None:
    thread = alice.create_thread()
    with pytest.raises(StreamError) as refused:
        list(alice.stream("print(1)", thread_id=thread.id, language="cobol"))
    assert refused.value.code == "unsupported_language"
    alice.delete_thread(thread.id)


def test_streaming_another_users_thread_raises_stream_error_not_found(
    alice: Client, charlie: Client
) -> None:
    thread = alice.create_thread()
    with pytest.raises(StreamError) as refused:
        list(charlie.stream("print(1)", thread_id=thread.id))
    assert refused.value.code == "not_found"
    assert refused.value.details["close_code"] == 4404
    alice.delete_thread(thread.id)


def test_start_execution_answers_at_once_and_watch_follows_the_run_to_its_end(
    alice: Client,
) -> None:
    started = alice.start_execution("import time\ntime.sleep(0.3)\nprint('late')")
    assert started.status in {"queued", "running"}
    events = list(alice.watch(started.id))
    assert events[-1].type == "done"
    assert events[-1].status == "succeeded"
    assert "late" in "".join(event.text for event in events if event.type == "stdout")
    assert alice.get_execution(started.id).stdout == "late\n"
    alice.delete_thread(started.thread_id)


def test_cancelling_a_finished_run_raises_conflict_error(alice: Client) -> None:
    run = alice.execute("print(1)")
    with pytest.raises(ConflictError) as refused:
        alice.cancel_execution(run.id)
    assert refused.value.status == 409
    assert refused.value.code == "execution_not_cancellable"
    assert run.thread_id
    alice.delete_thread(run.thread_id)


def test_cancel_interrupts_a_running_run(alice: Client) -> None:
    started = alice.start_execution("import time\ntime.sleep(60)")
    for event in alice.watch(started.id):
        if event.type == "status" and event.status == "running":
            alice.cancel_execution(started.id)
        if event.type == "done":
            assert event.status == "cancelled"
    assert alice.get_execution(started.id).status == "cancelled"
    alice.delete_thread(started.thread_id)


# --- threads --------------------------------------------------------------------------------


def test_threads_are_created_listed_renamed_and_deleted(alice: Client) -> None:
    thread = alice.create_thread("first title")
    assert alice.get_thread(thread.id).title == "first title"
    assert alice.rename_thread(thread.id, "second title").title == "second title"
    listed = alice.list_threads()
    assert thread.id in [item.id for item in listed.results]
    alice.execute("print(1)", thread_id=thread.id)
    alice.execute("print(2)", language="bash", thread_id=thread.id)
    runs = alice.list_executions(thread.id, language="bash")
    assert [item.code for item in runs.results] == ["print(2)"]
    alice.delete_thread(thread.id)
    with pytest.raises(NotFoundError) as gone:
        alice.get_thread(thread.id)
    assert gone.value.code == "thread_not_found"


def test_another_users_thread_is_not_found_for_every_method(alice: Client, charlie: Client) -> None:
    thread = alice.create_thread()
    for attempt in (
        lambda: charlie.get_thread(thread.id),
        lambda: charlie.execute("print(1)", thread_id=thread.id),
        lambda: charlie.list_files(thread.id),
        lambda: charlie.read_file(thread.id, "a.txt"),
        lambda: charlie.list_packages(thread.id),
    ):
        with pytest.raises(NotFoundError) as refused:
            attempt()
        assert refused.value.code == "thread_not_found"
    alice.delete_thread(thread.id)


# --- files ----------------------------------------------------------------------------------


def test_files_round_trip_as_text_and_bytes(alice: Client) -> None:
    written = alice.write_file("notes/a.txt", "héllo\n")
    thread_id = written.thread_id
    assert written.size == len("héllo\n".encode())
    binary = bytes(range(256))
    alice.write_file("data.bin", binary, thread_id=thread_id)
    text = alice.read_file(thread_id, "notes/a.txt")
    assert (text.encoding, text.content) == ("utf-8", "héllo\n")
    raw = alice.read_file(thread_id, "data.bin")
    assert raw.encoding == "base64"
    assert raw.data == binary
    uploaded = alice.upload_file(thread_id, "up/load.csv", b"a,b\n1,2\n")
    assert uploaded.path == "up/load.csv"
    assert alice.download_file(thread_id, "up/load.csv") == b"a,b\n1,2\n"
    paths = [row.path for row in alice.list_files(thread_id)]
    assert paths == ["data.bin", "notes/a.txt", "up/load.csv"]
    # The code sees what the client wrote.
    assert alice.execute("print(open('notes/a.txt').read())", thread_id=thread_id).stdout == (
        "héllo\n\n"
    )
    alice.delete_file(thread_id, "notes/a.txt")
    with pytest.raises(NotFoundError) as gone:
        alice.read_file(thread_id, "notes/a.txt")
    assert gone.value.code == "file_not_found"
    alice.delete_thread(thread_id)


def test_a_path_outside_the_workspace_raises_invalid_request(alice: Client) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        alice.write_file("../escape.txt", "x")
    assert refused.value.code == "path_traversal"


# --- packages -------------------------------------------------------------------------------


def test_install_packages_installs_and_lists_and_the_package_imports(alice: Client) -> None:
    install = alice.install_packages(["six==1.17.0"])
    assert install.status == "succeeded", install.log
    assert alice.execute(
        "import six; print(six.__version__)", thread_id=install.thread_id
    ).stdout == ("1.17.0\n")
    listed = alice.list_packages(install.thread_id)
    assert [row.packages for row in listed] == [["six==1.17.0"]]
    alice.delete_thread(install.thread_id)


def test_a_shell_in_a_package_spec_raises_invalid_request(alice: Client) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        alice.install_packages(["six; rm -rf /"])
    assert refused.value.code.startswith("package_spec")


def test_too_many_install_requests_raise_rate_limit_error_with_retry_after(
    charlie: Client,
) -> None:
    with pytest.raises(RateLimitError) as limited:
        for _ in range(INSTALL_RATE + 1):
            with pytest.raises(InvalidRequestError):
                charlie.install_packages(["not a package spec!"])
    assert limited.value.status == 429
    assert limited.value.code == "throttled"
    assert limited.value.retry_after is not None and limited.value.retry_after >= 1


# --- agents ---------------------------------------------------------------------------------


def test_agents_are_defined_and_list_exactly_their_allowed_tools(alice: Client) -> None:
    agent = alice.create_agent("client-coder", allowed_tools=["read_file", "execute_code"])
    assert agent.allowed_tools == ["execute_code", "read_file"]
    assert agent.id in [row.id for row in alice.list_agents()]
    openai = alice.agent_tools(agent.id)
    assert [tool["function"]["name"] for tool in openai] == ["execute_code", "read_file"]
    anthropic = alice.agent_tools(agent.id, format="anthropic")
    assert [tool["name"] for tool in anthropic] == ["execute_code", "read_file"]
    changed = alice.update_agent(agent.id, allowed_tools=["list_files"], description="d")
    assert (changed.allowed_tools, changed.description) == (["list_files"], "d")
    assert alice.get_agent(agent.id).allowed_tools == ["list_files"]
    alice.delete_agent(agent.id)
    with pytest.raises(NotFoundError) as gone:
        alice.get_agent(agent.id)
    assert gone.value.code == "agent_not_found"


def test_a_tool_call_runs_as_the_agent_and_a_disallowed_one_is_refused_and_audited(
    live: LiveUsers, alice: Client
) -> None:
    agent = alice.create_agent("client-runner", allowed_tools=["execute_code"])
    result = alice.call_tool(
        agent.id, "execute_code", '{"code": "print(6 * 7)", "language": "python"}'
    )
    assert result.is_error is False
    assert "42" in result.text
    row = execution_row(live, result.result["id"])
    assert (str(row.agent_id), row.source) == (agent.id, Source.AGENT)
    with pytest.raises(PermissionDeniedError) as refused:
        alice.call_tool(agent.id, "install_packages", {"packages": ["six"]})
    assert refused.value.status == 403
    assert refused.value.code == "tool_not_allowed"
    audited = SecurityEvent.objects.using(live.alias).filter(
        agent_id=agent.id, code="tool_not_allowed"
    )
    assert audited.count() == 1
    assert result.thread_id
    alice.delete_thread(result.thread_id)
    alice.delete_agent(agent.id)


# --- the async client -----------------------------------------------------------------------


async def test_the_async_client_logs_in_runs_streams_and_maps_errors(live: LiveUsers) -> None:
    async with AsyncClient(live.server.http_url) as client:
        await client.login("alice", PASSWORD)
        assert (await client.me()).username == "alice"
        thread = await client.create_thread("async")
        run = await client.execute("y = 5\nprint(y * 2)", thread_id=thread.id)
        assert run.stdout == "10\n"
        events = [
            event
            async for event in client.stream("for i in range(3): print(y + i)", thread_id=thread.id)
        ]
        assert events[0].type == "execution" and events[-1].type == "done"
        assert "".join(e.text for e in events if e.type == "stdout") == "5\n6\n7\n"
        await client.write_file("a.txt", "async text", thread_id=thread.id)
        assert (await client.read_file(thread.id, "a.txt")).content == "async text"
        assert [f.path for f in await client.list_files(thread.id)] == ["a.txt"]
        agent = await client.create_agent("async-agent", allowed_tools=["list_files"])
        listed = await client.call_tool(agent.id, "list_files", {"thread_id": thread.id})
        assert "a.txt" in listed.text
        with pytest.raises(PermissionDeniedError) as refused:
            await client.call_tool(
                agent.id, "execute_code", {"code": "print(1)", "language": "python"}
            )
        assert refused.value.code == "tool_not_allowed"
        with pytest.raises(StreamError) as bad:
            async for _ in client.stream("1", thread_id=thread.id, language="cobol"):
                pass
        assert bad.value.code == "unsupported_language"
        await client.delete_thread(thread.id)
        with pytest.raises(NotFoundError):
            await client.get_thread(thread.id)


async def test_the_async_client_renews_an_expired_token_before_opening_a_socket(
    live: LiveUsers,
) -> None:
    async with AsyncClient(live.server.http_url) as login:
        pair = await login.login("alice", PASSWORD)
        thread = await login.create_thread()
    async with AsyncClient(
        live.server.http_url,
        access_token=access_token(live.alice, expired=True),
        refresh_token=pair.refresh,
    ) as client:
        events = [event async for event in client.stream("print('ok')", thread_id=thread.id)]
        assert events[-1].status == "succeeded"
        await asyncio.wait_for(client.delete_thread(thread.id), 60)


async def test_the_async_clients_other_methods_answer_like_the_sync_ones(live: LiveUsers) -> None:
    async with AsyncClient(live.server.http_url) as client:
        await client.login("alice", PASSWORD)
        thread = await client.create_thread("async rest")
        assert (await client.rename_thread(thread.id, "renamed")).title == "renamed"
        assert thread.id in [item.id for item in (await client.list_threads()).results]
        started = await client.start_execution("print('later')", thread_id=thread.id)
        events = [event async for event in client.watch(started.id)]
        assert events[-1].type == "done" and events[-1].status == "succeeded"
        assert (await client.get_execution(started.id)).stdout == "later\n"
        with pytest.raises(ConflictError):
            await client.cancel_execution(started.id)
        runs = await client.list_executions(thread.id, status="succeeded")
        assert [item.id for item in runs.results] == [started.id]
        await client.upload_file(thread.id, "b.bin", b"\x00\x01")
        assert await client.download_file(thread.id, "b.bin") == b"\x00\x01"
        await client.delete_file(thread.id, "b.bin")
        assert await client.list_files(thread.id) == []
        assert await client.list_packages(thread.id) == []
        agent = await client.create_agent("async-rest", allowed_tools=["execute_code"])
        assert agent.id in [row.id for row in await client.list_agents()]
        await client.update_agent(agent.id, is_active=False)
        assert (await client.get_agent(agent.id)).is_active is False
        with pytest.raises(PermissionDeniedError) as inactive:
            await client.agent_tools(agent.id)
        assert inactive.value.code == "agent_inactive"
        await client.delete_agent(agent.id)
        await client.delete_thread(thread.id)
        refresh = client.credentials.refresh
        await client.logout()
    async with AsyncClient(live.server.http_url, refresh_token=refresh) as stale:
        with pytest.raises(AuthenticationError):
            await stale.refresh()


async def test_the_async_client_installs_packages_and_lists_them(live: LiveUsers) -> None:
    # A user of its own: this server's install throttle is low (INSTALL_RATE a minute) and
    # alice's other tests spend it.
    await sync_to_async(create_user)(live.alias, "installer", PASSWORD)
    async with AsyncClient(live.server.http_url) as client:
        await client.login("installer", PASSWORD)
        thread = await client.create_thread("async install")
        install = await client.install_packages(["six==1.17.0"], thread_id=thread.id)
        assert install.status == "succeeded", install.log
        assert [row.packages for row in await client.list_packages(thread.id)] == [["six==1.17.0"]]
        run = await client.execute("import six; print(six.__version__)", thread_id=thread.id)
        assert run.stdout == "1.17.0\n"
        await client.delete_thread(thread.id)


# --- error mapping of answers the server sends rarely ---------------------------------------


def test_a_503_maps_to_service_unavailable_with_retry_after() -> None:
    response = httpx.Response(
        503,
        headers={"Retry-After": "5"},
        json={"error": {"code": "sandbox_unavailable", "message": "down", "details": {}}},
    )
    error = error_from_response(response)
    assert isinstance(error, ServiceUnavailableError)
    assert (error.code, error.status, error.retry_after) == ("sandbox_unavailable", 503, 5.0)


def test_an_answer_not_in_the_api_shape_keeps_its_status_class() -> None:
    error = error_from_response(httpx.Response(502, text="<html>bad gateway</html>"))
    assert isinstance(error, ServerError)
    assert (error.code, error.status) == ("http_502", 502)
