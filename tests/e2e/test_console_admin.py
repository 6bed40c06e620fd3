"""The operator's admin pages in a real browser, against a real `imagedepot serve` whose caches
are built from a real docker-registry: projects, credentials issued with their secret shown
once and revoked (the token working, then refused, on the CCE API), the audit log filtered,
storage with a layer two caches share counted once, and the containerd mirror settings; a
project's own admin (and a reader) refused on every admin page; screenshots of each page."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect

from tests.support.browser import console_errors, screenshot
from tests.support.console import csrf_token, sign_in
from tests.support.images import KIB, PushedImage, make_layer, push_image
from tests.support.registry import RegistryServer
from tests.support.service import ADMIN_TOKEN, Service, wait_for_status

ADMIN_PAGES = (
    "/ui/admin",
    "/ui/admin/projects",
    "/ui/admin/credentials",
    "/ui/admin/audit",
    "/ui/admin/storage",
    "/ui/admin/registry",
)
OPERATOR_PROJECT = "ops-admin"


@pytest.fixture(scope="module")
def operator_project(service: Service) -> str:
    """A project for the operator to act in (made by a first credential, its admin's)."""
    service.credential(OPERATOR_PROJECT, "admin")
    return OPERATOR_PROJECT


@dataclass(frozen=True)
class SharedLayerCaches:
    project: str
    web: PushedImage
    api: PushedImage
    shared_layer_size: int


@pytest.fixture(scope="module")
def shared_caches(service: Service, registry: RegistryServer) -> SharedLayerCaches:
    """A project with two built caches whose images share their base layer."""
    base = make_layer(200 * KIB, seed=3101)
    web = push_image(registry.url, "admin/web", "v1", [base, make_layer(seed=3102)])
    api = push_image(registry.url, "admin/api", "v1", [base, make_layer(seed=3103)])
    project = "storage-shared"
    token = service.credential(project, "member")
    with service.client(token) as client:
        for name, image in (("web", web), ("api", api)):
            created = client.post(
                "/v5/imagecaches",
                json={"name": name, "images": [f"{registry.endpoint}/{image.repository}:v1"]},
            )
            assert created.status_code == 201, created.text
            cache_id = created.json()["image_cache"]["id"]
            done = wait_for_status(client, cache_id, {"Available", "Failed"})
            assert done["status"] == "Available", done
    return SharedLayerCaches(project, web, api, base_size(web, api))


def base_size(web: PushedImage, api: PushedImage) -> int:
    shared = set(web.layer_digests) & set(api.layer_digests)
    assert len(shared) == 1
    return dict(zip(web.layer_digests, web.layer_sizes, strict=True))[shared.pop()]


@pytest.fixture
def operator(page: Page, service: Service, operator_project: str) -> Page:
    sign_in(page, service.url, ADMIN_TOKEN, operator_project)
    return page


def credential_rows(page: Page) -> int:
    return page.locator("table.admin-credentials tbody tr").count()


def test_the_operator_issues_a_reader_token_shown_once_revokes_it_and_finds_both_in_the_audit_log(
    operator: Page, service: Service
) -> None:
    page = operator
    errors = console_errors(page)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    expect(page).to_have_url(f"{service.url}/ui/admin/projects")
    row = page.locator(f'tr[data-project="{OPERATOR_PROJECT}"]')
    expect(row).to_be_visible()
    expect(row.locator('[data-field="credentials"]')).to_contain_text("usable")
    expect(row.locator('[data-field="anonymous-pull"]')).to_have_text("off")
    screenshot(page, "admin-projects")

    page.get_by_role("navigation", name="Admin pages").get_by_role(
        "link", name="Credentials"
    ).click()
    expect(page.locator("table.admin-credentials")).to_contain_text(OPERATOR_PROJECT)
    before = credential_rows(page)

    form = page.locator("form[action='/ui/admin/credentials'][method='post']")
    form.get_by_label("Project").fill(OPERATOR_PROJECT)
    form.get_by_label("Role").select_option("reader")
    form.get_by_label("token", exact=True).check()
    form.get_by_label("Expires after (days)").fill("30")
    form.get_by_role("button", name="Create").click()

    issued = page.locator("#issued-token")
    expect(issued).to_be_visible()
    token = issued.inner_text().strip()
    assert token.startswith("idp_")
    assert token not in page.url
    credential_id = page.locator('.admin-issued [data-field="credential-id"]').inner_text()
    new_row = page.locator(f'tr[data-credential-id="{credential_id}"]')
    expect(new_row).to_contain_text("reader")
    expect(new_row.locator('[data-field="state"]')).to_have_text("active")
    assert credential_rows(page) == before + 1
    screenshot(page, "admin-credential-issued")

    with service.client(token) as client:
        assert client.get("/v5/imagecaches").status_code == 200

    # A reload asks for the page again: the secret is gone and no second credential is made.
    page.reload()
    expect(page.locator("table.admin-credentials")).to_be_visible()
    expect(page.locator("#issued-token")).to_have_count(0)
    assert token not in page.content()
    assert credential_rows(page) == before + 1
    screenshot(page, "admin-credentials")

    confirmations: list[str] = []

    def accept(dialog: Dialog) -> None:
        confirmations.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    new_row.get_by_role("button", name="Revoke").click()
    expect(new_row.locator('[data-field="state"]')).to_have_text("revoked")
    assert credential_id in confirmations[0]
    expect(new_row.get_by_role("button", name="Revoke")).to_have_count(0)
    with service.client(token) as client:
        assert client.get("/v5/imagecaches").status_code == 401

    page.get_by_role("link", name="Audit log").click()
    filters = page.get_by_role("form", name="Filter the audit log")
    filters.get_by_label("Project").fill(OPERATOR_PROJECT)
    filters.get_by_label("Action contains").fill("credential")
    filters.get_by_role("button", name="Show").click()
    expect(page).to_have_url(re.compile(r"/ui/admin/audit\?project=ops-admin&action=credential"))
    actions = page.locator("table.admin-audit tbody tr").evaluate_all(
        "rows => rows.map(row => row.dataset.action)"
    )
    # newest first: the revocation, then the creation
    assert actions[:2] == ["iam:credential:revoke", "iam:credential:create"], actions
    # and the first credential, made by the offline CLI
    assert actions[-1] == "cli:credential:create"
    assert set(actions) == {"iam:credential:create", "iam:credential:revoke", actions[-1]}
    revoked = page.locator('tr[data-action="iam:credential:revoke"]').first
    expect(revoked).to_contain_text(credential_id)
    expect(revoked).to_contain_text("ok")
    screenshot(page, "admin-audit")

    filters = page.get_by_role("form", name="Filter the audit log")
    filters.get_by_label("Result").select_option("refused")
    filters.get_by_role("button", name="Show").click()
    statuses = page.locator("table.admin-audit tbody tr").evaluate_all(
        "rows => rows.map(row => Number(row.dataset.status))"
    )
    assert all(status >= 400 for status in statuses), statuses
    assert errors == []


def test_a_bad_credential_form_names_its_field_and_makes_nothing(
    operator: Page, service: Service
) -> None:
    page = operator
    page.goto(f"{service.url}/ui/admin/credentials")
    before = credential_rows(page)
    csrf = csrf_token(page)
    for field, value, says in (
        ("role", "root", "role must be one of admin, member, reader"),
        ("expires_in_days", "0", "expires_in_days must be a whole number from 1 to 36500"),
        ("project", "no spaces please", "project must be"),
        ("kind", "password", "kind must be token or aksk"),
    ):
        form = {"csrf": csrf, "project": OPERATOR_PROJECT, "role": "reader", "kind": "token"}
        form[field] = value
        answer = page.request.post(f"{service.url}/ui/admin/credentials", form=form)
        assert answer.status == 400, (field, answer.status)
        assert says in answer.text()
        assert 'id="issued-' not in answer.text()
    page.reload()
    assert credential_rows(page) == before


def test_an_access_key_pair_is_shown_once_and_signs_nothing_else(
    operator: Page, service: Service
) -> None:
    page = operator
    page.goto(f"{service.url}/ui/admin/credentials")
    form = page.locator("form[action='/ui/admin/credentials'][method='post']")
    form.get_by_label("Project").fill("aksk-team")  # a new project, made by this credential
    form.get_by_label("access key pair (AK/SK)").check()
    form.get_by_role("button", name="Create").click()
    access_key = page.locator("#issued-access-key").inner_text().strip()
    secret_key = page.locator("#issued-secret-key").inner_text().strip()
    assert re.fullmatch(r"[A-Z0-9]{20}", access_key)
    assert len(secret_key) == 40
    row = page.locator("table.admin-credentials tbody tr", has_text=access_key)
    expect(row).to_contain_text("aksk-team")
    expect(row).to_contain_text("aksk")
    page.reload()
    assert secret_key not in page.content()
    page.goto(f"{service.url}/ui/admin/projects")
    expect(page.locator('tr[data-project="aksk-team"] [data-field="credentials"]')).to_contain_text(
        "1 usable"
    )


def test_storage_counts_a_layer_two_caches_share_once_as_stored(
    operator: Page, service: Service, shared_caches: SharedLayerCaches
) -> None:
    page = operator
    errors = console_errors(page)
    page.goto(f"{service.url}/ui/admin/storage")
    row = page.locator(f'table.admin-storage tbody tr[data-project="{shared_caches.project}"]')
    referenced = int(row.locator('[data-usage="referenced"]').get_attribute("data-bytes") or "")
    stored = int(row.locator('[data-usage="stored"]').get_attribute("data-bytes") or "")
    # each cache holds its manifest, config and layers
    web, api = shared_caches.web, shared_caches.api
    assert referenced == web.total_size + len(web.manifest) + api.total_size + len(api.manifest)
    assert referenced - stored == shared_caches.shared_layer_size
    assert referenced > stored
    expect(row).to_contain_text(f"{shared_caches.shared_layer_size * 100 // referenced}%")
    # the numbers are text a person reads, not only bars
    expect(row.locator('[data-usage="stored"]')).to_have_text(re.compile(r"^\d+(\.\d)? KiB$"))

    chart = page.locator(f'.usage-row[data-project="{shared_caches.project}"]')
    whole = chart.locator(".usage-referenced").bounding_box()
    part = chart.locator(".usage-stored").bounding_box()
    assert whole is not None
    assert part is not None
    assert whole["width"] > part["width"] > 0
    assert part["width"] / whole["width"] == pytest.approx(stored / referenced, abs=0.02)

    totals = page.locator("table.admin-storage tfoot tr")
    total_referenced = int(
        totals.locator('[data-usage="referenced"]').get_attribute("data-bytes") or ""
    )
    total_stored = int(totals.locator('[data-usage="stored"]').get_attribute("data-bytes") or "")
    assert total_referenced >= referenced
    assert total_stored >= stored
    assert total_referenced - total_stored >= shared_caches.shared_layer_size
    screenshot(page, "admin-storage")
    assert errors == []


def test_the_registry_page_gives_a_containerd_mirror_snippet_naming_the_port(
    operator: Page, service: Service
) -> None:
    page = operator
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=service.url)
    page.goto(f"{service.url}/ui/admin/registry")
    endpoint = f"http://127.0.0.1:{service.registry_port}"
    expect(page.locator('[data-field="registry-endpoint"]')).to_have_text(endpoint)
    snippet = page.locator("#hosts-toml").inner_text()
    assert str(service.registry_port) in snippet
    parsed = tomllib.loads(snippet)
    assert parsed["server"] == "https://registry-1.docker.io"
    assert parsed["host"] == {endpoint: {"capabilities": ["pull", "resolve"]}}

    page.get_by_role("button", name="Copy hosts.toml").click()
    expect(page.locator("p:has([data-copy='hosts-toml']) .copied")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()").strip() == snippet.strip()
    screenshot(page, "admin-registry")


def test_the_admin_pages_read_well_on_a_phone(
    phone_page: Page, service: Service, operator_project: str, shared_caches: SharedLayerCaches
) -> None:
    errors = console_errors(phone_page)
    sign_in(phone_page, service.url, ADMIN_TOKEN, operator_project)
    for name in ("projects", "credentials", "audit", "storage", "registry"):
        phone_page.goto(f"{service.url}/ui/admin/{name}")
        width = phone_page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{name} is {width}px wide on a phone"
        screenshot(phone_page, f"admin-{name}-phone")
    assert errors == []


@pytest.mark.parametrize("role", ["admin", "reader"])
def test_a_project_credential_is_refused_every_admin_page_and_sees_no_admin_link(
    page: Page, service: Service, role: str
) -> None:
    token = service.credential(f"not-operator-{role}", role)
    sign_in(page, service.url, token)
    expect(
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin")
    ).to_have_count(0)
    for path in ADMIN_PAGES:
        response = page.goto(f"{service.url}{path}")
        assert response is not None
        assert response.status == 403, (path, response.status)
        expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    screenshot(page, f"admin-refused-{role}")

    csrf = csrf_token(page)
    created = page.request.post(
        f"{service.url}/ui/admin/credentials",
        form={"csrf": csrf, "project": f"not-operator-{role}", "role": "admin", "kind": "token"},
    )
    assert created.status == 403
    assert "idp_" not in created.text()
    with httpx.Client(base_url=service.url) as plain:
        assert plain.get("/ui/admin/projects").status_code == 303  # not signed in: to sign in
    revoked = page.request.post(
        f"{service.url}/ui/admin/credentials/some-id/revoke", form={"csrf": csrf}
    )
    assert revoked.status == 403
    with service.client(token) as client:
        assert client.get("/v5/imagecaches").status_code == 200  # still works, nothing revoked


def test_audit_filters_that_cannot_be_met_say_which_field(operator: Page, service: Service) -> None:
    page = operator
    for query, status, says in (
        ("project=no-such-project", 404, "project 'no-such-project' does not exist"),
        ("limit=0", 400, "limit must be a whole number from 1 to 1000"),
        ("limit=lots", 400, "limit must be a whole number"),
        ("result=maybe", 400, "result must be ok, refused or empty"),
    ):
        response = page.goto(f"{service.url}/ui/admin/audit?{query}")
        assert response is not None
        assert response.status == status, query
        expect(page.get_by_role("alert")).to_contain_text(says)
    page.goto(f"{service.url}/ui/admin/audit?action=%3Cscript%3E")
    expect(page.get_by_label("Action contains")).to_have_value("<script>")
    expect(page.locator(".empty")).to_contain_text("No events match these filters")


def test_what_the_operator_does_to_another_project_is_audited_under_that_project(
    operator: Page, service: Service
) -> None:
    page = operator
    page.goto(f"{service.url}/ui/admin/credentials")
    made = page.request.post(
        f"{service.url}/ui/admin/credentials",
        form={
            "csrf": csrf_token(page),
            "project": "ops-elsewhere",
            "role": "reader",
            "kind": "token",
        },
        headers={"Origin": service.url},
    )
    assert made.status == 200, made.text()
    page.goto(f"{service.url}/ui/admin/audit?project=ops-elsewhere&action=iam%3Acredential")
    actions = page.locator("table.admin-audit tbody tr").evaluate_all(
        "rows => rows.map(row => row.dataset.action)"
    )
    assert actions == ["iam:credential:create"]
    page.goto(f"{service.url}/ui/admin/audit?project={OPERATOR_PROJECT}&action=iam%3Acredential")
    assert "ops-elsewhere" not in page.locator("table.admin-audit").inner_text()
