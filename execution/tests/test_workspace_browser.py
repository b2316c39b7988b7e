"""The browser workspace end to end: headless Chromium (Playwright) against a live daphne
serving the project, a real sandboxd behind it, and the real websocket in between.

A person logs in, creates a thread, types code into Monaco, runs it and watches the output
stream in, sees a matplotlib figure, stops a long run, creates, saves, uploads and downloads
files, installs a package and imports it, reloads and finds the history. Code's HTML output
is shown but none of its script runs in the page. No page may break the Content-Security-
Policy. Screenshots go to test-artifacts/screenshots/ (ignored by git) for a person to look at.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from accounts.testing import TEST_PASSWORD
from execution.models import (
    Execution,
    PackageInstall,
    SecurityEvent,
    Source,
    Thread,
    WorkspaceFile,
)
from execution.tests.live import LiveStack, create_user, live_stack

pytestmark = [pytest.mark.browser, pytest.mark.sandboxd, pytest.mark.timeout(300)]

SCREENSHOTS = Path(settings.BASE_DIR) / "test-artifacts" / "screenshots"
# Runs go through a real sandbox: the first one of a thread starts it (a few seconds).
RUN_TIMEOUT_MS = 60_000


@dataclass
class Site:
    """The live deployment and the person using it."""

    stack: LiveStack
    alice: AbstractBaseUser

    @property
    def url(self) -> str:
        return self.stack.server.http_url

    @property
    def alias(self) -> str:
        return self.stack.database.alias


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The static files collected once, served by WhiteNoise exactly as `make run` serves them."""
    root = tmp_path_factory.mktemp("workspace-static")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "STATIC_ROOT": str(root)},
        check=True,
    )
    return root


# The output cap of the deployed site: small enough for a test to reach, large enough for a
# matplotlib figure (results count towards it).
MAX_OUTPUT_BYTES = 200_000


@contextlib.contextmanager
def deployed_site(
    directory: Path, static_root: Path, *, sandboxd_url: str, api_key: str
) -> Iterator[Site]:
    """daphne (DEBUG off, as deployed) in front of `sandboxd_url`, with alice's account."""
    with live_stack(
        directory,
        sandboxd_url=sandboxd_url,
        sandboxd_api_key=api_key,
        extra_env={
            "STATIC_ROOT": str(static_root),
            "EXECUTION_MAX_OUTPUT_BYTES": str(MAX_OUTPUT_BYTES),
        },
    ) as stack:
        alice = create_user(stack.database.alias, "alice", TEST_PASSWORD)
        yield Site(stack=stack, alice=alice)


@pytest.fixture(scope="module")
def site(
    django_db_setup: None,
    django_db_blocker: Any,
    sandboxd_server: Any,
    static_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    """The project served in front of the session's real sandboxd."""
    with (
        django_db_blocker.unblock(),
        deployed_site(
            tmp_path_factory.mktemp("workspace-browser"),
            static_root,
            sandboxd_url=sandboxd_server.url,
            api_key=sandboxd_server.api_key,
        ) as deployed,
    ):
        yield deployed


@dataclass
class Watch:
    """What the page said in its console: CSP violations and uncaught errors fail a test."""

    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def csp_violations(self) -> list[str]:
        return [m for m in self.messages if "Content Security Policy" in m]

    def accept_blocked_event_handlers(self) -> int:
        """Forget the CSP's reports of inline event handlers it blocked, and count them.

        Hostile output (an `<img onerror>` in a run's HTML or Markdown) is sanitised before
        it reaches the page, but Chromium reports the handler as blocked as soon as the
        sanitiser parses it in its inert document: that report is the policy working. A test
        that plants such a handler calls this; every other CSP report still fails a test.
        """
        blocked = [m for m in self.csp_violations() if "inline event handler" in m]
        self.messages = [m for m in self.messages if m not in blocked]
        return len(blocked)


@pytest.fixture
def watch() -> Watch:
    return Watch()


@contextlib.contextmanager
def logged_in_page(chromium: Browser, site: Site, watch: Watch) -> Iterator[Page]:
    """A fresh browser context on `site`, logged in as alice through the login form; fails
    the test on any CSP violation or uncaught script error the page reported."""
    context = chromium.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("console", lambda message: watch.messages.append(_console_text(message)))
    page.on("pageerror", lambda error: watch.errors.append(str(error)))
    page.goto(f"{site.url}/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{site.url}/")
    yield page
    context.close()
    assert watch.csp_violations() == []
    assert watch.errors == []


@pytest.fixture
def page(chromium: Browser, site: Site, watch: Watch) -> Iterator[Page]:
    with logged_in_page(chromium, site, watch) as page:
        yield page


def _console_text(message: ConsoleMessage) -> str:
    return f"{message.type}: {message.text}"


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def create_thread(page: Page, site: Site, title: str) -> Thread:
    """Create a thread from the list and wait for its workspace, with Monaco and the socket."""
    page.get_by_label("New thread").fill(title)
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"/threads/[0-9a-f-]{36}/$"))
    wait_for_workspace(page)
    thread_id = page.locator("[data-workspace]").get_attribute("data-thread-id")
    return Thread.objects.using(site.alias).get(pk=thread_id)


