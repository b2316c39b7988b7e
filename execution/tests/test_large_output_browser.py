"""Output of any size in the browser workspace (headless Chromium through Playwright, a live
daphne and a real sandboxd): a 50 MB print flood and a single 5 MB line end the run with the
truncation notice, a 10 MB PNG is shown (fetched by reference), and the page never stays on
"Running". The site keeps the default 1 MiB output cap, at which unsplit frames broke."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import Browser, Page, expect

from accounts.testing import TEST_PASSWORD
from execution.models import Execution
from execution.tests.live import create_user, live_stack
from execution.tests.test_large_output import FLOOD_50_MB, LINE_5_MB
from execution.tests.test_workspace_browser import (
    RUN_TIMEOUT_MS,
    Site,
    Watch,
    create_thread,
    logged_in_page,
    run_status,
    set_code,
    static_root,
)

pytestmark = [pytest.mark.browser, pytest.mark.sandboxd, pytest.mark.timeout(300)]

__all__ = ["static_root"]  # the module fixture that collects the static files once

PNG_10_MB = (
    "import io\nimport numpy as np\nimport matplotlib.pyplot as plt\n"
    "from IPython.display import Image, display\n"
    "buffer = io.BytesIO()\n"
    "plt.imsave(buffer, np.random.default_rng(1).integers(0, 255, (1900, 1900, 3), "
    "dtype=np.uint8), format='png')\n"
    "print(len(buffer.getvalue()))\ndisplay(Image(data=buffer.getvalue()))"
)


@pytest.fixture(scope="module")
def site(
    django_db_setup: None,
    django_db_blocker: Any,
    sandboxd_server: Any,
    static_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    with (
        django_db_blocker.unblock(),
        live_stack(
            tmp_path_factory.mktemp("large-output-browser"),
            sandboxd_url=sandboxd_server.url,
            sandboxd_api_key=sandboxd_server.api_key,
            extra_env={"STATIC_ROOT": str(static_root)},
        ) as stack,
    ):
        alice = create_user(stack.database.alias, "alice", TEST_PASSWORD)
        yield Site(stack=stack, alice=alice)


@pytest.fixture
def page(chromium: Browser, site: Site) -> Iterator[Page]:
    with logged_in_page(chromium, site, Watch()) as page:
        yield page


def run(page: Page, code: str) -> None:
    set_code(page, code)
    page.keyboard.press("ControlOrMeta+Enter")
    expect(run_status(page)).to_have_text("Succeeded", timeout=RUN_TIMEOUT_MS * 3)


def shown_text(page: Page) -> str:
    """The run's terminal text as the page draws it (output.js caps what it draws per run)."""
    return "".join(page.locator("#output .stream").all_inner_texts())


@pytest.mark.parametrize(("code", "title"), [(FLOOD_50_MB, "Flood"), (LINE_5_MB, "One line")])
def test_huge_output_ends_the_run_with_the_truncation_notice(
    page: Page, site: Site, code: str, title: str
) -> None:
    thread = create_thread(page, site, title)
    run(page, code)

    expect(page.locator("#output .notice.truncated")).to_contain_text("Output was truncated")
    row = Execution.objects.using(site.alias).get(thread=thread)
    assert row.truncated
    assert len(row.stdout.encode()) == settings.EXECUTION_MAX_OUTPUT_BYTES
    # The page draws at most its own cap of the stored megabyte (issue 12: long output is
    # cut with a notice, the tab never freezes), and what it draws is the stored output's
    # beginning, unaltered.
    drawn = page.evaluate("window.AtlasOutput.maxRenderedChars")
    assert drawn < len(row.stdout)
    expect(page.locator("#output .notice.clipped")).to_be_visible()
    assert shown_text(page) == row.stdout[:drawn]
    # A reload replays the run from the database, split, capped and flagged the same way.
    page.reload()
    page.locator("#history .run-row").first.get_by_role("link").click()
    expect(page.locator("#output .notice.truncated")).to_be_visible()
    expect(page.locator("#output .notice.clipped")).to_be_visible()
    assert shown_text(page) == row.stdout[:drawn]


def test_a_10_mb_png_is_fetched_by_reference_and_shown(page: Page, site: Site) -> None:
    thread = create_thread(page, site, "Big picture")
    run(page, PNG_10_MB)

    image = page.locator("#output .result img.result-image")
    row = Execution.objects.using(site.alias).get(thread=thread)
    assert int(row.stdout) > 10_000_000
    expect(image).to_have_attribute("src", f"/api/executions/{row.id}/results/0/?part=png")
    expect(image).to_have_js_property("naturalWidth", 1900)
