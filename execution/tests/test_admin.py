"""The admin audit view: staff read everything, nobody rewrites history, outsiders see nothing."""

from __future__ import annotations

import base64
import csv
import io
import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from execution.models import (
    Agent,
    Execution,
    Language,
    PackageInstall,
    SecurityEvent,
    Source,
    Thread,
    WorkspaceFile,
)

pytestmark = pytest.mark.django_db

Status = Execution.Status
CHANGELIST = reverse("admin:execution_execution_changelist")
# The smallest valid PNG: the signature plus a 1x1 image.
PNG_1X1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


def detail_url(execution: Execution) -> str:
    return reverse("admin:execution_execution_change", args=[execution.pk])


@pytest.fixture
def staff_client(staff: AbstractBaseUser) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def superuser_client(make_user: object) -> Client:
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))  # type: ignore[operator]
    return client


@pytest.fixture
def runs(alice: AbstractBaseUser, bob: AbstractBaseUser) -> dict[str, Execution]:
    """Four executions with distinct users, agents, languages, statuses and dates."""
    alice_thread = Thread.objects.create(owner=alice, title="alice's analysis")
    bob_thread = Thread.objects.create(owner=bob, title="bob's scripts")
    agent = Agent.objects.create(owner=alice, name="analyst", allowed_tools=["execute_code"])
    made = {
        "plot": Execution.objects.create(
            thread=alice_thread,
            user=alice,
            agent=agent,
            language=Language.PYTHON,
            source=Source.AGENT,
            code="import matplotlib  # draw the needle chart",
            status=Status.SUCCEEDED,
            stdout="<script>alert('owned')</script>\n",
            results=[
                {"png": PNG_1X1, "text": "<Figure size 640x480>", "is_main_result": True},
                {"svg": "<svg xmlns='http://www.w3.org/2000/svg'><script>x()</script></svg>"},
                {"html": "<b onclick=steal()>table</b>"},
            ],
            exit_code=0,
            duration_ms=1530,
            client_ip="127.0.0.1",
        ),
        "crash": Execution.objects.create(
            thread=alice_thread,
            user=alice,
            language=Language.PYTHON,
            code="1/0",
            status=Status.FAILED,
            stderr="haystack stderr",
            error={
                "name": "ZeroDivisionError",
                "value": "division by zero",
                "traceback": "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
            },
            exit_code=1,
            duration_ms=12,
        ),
        "shell": Execution.objects.create(
            thread=bob_thread,
            user=bob,
            language=Language.BASH,
            code="=cmd|' /C calc'!A0",
            status=Status.SUCCEEDED,
            stdout="found the haystack",
            exit_code=0,
            duration_ms=40,
        ),
        "old": Execution.objects.create(
            thread=bob_thread,
            user=bob,
            language=Language.JAVASCRIPT,
            code="console.log('long ago')",
            status=Status.TIMED_OUT,
        ),
    }
    # auto_now_add ignores a value given at creation: move the old one back afterwards.
    Execution.objects.filter(pk=made["old"].pk).update(
        created_at=timezone.now() - timedelta(days=40)
    )
    return made


def listed(client: Client, query: str = "") -> set[str]:
    """Return the codes of the executions the changelist shows for a query string."""
    response = client.get(CHANGELIST + query)
    assert response.status_code == 200
    return {e.code for e in response.context["cl"].result_list}


# --- who may look -------------------------------------------------------------------------


def test_staff_see_the_execution_list_with_its_columns(
    staff_client: Client, runs: dict[str, Execution]
) -> None:
    response = staff_client.get(CHANGELIST)
    assert response.status_code == 200
    assert {e.pk for e in response.context["cl"].result_list} == {r.pk for r in runs.values()}
    content = response.content.decode()
    columns = re.findall(r'<th scope="col"[^>]*class="[^"]*column-(\w+)', content)
    assert columns == [
        "created_at",
        "user",
        "thread",
        "agent",
        "language",
        "status",
        "duration",
        "cpu_time",
        "memory_peak",
        "exit_code",
    ]
    assert "1.5 s" in content  # the plot's duration
    assert "analyst" in content


def test_staff_see_the_audit_models_on_the_admin_index(staff_client: Client) -> None:
    content = staff_client.get(reverse("admin:index")).content.decode()
    for model in ("executions", "security events", "threads", "agents", "package installs"):
        assert model in content.lower()