def wait_for_workspace(page: Page) -> None:
    workspace = page.locator("[data-workspace]")
    expect(workspace).to_have_attribute("data-editor", "monaco")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")


def focus_editor(page: Page) -> None:
    """Click into Monaco's text, as a person would."""
    page.locator("#editor .view-lines").click()


def set_code(page: Page, code: str) -> None:
    """Put `code` in the editor through Monaco's own API.

    Typing key by key is covered by the first test; multi-line code typed or inserted as
    text gets Monaco's auto-indent on top of its own indentation, so here the text is set
    whole, as a paste of a prepared snippet would be.
    """
    focus_editor(page)
    page.evaluate("code => window.atlaschatEditor.setValue(code)", code)


def stored_file(site: Site, thread: Thread, path: str) -> bytes:
    """The bytes the server stored for a workspace file (its media directory is the stack's)."""
    row = WorkspaceFile.objects.using(site.alias).get(thread=thread, path=path)
    return (site.stack.directory / "media" / row.content.name).read_bytes()


def editor_value(page: Page) -> str:
    return page.evaluate("window.atlaschatEditor.getValue()")


def run_status(page: Page) -> Any:
    return page.locator("#output .run .status")


def run_and_wait(page: Page, code: str, status: str = "Succeeded") -> None:
    set_code(page, code)
    page.keyboard.press("ControlOrMeta+Enter")
    expect(run_status(page)).to_have_text(status, timeout=RUN_TIMEOUT_MS)


# --- the tests ------------------------------------------------------------------------------


def test_a_person_creates_a_thread_types_code_and_watches_the_output_stream_in(
    page: Page, site: Site
) -> None:
    expect(page.get_by_role("heading", name="Your threads")).to_be_visible()
    screenshot(page, "01-thread-list-empty")
    thread = create_thread(page, site, "First steps")
    assert thread.title == "First steps"

    # Typed key by key into Monaco: auto-closing brackets and quotes must not garble it.
    focus_editor(page)
    page.keyboard.type('import sys, time; print("tick", 0, flush=True); time.sleep(2)')
    page.keyboard.press("Enter")
    page.keyboard.type('print("tick", 1); print("to stderr", file=sys.stderr); time.sleep(2)')
    page.keyboard.press("Enter")
    page.keyboard.type('print("tick", 2)')
    assert editor_value(page).splitlines()[-1] == 'print("tick", 2)'
    page.get_by_role("button", name="Run").click()

    output = page.locator("#output")
    # The first line arrives while the run is still going: it streamed.
    expect(output.locator(".stdout")).to_contain_text("tick 0", timeout=RUN_TIMEOUT_MS)
    expect(run_status(page)).to_have_text("Running")
    assert "tick 2" not in output.inner_text()
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    screenshot(page, "02-run-streaming")

    expect(run_status(page)).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
    expect(output.locator(".stdout").last).to_contain_text("tick 2")
    expect(output.locator(".stderr")).to_have_text("to stderr\n")
    expect(output.locator(".duration")).to_have_text(re.compile(r"^(\d+ ms|\d+\.\d+ s)$"))
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    # The history got the run.
    expect(page.locator("#history .run-row")).to_have_count(1)
    run = Execution.objects.using(site.alias).get(thread=thread)
    assert run.status == Execution.Status.SUCCEEDED
    assert run.stdout == "tick 0\ntick 1\ntick 2\n"
    assert run.source == Source.BROWSER  # the admin's "Browser" filter finds it
    # So did the header's count of today's runs, without a reload.
    runs_today = (
        Execution.objects.using(site.alias)
        .filter(user_id=thread.owner_id)
        .exclude(status=Execution.Status.REJECTED)
        .count()
    )
    expect(page.locator(".usage-badge")).to_contain_text(f"Today: {runs_today} run")


