"""Daily budgets: the run that crosses one is refused with 429 and when it resets, nothing
else is lost, the budget resets at the next UTC midnight (a test clock, not a wait), and a
user sees their usage at /api/auth/me/ and in the page header."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.test import Client
from rest_framework.test import APIClient

from execution.models import Execution, SecurityEvent, Thread, UserBudget

EXECUTE = "/api/code/execute"
# 22:00 UTC: the budget resets two hours later.
LATE_EVENING = dt.datetime(2026, 3, 10, 22, 0, tzinfo=dt.UTC)


def seed_runs(user: Any, thread: Thread, count: int, *, cpu_ms: int = 10) -> None:
    for _ in range(count):
        Execution.objects.create(
            user=user, thread=thread, language="python", code="print(1)",
            status=Execution.Status.SUCCEEDED, cpu_time_ms=cpu_ms, duration_ms=20,
        )  # fmt: skip


@pytest.mark.sandboxd
@pytest.mark.timeout(180)
@pytest.mark.django_db
def test_the_run_that_crosses_the_daily_run_budget_gets_429_and_the_budget_resets_next_day(
    alice: Any, settings: Any, sandboxd: Any
) -> None:
    settings.USER_DAILY_RUNS = 3
    # Authenticated without a token: a JWT made now would not be valid on the test clock.
    api = APIClient()
    api.force_authenticate(alice)
    with time_machine.travel(LATE_EVENING, tick=True) as clock:
        thread = Thread.objects.create(owner=alice, title="budget")
        seed_runs(alice, thread, 2)
        third = api.post(
            EXECUTE,
            {"code": "print(3)", "language": "python", "thread_id": str(thread.id)},
            format="json",
        )
        assert third.status_code == 201, third.content
        assert third.json()["stdout"] == "3\n"

        refused = api.post(
            EXECUTE,
            {"code": "print(4)", "language": "python", "thread_id": str(thread.id)},
            format="json",
        )
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "daily_run_budget"
        assert "resets at 2026-03-11 00:00 UTC" in error["message"]
        assert error["details"] == {"limit": 3, "used": 3, "resets_at": "2026-03-11T00:00:00Z"}
        assert 7000 <= int(refused["Retry-After"]) <= 7201
        # Nothing else is lost: the three runs stay, no run was queued for the refusal, and
        # the refusal is in the audit.
        assert Execution.objects.filter(thread=thread).count() == 3
        assert not Execution.objects.filter(code="print(4)").exists()
        assert SecurityEvent.objects.filter(
            user=alice, kind="quota", code="daily_run_budget"
        ).exists()

        clock.move_to(dt.datetime(2026, 3, 11, 0, 0, 5, tzinfo=dt.UTC))
        again = api.post(
            EXECUTE,
            {"code": "print(4)", "language": "python", "thread_id": str(thread.id)},
            format="json",
        )
        assert again.status_code == 201, again.content
        assert again.json()["stdout"] == "4\n"


@pytest.mark.django_db
def test_a_spent_cpu_budget_refuses_the_next_run_until_midnight(alice: Any, settings: Any) -> None:
    settings.USER_DAILY_CPU_SECONDS = 5
    with time_machine.travel(LATE_EVENING, tick=False):
        thread = Thread.objects.create(owner=alice)
        seed_runs(alice, thread, 1, cpu_ms=5200)  # one run crossed it: it finished
        api = APIClient()
        api.force_authenticate(alice)
        response = api.post(EXECUTE, {"code": "print(1)", "language": "python"}, format="json")
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "daily_cpu_budget"
    assert error["details"]["used"] == 5.2
    assert "resets at 2026-03-11 00:00 UTC (in 2:00:01)" in error["message"]


@pytest.mark.django_db
def test_a_users_own_budget_overrides_the_sites(
    jwt_client: Any, alice: Any, bob: Any, settings: Any
) -> None:
    settings.USER_DAILY_RUNS = 100
    UserBudget.objects.create(user=alice, daily_runs=1)
    UserBudget.objects.create(user=bob, daily_runs=0)  # 0: no limit for bob
    thread = Thread.objects.create(owner=alice)
    seed_runs(alice, thread, 1)
    refused = jwt_client(alice).post(
        EXECUTE, {"code": "print(1)", "language": "python"}, format="json"
    )
    assert refused.status_code == 429
    assert refused.json()["error"]["details"]["limit"] == 1
    me = jwt_client(bob).get("/api/auth/me/").json()
    assert me["usage"]["runs_limit"] is None


@pytest.mark.django_db
def test_refused_runs_do_not_count_and_me_shows_todays_usage(alice: Any, settings: Any) -> None:
    settings.USER_DAILY_RUNS = 10
    settings.USER_DAILY_CPU_SECONDS = 60
    with time_machine.travel(LATE_EVENING, tick=False):
        thread = Thread.objects.create(owner=alice)
        seed_runs(alice, thread, 2, cpu_ms=1500)
        Execution.objects.create(
            user=alice, thread=thread, language="python", code="x",
            status=Execution.Status.REJECTED,
        )  # fmt: skip
        api = APIClient()
        api.force_authenticate(alice)
        me = api.get("/api/auth/me/")
    assert me.status_code == 200
    assert me.json()["usage"] == {
        "runs": 2,
        "runs_limit": 10,
        "cpu_seconds": 3.0,
        "cpu_seconds_limit": 60,
        "resets_at": "2026-03-11T00:00:00Z",
    }


@pytest.mark.django_db
def test_the_page_header_shows_todays_usage(client: Client, alice: Any, settings: Any) -> None:
    settings.USER_DAILY_RUNS = 10
    thread = Thread.objects.create(owner=alice)
    seed_runs(alice, thread, 2, cpu_ms=1500)
    client.force_login(alice)
    html = client.get("/threads/").content.decode()
    assert "Today: 2/10 runs · 3.0 CPU s" in html


@pytest.mark.django_db
def test_the_header_badge_is_fetched_again_with_the_days_count(client: Client, alice: Any) -> None:
    """The workspace asks for the badge after each run (htmx): it answers today's count, not
    the page's, and only to the logged-in user."""
    assert client.get("/me/usage/").status_code == 302  # to the login page
    thread = Thread.objects.create(owner=alice)
    client.force_login(alice)
    page = client.get(f"/threads/{thread.id}/").content.decode()
    assert "Today: 0 runs · 0.0 CPU s" in page
    assert 'hx-get="/me/usage/"' in page
    seed_runs(alice, thread, 1, cpu_ms=200)
    badge = client.get("/me/usage/", headers={"HX-Request": "true"})
    assert badge.status_code == 200
    assert "Today: 1 run · 0.2 CPU s" in badge.content.decode()
    assert "no-cache" in badge["Cache-Control"]


@pytest.mark.django_db
def test_the_admin_edits_a_users_budget(client: Client, alice: Any, django_user_model: Any) -> None:
    admin = django_user_model.objects.create_superuser("root", "root@example.test", "pw-root-1")
    client.force_login(admin)
    response = client.post(
        "/admin/execution/userbudget/add/",
        {"user": alice.pk, "daily_cpu_seconds": "120", "daily_runs": ""},
    )
    assert response.status_code == 302, response.content[:2000]
    budget = UserBudget.objects.get(user=alice)
    assert (budget.daily_cpu_seconds, budget.daily_runs) == (120, None)
