"""The workspace pages: who may see what, full page versus htmx partial, and the forms.

alice owns the thread; charlie must get a 404 for every page of it; an anonymous visitor is
sent to the login page. The pages that start sandbox work (runs, installs) are exercised
end to end in test_workspace_browser.py; here the requests never reach a sandbox (a thread
without a sandbox keeps its files in the database only).
"""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from atlaschat.csp import HEADER as CSP_HEADER
from execution.models import (
    Execution,
    Language,
    PackageInstall,
    SecurityEvent,
    Thread,
    WorkspaceFile,
)

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def thread(alice: AbstractBaseUser) -> Thread:
    return Thread.objects.create(owner=alice, title="alice's analysis")


@pytest.fixture
def run(thread: Thread, alice: AbstractBaseUser) -> Execution:
    return Execution.objects.create(
        thread=thread,
        user=alice,
        language=Language.PYTHON,
        code="print('hi')\n1/0",
        status=Execution.Status.FAILED,
        stdout="hi\n",
        stderr="a warning\n",
        results=[
            {"png": "iVBORw0KGgo=", "is_main_result": False},
            {"html": "<b>table</b><script>parent.pwned=1</script>", "is_main_result": True},
        ],
        error={
            "name": "ZeroDivisionError",
            "value": "division by zero",
            "traceback": "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
        },
        exit_code=1,
        duration_ms=42,
        truncated=True,
    )


def page_urls(thread: Thread, run: Execution) -> list[str]:
    """Every GET page of one thread."""
    return [
        reverse("workspace", args=[thread.id]),
        reverse("thread-rename", args=[thread.id]),
        reverse("workspace-files", args=[thread.id]),
        reverse("workspace-packages", args=[thread.id]),
        reverse("workspace-history", args=[thread.id]),
        reverse("workspace-run", args=[thread.id, run.id]),
    ]


def post_urls(thread: Thread) -> list[str]:
    """Every POST endpoint of one thread."""
    return [
        reverse("thread-rename", args=[thread.id]),
        reverse("thread-delete", args=[thread.id]),
        reverse("workspace-file-create", args=[thread.id]),
        reverse("workspace-file-save", args=[thread.id]),
        reverse("workspace-file-upload", args=[thread.id]),
        reverse("workspace-file-delete", args=[thread.id]),
        reverse("workspace-package-install", args=[thread.id]),
    ]


# --- access ---------------------------------------------------------------------------------


def test_each_page_renders_for_the_owner(
    client: Client, alice: AbstractBaseUser, thread: Thread, run: Execution
) -> None:
    client.force_login(alice)
    for url in page_urls(thread, run):
        response = client.get(url)
        assert response.status_code == 200, url
        assert b"<html" in response.content, url
        assert b"alice&#x27;s analysis" in response.content, url


def test_it_returns_404_for_another_users_thread(
    client: Client, charlie: AbstractBaseUser, thread: Thread, run: Execution
) -> None:
    client.force_login(charlie)
    for url in page_urls(thread, run):
        assert client.get(url).status_code == 404, url
        assert client.get(url, **HTMX).status_code == 404, url
    for url in post_urls(thread):
        assert client.post(url, {"title": "mine", "path": "x.txt"}).status_code == 404, url
    thread.refresh_from_db()
    assert thread.title == "alice's analysis"
    assert not WorkspaceFile.objects.filter(thread=thread).exists()
    # Each attempt is in the audit, as for the API (repeats counted on one row per window).
    attempts = SecurityEvent.objects.filter(user=charlie, code="thread_not_owned")
    assert sum(attempts.values_list("count", flat=True)) == 2 * len(page_urls(thread, run)) + len(
        post_urls(thread)
    )
    assert {event.source for event in attempts} == {"browser"}


def test_it_returns_404_for_a_run_of_another_thread(
    client: Client, alice: AbstractBaseUser, thread: Thread, run: Execution
) -> None:
    other = Thread.objects.create(owner=alice, title="other")
    client.force_login(alice)
    assert client.get(reverse("workspace-run", args=[other.id, run.id])).status_code == 404


def test_another_users_run_under_ones_own_thread_page_is_404_and_audited(
    client: Client, charlie: AbstractBaseUser, run: Execution
) -> None:
    own = Thread.objects.create(owner=charlie, title="charlie's")
    client.force_login(charlie)
    assert client.get(reverse("workspace-run", args=[own.id, run.id])).status_code == 404
    event = SecurityEvent.objects.get(user=charlie, code="execution_not_owned")
    assert event.details["object_id"] == str(run.id)


