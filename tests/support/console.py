"""Helpers for browser tests of the web console: signing in through the real form, the page's
CSRF token, the event-stream connections a page opens, and a check that rendered HTML holds no
inline script, style or event handler (which the Content-Security-Policy would refuse)."""

from __future__ import annotations

from html.parser import HTMLParser

from playwright.sync_api import Page, Request, expect

EVENTS_PATH = "/ui/caches/events"


def sign_in(page: Page, base_url: str, token: str, project: str = "") -> None:
    """Sign in through the form, as a person would, and land on the caches page."""
    page.goto(f"{base_url}/ui/signin")
    page.get_by_label("Token", exact=True).fill(token)
    if project:
        page.locator("#project").fill(project)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base_url}/ui/caches")


def csrf_token(page: Page) -> str:
    """The CSRF token the signed-in page carries in `<meta name=csrf-token>`."""
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    assert token, "the page carries no CSRF token"
    return token


def event_streams(page: Page) -> list[str]:
    """A list that fills, from now on, with the URL of every event-stream request the page
    makes (clear it before a navigation to count one page's connections)."""
    seen: list[str] = []

    def on_request(request: Request) -> None:
        if request.url.split("?", 1)[0].endswith(EVENTS_PATH):
            seen.append(request.url)

    page.on("request", on_request)
    return seen


class _InlineFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name.lower(): value for name, value in attrs}
        if tag == "script" and not names.get("src"):
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style> element")
        for name, value in names.items():
            if name == "style":
                self.found.append(f"style= on <{tag}>")
            elif name.startswith("on"):
                self.found.append(f"{name}= on <{tag}>")
            elif name in ("href", "src", "action") and (value or "").strip().lower().startswith(
                "javascript:"
            ):
                self.found.append(f"javascript: URL in {name}= on <{tag}>")


def inline_code(html: str) -> list[str]:
    """What in `html` is inline script or style: `<script>` without src, `<style>`, `style=`,
    `on*=` attributes and `javascript:` URLs; empty when there is none."""
    finder = _InlineFinder()
    finder.feed(html)
    finder.close()
    return finder.found