@pytest.mark.parametrize("who", ["anonymous", "alice"])
def test_non_staff_are_sent_to_the_admin_login(
    who: str, alice: AbstractBaseUser, runs: dict[str, Execution]
) -> None:
    client = Client()
    if who == "alice":
        client.force_login(alice)
    for url in (CHANGELIST, detail_url(runs["plot"]), reverse("admin:index")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.parametrize("who", ["anonymous", "alice"])
def test_non_staff_cannot_export_csv(
    who: str, alice: AbstractBaseUser, runs: dict[str, Execution]
) -> None:
    client = Client()
    if who == "alice":
        client.force_login(alice)
    response = client.post(
        CHANGELIST,
        {"action": "export_csv", "_selected_action": [runs["plot"].pk], "index": 0},
    )
    assert response.status_code == 302
    assert "text/csv" not in response.get("Content-Type", "")


def test_an_inactive_staff_member_is_refused(
    staff: AbstractBaseUser, runs: dict[str, Execution]
) -> None:
    staff.is_active = False
    staff.save()
    client = Client()
    client.force_login(staff)
    assert client.get(CHANGELIST).status_code == 302


# --- filters and search -------------------------------------------------------------------


def test_the_list_filters_by_status(staff_client: Client, runs: dict[str, Execution]) -> None:
    assert listed(staff_client, "?status__exact=failed") == {"1/0"}


def test_the_list_filters_by_language(staff_client: Client, runs: dict[str, Execution]) -> None:
    assert listed(staff_client, "?language__exact=bash") == {runs["shell"].code}


def test_the_list_filters_by_user(
    staff_client: Client, runs: dict[str, Execution], bob: AbstractBaseUser
) -> None:
    assert listed(staff_client, f"?user__id__exact={bob.pk}") == {
        runs["shell"].code,
        runs["old"].code,
    }


def test_the_list_filters_by_agent(staff_client: Client, runs: dict[str, Execution]) -> None:
    agent = runs["plot"].agent
    assert agent is not None
    assert listed(staff_client, f"?agent__id__exact={agent.pk}") == {runs["plot"].code}


def test_the_list_filters_by_date(staff_client: Client, runs: dict[str, Execution]) -> None:
    # As the filter's "Past 7 days" link does: an aware timestamp, URL-encoded.
    since = urlencode({"created_at__gte": (timezone.now() - timedelta(days=7)).isoformat()})
    recent = listed(staff_client, f"?{since}")
    assert runs["old"].code not in recent
    assert len(recent) == 3


def test_the_list_filters_by_thread(staff_client: Client, runs: dict[str, Execution]) -> None:
    thread = runs["shell"].thread
    assert thread is not None
    assert listed(staff_client, f"?thread__id__exact={thread.pk}") == {
        runs["shell"].code,
        runs["old"].code,
    }


def test_search_finds_text_in_the_code(staff_client: Client, runs: dict[str, Execution]) -> None:
    assert listed(staff_client, "?q=needle") == {runs["plot"].code}


def test_search_finds_text_in_the_output(staff_client: Client, runs: dict[str, Execution]) -> None:
    # "haystack" is in crash's stderr and shell's stdout, in no code.
    assert listed(staff_client, "?q=haystack") == {runs["crash"].code, runs["shell"].code}


# --- the detail page ----------------------------------------------------------------------


def test_the_detail_page_shows_code_output_and_error(
    staff_client: Client, runs: dict[str, Execution]
) -> None:
    response = staff_client.get(detail_url(runs["crash"]))
    assert response.status_code == 200
    content = response.content.decode()
    assert "1/0" in content
    assert "haystack stderr" in content
    assert "ZeroDivisionError: division by zero" in content
    # Terminal colour codes are stripped from the traceback.
    assert "\x1b[" not in content
    assert "[0;31m" not in content


def test_the_detail_page_escapes_what_the_code_printed(
    staff_client: Client, runs: dict[str, Execution]
) -> None:
    content = staff_client.get(detail_url(runs["plot"])).content.decode()
    assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in content
    assert "<script>alert(" not in content
    # An HTML result is shown as its source, never rendered.
    assert "&lt;b onclick=steal()&gt;table&lt;/b&gt;" in content
    assert "<b onclick" not in content


def test_the_detail_page_shows_images_inline_and_svg_only_as_an_image(
    staff_client: Client, runs: dict[str, Execution]
) -> None:
    content = staff_client.get(detail_url(runs["plot"])).content.decode()
    assert f'src="data:image/png;base64,{PNG_1X1}"' in content
    assert 'src="data:image/svg+xml;base64,' in content
    # The SVG's own markup (and its script) is not in the page itself.
    assert "<script>x()</script>" not in content
    assert "xmlns='http://www.w3.org/2000/svg'" not in content
    assert "&lt;Figure size 640x480&gt;" in content


def test_a_png_result_that_is_not_a_png_is_not_shown_as_one(
    staff_client: Client, runs: dict[str, Execution]
) -> None:
    execution = runs["plot"]
    not_png = base64.b64encode(b"<html>not an image</html>").decode()
    execution.results = [{"png": not_png}, {"png": 'x" onerror="alert(1)'}]
    execution.save()
    content = staff_client.get(detail_url(execution)).content.decode()
    assert "data:image/png" not in content
    assert content.count("[png: not a valid image]") == 2
    assert 'onerror="alert' not in content


def test_the_detail_page_offers_no_save_or_delete(
    staff_client: Client, runs: dict[str, Execution]
) -> None:
    content = staff_client.get(detail_url(runs["plot"])).content.decode()
    assert 'name="_save"' not in content
    assert "deletelink" not in content


# --- nothing is added, changed or deleted -------------------------------------------------


@pytest.mark.parametrize("who", ["staff", "superuser"])
def test_nobody_adds_changes_or_deletes_executions(
    who: str, staff_client: Client, superuser_client: Client, runs: dict[str, Execution]
) -> None:
    client = staff_client if who == "staff" else superuser_client
    execution = runs["plot"]
    assert client.get(reverse("admin:execution_execution_add")).status_code == 403
    changed = client.post(detail_url(execution), {"code": "rewritten", "status": "failed"})
    assert changed.status_code == 403
    delete_url = reverse("admin:execution_execution_delete", args=[execution.pk])
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    execution.refresh_from_db()
    assert execution.code.startswith("import matplotlib")
    assert execution.status == Status.SUCCEEDED


def test_bulk_delete_is_not_offered(superuser_client: Client, runs: dict[str, Execution]) -> None:
    response = superuser_client.get(CHANGELIST)
    actions = [name for name, _ in response.context["action_form"].fields["action"].choices]
    assert "delete_selected" not in actions
    assert "export_csv" in actions
    # Asking for it anyway does nothing.
    superuser_client.post(
        CHANGELIST,
        {"action": "delete_selected", "_selected_action": [runs["plot"].pk], "index": 0},
    )
    assert Execution.objects.filter(pk=runs["plot"].pk).exists()


# --- CSV export ---------------------------------------------------------------------------


def export(client: Client, *executions: Execution) -> list[dict[str, str]]:
    response = client.post(
        CHANGELIST,
        {"action": "export_csv", "_selected_action": [e.pk for e in executions], "index": 0},
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(response.content.decode())))


