"""A newcomer's first visit, in a real browser against a live server: log in, see the home
page, open the admin audit view, read a run, log out."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from playwright.sync_api import Browser, Page, expect
from pytest_django.live_server_helper import LiveServer

from accounts.testing import TEST_PASSWORD
from execution.models import Execution, Language, Thread

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def audited_run(alice: AbstractBaseUser) -> Execution:
    thread = Thread.objects.create(owner=alice, title="first steps")
    return Execution.objects.create(
        thread=thread,
        user=alice,
        language=Language.PYTHON,
        code="print('hello from the audit')",
        stdout="hello from the audit\n",
        status=Execution.Status.SUCCEEDED,
        exit_code=0,
        duration_ms=21,
    )


def log_in(page: Page, live_server: LiveServer, username: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")


def test_staff_log_in_and_read_a_run_in_the_admin_audit(
    page: Page, live_server: LiveServer, staff: AbstractBaseUser, audited_run: Execution
) -> None:
    log_in(page, live_server, "staff")
    expect(page.locator(".who")).to_have_text("staff")
    # htmx came from our own static files and loaded.
    assert page.evaluate("typeof htmx") == "object"

    page.get_by_role("link", name="Admin").first.click()
    page.get_by_role("link", name="Executions").first.click()
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("first steps")
    expect(rows.first).to_contain_text("Succeeded")

    rows.first.locator("th a").click()
    expect(page.locator("pre.audit-code")).to_have_text("print('hello from the audit')")
    expect(page.locator("pre.audit-stdout")).to_contain_text("hello from the audit")


def test_a_user_logs_out_with_the_button(
    page: Page, live_server: LiveServer, alice: AbstractBaseUser
) -> None:
    log_in(page, live_server, "alice")
    # alice is no staff member: no admin link for her.
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{live_server.url}/accounts/login/")
    page.goto(f"{live_server.url}/")
    expect(page.get_by_role("link", name="Log in").first).to_be_visible()


def test_a_wrong_password_keeps_the_visitor_out(
    page: Page, live_server: LiveServer, alice: AbstractBaseUser
) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not her password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("did not match")
    page.goto(f"{live_server.url}/admin/")
    assert "/admin/login/" in page.url