def test_a_matplotlib_figure_is_shown_inline(page: Page, site: Site) -> None:
    create_thread(page, site, "Plots")
    run_and_wait(
        page,
        "import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 3, 2, 5]); plt.title('a line'); plt.show()\n",
    )
    image = page.locator("#output img.result-image")
    expect(image).to_have_count(1)
    expect(image).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    width = image.evaluate("img => img.complete ? img.naturalWidth : 0")
    assert width > 100
    screenshot(page, "03-matplotlib-figure")


def test_e2b_chart_data_is_drawn_as_an_interactive_chart(page: Page, site: Site) -> None:
    """A figure's chart data (e2b-charts, as E2B's kernels give it) becomes a Chart.js chart
    with the figure's points and title; the static picture stays one click away."""
    create_thread(page, site, "Charts")
    run_and_wait(
        page,
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3, 4], [1, 3, 2, 5], label='sales'); plt.title('a line')\n"
        "plt.xlabel('day'); plt.show()\n",
    )
    canvas = page.locator("#output .result-chart canvas")
    expect(canvas).to_have_count(1)
    expect(canvas).to_have_attribute("aria-label", "a line")
    drawn = canvas.evaluate(
        "c => { const chart = window.Chart.getChart(c); return chart && {"
        " type: chart.config.type, title: chart.options.plugins.title.text,"
        " points: chart.data.datasets[0].data.map(p => [p.x, p.y]) }; }"
    )
    assert drawn == {
        "type": "line",
        "title": "a line",
        "points": [[1, 1], [2, 3], [3, 2], [4, 5]],
    }
    expect(page.locator("#output details.chart-still img.result-image")).to_have_count(1)
    screenshot(page, "03b-interactive-chart")


def test_a_long_run_is_stopped_with_the_stop_button(page: Page, site: Site) -> None:
    thread = create_thread(page, site, "Endless")
    set_code(page, "import time\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.1)\n")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#output .stdout")).to_contain_text("started", timeout=RUN_TIMEOUT_MS)
    page.get_by_role("button", name="Stop").click()
    expect(run_status(page)).to_have_text("Cancelled", timeout=30_000)
    expect(page.get_by_role("button", name="Run")).to_be_enabled()
    run = Execution.objects.using(site.alias).get(thread=thread)
    assert run.status == Execution.Status.CANCELLED
    # The kernel survived the interrupt: the next run works.
    run_and_wait(page, "print('still alive')")
    expect(page.locator("#output .stdout")).to_have_text("still alive\n")


