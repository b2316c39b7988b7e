"""Django's /metrics: who may scrape it, and that known runs move the values by exactly their
counts, in one process and summed across two daphne workers (prometheus_client's
multiprocess mode, as `make run` sets it up)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from execution.tests.live import LiveStack, bearer_headers, create_user, live_stack

METRICS = "/metrics"
EXECUTE = "/api/code/execute"
DANGEROUS = "forbidden_call"

# One run of each outcome: (request body, expected status of the Execution).
KNOWN_RUNS: list[tuple[dict[str, Any], str]] = [
    ({"code": "print(1)", "language": "python"}, "succeeded"),
    ({"code": "raise ValueError('no')", "language": "python"}, "failed"),
    ({"code": "import time; time.sleep(30)", "language": "python", "timeout": 1}, "timed_out"),
    ({"code": f"{DANGEROUS}()", "language": "python"}, "rejected"),
]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def runs(samples: Samples, status: str, source: str = "api") -> float:
    return value(samples, "atlaschat_runs_total", status=status, language="python", source=source)


# --- who may scrape --------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_returns_401_for_anonymous_callers(client: Client) -> None:
    response = client.get(METRICS)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"atlaschat_runs" not in response.content


@pytest.mark.django_db
def test_it_returns_403_for_a_logged_in_user_who_is_not_staff(client: Client, alice: Any) -> None:
    client.force_login(alice)
    response = client.get(METRICS)
    assert response.status_code == 403
    assert b"atlaschat_runs" not in response.content


@pytest.mark.django_db
def test_it_refuses_a_wrong_bearer_token_and_any_token_when_none_is_set(
    client: Client, settings: Any
) -> None:
    settings.METRICS_TOKEN = ""
    assert client.get(METRICS, HTTP_AUTHORIZATION="Bearer ").status_code == 401
    settings.METRICS_TOKEN = "right-token"
    assert client.get(METRICS, HTTP_AUTHORIZATION="Bearer wrong-token").status_code == 401


@pytest.mark.django_db
def test_it_serves_staff_and_the_metrics_token(client: Client, staff: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = "right-token"
    by_token = client.get(METRICS, HTTP_AUTHORIZATION="Bearer right-token")
    assert by_token.status_code == 200
    assert by_token["Content-Type"].startswith("text/plain")
    client.force_login(staff)
    by_staff = client.get(METRICS)
    assert by_staff.status_code == 200
    assert "atlaschat_websocket_connections_open" in by_staff.content.decode()


# --- known runs move the values by exactly their counts ---------------------------------------


@pytest.mark.sandboxd
@pytest.mark.timeout(240)
@pytest.mark.django_db(transaction=True)
def test_known_runs_move_the_run_counters_by_exactly_their_counts(
    jwt_client: Any, alice: Any, staff: Any, sandboxd: Any, settings: Any
) -> None:
    settings.EXECUTION_DANGEROUS_PATTERNS = [DANGEROUS]
    scraper = Client()
    scraper.force_login(staff)
    before = parse(scraper.get(METRICS).content.decode())
    api = jwt_client(alice)
    for body, status in KNOWN_RUNS:
        response = api.post(EXECUTE, body, format="json")
        assert response.status_code in (201, 400), response.content
        if status != "rejected":
            assert response.json()["status"] == status
    after = parse(scraper.get(METRICS).content.decode())

    for status in ("succeeded", "failed", "timed_out", "rejected"):
        assert runs(after, status) == runs(before, status) + 1, status
    assert value(after, "atlaschat_security_events_total", kind="validation") == (
        value(before, "atlaschat_security_events_total", kind="validation") + 1
    )
    # Three runs ran in a sandbox and have a duration; the refused one never started.
    assert value(after, "atlaschat_run_duration_seconds_count", language="python") == (
        value(before, "atlaschat_run_duration_seconds_count", language="python") + 3
    )
    assert value(after, "atlaschat_run_queue_wait_seconds_count") == (
        value(before, "atlaschat_run_queue_wait_seconds_count") + 3
    )


# --- across two web workers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_workers(
    django_db_setup: None,
    django_db_blocker: Any,
    sandboxd_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveStack, str]]:
    """Two daphne processes on one database, sharing one fresh PROMETHEUS_MULTIPROC_DIR."""
    directory = tmp_path_factory.mktemp("metrics-two-workers")
    metrics_dir = Path(directory) / "prometheus"
    metrics_dir.mkdir()
    token = secrets.token_urlsafe(16)
    with (
        django_db_blocker.unblock(),
        live_stack(
            directory,
            sandboxd_url=sandboxd_server.url,
            sandboxd_api_key=sandboxd_server.api_key,
            servers=2,
            extra_env={
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                "METRICS_TOKEN": token,
                "EXECUTION_DANGEROUS_PATTERNS": DANGEROUS,
            },
        ) as stack,
    ):
        yield stack, token


@pytest.mark.sandboxd
@pytest.mark.timeout(300)
def test_runs_in_two_workers_add_up_in_a_scrape_of_either(
    two_workers: tuple[LiveStack, str], django_db_blocker: Any
) -> None:
    stack, token = two_workers
    with django_db_blocker.unblock():
        alice = create_user(stack.database.alias, "metrics-alice")
    scrape_headers = {"Authorization": f"Bearer {token}"}

    def scrape(server: Any) -> Samples:
        response = httpx.get(server.http_url + METRICS, headers=scrape_headers, timeout=30)
        assert response.status_code == 200, response.text
        return parse(response.text)

    before = scrape(stack.servers[0])
    for server in stack.servers:
        for body, status in KNOWN_RUNS:
            response = httpx.post(
                server.http_url + EXECUTE, json=body, headers=bearer_headers(alice), timeout=120
            )
            assert response.status_code in (201, 400), response.text
            if status != "rejected":
                assert response.json()["status"] == status
    # Either worker serves the sum of both.
    for server in stack.servers:
        after = scrape(server)
        for status in ("succeeded", "failed", "timed_out", "rejected"):
            assert runs(after, status) == runs(before, status) + 2, (server.http_url, status)


# --- the other Django metrics ----------------------------------------------------------------


def scrape_here() -> Samples:
    """What /metrics would serve now (this process and any other writing the same dir)."""
    from execution.monitoring.metrics import exposition

    return parse(exposition()[0].decode())


@pytest.mark.django_db
def test_a_budget_refusal_counts_one_429_by_its_reason(
    jwt_client: Any, alice: Any, settings: Any
) -> None:
    from execution.models import Execution, Thread

    settings.USER_DAILY_RUNS = 1
    thread = Thread.objects.create(owner=alice)
    Execution.objects.create(user=alice, thread=thread, language="python", code="1")
    before = scrape_here()
    response = jwt_client(alice).post(
        EXECUTE, {"code": "print(1)", "language": "python"}, format="json"
    )
    assert response.status_code == 429
    after = scrape_here()
    reason = {"reason": "daily_run_budget"}
    assert value(after, "atlaschat_refusals_429_total", **reason) == (
        value(before, "atlaschat_refusals_429_total", **reason) + 1
    )
    assert value(after, "atlaschat_security_events_total", kind="quota") == (
        value(before, "atlaschat_security_events_total", kind="quota") + 1
    )


@pytest.mark.django_db
def test_a_refused_install_counts_by_its_outcome(jwt_client: Any, alice: Any) -> None:
    labels = {"language": "python", "outcome": "rejected"}
    before = value(scrape_here(), "atlaschat_package_installs_total", **labels)
    response = jwt_client(alice).post(
        "/api/code/install-packages",
        {"language": "python", "packages": ["git+https://example.com/x.git"]},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert value(scrape_here(), "atlaschat_package_installs_total", **labels) == before + 1


@pytest.mark.django_db(transaction=True)
async def test_an_open_websocket_is_counted_until_it_closes(alice: Any) -> None:
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.db import connections

    from accounts.testing import bearer_headers_for
    from atlaschat.asgi import application
    from execution.models import Thread

    thread = await Thread.objects.acreate(owner=alice)
    token = (await sync_to_async(bearer_headers_for)(alice))["Authorization"]
    headers = [(b"origin", b"http://127.0.0.1"), (b"authorization", token.encode())]
    gauge = "atlaschat_websocket_connections_open"
    before = value(await sync_to_async(scrape_here)(), gauge)
    communicator = WebsocketCommunicator(application, f"/ws/threads/{thread.id}/", headers)
    try:
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        assert value(await sync_to_async(scrape_here)(), gauge) == before + 1
    finally:
        await communicator.disconnect()
    assert value(await sync_to_async(scrape_here)(), gauge) == before
    # The async ORM call above opened a connection in asgiref's worker thread: close it, or
    # PostgreSQL cannot drop the test database at the end of the run.
    await sync_to_async(connections.close_all)()


@pytest.mark.sandboxd
@pytest.mark.timeout(240)
@pytest.mark.django_db(transaction=True)
def test_sandbox_sessions_count_created_reconnected_and_restored(
    jwt_client: Any, alice: Any, sandboxd: Any
) -> None:
    from e2b_code_interpreter import Sandbox

    from execution.models import Thread
    from execution.services.sandbox_sessions import sessions

    api = jwt_client(alice)

    def run(thread_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"code": "print(1)", "language": "python"}
        if thread_id:
            body["thread_id"] = thread_id
        response = api.post(EXECUTE, body, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    def sessions_counted() -> dict[str, float]:
        samples = scrape_here()
        return {
            outcome: value(samples, "atlaschat_sandbox_sessions_total", outcome=outcome)
            for outcome in ("created", "reconnected", "restored")
        }

    start = sessions_counted()
    thread_id = run()["thread_id"]
    assert sessions_counted() == {**start, "created": start["created"] + 1}
    thread = Thread.objects.get(pk=thread_id)
    sessions.forget(thread)  # as another server process would: it knows only the row
    run(thread_id)
    assert sessions_counted()["reconnected"] == start["reconnected"] + 1
    Sandbox.kill(thread.sandbox_id, **sandboxd.sdk_options())
    sessions.forget(thread)
    run(thread_id)
    assert sessions_counted() == {
        "created": start["created"] + 1,
        "reconnected": start["reconnected"] + 1,
        "restored": start["restored"] + 1,
    }