def test_it_redirects_an_anonymous_visitor_to_the_login_page(
    client: Client, thread: Thread, run: Execution
) -> None:
    for url in [reverse("thread-list"), *page_urls(thread, run)]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next="), url
    for url in post_urls(thread):
        assert client.post(url).status_code == 302, url
    assert Thread.objects.filter(pk=thread.pk).exists()


def test_the_home_page_is_the_landing_page_for_an_anonymous_visitor(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert b'href="/accounts/login/"' in response.content
    assert b"Your threads" not in response.content


# --- full page versus partial -----------------------------------------------------------------


def test_each_page_answers_htmx_with_its_partial_only(
    client: Client, alice: AbstractBaseUser, thread: Thread, run: Execution
) -> None:
    client.force_login(alice)
    for url in page_urls(thread, run):
        response = client.get(url, **HTMX)
        assert response.status_code == 200, url
        assert b"<html" not in response.content, url
        assert b"site-header" not in response.content, url


def test_the_thread_list_answers_htmx_with_the_rows_only(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    client.force_login(alice)
    full = client.get("/")
    partial = client.get("/", **HTMX)
    assert b"<html" in full.content and b'id="thread-list"' in full.content
    assert partial.content.decode().lstrip().startswith('<ul id="thread-list"')
    assert "alice&#x27;s analysis" in partial.content.decode()


# --- threads --------------------------------------------------------------------------------


def test_the_thread_list_shows_the_most_recent_first_and_only_the_users(
    client: Client, alice: AbstractBaseUser, charlie: AbstractBaseUser
) -> None:
    Thread.objects.create(owner=alice, title="first made")
    Thread.objects.create(owner=alice, title="second made")
    Thread.objects.create(owner=charlie, title="charlie's secret")
    client.force_login(alice)
    content = client.get("/").content.decode()
    titles = re.findall(r'class="thread-title"[^>]*>([^<]+)<', content)
    assert titles == ["second made", "first made"]
    assert "charlie" not in content
    # The new-thread box starts empty (with a placeholder), not with the model's default.
    assert re.search(r'id="id_new_title"[^>]*value=""', content)
    # A run in the older thread makes it the most recently used.
    Thread.objects.filter(title="first made").update(last_used_at=timezone.now())
    content = client.get("/").content.decode()
    titles = re.findall(r'class="thread-title"[^>]*>([^<]+)<', content)
    assert titles == ["first made", "second made"]


def test_the_search_filters_threads_by_title(client: Client, alice: AbstractBaseUser) -> None:
    Thread.objects.create(owner=alice, title="Sales report")
    Thread.objects.create(owner=alice, title="Weather model")
    client.force_login(alice)
    content = client.get("/?q=sales", **HTMX).content.decode()
    assert "Sales report" in content
    assert "Weather model" not in content
    assert "No thread title contains" in client.get("/?q=nothing-like-it").content.decode()


def test_creating_a_thread_opens_its_workspace(client: Client, alice: AbstractBaseUser) -> None:
    client.force_login(alice)
    response = client.post(reverse("thread-create"), {"title": "  Fresh  "})
    thread = Thread.objects.get(owner=alice)
    assert thread.title == "Fresh"
    assert response.status_code == 302
    assert response["Location"] == reverse("workspace", args=[thread.id])


def test_creating_a_thread_over_htmx_redirects_the_client(
    client: Client, alice: AbstractBaseUser
) -> None:
    client.force_login(alice)
    response = client.post(reverse("thread-create"), {"title": "Fresh"}, **HTMX)
    thread = Thread.objects.get(owner=alice)
    assert response["HX-Redirect"] == reverse("workspace", args=[thread.id])


def test_a_thread_needs_a_title_and_says_so(client: Client, alice: AbstractBaseUser) -> None:
    client.force_login(alice)
    response = client.post(reverse("thread-create"), {"title": "   "}, **HTMX)
    assert response.status_code == 400
    assert "Give the thread a title." in response.content.decode()
    long = client.post(reverse("thread-create"), {"title": "x" * 201}, **HTMX)
    assert long.status_code == 400
    assert "at most 200 characters" in long.content.decode()
    assert not Thread.objects.filter(owner=alice).exists()


def test_renaming_a_thread_over_htmx_returns_its_row(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    client.force_login(alice)
    url = reverse("thread-rename", args=[thread.id])
    form = client.get(url, **HTMX).content.decode()
    assert 'name="title"' in form
    response = client.post(url, {"title": "Renamed"}, **HTMX)
    assert response.status_code == 200
    assert f'id="thread-{thread.id}"' in response.content.decode()
    assert "Renamed" in response.content.decode()
    thread.refresh_from_db()
    assert thread.title == "Renamed"


def test_renaming_without_javascript_goes_back_to_the_list(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    client.force_login(alice)
    response = client.post(reverse("thread-rename", args=[thread.id]), {"title": "Plain"})
    assert response.status_code == 302
    assert response["Location"] == reverse("home")


def test_deleting_a_thread_removes_it_and_keeps_its_runs(
    client: Client, alice: AbstractBaseUser, thread: Thread, run: Execution
) -> None:
    client.force_login(alice)
    response = client.post(reverse("thread-delete", args=[thread.id]), **HTMX)
    assert response.status_code == 200
    assert response.content == b""
    assert not Thread.objects.filter(pk=thread.pk).exists()
    run.refresh_from_db()
    assert run.thread is None


# --- the workspace ----------------------------------------------------------------------------


def test_the_workspace_page_loads_the_editor_and_the_live_script_from_our_static_files(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    client.force_login(alice)
    content = client.get(reverse("workspace", args=[thread.id])).content.decode()
    # Only external scripts: the CSP forbids inline ones (a JSON data block runs nothing).
    scripts = [
        tag for tag in re.findall(r"<script[^>]*>", content) if "application/json" not in tag
    ]
    assert all('src="/static/' in tag for tag in scripts), scripts
    sources = [re.search(r'src="([^"]+)"', tag).group(1) for tag in scripts]  # type: ignore[union-attr]
    assert sources == [
        "/static/vendor/htmx.org/htmx.min.js",
        "/static/vendor/dompurify/purify.min.js",
        "/static/vendor/marked/marked.umd.js",
        "/static/vendor/katex/katex.min.js",
        "/static/vendor/katex/contrib/auto-render.min.js",
        "/static/vendor/chart.js/chart.umd.min.js",
        "/static/js/ansi.js",
        "/static/js/output.js",
        "/static/js/workspace.js",
        # UMD packages before Monaco's AMD loader, which would take them as modules.
        "/static/vendor/%40xterm/xterm/lib/xterm.js",
        "/static/vendor/%40xterm/addon-fit/addon-fit.js",
        "/static/vendor/monaco-editor/vs/loader.js",
        "/static/js/terminal.js",
    ]
    assert f'data-thread-id="{thread.id}"' in content
    assert 'data-monaco-base="/static/vendor/monaco-editor/vs"' in content
    for language in ("python", "javascript", "typescript", "bash"):
        assert f'value="{language}"' in content


def test_the_workspace_starts_with_the_last_runs_code_and_language(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    Execution.objects.create(
        thread=thread,
        user=alice,
        language=Language.BASH,
        code="echo <last>",
        status=Execution.Status.RUNNING,
    )
    client.force_login(alice)
    content = client.get(reverse("workspace", args=[thread.id])).content.decode()
    assert "echo &lt;last&gt;</textarea>" in content
    assert re.search(r'value="bash"[^>]*selected', content)
    # Still running: the page catches it up through the replay socket.
    assert "data-active-run=" in content


def test_pages_carry_the_content_security_policy(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    client.force_login(alice)
    policy = client.get(reverse("workspace", args=[thread.id]))[CSP_HEADER]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert "'unsafe-inline'" not in directives["script-src"]
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert "blob:" in directives["worker-src"]


def test_the_api_docs_page_has_no_inline_script(client: Client, alice: AbstractBaseUser) -> None:
    client.force_login(alice)
    content = client.get(reverse("api-docs")).content.decode()
    assert "<script>" not in content
    assert re.search(r'<script src="/api/docs/\?script=?"', content)


# --- history and output -------------------------------------------------------------------------


def test_the_history_lists_runs_newest_first(
    client: Client, alice: AbstractBaseUser, thread: Thread, run: Execution
) -> None:
    newer = Execution.objects.create(
        thread=thread, user=alice, language=Language.JAVASCRIPT, code="console.log(2)",
        status=Execution.Status.SUCCEEDED, duration_ms=7,
    )  # fmt: skip
    client.force_login(alice)
    content = client.get(reverse("workspace-history", args=[thread.id]), **HTMX).content.decode()
    assert content.index(str(newer.id)) < content.index(str(run.id))
    assert "Succeeded" in content and "Failed" in content and "7 ms" in content
    assert f'href="{reverse("workspace-run", args=[thread.id, run.id])}"' in content


def test_a_stored_run_shows_its_streams_results_error_and_truncation(
    client: Client, alice: AbstractBaseUser, thread: Thread, run: Execution
) -> None:
    client.force_login(alice)
    response = client.get(reverse("workspace-run", args=[thread.id, run.id]), **HTMX)
    content = response.content.decode()
    assert '<span class="stdout">hi\n</span>' in content
    assert '<span class="stderr">a warning\n</span>' in content
    assert 'src="data:image/png;base64,iVBORw0KGgo="' in content
    # The code's HTML is only ever inside a sandboxed iframe, escaped into srcdoc.
    assert '<iframe class="result-html" sandbox="" srcdoc="&lt;b&gt;table&lt;/b&gt;' in content
    assert "<script>parent.pwned" not in content
    assert "<strong>ZeroDivisionError</strong>: division by zero" in content
    assert "\x1b" not in content
    assert "42 ms" in content and "exit 1" in content
    assert "Output was truncated" in content
    assert 'data-load-code="' in content and "print(&#x27;hi&#x27;)" in content
    # The whole page (no editor on it) links to the workspace instead.
    page = client.get(reverse("workspace-run", args=[thread.id, run.id])).content.decode()
    assert "data-load-code" not in page
    assert f'href="{reverse("workspace", args=[thread.id])}">Open the workspace' in page


# --- files ----------------------------------------------------------------------------------


def test_a_new_file_is_stored_and_opened_in_the_editor(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    client.force_login(alice)
    response = client.post(
        reverse("workspace-file-create", args=[thread.id]), {"path": "notes/todo.md"}, **HTMX
    )
    assert response.status_code == 201
    assert "notes/todo.md" in response.content.decode()
    assert '"workspace:file-open"' in response["HX-Trigger"]
    row = WorkspaceFile.objects.get(thread=thread)
    assert (row.path, row.size, row.read_content()) == ("notes/todo.md", 0, b"")


def test_a_new_file_is_refused_when_it_exists(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    client.force_login(alice)
    url = reverse("workspace-file-create", args=[thread.id])
    client.post(url, {"path": "a.txt"}, **HTMX)
    response = client.post(url, {"path": "a.txt"}, **HTMX)
    assert response.status_code == 400
    assert "a.txt exists already" in response.content.decode()


def test_a_path_outside_the_workspace_is_refused_with_the_policy_message_and_audited(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    client.force_login(alice)
    response = client.post(
        reverse("workspace-file-create", args=[thread.id]), {"path": "../etc/passwd"}, **HTMX
    )
    assert response.status_code == 400
    content = response.content.decode()
    assert "(path_traversal)" in content
    assert "Traceback" not in content
    assert not WorkspaceFile.objects.filter(thread=thread).exists()
    assert SecurityEvent.objects.filter(code="path_traversal", user=alice).exists()


def test_saving_the_editor_writes_the_file_and_says_so(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    client.force_login(alice)
    url = reverse("workspace-file-save", args=[thread.id])
    response = client.post(url, {"path": "main.py", "content": "print(1)\n\n"}, **HTMX)
    assert response.status_code == 200
    assert '"workspace:file-saved"' in response["HX-Trigger"]
    client.post(url, {"path": "main.py", "content": "print(2)\n"}, **HTMX)
    row = WorkspaceFile.objects.get(thread=thread, path="main.py")
    assert row.read_content() == b"print(2)\n"


def test_an_upload_is_stored_under_its_name_or_the_path_given(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    client.force_login(alice)
    url = reverse("workspace-file-upload", args=[thread.id])
    data = bytes(range(256))
    response = client.post(url, {"file": SimpleUploadedFile("blob.bin", data)}, **HTMX)
    assert response.status_code == 201
    client.post(url, {"file": SimpleUploadedFile("x.csv", b"a,b\n"), "path": "data/in.csv"}, **HTMX)
    files = {f.path: f.read_content() for f in WorkspaceFile.objects.filter(thread=thread)}
    assert files == {"blob.bin": data, "data/in.csv": b"a,b\n"}


def test_an_upload_over_the_size_limit_is_refused(
    client: Client, alice: AbstractBaseUser, thread: Thread, settings: object
) -> None:
    settings.EXECUTION_MAX_FILE_BYTES = 10  # type: ignore[attr-defined]
    client.force_login(alice)
    response = client.post(
        reverse("workspace-file-upload", args=[thread.id]),
        {"file": SimpleUploadedFile("big.txt", b"x" * 11)},
        **HTMX,
    )
    assert response.status_code == 413
    assert "(file_too_large)" in response.content.decode()
    assert not WorkspaceFile.objects.filter(thread=thread).exists()


def test_the_files_panel_links_each_file_for_download_and_deletes_it(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    client.force_login(alice)
    client.post(
        reverse("workspace-file-save", args=[thread.id]), {"path": "r.txt", "content": "hey"}
    )
    panel = client.get(reverse("workspace-files", args=[thread.id]), **HTMX).content.decode()
    download = reverse("api-thread-file-detail", args=[thread.id, "r.txt"])
    assert f'href="{download}" download' in panel
    assert client.get(download).getvalue() == b"hey"
    response = client.post(
        reverse("workspace-file-delete", args=[thread.id]), {"path": "r.txt"}, **HTMX
    )
    assert response.status_code == 200
    assert not WorkspaceFile.objects.filter(thread=thread).exists()
    missing = client.post(
        reverse("workspace-file-delete", args=[thread.id]), {"path": "r.txt"}, **HTMX
    )
    assert missing.status_code == 404
    assert "(file_not_found)" in missing.content.decode()


# --- packages -------------------------------------------------------------------------------


def test_a_refused_package_spec_is_shown_stored_and_audited(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    client.force_login(alice)
    response = client.post(
        reverse("workspace-package-install", args=[thread.id]),
        {"language": "python", "packages": "https://evil.example/x.whl"},
        **HTMX,
    )
    assert response.status_code == 400
    assert "(package_spec_url)" in response.content.decode()
    install = PackageInstall.objects.get(thread=thread)
    assert install.status == PackageInstall.Status.REJECTED
    assert SecurityEvent.objects.filter(code="package_spec_url", user=alice).exists()


def test_installs_from_the_page_share_the_install_rate_limit_with_the_api(
    client: Client, alice: AbstractBaseUser, thread: Thread, settings: object
) -> None:
    settings.INSTALL_THROTTLE_RATE = "1/minute"  # type: ignore[attr-defined]
    cache.clear()
    client.force_login(alice)
    url = reverse("workspace-package-install", args=[thread.id])
    # The first request uses the minute's only install; it is refused by the policy before
    # any sandbox work, so this test needs none.
    first = client.post(url, {"language": "python", "packages": "--index-url=x"}, **HTMX)
    assert first.status_code == 400
    second = client.post(url, {"language": "python", "packages": "six"}, **HTMX)
    assert second.status_code == 429
    assert "(throttled)" in second.content.decode()
    assert int(second["Retry-After"]) >= 1
    assert SecurityEvent.objects.filter(code="throttled", user=alice, kind="quota").exists()
    assert not PackageInstall.objects.filter(thread=thread, packages=["six"]).exists()


def test_the_packages_panel_polls_while_an_install_runs_and_stops_after(
    client: Client, alice: AbstractBaseUser, thread: Thread
) -> None:
    client.force_login(alice)
    url = reverse("workspace-packages", args=[thread.id])
    # The client expects a first install that has not appeared yet: keep polling.
    # Only the list polls (`?part=list`): the form above it is never replaced while typed in.
    waiting = client.get(url + "?after=0", **HTMX).content.decode()
    assert 'hx-get="' + url + '?part=list&amp;after=0"' in waiting
    install = PackageInstall.objects.create(
        thread=thread, user=alice, language="python", packages=["six"],
        status=PackageInstall.Status.RUNNING,
    )  # fmt: skip
    running = client.get(url + "?part=list&after=0", **HTMX).content.decode()
    assert f'hx-get="{url}?part=list"' in running and "Starting the installer…" in running
    assert "<form" not in running
    install.status, install.log = PackageInstall.Status.SUCCEEDED, "Successfully installed six"
    install.save()
    done = client.get(url + "?part=list", **HTMX).content.decode()
    assert "hx-get" not in done.split(">", 1)[0]
    assert "Successfully installed six" in done and "Succeeded" in done


def test_a_page_for_a_thread_that_does_not_exist_is_404(
    client: Client, alice: AbstractBaseUser
) -> None:
    client.force_login(alice)
    assert client.get(reverse("workspace", args=[uuid.uuid4()])).status_code == 404