def test_files_are_created_saved_uploaded_downloaded_and_made_by_code(
    page: Page, site: Site, tmp_path: Path
) -> None:
    thread = create_thread(page, site, "Files")
    files = page.locator("#files")

    # New file: it appears in the list and opens, empty, in the editor.
    files.get_by_label("New file").fill("notes/hello.py")
    files.get_by_role("button", name="Create").click()
    expect(files.locator(".file-open")).to_have_text(["notes/hello.py"])
    expect(page.locator("#file-path")).to_have_value("notes/hello.py")
    expect(page.locator("#language")).to_have_value("python")
    set_code(page, "print('saved from the editor')\n")
    page.keyboard.press("ControlOrMeta+s")
    expect(page.locator("#alerts")).to_contain_text("Saved notes/hello.py")
    assert stored_file(site, thread, "notes/hello.py") == b"print('saved from the editor')\n"

    # Upload, then download it back byte for byte.
    upload = tmp_path / "data.csv"
    upload.write_bytes(b"a,b\n1,2\n")
    files.get_by_label("File to upload").set_input_files(str(upload))
    files.get_by_role("button", name="Upload", exact=True).click()
    expect(files.locator(".file-open")).to_have_text(["data.csv", "notes/hello.py"])
    with page.expect_download() as download_info:
        files.get_by_role("link", name="Download data.csv").click()
    downloaded = tmp_path / "downloaded.csv"
    download_info.value.save_as(downloaded)
    assert downloaded.read_bytes() == b"a,b\n1,2\n"

    # Code reads the uploaded file and writes one: it shows up after the run.
    run_and_wait(
        page,
        "rows = open('data.csv').read().splitlines()\n"
        "open('made_by_code.txt', 'w').write(str(len(rows)))\nprint(len(rows))\n",
    )
    expect(files.locator(".file-open")).to_have_text(
        ["data.csv", "made_by_code.txt", "notes/hello.py"]
    )
    # Open it in the editor.
    files.get_by_role("link", name="made_by_code.txt", exact=True).click()
    expect(page.locator("#file-path")).to_have_value("made_by_code.txt")
    assert editor_value(page) == "2"
    screenshot(page, "04-files")

    # Delete one (confirming the dialog).
    page.once("dialog", lambda dialog: dialog.accept())
    files.get_by_role("button", name="Delete data.csv").click()
    expect(files.locator(".file-open")).to_have_text(["made_by_code.txt", "notes/hello.py"])


def test_a_refused_path_is_explained_in_the_page(page: Page, site: Site) -> None:
    create_thread(page, site, "Refusals")
    files = page.locator("#files")
    files.get_by_label("New file").fill("../outside.txt")
    files.get_by_role("button", name="Create").click()
    expect(files.get_by_role("alert")).to_contain_text("(path_traversal)")


def test_a_package_is_installed_and_imported(page: Page, site: Site) -> None:
    thread = create_thread(page, site, "Packages")
    page.locator("summary", has_text="Packages").click()  # open the panel
    packages = page.locator("#packages")
    packages.get_by_label("Packages").fill("six==1.17.0")
    packages.get_by_role("button", name="Install").click()
    install = packages.locator(".install").first
    expect(install).to_have_attribute("data-install-status", "succeeded", timeout=120_000)
    install.get_by_text("Log").click()
    expect(install.locator(".install-log")).to_contain_text("six")
    screenshot(page, "05-packages")
    assert PackageInstall.objects.using(site.alias).get(thread=thread).status == "succeeded"
    run_and_wait(page, "import six\nprint(six.__version__)\n")
    expect(page.locator("#output .stdout")).to_have_text("1.17.0\n")

    # npm, for JavaScript and TypeScript: the newest install comes first.
    packages.get_by_label("Installer").select_option("javascript")
    packages.get_by_label("Packages").fill("is-number@7.0.0")
    packages.get_by_role("button", name="Install").click()
    expect(packages.locator(".install")).to_have_count(2)
    newest = packages.locator(".install").first
    expect(newest).to_have_attribute("data-install-status", "succeeded", timeout=120_000)
    expect(newest).to_contain_text("is-number@7.0.0")
    page.locator("#language").select_option("javascript")
    run_and_wait(page, "const isNumber = require('is-number');\nconsole.log(isNumber(5));\n")
    expect(page.locator("#output .stdout")).to_have_text("true\n")


