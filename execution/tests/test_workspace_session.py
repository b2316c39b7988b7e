# ruff: noqa: F811 (the deployment fixtures of test_workspace_browser are imported by name)
"""A working session in the workspace, second edition: Chromium (Playwright) against daphne
and the real sandboxd, as in test_workspace_browser.py (whose deployment fixtures this uses).

Nothing typed is lost (tabs, drafts across reloads, asking before leaving or replacing a
file); output comes in the order the code produced it, live and after a reload, drawn as a
terminal and a notebook would (colours, carriage returns, Markdown, LaTeX); installs show
their log while they run; a phone-width window works; no page breaks the CSP.
Screenshots go to test-artifacts/screenshots/ for a person to look at.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from execution.models import SecurityEvent, TerminalSession, WorkspaceFile
from execution.tests.live import close_code_of, create_user, open_socket, session_cookie_header
from execution.tests.test_workspace_browser import (  # noqa: F401 (fixtures)
    RUN_TIMEOUT_MS,
    Site,
    Watch,
    create_thread,
    editor_value,
    focus_editor,
    logged_in_page,
    run_and_wait,
    run_status,
    screenshot,
    set_code,
    site,
    static_root,
    wait_for_workspace,
    watch,
)

pytestmark = [pytest.mark.browser, pytest.mark.sandboxd, pytest.mark.timeout(300)]


@pytest.fixture
def page(chromium: Browser, site: Site, watch: Watch) -> Iterator[Page]:
    with logged_in_page(chromium, site, watch) as page:
        page.set_viewport_size({"width": 1440, "height": 900})
        yield page


def create_file(page: Page, path: str) -> None:
    page.get_by_label("New file").fill(path)
    page.locator("#files").get_by_role("button", name="Create").click()
    expect(page.locator(f'#files .file-row[data-path="{path}"]')).to_be_visible()
    expect(page.locator("#file-path")).to_have_value(path)


def tab(page: Page, name: str) -> Any:
    return page.locator("#tabs .tab", has=page.get_by_role("tab", name=name, exact=True))


def output_kinds(page: Page) -> list[str]:
    """What the shown run's body holds, in order: stdout, stderr, image, error, …"""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll(
               '#output article.run .run-body > *, #output article.run > .run-error'))
             .map(n => n.classList.contains('run-error') ? 'error'
                : n.matches('pre.stream') ? n.dataset.stream || n.firstElementChild.className
                : n.querySelector('img') ? 'image' : 'result')"""
    )


def test_unsaved_text_survives_creating_a_file_opening_a_file_and_a_reload_and_leaving_asks_first(
    page: Page, site: Site
) -> None:
    thread = create_thread(page, site, "Drafts")
    set_code(page, "print('scratch draft')\n")
    expect(tab(page, "Scratch")).to_have_class(re.compile(r"\bdirty\b"))
    # Creating a file opens it in a tab of its own: the scratch text stays where it was.
    create_file(page, "a.py")
    assert editor_value(page) == ""
    set_code(page, "x = 'unsaved in a.py'\n")
    create_file(page, "b.py")
    # Opening a file with unsaved text shows that text, not the stored (empty) file.
    page.locator('#files a[data-open-file="a.py"]').click()
    expect(page.locator("#file-path")).to_have_value("a.py")
    assert editor_value(page) == "x = 'unsaved in a.py'\n"
    tab(page, "Scratch").get_by_role("tab").click()
    assert editor_value(page) == "print('scratch draft')\n"
    screenshot(page, "20-tabs-with-unsaved-text")

    # A reload brings every tab back with its text and its unsaved marker.
    page.reload()
    wait_for_workspace(page)
    expect(page.locator("#tabs .tab-name")).to_have_text(["Scratch", "a.py", "b.py"])
    expect(tab(page, "a.py")).to_have_class(re.compile(r"\bdirty\b"))
    assert editor_value(page) == "print('scratch draft')\n"
    tab(page, "a.py").get_by_role("tab").click()
    assert editor_value(page) == "x = 'unsaved in a.py'\n"
    assert WorkspaceFile.objects.using(site.alias).get(thread=thread, path="a.py").size == 0

    # Leaving the page with unsaved text asks first; staying keeps everything.
    focus_editor(page)
    page.keyboard.type("# more")  # a page may only ask once the person has used it
    asked: list[str] = []

    def stay(dialog: Dialog) -> None:
        asked.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", stay)
    page.get_by_role("link", name="Threads").click()
    assert asked == ["beforeunload"]
    assert re.search(r"/threads/[0-9a-f-]{36}/$", page.url)
    expect(page.locator("#tabs .tab")).to_have_count(3)


def test_saving_over_another_file_asks_and_an_opened_js_file_switches_the_language(
    page: Page, site: Site
) -> None:
    thread = create_thread(page, site, "Replace")
    create_file(page, "app.js")
    expect(page.locator("#language")).to_have_value("javascript")
    set_code(page, "console.log('kept')\n")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#alerts .alert-success")).to_contain_text("Saved app.js")
    # Back to the scratch tab (Python), then open the .js file from the list: JavaScript.
    tab(page, "Scratch").get_by_role("tab").click()
    expect(page.locator("#language")).to_have_value("python")
    page.locator('#files a[data-open-file="app.js"]').click()
    expect(page.locator("#language")).to_have_value("javascript")

    # Saving other text under app.js's name asks; saying no keeps the file.
    page.get_by_role("button", name="New scratch tab").click()
    set_code(page, "print('other')\n")
    page.locator("#file-path").fill("app.js")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Save").click()
    stored = WorkspaceFile.objects.using(site.alias).get(thread=thread, path="app.js")
    page.wait_for_timeout(500)  # a save would have been sent by now; none may arrive
    stored.refresh_from_db()
    assert stored.size == len("console.log('kept')\n")
    # Saying yes replaces it.
    messages: list[str] = []

    def accept(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#alerts .alert-success")).to_contain_text("Saved app.js")
    assert messages and "app.js exists already" in messages[0]
    stored.refresh_from_db()
    assert stored.size == len("print('other')\n")


ORDERED_RUN = """\
import time
import matplotlib.pyplot as plt
print('before the chart', flush=True)
plt.plot([1, 3, 2])
plt.show()
time.sleep(0.3)
print('after the chart', flush=True)
raise ValueError('at the end')
"""


def test_a_run_that_prints_shows_a_chart_prints_again_and_raises_shows_them_in_order(
    page: Page, site: Site
) -> None:
    create_thread(page, site, "Order")
    run_and_wait(page, ORDERED_RUN, status="Failed")
    expected = ["stdout", "image", "stdout", "error"]
    assert output_kinds(page) == expected
    expect(page.locator("#output .run-body > .stream").first).to_contain_text("before the chart")
    expect(page.locator("#output .run-body > .stream").last).to_contain_text("after the chart")
    screenshot(page, "21-ordered-output-live")
    # After a reload the last run is shown again, from the database, in the same order.
    page.reload()
    wait_for_workspace(page)
    expect(run_status(page)).to_have_text("Failed")
    assert output_kinds(page) == expected
    # And from the history.
    page.locator("#history .run-row").first.get_by_role("link").click()
    expect(page.locator("#history .run-row.selected")).to_have_count(1)
    assert output_kinds(page) == expected
    screenshot(page, "22-ordered-output-after-reload")


def test_colour_codes_are_coloured_and_a_carriage_return_progress_bar_ends_as_one_line(
    page: Page, site: Site
) -> None:
    create_thread(page, site, "Terminal text")
    run_and_wait(
        page,
        "import time\n"
        "print('\\x1b[31mred alert\\x1b[0m plain')\n"
        "for i in range(5):\n"
        "    print(f'\\rprogress {i * 25}%', end='', flush=True)\n"
        "    time.sleep(0.1)\n"
        "print()\n"
        "print('done')\n",
    )
    stdout = page.locator("#output .stream.stdout")
    red = stdout.locator("span", has_text="red alert").last
    expect(red).to_have_css(
        "color", re.compile(r"rgb\(187, 0, 0\)|rgb\(205, 49, 49\)|rgb\(255, 0, 0\)")
    )
    text = stdout.inner_text()
    assert "\x1b" not in text and "[31m" not in text
    assert text.splitlines() == ["red alert plain", "progress 100%", "done"]
    screenshot(page, "23-colours-and-progress")


def test_markdown_and_latex_results_are_rendered_and_a_script_inside_markdown_does_not_run(
    page: Page, site: Site, watch: Watch
) -> None:
    create_thread(page, site, "Rich")
    run_and_wait(
        page,
        "from IPython.display import Latex, Markdown, display\n"
        "display(Markdown('# Results\\n\\n**bold** and $e^{i\\\\pi} + 1 = 0$\\n\\n'\n"
        "  '| a | b |\\n|---|---|\\n| 1 | 2 |\\n\\n'\n"
        "  '<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">'))\n"
        "display(Latex(r'$$\\frac{a}{b} = \\sqrt{c}$$'))\n",
    )
    markdown = page.locator("#output .result-markdown")
    expect(markdown.locator("h1")).to_have_text("Results")
    expect(markdown.locator("strong")).to_have_text("bold")
    expect(markdown.locator("table td").first).to_have_text("1")
    expect(markdown.locator(".katex").first).to_be_visible()
    expect(page.locator("#output .result-latex .katex-display")).to_be_visible()
    expect(page.locator("#output script")).to_have_count(0)
    expect(page.locator("#output [onerror]")).to_have_count(0)
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert watch.accept_blocked_event_handlers() >= 1
    screenshot(page, "24-markdown-and-latex")


def test_an_installs_log_lines_appear_before_it_finishes_and_typing_in_the_form_is_kept(
    page: Page, site: Site
) -> None:
    create_thread(page, site, "Installs")
    page.locator("summary", has_text="Packages").click()
    packages = page.locator("#packages")
    packages.get_by_label("Packages").fill("six==1.17.0")
    packages.get_by_role("button", name="Install").click()
    install = packages.locator(".install").first
    # The log shows the installer's own lines while the install is still running (`.live`
    # is the log of a running install; pip resolving and fetching takes seconds).
    expect(install.locator(".install-log.live")).to_contain_text("Collecting six", timeout=120_000)
    # Meanwhile a person types the next install: the polling never replaces it.
    packages.get_by_label("Packages").fill("is-number@7.0.0")
    expect(install).to_have_attribute("data-install-status", "succeeded", timeout=120_000)
    expect(packages.get_by_label("Packages")).to_have_value("is-number@7.0.0")
    screenshot(page, "25-install-log")


def test_a_phone_width_window_can_edit_run_and_read_the_output(
    chromium: Browser,
    site: Site,
    watch: Watch,
) -> None:
    with logged_in_page(chromium, site, watch) as page:
        page.set_viewport_size({"width": 390, "height": 844})
        page.get_by_role("button", name="New untitled thread").click()
        page.wait_for_url(re.compile(r"/threads/[0-9a-f-]{36}/$"))
        wait_for_workspace(page)
        expect(page.locator("h1")).to_have_text("Untitled")
        focus_editor(page)
        page.keyboard.type("print('hello from a phone')")
        page.get_by_role("button", name="Run", exact=True).click()
        expect(run_status(page)).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
        output = page.locator("#output")
        expect(output.locator(".stdout")).to_have_text("hello from a phone\n")
        output.scroll_into_view_if_needed()
        expect(output).to_be_in_viewport()
        editor_box = page.locator("#editor").bounding_box()
        output_box = output.bounding_box()
        assert editor_box and output_box
        assert output_box["y"] >= editor_box["y"] + editor_box["height"]
        assert output_box["x"] >= 0 and output_box["x"] + output_box["width"] <= 390
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, "26-phone")


def test_no_page_breaks_the_content_security_policy(
    page: Page,
    site: Site,
    watch: Watch,
) -> None:
    create_thread(page, site, "Every page")
    run_and_wait(page, "print('x')\n")
    workspace = page.url
    run_link = page.locator("#history .run-row a").first.get_attribute("href")
    for path in ("/", workspace, run_link, workspace + "files/", workspace + "packages/",
                 workspace + "runs/", "/threads/00000000-0000-0000-0000-000000000000/",
                 "/api/docs/"):  # fmt: skip
        page.goto(path if path and path.startswith("http") else site.url + str(path))
        page.wait_for_load_state("networkidle")
    page.goto(workspace)
    wait_for_workspace(page)
    page.locator("#terminal-panel summary").click()
    page.wait_for_load_state("networkidle")
    assert watch.csp_violations() == []
    assert watch.errors == []
    page.goto(site.url + "/threads/00000000-0000-0000-0000-000000000000/")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    screenshot(page, "27-not-found")


def test_the_terminal_runs_a_command_and_another_user_cannot_open_it(
    page: Page, site: Site
) -> None:
    thread = create_thread(page, site, "Shell")
    page.locator("#terminal-panel summary").click()
    terminal = page.locator("#terminal")
    expect(terminal).to_have_attribute("data-state", "ready", timeout=RUN_TIMEOUT_MS)
    page.locator("#terminal .xterm").click()
    page.keyboard.type("echo $((6*7))")
    page.keyboard.press("Enter")
    expect(terminal.locator(".xterm-rows")).to_contain_text("42", timeout=20_000)
    screenshot(page, "28-terminal")
    # The session is in the audit trail: who, which thread, started; ended once closed.
    record = TerminalSession.objects.using(site.alias).get(thread=thread)
    assert record.user_id == site.alice.pk and record.sandbox_id
    page.locator("#terminal-panel summary").click()
    deadline = time.monotonic() + 20
    while record.ended_at is None and time.monotonic() < deadline:
        time.sleep(0.1)
        record.refresh_from_db()
    assert record.end_reason == "closed"

    # Bob, logged in, asking for alice's terminal: "not found", and audited.
    bob = create_user(site.alias, "bob-terminal")

    async def bobs_attempt() -> int | None:
        socket = await open_socket(
            site.stack.server,
            f"ws/threads/{thread.id}/terminal/",
            headers=session_cookie_header(site.alias, bob),
        )
        async with socket:
            return await close_code_of(socket)

    # (In a thread of its own: Playwright's sync API keeps an event loop in this one.)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, bobs_attempt()).result() == 4404
    assert TerminalSession.objects.using(site.alias).filter(user=bob).count() == 0
    assert (
        SecurityEvent.objects.using(site.alias).filter(user=bob, code="thread_not_owned").exists()
    )


def test_input_prompts_in_the_output_the_answer_reaches_the_code_and_the_run_ends(
    page: Page, site: Site
) -> None:
    create_thread(page, site, "Questions")
    set_code(page, "name = input('Your name: ')\nprint(f'hello {name}!')\n")
    page.keyboard.press("ControlOrMeta+Enter")
    prompt = page.locator("#output form.input-prompt")
    expect(prompt.locator("label")).to_have_text("Your name: ", timeout=RUN_TIMEOUT_MS)
    expect(run_status(page)).to_have_text("Running")
    screenshot(page, "29-input-prompt")
    # A page reloaded while the code waits still gets to answer.
    page.reload()
    wait_for_workspace(page)
    expect(prompt.locator("label")).to_have_text("Your name: ", timeout=RUN_TIMEOUT_MS)
    prompt.get_by_role("textbox").fill("Ada")
    prompt.get_by_role("textbox").press("Enter")
    expect(run_status(page)).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#output .stream.stdout")).to_have_text("Your name: Ada\nhello Ada!\n")
    expect(prompt).to_have_count(0)
