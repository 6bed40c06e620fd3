"""The console's cache pages in a real browser, against a real `imagedepot serve` building from
a real docker-registry (throttled by a fault proxy where a build has to take long enough to be
watched): signing in, the empty state, creating from the form, live progress from one event
stream per page, the resolved digest, deleting; a reader's view; user-provided text shown as
text; and the screenshots the README shows."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from playwright.sync_api import Dialog, Page, Route, expect

from tests.support.browser import REPO_ROOT, SCREENSHOT_DIR, console_errors, screenshot
from tests.support.console import csrf_token, event_streams, sign_in
from tests.support.faultproxy import FaultProxy
from tests.support.images import KIB, PushedImage, make_layer, push_image
from tests.support.kube import BASE
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status

DOCS_SCREENSHOT = REPO_ROOT / "docs" / "console-caches.png"
SCRIPT = "<script>alert(1)</script>"
HTML_IN_MESSAGE = "<img src=x onerror=alert(2)><b>bold</b> & more"


@pytest.fixture(scope="module")
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    with FaultProxy(registry.url) as running:
        yield running


@pytest.fixture(scope="module", autouse=True)
def docs_screenshot() -> Iterator[None]:
    """With IMAGEDEPOT_UPDATE_DOCS_SCREENSHOT=1, the desktop caches screenshot of this run
    becomes docs/console-caches.png once the module is done; otherwise the tree is left alone."""
    started = time.time()
    yield
    shot = SCREENSHOT_DIR / "caches.png"
    if os.environ.get("IMAGEDEPOT_UPDATE_DOCS_SCREENSHOT") != "1":
        return
    assert shot.is_file(), "no caches screenshot"
    assert shot.stat().st_mtime >= started, "the caches screenshot is from an earlier run"
    DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, DOCS_SCREENSHOT)


class _HtmlErrorRegistry:
    """An upstream that answers every manifest, after a pause, with a 400 whose distribution
    error message is HTML: the build fails and its message carries that text."""

    def __init__(self, pause: float) -> None:
        pause_seconds = pause

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/v2/":
                    self._send(200, b"{}")
                    return
                time.sleep(pause_seconds)
                error = {"code": "DENIED", "message": HTML_IN_MESSAGE}
                self._send(400, json.dumps({"errors": [error]}).encode())

            do_HEAD = do_GET

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> _HtmlErrorRegistry:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def create_cache(service: Service, token: str, name: str, image: str) -> str:
    with service.client(token) as client:
        response = client.post("/v5/imagecaches", json={"name": name, "images": [image]})
    assert response.status_code == 201, response.text
    cache_id: str = response.json()["image_cache"]["id"]
    return cache_id


def cache_ids(service: Service, token: str) -> list[str]:
    with service.client(token) as client:
        response = client.get("/v5/imagecaches")
    assert response.status_code == 200, response.text
    return sorted(cache["id"] for cache in response.json()["image_caches"])


def slow_image(
    registry: RegistryServer, proxy: FaultProxy, repository: str, size: int, rate: int, seed: int
) -> tuple[PushedImage, str]:
    """An image whose one layer comes through the proxy at `rate` bytes a second; the
    reference names the proxy."""
    layer = make_layer(size, seed=seed)
    pushed = push_image(registry.url, repository, "v1", [layer])
    proxy.throttle(f"/blobs/{layer.digest}", rate)
    return pushed, f"{proxy.endpoint}/{repository}:v1"


def wait_for_progress(service: Service, token: str, cache_id: str, percent: int) -> None:
    """Until the build has pulled at least `percent` of its bytes (and is still building)."""
    deadline = time.monotonic() + 30
    with service.client(token) as client:
        while time.monotonic() < deadline:
            state = client.get(f"/v5/imagecaches/{cache_id}/progress").json()
            assert state["status"] == "Creating", state
            size = sum(image["size_bytes"] or 0 for image in state["images"])
            pulled = sum(image["pulled_bytes"] or 0 for image in state["images"])
            if size and pulled * 100 >= percent * size:
                return
            time.sleep(0.1)
    raise AssertionError(f"cache {cache_id} never reached {percent}%")


def test_a_member_creates_watches_and_deletes_a_cache_from_the_form(
    page: Page, service: Service, registry: RegistryServer, proxy: FaultProxy
) -> None:
    # The builder reports a blob's bytes a MiB at a time: 3 MiB at 400 KiB/s takes about 8 s,
    # so the page sees the bar stand between 0 and 100 even on a loaded machine.
    pushed, image = slow_image(registry, proxy, "console/web", 3072 * KIB, 400 * KIB, 7101)
    token = service.credential("console-flow", "member")
    errors = console_errors(page)
    streams = event_streams(page)

    sign_in(page, service.url, token)
    empty = page.locator(".empty")
    expect(empty).to_contain_text("No caches yet")
    expect(empty).to_contain_text("Create one below")
    expect(page.locator("header")).to_contain_text("console-flow")
    wait_until(page, lambda: len(streams) == 1, "the caches page opened no event stream")

    streams.clear()
    name = page.get_by_label("Name", exact=True)
    name.fill("Not_A_Name")
    assert name.evaluate("element => element.validity.patternMismatch") is True
    name.fill("web-cache")
    page.get_by_label("Images", exact=True).fill(image)
    page.get_by_role("button", name="Create").click()
    expect(page).to_have_url(re.compile(rf"{re.escape(service.url)}/ui/caches/[0-9a-f-]{{36}}$"))
    cache_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_role("heading", level=1)).to_have_text("web-cache")
    page.evaluate("window.stayedOnThisPage = true")

    bar = page.locator("dl.facts progress[data-field=progress]")
    status = page.locator("dl.facts [data-field=status]")
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while (shown := status.text_content()) != "Available":  # read once: it may change meanwhile
        assert time.monotonic() < deadline, f"never Available; progress seen {seen}"
        assert shown == "Creating", page.locator("dl.facts").inner_text()
        seen.append(int(bar.evaluate("element => element.value")))
        page.wait_for_timeout(100)
    seen.append(int(bar.evaluate("element => element.value")))

    assert seen == sorted(seen), f"the bar went backwards: {seen}"
    moving = sorted({value for value in seen if 0 < value < 100})
    assert moving, f"the bar never stood between 0 and 100: {seen}"
    assert seen[-1] == 100
    assert page.evaluate("window.stayedOnThisPage") is True, "the page was reloaded"
    expect(page.locator("dl.facts [data-field=percent]")).to_have_text("100%")
    digest = page.locator(f'tr[data-image="{image}"] code[data-field=digest]')
    expect(digest).to_have_text(pushed.manifest_digest)
    assert [url.split("?", 1)[0] for url in streams] == [f"{service.url}/ui/caches/events"], (
        "one event stream per page, no polls"
    )
    assert re.search(r"\?after=\d+$", streams[0]), "the stream goes on from the page's revision"
    page.reload()  # the history is told from the cache's state as the page is rendered
    history = page.locator("ol.history li")
    expect(history.first).to_contain_text("Created")
    expect(history.last).to_contain_text("Available")
    expect(page.locator("ol.history")).to_contain_text(f"image {image}: {pushed.manifest_digest}")

    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.get_by_role("button", name="Delete this cache").click()
    expect(page).to_have_url(f"{service.url}/ui/caches")
    assert dialogs == ["Delete the cache web-cache?"]
    expect(page.locator(f'tr[data-cache-id="{cache_id}"]')).to_have_count(0, timeout=15_000)
    expect(page.locator(".empty")).to_contain_text("No caches yet", timeout=15_000)
    assert cache_ids(service, token) == []
    assert errors == []


def test_a_change_between_the_render_and_the_stream_is_not_lost(
    page: Page, service: Service, registry: RegistryServer, proxy: FaultProxy
) -> None:
    _, image = slow_image(registry, proxy, "console/gap", 512 * KIB, 512 * KIB, 7151)
    token = service.credential("console-gap", "member")
    sign_in(page, service.url, token)
    cache_id = create_cache(service, token, "gap", image)
    held: list[Route] = []
    page.route("**/ui/static/console.js", lambda route: held.append(route))

    page.goto(f"{service.url}/ui/caches", wait_until="commit")
    status = page.locator(f'tr[data-cache-id="{cache_id}"] [data-field=status]')
    expect(status).to_have_text("Creating")
    with service.client(token) as client:
        wait_for_status(client, cache_id, {"Available"})
    wait_until(page, lambda: len(held) == 1, "the page never asked for its script")
    held[0].continue_()  # the stream starts only now, after the build finished

    expect(status).to_have_text("Available")
    expect(page.locator(f'tr[data-cache-id="{cache_id}"] [data-field=percent]')).to_have_text(
        "100%"
    )


def test_a_reader_sees_no_controls_and_a_forced_change_is_refused(
    page: Page, service: Service, registry: RegistryServer
) -> None:
    push_image(registry.url, "console/read", "v1", [make_layer(seed=7201)])
    member = service.credential("console-readers", "member")
    reader = service.credential("console-readers", "reader")
    cache_id = create_cache(service, member, "shared", f"{registry.endpoint}/console/read:v1")
    with service.client(member) as client:
        wait_for_status(client, cache_id, {"Available"})
    errors = console_errors(page)

    sign_in(page, service.url, reader)
    expect(page.locator(f'tr[data-cache-id="{cache_id}"]')).to_contain_text("Available")
    expect(page.locator("header")).to_contain_text("reader")
    expect(page.locator("form[action='/ui/caches']")).to_have_count(0)
    expect(page.get_by_role("heading", name="Create a cache")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Delete"))).to_have_count(0)
    page.get_by_role("link", name="shared").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("shared")
    expect(page.get_by_role("button", name=re.compile("Delete"))).to_have_count(0)
    expect(page.locator("form[action$='/delete']")).to_have_count(0)

    csrf = csrf_token(page)
    create = {"csrf": csrf, "name": "sneaky", "images": f"{registry.endpoint}/console/read:v1"}
    forced = [
        page.request.post(f"{service.url}/ui/caches", form=create, max_redirects=0),
        page.request.post(
            f"{service.url}/ui/caches/{cache_id}/delete", form={"csrf": csrf}, max_redirects=0
        ),
        page.request.post(
            f"{service.url}/ui/caches/{cache_id}/delete",
            headers={"X-CSRF-Token": csrf},
            max_redirects=0,
        ),
    ]
    assert [response.status for response in forced] == [403, 403, 403]
    assert all("Not allowed" in response.text() for response in forced)
    assert cache_ids(service, member) == [cache_id]

    empty_reader = service.credential("console-readers-empty", "reader")
    sign_in(page, service.url, empty_reader)
    expect(page.locator(".empty")).to_contain_text("Ask a member of the project to create one")
    assert errors == []


def test_labels_annotations_and_failure_messages_are_shown_as_text(
    page: Page, service: Service
) -> None:
    token = service.credential("console-escape", "member")
    errors = console_errors(page)
    dialogs: list[str] = []

    def refuse(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse)
    sign_in(page, service.url, token)
    with _HtmlErrorRegistry(pause=2.0) as upstream:
        body: dict[str, Any] = {
            "apiVersion": "cci/v2",
            "kind": "ImageSnapshot",
            "metadata": {
                "name": "escape",
                "labels": {"team": "web"},
                "annotations": {"note": SCRIPT},
            },
            "spec": {"images": [{"image": f"{upstream.endpoint}/team/app:v1"}]},
        }
        with httpx.Client(base_url=service.url, headers={"X-Auth-Token": token}) as client:
            created = client.post(BASE, json=body)
        assert created.status_code == 201, created.text
        cache_id = created.json()["metadata"]["uid"]

        # The detail page opens while it builds; the failure arrives through the stream.
        page.goto(f"{service.url}/ui/caches/{cache_id}")
        status = page.locator("dl.facts [data-field=status]")
        expect(status).to_have_text("Creating")
        expect(status).to_have_text("Failed", timeout=20_000)
    message = page.locator("dl.facts [data-field=message]")
    expect(message).to_contain_text(HTML_IN_MESSAGE)
    expect(message.locator("b, img")).to_have_count(0)
    expect(page.locator(".pairs").get_by_text(SCRIPT)).to_be_visible()
    expect(page.locator(".pairs").get_by_text("web", exact=True)).to_be_visible()
    assert page.locator("main script").count() == 0

    # The list renders the same message server-side.
    page.goto(f"{service.url}/ui/caches")
    row_message = page.locator(f'tr[data-cache-id="{cache_id}"] [data-field=message]')
    expect(row_message).to_contain_text(HTML_IN_MESSAGE)
    expect(row_message.locator("b, img")).to_have_count(0)
    assert "&lt;b&gt;bold&lt;/b&gt;" in row_message.inner_html()

    page.goto(f"{service.url}/ui/caches/{cache_id}")  # and the detail page server-side
    expect(page.locator(".pairs").get_by_text(SCRIPT)).to_be_visible()
    expect(page.locator("dl.facts [data-field=message] b")).to_have_count(0)
    assert dialogs == []
    assert errors == []


def test_screenshots_of_an_available_and_a_building_cache(
    page: Page, phone_page: Page, service: Service, registry: RegistryServer, proxy: FaultProxy
) -> None:
    push_image(registry.url, "team/web", "v1", [make_layer(640 * KIB, seed=7301)])
    _, building_image = slow_image(registry, proxy, "team/ci-runner", 4096 * KIB, 512 * KIB, 7302)
    token = service.credential("web-team", "member")
    ready = create_cache(service, token, "web-frontend", f"{registry.endpoint}/team/web:v1")
    with service.client(token) as client:
        wait_for_status(client, ready, {"Available"})
    building = create_cache(service, token, "ci-runners", building_image)
    try:
        wait_for_progress(service, token, building, 20)
        for shown, name in ((page, "caches"), (phone_page, "caches-phone")):
            errors = console_errors(shown)
            sign_in(shown, service.url, token)
            row = shown.locator(f'tr[data-cache-id="{building}"]')
            expect(row.locator("[data-field=status]")).to_have_text("Creating")
            expect(shown.locator(f'tr[data-cache-id="{ready}"]')).to_contain_text("Available")
            percent = int(row.locator("progress").evaluate("element => element.value"))
            assert 0 < percent < 100, percent
            viewport = shown.viewport_size
            assert viewport is not None
            width = shown.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport["width"], f"{name}: the page scrolls sideways ({width}px)"
            screenshot(shown, name)
            assert errors == []
    finally:
        with service.client(token) as client:
            client.delete(f"/v5/imagecaches/{building}")


def wait_until(
    page: Page, condition: Callable[[], bool], failure: str, timeout: float = 10
) -> None:
    """Until `condition` holds; waits through the page, so its events are delivered."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(failure)
        page.wait_for_timeout(50)