def test_csv_export_has_exactly_the_selected_rows(
    staff_client: Client, runs: dict[str, Execution]
) -> None:
    rows = export(staff_client, runs["crash"], runs["plot"])
    assert [row["id"] for row in rows] == [str(runs["plot"].pk), str(runs["crash"].pk)]
    plot, crash = rows
    assert plot["user"] == "alice"
    assert plot["agent"] == "analyst"
    assert plot["language"] == "python"
    assert plot["source"] == "agent"
    assert plot["status"] == "succeeded"
    assert plot["duration_ms"] == "1530"
    assert plot["exit_code"] == "0"
    assert plot["client_ip"] == "127.0.0.1"
    assert plot["thread_id"] == str(runs["plot"].thread_id)
    assert plot["stdout"] == "<script>alert('owned')</script>\n"
    assert crash["agent"] == ""
    assert crash["code"] == "1/0"
    assert '"name": "ZeroDivisionError"' in crash["error"]


def test_csv_export_neutralises_spreadsheet_formulas(
    staff_client: Client, runs: dict[str, Execution]
) -> None:
    (row,) = export(staff_client, runs["shell"])
    assert row["code"] == "'=cmd|' /C calc'!A0"


# --- the other audit pages ----------------------------------------------------------------


def test_security_events_are_listed_searchable_and_read_only(
    staff_client: Client, alice: AbstractBaseUser
) -> None:
    SecurityEvent.objects.create(
        kind=SecurityEvent.Kind.VALIDATION,
        code="path_outside_workspace",
        message="../etc/passwd is outside the workspace",
        user=alice,
        details={"path": "../etc/passwd"},
    )
    SecurityEvent.objects.create(
        kind=SecurityEvent.Kind.QUOTA, code="too_many_running", message="4 runs already"
    )
    url = reverse("admin:execution_securityevent_changelist")
    response = staff_client.get(url + "?kind__exact=validation")
    assert [e.code for e in response.context["cl"].result_list] == ["path_outside_workspace"]
    response = staff_client.get(url + "?q=runs+already")
    assert [e.code for e in response.context["cl"].result_list] == ["too_many_running"]
    event = SecurityEvent.objects.get(code="path_outside_workspace")
    detail = staff_client.get(reverse("admin:execution_securityevent_change", args=[event.pk]))
    assert "../etc/passwd is outside the workspace" in detail.content.decode()
    assert staff_client.get(reverse("admin:execution_securityevent_add")).status_code == 403
    delete = reverse("admin:execution_securityevent_delete", args=[event.pk])
    assert staff_client.post(delete, {"post": "yes"}).status_code == 403
    assert SecurityEvent.objects.filter(pk=event.pk).exists()