def test_after_a_reload_the_history_shows_the_runs_and_loads_their_code(
    page: Page, site: Site
) -> None:
    create_thread(page, site, "History")
    run_and_wait(page, "print('first run')\n")
    page.locator("#language").select_option("javascript")
    run_and_wait(page, "console.log('second run')\n")
    page.reload()
    wait_for_workspace(page)
    runs = page.locator("#history .run-row")
    expect(runs).to_have_count(2)
    expect(runs.first).to_contain_text("JavaScript")
    expect(runs.last).to_contain_text("Python")

    runs.last.get_by_role("link").click()
    expect(page.locator("#output .stdout")).to_have_text("first run\n")
    page.get_by_role("button", name="Open code in a new tab").click()
    # A new tab: the text being edited before is still there, in its own tab.
    expect(page.locator("#tabs .tab")).to_have_count(2)
    assert editor_value(page) == "print('first run')\n"
    expect(page.locator("#language")).to_have_value("python")
    screenshot(page, "06-history")


def test_a_reload_during_a_run_catches_up_its_output(page: Page, site: Site) -> None:
    create_thread(page, site, "Catch up")
    set_code(
        page,
        "import time\nfor i in range(6):\n    print('line', i, flush=True)\n    time.sleep(0.7)\n",
    )
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#output .stdout")).to_contain_text("line 1", timeout=RUN_TIMEOUT_MS)
    page.reload()
    # The page replays what the run printed so far, then follows it live to the end.
    expect(page.locator("#output .stdout").first).to_contain_text("line 0")
    expect(run_status(page)).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
    text = page.locator("#output .stream").inner_text()
    assert text == "".join(f"line {i}\n" for i in range(6))


def test_no_script_in_a_runs_html_output_runs_in_the_page(
    page: Page, site: Site, watch: Watch
) -> None:
    create_thread(page, site, "Hostile HTML")
    title = page.title()
    run_and_wait(
        page,
        "from IPython.display import HTML, display\n"
        "display(HTML('<table><tr><td id=\"cell\">rendered</td></tr></table>'\n"
        "  '<script>window.parent.pwned = 1; parent.document.title = \"pwned\";</script>'\n"
        "  '<img src=x onerror=\"window.parent.pwned = 2\">'))\n",
    )
    # The HTML itself is rendered, sanitised, in the page (a table sized to its content)...
    cell = page.locator("#output .result-html-inline #cell")
    expect(cell).to_have_text("rendered")
    # ...but neither its <script> nor its event handler survived or ran.
    expect(page.locator("#output .result-html-inline script")).to_have_count(0)
    expect(page.locator("#output .result-html-inline [onerror]")).to_have_count(0)
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.title() == title

    # The same run reopened from the history is just as inert. Its sanitising parse is
    # reported too (waited for, so that it is accepted below and not after the test).
    with page.expect_console_message(lambda message: "inline event handler" in message.text):
        page.locator("#history .run-row").first.get_by_role("link").click()
    expect(page.locator("#output .result-html-inline #cell")).to_have_text("rendered")
    expect(page.locator("#output [onerror]")).to_have_count(0)
    expect(page.locator("#output .result-html-inline script")).to_have_count(0)
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.title() == title
    # Accepted only now, after the reopened run was sanitised too: each parse of the hostile
    # markup (live, then on reopening) is reported, and nothing else may be.
    assert watch.accept_blocked_event_handlers() >= 2
    screenshot(page, "07-html-output")


