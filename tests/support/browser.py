"""Debian's Chromium, driven by Playwright: the browser tests' page and marks."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
# The machine has no internet: without the background-networking flags
# Chromium floods the log with refused connections to Google's services.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "a-long-operator-password"

# Every browser test: slow, skipped (with the reason CI expects) where there is no Chromium.
IN_A_BROWSER = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"no Chromium at {CHROMIUM} (Debian's 'chromium' package; .ci/run installs it)",
    ),
]


@contextlib.contextmanager
def browser_page(screenshot_dir: Path) -> Iterator:
    """
    A page in headless Chromium; on failure, a screenshot of it in the test's
    temporary directory. The Django ORM cannot be used inside this block:
    Playwright's sync API runs an event loop, which Django takes for an async
    context.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(15_000)
        try:
            yield page
        except BaseException:
            path = screenshot_dir / "failure.png"
            page.screenshot(path=str(path), full_page=True)
            print(f"screenshot of the page at failure: {path}")
            raise
        finally:
            browser.close()
