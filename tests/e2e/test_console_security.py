"""The console's defences in a real browser against a real `imagedepot serve`: CSRF tokens and
same-origin checks on every change, the session cookie's attributes (Secure under TLS), the
token kept out of URLs and storage, signing out for good (Back shows nothing, the old cookie
is dead), and the Content-Security-Policy on every page with nothing inline for it to refuse."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from playwright.sync_api import APIResponse, Browser, Page, Response, expect

from imagedepot.api.ui.door import COOKIE
from imagedepot.api.ui.render import CONTENT_SECURITY_POLICY
from tests.support.browser import browser_page, console_errors
from tests.support.console import csrf_token, inline_code, sign_in
from tests.support.images import make_layer, push_image
from tests.support.registry import RegistryServer, self_signed_certificate
from tests.support.service import ADMIN_TOKEN, Service, wait_for_status

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def image(registry: RegistryServer) -> str:
    push_image(registry.url, "console/sec", "v1", [make_layer(seed=7401)])
    return f"{registry.endpoint}/console/sec:v1"


def create_cache(service: Service, token: str, name: str, image: str) -> str:
    with service.client(token) as client:
        response = client.post("/v5/imagecaches", json={"name": name, "images": [image]})
        assert response.status_code == 201, response.text
        cache_id: str = response.json()["image_cache"]["id"]
        wait_for_status(client, cache_id, {"Available"})
    return cache_id


def caches_state(service: Service, token: str) -> list[tuple[str, str, str]]:
    with service.client(token) as client:
        response = client.get("/v5/imagecaches")
    assert response.status_code == 200, response.text
    return sorted((c["id"], c["name"], c["status"]) for c in response.json()["image_caches"])


def session_cookie(page: Page) -> dict[str, object]:
    found = [cookie for cookie in page.context.cookies() if cookie["name"] == COOKIE]
    assert len(found) == 1, page.context.cookies()
    return dict(found[0])


def test_a_change_without_this_sessions_token_or_from_another_site_is_refused(
    page: Page, browser: Browser, service: Service, image: str
) -> None:
    token = service.credential("console-csrf", "member")
    cache_id = create_cache(service, token, "kept", image)
    sign_in(page, service.url, token)
    csrf = csrf_token(page)
    with browser_page(browser) as other:  # the same project, another session
        sign_in(other, service.url, token)
        other_csrf = csrf_token(other)
    assert other_csrf != csrf
    before = caches_state(service, token)
    create_url, delete_url = (
        f"{service.url}/ui/caches",
        f"{service.url}/ui/caches/{cache_id}/delete",
    )
    create = {"name": "forged", "images": image}

    def post(url: str, form: dict[str, str], **headers: str) -> APIResponse:
        return page.request.post(url, form=form, headers=headers, max_redirects=0)

    attempts = {
        "create, no token": post(create_url, create),
        "create, a wrong token": post(create_url, {**create, "csrf": "x" * len(csrf)}),
        "create, another session's token": post(create_url, {**create, "csrf": other_csrf}),
        "create, another origin": post(create_url, {**create, "csrf": csrf}, Origin=EVIL),
        "create, cross-site": post(
            create_url, {**create, "csrf": csrf}, **{"Sec-Fetch-Site": "cross-site"}
        ),
        "create, a null origin alone": post(create_url, {**create, "csrf": csrf}, Origin="null"),
        "delete, no token": post(delete_url, {}),
        "delete, a wrong header token": post(delete_url, {}, **{"X-CSRF-Token": other_csrf}),
        "delete, another origin": post(delete_url, {"csrf": csrf}, Origin=EVIL),
        "sign out, no token": post(f"{service.url}/ui/signout", {}),
    }
    # 403, not 401: the session cookie went with each; only the token or origin was wrong.
    assert {what: answer.status for what, answer in attempts.items()} == dict.fromkeys(
        attempts, 403
    )
    assert "another site" in attempts["create, another origin"].text()
    assert "reload the page" in attempts["create, a wrong token"].text()
    assert caches_state(service, token) == before
    page.reload()
    expect(page.locator("tr[data-cache-id]")).to_have_count(1)
    expect(page.locator(f'tr[data-cache-id="{cache_id}"]')).to_be_visible()

    # The same requests with this session's token from this origin go through: the refusals
    # above were the token's and the origin's doing.
    made = post(create_url, {**create, "csrf": csrf}, Origin=service.url)
    assert made.status == 303, made.text()
    forged_id = made.headers["location"].rsplit("/", 1)[1]
    # A browser behind a proxy that adds no-referrer sends Origin: null on its own forms.
    null_origin = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    deleted = post(f"{service.url}/ui/caches/{forged_id}/delete", {"csrf": csrf}, **null_origin)
    assert deleted.status == 303, deleted.text()

    # Signing in is refused from another site too (a forged sign-in into the forger's project).
    forged_signin = page.request.post(
        f"{service.url}/ui/signin", form={"token": token}, headers={"Origin": EVIL}, max_redirects=0
    )
    assert forged_signin.status == 403
    assert "another site" in forged_signin.text()


def test_the_cookie_is_httponly_strict_on_ui_and_secure_under_tls(
    browser: Browser, tmp_path: Path
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    self_signed_certificate(cert, key)
    env = {"IMAGEDEPOT_TLS_CERT": str(cert), "IMAGEDEPOT_TLS_KEY": str(key)}
    with (
        Service(env=env) as tls_service,
        browser_page(browser, ignore_https_errors=True) as page,
    ):
        assert tls_service.url.startswith("https://")
        token = tls_service.credential("console-tls", "member")
        visited: list[str] = []
        page.on("request", lambda request: visited.append(request.url))
        errors = console_errors(page)

        sign_in(page, tls_service.url, token)
        cookie = session_cookie(page)
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/ui"
        assert cookie["secure"] is True
        lifetime = float(str(cookie["expires"])) - time.time()
        assert 7.9 * 3600 < lifetime <= 8 * 3600, lifetime
        secret = str(cookie["value"])

        page.reload()
        assert COOKIE not in page.evaluate("document.cookie")
        storage = page.evaluate(
            "JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
        )
        for kept in (token, secret):
            assert kept not in storage
            assert kept not in page.content()
            assert not [url for url in visited if kept in url]
        assert any(urlsplit(url).path == "/ui/caches/events" for url in visited)
        assert errors == []


def test_the_cookie_is_not_secure_over_plain_http_but_is_otherwise_the_same(
    page: Page, service: Service
) -> None:
    sign_in(page, service.url, service.credential("console-plain", "member"))
    cookie = session_cookie(page)
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"], cookie["secure"]) == (
        True,
        "Strict",
        "/ui",
        False,
    )
    assert COOKIE not in page.evaluate("document.cookie")


def test_after_signing_out_back_shows_nothing_and_the_old_cookie_is_dead(
    page: Page, service: Service, image: str
) -> None:
    token = service.credential("console-signout", "member")
    cache_id = create_cache(service, token, "private-cache", image)
    documents: list[tuple[str, int]] = []

    def on_response(response: Response) -> None:
        if response.request.resource_type == "document":
            documents.append((response.url, response.status))

    page.on("response", on_response)
    sign_in(page, service.url, token)
    page.get_by_role("link", name="private-cache").click()
    detail_url = f"{service.url}/ui/caches/{cache_id}"
    expect(page).to_have_url(detail_url)
    detail = page.request.get(detail_url)
    assert detail.headers["cache-control"] == "no-store"
    old_secret = str(session_cookie(page)["value"])
    old_csrf = csrf_token(page)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{service.url}/ui/signin")
    assert not [c for c in page.context.cookies() if c["name"] == COOKIE]

    documents.clear()
    page.go_back()
    expect(page).to_have_url(f"{service.url}/ui/signin")
    assert (detail_url, 303) in documents, f"Back showed a stored copy: {documents}"
    for secret in ("private-cache", "console-signout", cache_id):
        assert secret not in page.content()
    page.go_back()
    expect(page).to_have_url(f"{service.url}/ui/signin")
    assert "private-cache" not in page.content()

    page.context.add_cookies(
        [{"name": COOKIE, "value": old_secret, "domain": "127.0.0.1", "path": "/ui"}]
    )
    page.goto(f"{service.url}/ui/caches")
    expect(page).to_have_url(f"{service.url}/ui/signin")
    replayed = {
        "list": page.request.get(f"{service.url}/ui/caches", max_redirects=0),
        "events": page.request.get(f"{service.url}/ui/caches/events", max_redirects=0),
        "delete": page.request.post(
            f"{service.url}/ui/caches/{cache_id}/delete",
            form={"csrf": old_csrf},
            max_redirects=0,
        ),
    }
    assert {what: answer.status for what, answer in replayed.items()} == {
        "list": 303,
        "events": 303,
        "delete": 401,
    }
    assert replayed["list"].headers["location"] == "/ui/signin"
    assert [entry[0] for entry in caches_state(service, token)] == [cache_id]


def test_every_console_page_sends_the_policy_and_holds_nothing_inline(
    page: Page, service: Service, image: str
) -> None:
    token = service.credential("console-csp", "member")
    cache_id = create_cache(service, token, "policy", image)
    errors = console_errors(page)
    watch = PolicyWatch(page, service)

    watch.page(page.goto(f"{service.url}/ui/signin"))
    page.get_by_label("Token", exact=True).fill("not-a-token")
    with page.expect_navigation() as refused:
        page.get_by_role("button", name="Sign in").click()
    watch.page(refused.value)
    sign_in(page, service.url, token)
    watch.page(page.reload())
    watch.page(page.goto(f"{service.url}/ui/caches/{cache_id}"))
    watch.page(page.goto(f"{service.url}/ui/caches/00000000-0000-0000-0000-000000000000"))
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    # A path no console route serves: routing's 404, still a console page, not JSON.
    watch.page(page.goto(f"{service.url}/ui/no-such-page"))
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    watch.page(page.goto(f"{service.url}/ui/caches"))
    # A form the browser would not send as it is: the server's own 400 page.
    page.get_by_label("Name", exact=True).fill("too-small")
    page.get_by_label("Images", exact=True).fill(image)
    page.locator("#size_gib").evaluate("element => { element.min = ''; element.value = '5'; }")
    with page.expect_navigation() as invalid:
        page.get_by_role("button", name="Create").click()
    watch.page(invalid.value)
    expect(page.get_by_role("alert")).to_contain_text("size")

    # Every page linked from here, as the operator sees them (admin pages included).
    sign_in(page, service.url, ADMIN_TOKEN, project="console-csp")
    queue, crawled = [f"{service.url}/ui/caches"], set()
    while queue:
        url = queue.pop()
        if url in crawled:
            continue
        crawled.add(url)
        watch.page(page.goto(url))
        for href in page.locator("a[href]").evaluate_all("links => links.map(a => a.href)"):
            target = urlsplit(urljoin(url, href))
            if target.netloc == urlsplit(service.url).netloc and target.path.startswith("/ui/"):
                queue.append(target._replace(fragment="").geturl())
        assert len(crawled) < 60, "the crawl does not end"

    assert watch.problems == []
    wanted = {"/ui/signin", "/ui/caches", f"/ui/caches/{cache_id}", "/ui/caches/events"}
    assert wanted <= {urlsplit(url).path for url, _ in watch.seen}, watch.seen
    assert {200, 303, 400, 401, 404} <= {status for _, status in watch.seen}, watch.seen
    assert watch.pages >= 8, watch.pages
    # Chromium logs each page answered with an error status; nothing else may be logged.
    loads = "Failed to load resource: the server responded with a status of"
    assert [error for error in errors if not error.startswith(loads)] == []
    assert sorted(int(error[len(loads) :].split()[0]) for error in errors) == [400, 401, 404, 404]


class PolicyWatch:
    """Checks that every console answer the browser gets carries the policy and the other
    headers, and that every page handed to `page()` holds nothing inline. `seen` holds the
    URL and status of each answer, `pages` counts the pages read."""

    def __init__(self, page: Page, service: Service) -> None:
        self.prefix = f"{service.url}/ui/"
        self.seen: set[tuple[str, int]] = set()
        self.pages = 0
        self.problems: list[str] = []
        page.on("response", self._headers)

    def _headers(self, response: Response) -> None:
        if not response.url.startswith(self.prefix):
            return
        self.seen.add((response.url, response.status))
        expected = {
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-content-type-options": "nosniff",
            "x-frame-options": "DENY",
        }
        if "/ui/static/" not in response.url:
            expected["cache-control"] = "no-store"
        for name, value in expected.items():
            if response.headers.get(name) != value:
                found = response.headers.get(name)
                self.problems.append(f"{response.status} {response.url}: {name} is {found!r}")

    def page(self, response: Response | None) -> None:
        """Read a page the browser navigated to (before it navigates away)."""
        assert response is not None
        assert response.headers.get("content-type", "").startswith("text/html"), response.url
        self.pages += 1
        for found in inline_code(response.text()):
            self.problems.append(f"{response.status} {response.url}: {found}")


def test_an_oversized_form_is_413_and_changes_nothing(service: Service, page: Page) -> None:
    token = service.credential("console-big-form", "member")
    sign_in(page, service.url, token)
    answer = page.request.post(
        f"{service.url}/ui/caches",
        form={"csrf": csrf_token(page), "name": "big", "images": "x" * 70_000},
        headers={"Origin": service.url},
    )
    assert answer.status == 413
    assert "form is over" in answer.text()
    with service.client(token) as client:
        assert client.get("/v5/imagecaches").json()["image_caches"] == []