def test_an_error_shows_its_traceback_and_a_narrow_window_stays_readable(
    page: Page, site: Site
) -> None:
    create_thread(page, site, "Errors")
    run_and_wait(page, "def f():\n    return 1 / 0\nf()\n", status="Failed")
    error = page.locator("#output .run-error")
    expect(error).to_contain_text("ZeroDivisionError: division by zero")
    expect(error.locator(".traceback")).to_contain_text("return 1 / 0")
    page.set_viewport_size({"width": 420, "height": 900})
    # One column: the output comes below the editor and nothing is wider than the window.
    editor_box = page.locator("#editor").bounding_box()
    output_box = page.locator("#output").bounding_box()
    assert editor_box and output_box and output_box["y"] > editor_box["y"]
    assert page.evaluate("document.documentElement.scrollWidth") <= 420
    screenshot(page, "08-narrow-window-error")


def test_the_thread_list_renames_searches_and_deletes(page: Page, site: Site) -> None:
    create_thread(page, site, "Quarterly sales")
    page.get_by_role("link", name="Threads").click()
    create_thread(page, site, "Weather")
    page.get_by_role("link", name="Threads").click()
    titles = page.locator(".thread-title")
    expect(titles.first).to_have_text("Weather")  # most recent first

    row = page.locator(".thread-row", has_text="Quarterly sales")
    row.get_by_role("link", name="Rename").click()
    page.get_by_label("Title").fill("Yearly sales")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".thread-row", has_text="Yearly sales")).to_be_visible()

    page.get_by_label("Search threads").fill("yearly")
    expect(titles).to_have_text(["Yearly sales"])
    screenshot(page, "09-thread-search")
    page.get_by_label("Search threads").fill("")
    expect(page.locator(".thread-title", has_text="Weather")).to_be_visible()

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete Weather").click()
    expect(page.locator(".thread-title", has_text="Weather")).to_have_count(0)
    assert not Thread.objects.using(site.alias).filter(title="Weather").exists()


# Keeps every WebSocket the page opens in window.openedSockets, so a test can drop the live
# connection the way a network failure would (Chromium's offline emulation keeps open
# sockets open). Injected by Playwright, not served: the page itself has no such hook.
RECORD_SOCKETS = """
(() => {
  const Original = window.WebSocket;
  window.openedSockets = [];
  window.WebSocket = function (...args) {
    const socket = new Original(...args);
    window.openedSockets.push(socket);
    return socket;
  };
  window.WebSocket.prototype = Original.prototype;
  Object.assign(window.WebSocket, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
})();
"""


def test_a_dropped_connection_reconnects_by_itself_and_catches_up_the_run(
    page: Page, site: Site
) -> None:
    create_thread(page, site, "Flaky network")
    page.add_init_script(RECORD_SOCKETS)
    page.reload()
    wait_for_workspace(page)
    set_code(
        page,
        "import time\nfor i in range(8):\n    print('beat', i, flush=True)\n    time.sleep(0.5)\n",
    )
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#output .stdout")).to_contain_text("beat 1", timeout=RUN_TIMEOUT_MS)
    page.evaluate("window.openedSockets.forEach(socket => socket.close())")
    # The indicator says so, then the page reconnects on its own and replays the run.
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(run_status(page)).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
    text = page.locator("#output .stream").inner_text()
    assert text == "".join(f"beat {i}\n" for i in range(8))
    # And the new connection runs code.
    run_and_wait(page, "print('after the drop')")
    expect(page.locator("#output .stdout")).to_have_text("after the drop\n")


def test_a_refused_run_is_explained_in_the_page(page: Page, site: Site) -> None:
    create_thread(page, site, "Too big")
    set_code(page, "x = 1\n" * 50_000)  # 300 kB, over EXECUTION_MAX_CODE_BYTES
    page.get_by_role("button", name="Run").click()
    expect(page.locator("#alerts")).to_contain_text("(code_too_large)")
    expect(page.get_by_role("button", name="Run")).to_be_enabled()
    assert SecurityEvent.objects.using(site.alias).filter(code="code_too_large").exists()


