"""The staff dashboard: what it shows from seeded runs, who may open it, and a real browser
drawing its charts under our Content-Security-Policy."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect
from pytest_django.live_server_helper import LiveServer

from accounts.testing import TEST_PASSWORD
from execution.models import Agent, Execution, SecurityEvent, Thread
from execution.monitoring.dashboard import WINDOWS, fleet_summary, quantile_from_bands

DASHBOARD = "/staff/dashboard/"
# Where the browser test leaves its screenshot for a person to look at.
SCREENSHOT_DIR = Path(os.environ.get("ATLASCHAT_SCREENSHOT_DIR", "/tmp/atlaschat-screenshots"))


def seed(alice: AbstractBaseUser, bob: AbstractBaseUser) -> None:
    """A known hour: alice 8 runs (5 ok, 2 failed, 1 timed out), bob 2 (ok), an agent run,
    three refusals; plus a run of two days ago that the hour and the day must not count."""
    now = timezone.now()
    thread = Thread.objects.create(owner=alice, title="busy")
    agent = Agent.objects.create(owner=alice, name="helper", allowed_tools=["execute_code"])
    rows = [
        *[(alice, "succeeded", 100 * (i + 1), None) for i in range(5)],
        (alice, "failed", 900, None),
        (alice, "failed", 1200, agent),
        (alice, "timed_out", 5000, None),
        (bob, "succeeded", 50, None),
        (bob, "succeeded", 70, None),
    ]
    for i, (user, status, duration, by_agent) in enumerate(rows):
        execution = Execution.objects.create(
            thread=thread if user == alice else Thread.objects.create(owner=user),
            user=user, agent=by_agent, language="python", code="x", status=status,
            duration_ms=duration, cpu_time_ms=duration // 2, memory_peak_bytes=(i + 1) << 20,
        )  # fmt: skip
        Execution.objects.filter(pk=execution.pk).update(
            created_at=now - dt.timedelta(minutes=5 + i)
        )
    old = Execution.objects.create(
        thread=thread, user=alice, language="python", code="x", status="failed", duration_ms=1
    )
    Execution.objects.filter(pk=old.pk).update(created_at=now - dt.timedelta(days=2))
    for code in ("throttled", "throttled", "daily_run_budget"):
        SecurityEvent.objects.create(kind="quota", code=code, message="m", user=alice)


@pytest.mark.django_db
def test_the_summary_counts_the_seeded_hour(alice: Any, bob: Any) -> None:
    seed(alice, bob)
    hour = fleet_summary(WINDOWS["hour"])
    totals = hour["totals"]
    assert totals["runs"] == 10
    assert totals["by_status"] == {"failed": 2, "succeeded": 7, "timed_out": 1}
    assert totals["failure_rate"] == 0.2
    assert totals["timeout_rate"] == 0.1
    # Durations sorted: 50 70 100 200 300 400 500 900 1200 5000. The 5th of 10 falls in the
    # band (250, 500] holding 300, 400, 500 as its 1st of 3: 250 + 250/3; the 9.5th in
    # (2500, 5000] holding one: its middle. Interpolated in the bands, as Prometheus does.
    assert (totals["p50_ms"], totals["p95_ms"]) == (333, 3750)
    assert sum(hour["series"]["total"]) == 10
    assert hour["busiest_users"][0]["user__username"] == "alice"
    assert hour["busiest_users"][0]["runs"] == 8
    assert hour["busiest_users"][0]["failed"] == 3
    assert hour["busiest_agents"] == [
        {"agent__name": "helper", "agent__owner__username": "alice", "runs": 1,
         "cpu_ms": 600, "failed": 1}
    ]  # fmt: skip
    assert hour["refusals"][0] == {"kind": "quota", "code": "throttled", "n": 2}
    assert fleet_summary(WINDOWS["week"])["totals"]["runs"] == 11


def test_quantiles_interpolate_within_their_band() -> None:
    # 10 runs of at most 10 ms and 10 between 10 and 25 ms: the median is the 10 ms bound.
    counts = [10, 10] + [0] * 13
    assert quantile_from_bands(counts, 0.5) == 10
    assert quantile_from_bands(counts, 0.75) == 17.5
    assert quantile_from_bands([0] * 15, 0.5) is None


@pytest.mark.django_db
def test_it_renders_for_staff_with_the_seeded_numbers(
    client: Client, staff: Any, alice: Any, bob: Any
) -> None:
    seed(alice, bob)
    client.force_login(staff)
    for name in ("hour", "day", "week"):
        response = client.get(DASHBOARD, {"range": name})
        assert response.status_code == 200
    html = client.get(DASHBOARD).content.decode()
    assert "Fleet: the last hour" in html
    assert "daily_run_budget" in html
    assert '<script id="dashboard-data" type="application/json">' in html
    assert "vendor/chart.js/chart.umd.min.js" in html


@pytest.mark.django_db
def test_it_returns_403_for_users_who_are_not_staff(client: Client, alice: Any) -> None:
    client.force_login(alice)
    assert client.get(DASHBOARD).status_code == 403


@pytest.mark.django_db
def test_it_sends_visitors_to_the_login_page(client: Client) -> None:
    response = client.get(DASHBOARD)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


# --- in a real browser -------------------------------------------------------------------------


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.mark.browser
@pytest.mark.sandboxd
@pytest.mark.django_db(transaction=True)
def test_staff_see_the_charts_drawn_with_no_csp_violation(
    page: Page, live_server: LiveServer, staff: Any, alice: Any, bob: Any, sandboxd: Any
) -> None:
    seed(alice, bob)
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text)
            if "Content Security Policy" in message.text or "Refused to" in message.text
            else None
        ),
    )
    # In every document, before its own scripts: record each violation the browser reports.
    page.add_init_script(
        "window.__cspViolations = [];"
        "document.addEventListener('securitypolicyviolation', e => "
        "window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")
    page.get_by_role("link", name="Dashboard").click()
    page.wait_for_url(f"{live_server.url}{DASHBOARD}")
    expect(page.locator("h1")).to_have_text("Fleet: the last hour")
    # Chart.js loaded from our static files and drew the four charts.
    page.wait_for_function("() => window.Chart && Object.keys(Chart.instances).length === 4")
    # The seeded runs are drawn: ten runs in the runs chart's bars.
    drawn = page.evaluate(
        "Chart.getChart('chart-runs').data.datasets"
        ".reduce((sum, d) => sum + d.data.reduce((a, b) => a + b, 0), 0)"
    )
    assert drawn == 10
    expect(page.locator(".tile").first).to_contain_text("10")
    # Live sandboxes come from sandboxd's own /metrics.
    expect(page.locator(".tile", has_text="live sandboxes")).to_have_count(1)
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT_DIR / "staff-dashboard.png"), full_page=True)
    assert page.evaluate("window.__cspViolations") == []
    assert violations == []
