"""The browser harness itself, against a tiny static site, before the console's pages exist.

The site is served with the same kind of policy the console sends (`script-src 'self'`): its own
script file must run and its inline script must be refused, which is what the console relies on.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.support.browser import PHONE_VIEWPORT, SCREENSHOT_DIR, console_errors, screenshot

CSP = "default-src 'self'; script-src 'self'"

INDEX = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>harness</title>
  <script src="/app.js"></script>
</head>
<body>
  <p id="status">idle</p>
  <button id="go" type="button">Go</button>
  <ul id="violations"></ul>
  <script>document.body.dataset.inline = "ran";</script>
</body>
</html>
"""

# Loaded before the inline script, so its listener sees that script refused.
APP_JS = """
document.addEventListener("securitypolicyviolation", (event) => {
  const item = document.createElement("li");
  item.textContent = event.effectiveDirective + " " + event.blockedURI;
  document.getElementById("violations").append(item);
});
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("go").addEventListener("click", () => {
    document.getElementById("status").textContent = "clicked by app.js";
  });
});
"""


class _PolicyHandler(SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep request lines out of the test output


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root: Path = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text(INDEX)
    (root / "app.js").write_text(APP_JS)
    (root / "favicon.ico").write_bytes(b"")  # Chromium asks for one; a 404 is a console error
    handler = functools.partial(_PolicyHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="static-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_click_runs_the_sites_own_script_and_is_screenshotted(page: Page, site: str) -> None:
    errors = console_errors(page)
    response = page.goto(f"{site}/index.html")
    assert response is not None
    assert response.headers["content-security-policy"] == CSP

    expect(page.locator("#status")).to_have_text("idle")
    page.get_by_role("button", name="Go").click()
    expect(page.locator("#status")).to_have_text("clicked by app.js")

    path = screenshot(page, "harness-desktop")
    assert path == SCREENSHOT_DIR / "harness-desktop.png"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert page.viewport_size == {"width": 1280, "height": 800}
    # Only the refused inline script may complain; everything of our own loaded and ran.
    assert len(errors) == 1, errors
    assert "Content Security Policy" in errors[0]


def test_an_inline_script_is_refused_by_the_policy(page: Page, site: str) -> None:
    page.goto(f"{site}/index.html")

    expect(page.locator("#violations li")).to_have_text(["script-src-elem inline"])
    assert page.evaluate("document.body.dataset.inline") is None


def test_a_phone_page_is_390_wide_and_touchable(phone_page: Page, site: str) -> None:
    phone_page.goto(f"{site}/index.html")

    assert phone_page.viewport_size == PHONE_VIEWPORT
    assert phone_page.evaluate("window.innerWidth") == PHONE_VIEWPORT["width"]
    phone_page.get_by_role("button", name="Go").tap()
    expect(phone_page.locator("#status")).to_have_text("clicked by app.js")
    screenshot(phone_page, "harness-phone")


def test_a_screenshot_name_cannot_leave_the_artifacts_folder(page: Page) -> None:
    with pytest.raises(ValueError, match="plain file name"):
        screenshot(page, "../escape")