def closed_loopback_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_sandbox_service_that_is_down_is_explained_in_the_page(
    chromium: Browser,
    static_root: Path,
    django_db_blocker: Any,
    tmp_path_factory: pytest.TempPathFactory,
    watch: Watch,
) -> None:
    with (
        django_db_blocker.unblock(),
        deployed_site(
            tmp_path_factory.mktemp("workspace-no-sandbox"),
            static_root,
            sandboxd_url=f"http://127.0.0.1:{closed_loopback_port()}",
            api_key="unused",
        ) as down,
        logged_in_page(chromium, down, watch) as page,
    ):
        create_thread(page, down, "No sandbox")
        run_and_wait(page, "print('never')", status="Error")
        error = page.locator("#output .run-error")
        expect(error).to_contain_text("(sandbox_unavailable)")
        expect(error).not_to_contain_text("Traceback")
        screenshot(page, "10-sandbox-unavailable")


def test_the_language_select_switches_highlighting_and_monacos_workers_run_under_the_csp(
    page: Page, site: Site
) -> None:
    create_thread(page, site, "Languages")
    language_of_model = "window.atlaschatEditor.getModel().getLanguageId()"
    for value, monaco_language in [
        ("bash", "shell"),
        ("javascript", "javascript"),
        ("python", "python"),
        ("typescript", "typescript"),
    ]:
        page.locator("#language").select_option(value)
        assert page.evaluate(language_of_model) == monaco_language
    # TypeScript's checker runs in a web worker: a type error gets a marker only if the
    # worker started (the CSP's worker-src allows it).
    set_code(page, "const n: number = 'not a number';\nconsole.log(n);\n")
    # (Polled from here: wait_for_function evaluates a string, which the CSP rightly refuses.)
    deadline = time.monotonic() + 30
    while not page.evaluate("window.monaco.editor.getModelMarkers({}).length"):
        assert time.monotonic() < deadline, "the TypeScript worker never reported the error"
        page.wait_for_timeout(200)
    run_and_wait(page, "const n: number = 6 * 7;\nconsole.log(n);\n")
    expect(page.locator("#output .stdout")).to_have_text("42\n")


def test_the_workspace_works_from_the_keyboard(page: Page, site: Site) -> None:
    # Create a thread with Enter in the form, no mouse.
    page.get_by_label("New thread").focus()
    page.keyboard.type("Keyboard only")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/threads/[0-9a-f-]{36}/$"))
    wait_for_workspace(page)
    # The language select is reachable and changes with the arrow keys.
    page.locator("#language").focus()
    page.keyboard.press("ArrowDown")
    expect(page.locator("#language")).to_have_value("javascript")
    page.keyboard.press("ArrowUp")
    expect(page.locator("#language")).to_have_value("python")
    # Type, run with Ctrl/Cmd+Enter, and leave the editor with Ctrl+M then Tab.
    focus_editor(page)
    page.keyboard.type("print(6 * 7)")
    page.keyboard.press("ControlOrMeta+Enter")
    expect(run_status(page)).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#output .stdout")).to_have_text("42\n")
    focus_editor(page)
    page.keyboard.press("Control+m")
    page.keyboard.press("Tab")
    assert (
        page.evaluate("document.getElementById('editor').contains(document.activeElement)") is False
    )
    # Ctrl/Cmd+Enter outside the editor runs too.
    page.keyboard.press("ControlOrMeta+Enter")
    expect(page.locator("#history .run-row")).to_have_count(2, timeout=RUN_TIMEOUT_MS)


def test_output_over_the_limit_is_cut_with_a_visible_notice(page: Page, site: Site) -> None:
    thread = create_thread(page, site, "Chatty")
    run_and_wait(page, f"print('x' * {MAX_OUTPUT_BYTES + 50_000})\nprint('the end')\n")
    notice = page.locator("#output .notice.truncated")
    expect(notice).to_contain_text("Output was truncated")
    assert "the end" not in page.locator("#output .stream").inner_text()
    run = Execution.objects.using(site.alias).get(thread=thread)
    assert run.truncated
    # The stored run (from the history) says so too.
    page.locator("#history .run-row").first.get_by_role("link").click()
    expect(page.locator("#output .notice.truncated")).to_be_visible()