def test_a_thread_page_shows_its_executions_files_and_packages(
    staff_client: Client, runs: dict[str, Execution], settings: object, tmp_path: object
) -> None:
    settings.STORAGES = {  # type: ignore[attr-defined]
        **settings.STORAGES,  # type: ignore[attr-defined]
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    thread = runs["plot"].thread
    assert thread is not None
    WorkspaceFile(thread=thread, path="data/input.csv").set_content(b"a,b\n1,2\n")
    PackageInstall.objects.create(
        thread=thread, user=thread.owner, language=Language.PYTHON, packages=["tabulate"]
    )
    response = staff_client.get(reverse("admin:execution_thread_change", args=[thread.pk]))
    assert response.status_code == 200
    content = response.content.decode()
    assert "data/input.csv" in content
    assert "tabulate" in content
    assert detail_url(runs["plot"]) in content
    assert detail_url(runs["crash"]) in content
    assert detail_url(runs["shell"]) not in content  # bob's thread
    assert f"?thread__id__exact={thread.pk}" in content
    assert 'name="_save"' not in content


def test_package_installs_are_listed_read_only(
    staff_client: Client, alice: AbstractBaseUser
) -> None:
    thread = Thread.objects.create(owner=alice)
    PackageInstall.objects.create(
        thread=thread,
        user=alice,
        language=Language.JAVASCRIPT,
        packages=["lodash"],
        status=PackageInstall.Status.FAILED,
        log="npm ERR! 404",
    )
    url = reverse("admin:execution_packageinstall_changelist")
    response = staff_client.get(url + "?status__exact=failed")
    assert response.status_code == 200
    assert "lodash" in response.content.decode()
    assert staff_client.get(reverse("admin:execution_packageinstall_add")).status_code == 403


# --- agents are editable ------------------------------------------------------------------


def test_a_superuser_edits_an_agents_tools_with_checkboxes(
    superuser_client: Client, alice: AbstractBaseUser
) -> None:
    agent = Agent.objects.create(owner=alice, name="helper", allowed_tools=["read_file"])
    url = reverse("admin:execution_agent_change", args=[agent.pk])
    form = superuser_client.get(url).content.decode()
    for tool in Agent.TOOL_NAMES:
        assert f'type="checkbox" name="allowed_tools" value="{tool}"' in form
    response = superuser_client.post(
        url,
        {
            "owner": alice.pk,
            "name": "helper",
            "description": "",
            "allowed_tools": ["execute_code", "write_file"],
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.allowed_tools == ["execute_code", "write_file"]


def test_an_unknown_tool_is_refused_by_the_agent_form(
    superuser_client: Client, alice: AbstractBaseUser
) -> None:
    agent = Agent.objects.create(owner=alice, name="helper", allowed_tools=["read_file"])
    response = superuser_client.post(
        reverse("admin:execution_agent_change", args=[agent.pk]),
        {"owner": alice.pk, "name": "helper", "allowed_tools": ["format_disk"]},
    )
    assert response.status_code == 200
    assert "format_disk" in str(response.context["adminform"].form.errors)
    agent.refresh_from_db()
    assert agent.allowed_tools == ["read_file"]


def test_staff_without_permissions_may_view_but_not_change_agents(
    staff_client: Client, alice: AbstractBaseUser
) -> None:
    agent = Agent.objects.create(owner=alice, name="helper", allowed_tools=["read_file"])
    url = reverse("admin:execution_agent_change", args=[agent.pk])
    assert staff_client.get(url).status_code == 200
    response = staff_client.post(
        url, {"owner": alice.pk, "name": "renamed", "allowed_tools": ["execute_code"]}
    )
    assert response.status_code == 403
    agent.refresh_from_db()
    assert agent.name == "helper"
