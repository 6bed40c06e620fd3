"""Headless Debian Chromium driven by Playwright, for tests of the web console's pages.

Playwright cannot download its own browser on these machines, so it drives the one `make peers`
installs from Debian (/usr/bin/chromium). Without that binary the browser tests are skipped on a
developer's machine and fail under CI=true, where a skip would hide that nothing was tested.

The `browser`, `page` and `phone_page` fixtures are registered for tests/e2e by its conftest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, ViewportSize, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")

# Playwright adds --headless, --no-sandbox and a fresh --user-data-dir itself; these say so again
# (harmlessly) and add what keeps Chromium from dialling Google's hosts, which the closed network
# here refuses, many connections at a time.
LAUNCH_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)

DESKTOP_VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
PHONE_VIEWPORT: ViewportSize = {"width": 390, "height": 844}

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO_ROOT / "test-artifacts" / "console"
_SCREENSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def require_chromium() -> None:
    """Skip the calling test when Debian's chromium is missing, or raise under CI=true."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    message = f"{CHROMIUM} is missing: `make peers` installs Debian's chromium"
    if os.environ.get("CI") == "true":
        raise RuntimeError(message)
    pytest.skip(message)


@contextmanager
def chromium_browser() -> Iterator[Browser]:
    """A headless Chromium with Playwright's driver behind it; both are stopped on exit."""
    require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(LAUNCH_ARGS)
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def browser_page(
    browser: Browser, viewport: ViewportSize = DESKTOP_VIEWPORT, **context_options: Any
) -> Iterator[Page]:
    """A page in a context of its own (no cookies shared with other pages); closed on exit.

    `context_options` go to `Browser.new_context` (`base_url=`, `locale=`, ...).
    """
    context = browser.new_context(viewport=viewport, **context_options)
    try:
        yield context.new_page()
    finally:
        context.close()


@contextmanager
def phone_browser_page(browser: Browser, **context_options: Any) -> Iterator[Page]:
    """A page as a phone shows it: 390x844, touch, and the page's own `<meta name=viewport>`."""
    options: dict[str, Any] = {"is_mobile": True, "has_touch": True, **context_options}
    with browser_page(browser, PHONE_VIEWPORT, **options) as page:
        yield page


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page (not just the viewport) as test-artifacts/console/NAME.png."""
    if not _SCREENSHOT_NAME.fullmatch(name):
        raise ValueError(f"screenshot name {name!r} must be a plain file name without '.png'")
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def console_errors(page: Page) -> list[str]:
    """A list that fills, from now on, with the page's console errors and uncaught exceptions.

    Chromium reports a Content-Security-Policy refusal as a console error, so a page test can
    assert the list stays empty to prove none of our own scripts or styles was refused.
    """
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            # A failed load's text does not name what failed; its location does.
            errors.append(f"{message.text} at {message.location['url']}")

    def on_page_error(error: Error) -> None:
        errors.append(f"uncaught: {error.message}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    return errors


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for all tests of a module (a start costs about half a second)."""
    with chromium_browser() as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh 1280x800 page with no cookies, closed after the test."""
    with browser_page(browser) as fresh:
        yield fresh


@pytest.fixture
def phone_page(browser: Browser) -> Iterator[Page]:
    """A fresh 390x844 touch page with no cookies, closed after the test."""
    with phone_browser_page(browser) as fresh:
        yield fresh
