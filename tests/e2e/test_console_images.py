"""The console's VM image pages in a real browser against a real `imagedepot serve`: a real
qcow2 uploaded through the form with its progress bar, listed, downloaded byte for byte,
deactivated, reactivated and deleted; refusals shown in the server's words; a reader who sees
no controls and whose forced requests are refused; names shown as text, never as markup."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from tests.support.browser import browser_page, console_errors, screenshot
from tests.support.disks import make_disk, qcow2
from tests.support.glance import upload
from tests.support.service import Service

SMALL_LIMIT = 65536
HOSTILE_NAME = "<img src=x onerror=alert(1)>"


def human(count: int) -> str:
    """What console.js shows for a byte count."""
    value, unit = float(count), 0
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{int(value)} B" if unit == 0 else f"{value:.1f} {units[unit]}"


def sign_in(page: Page, service: Service, token: str) -> None:
    """Sign in through the form and open the VM images page from the navigation."""
    page.goto(f"{service.url}/ui/signin")
    page.get_by_label("Token", exact=True).fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{service.url}/ui/caches")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="VM images").click()
    expect(page.get_by_role("heading", name="VM images", level=1)).to_be_visible()


def accept_dialogs(page: Page) -> list[str]:
    """Confirm every dialog (the delete and deactivate forms ask), remembering what it said."""
    said: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        said.append(dialog.message)
        dialog.accept()

    page.on("dialog", on_dialog)
    return said


def glance_image(service: Service, token: str, name: str, data: bytes | None) -> str:
    """An image made through Glance (with its data when given), for pages to show."""
    with service.client(token) as client:
        created = client.post(
            "/v2/images", json={"name": name, "disk_format": "qcow2", "container_format": "bare"}
        )
        assert created.status_code == 201, created.text
        image_id: str = created.json()["id"]
        if data is not None:
            uploaded = upload(client, image_id, data)
            assert uploaded.status_code == 204, uploaded.text
    return image_id


def csrf_of(page: Page) -> str:
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    assert token
    return token


def test_a_qcow2_goes_up_with_progress_and_comes_back_byte_for_byte(
    page: Page, service: Service, tmp_path: Path
) -> None:
    token = service.credential("console-images", "member")
    disk = make_disk(tmp_path / "disk.qcow2", "qcow2", "64M")
    data = disk.read_bytes()
    errors = console_errors(page)
    asked = accept_dialogs(page)
    sign_in(page, service, token)
    expect(page.locator(".empty")).to_contain_text("No VM images yet. Upload one below")
    expect(page.get_by_text("Uploading needs JavaScript")).to_be_hidden()

    page.set_input_files("#image-file", str(disk))
    expect(page.get_by_label("Name", exact=True)).to_have_value("disk")  # from the file
    page.get_by_label("Name", exact=True).fill("console-disk")
    page.get_by_label("Disk format").select_option("qcow2")
    page.get_by_label("Container format").select_option("bare")
    page.get_by_label("Type", exact=True).select_option("snapshot")
    page.get_by_role("button", name="Upload").click()

    expect(page.get_by_role("status")).to_have_text(
        f"Uploaded console-disk: active, {human(len(data))} of qcow2."
    )
    progress = page.locator("#upload-progress")
    assert progress.evaluate("bar => [bar.value, bar.max]") == [len(data), len(data)]
    expect(page.locator("[data-upload-percent]")).to_have_text(
        f"100% ({human(len(data))} of {human(len(data))})"
    )
    row = page.locator("tr", has_text="console-disk")
    expect(row.locator('[data-field="status"]')).to_have_text("active")
    expect(row.locator('[data-field="size"]')).to_have_text(human(len(data)))
    expect(row.locator('[data-field="size"]')).to_have_attribute("data-bytes", str(len(data)))
    expect(row.locator('[data-field="disk_format"]')).to_have_text("qcow2")
    expect(row.locator('[data-field="type"]')).to_have_text("snapshot")
    expect(row.locator('[data-field="owner"]')).to_have_text("console-images")
    expect(row.locator("time")).not_to_have_text("")
    image_id = row.get_attribute("data-image-id")
    assert image_id
    with service.client(token) as client:
        shown = client.get(f"/v2/images/{image_id}").json()
    assert shown["status"] == "active"
    assert shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert shown["image_type"] == "snapshot"
    assert shown["virtual_size"] == 64 << 20
    screenshot(page, "images")

    with page.expect_download() as started:
        row.get_by_role("link", name="Download").click()
    download = started.value
    assert download.suggested_filename == "console-disk.qcow2"
    assert Path(download.path()).read_bytes() == data

    row.get_by_role("button", name="Deactivate").click()
    expect(row.locator('[data-field="status"]')).to_have_text("deactivated")
    expect(row.get_by_role("link", name="Download")).to_have_count(0)
    refused = page.request.get(f"{service.url}/ui/images/{image_id}/file")
    assert refused.status == 403
    assert "deactivated" in refused.text()

    row.get_by_role("button", name="Reactivate").click()
    expect(row.locator('[data-field="status"]')).to_have_text("active")
    again = page.request.get(f"{service.url}/ui/images/{image_id}/file")
    assert again.status == 200
    assert again.body() == data
    assert "attachment" in again.headers["content-disposition"]

    row.get_by_role("button", name="Delete").click()
    expect(page.locator("tr", has_text="console-disk")).to_have_count(0)
    expect(page.locator(".empty")).to_be_visible()
    with service.client(token) as client:
        assert client.get(f"/v2/images/{image_id}").status_code == 404
    assert asked == [
        "Deactivate the image console-disk? Nobody can download it until it is reactivated.",
        "Delete the image console-disk? Its data is gone for good.",
    ]
    assert errors == []


def test_a_file_that_is_not_its_declared_format_is_refused_in_the_servers_words(
    page: Page, service: Service, tmp_path: Path
) -> None:
    token = service.credential("console-mismatch", "member")
    disk = make_disk(tmp_path / "real.qcow2", "qcow2", "16M")
    sign_in(page, service, token)

    page.set_input_files("#image-file", str(disk))
    page.get_by_label("Disk format").select_option("raw")
    page.get_by_role("button", name="Upload").click()

    expect(page.get_by_role("alert")).to_have_text(
        "The upload was refused: disk_format is raw but the data is a qcow2 image. "
        "Nothing was kept."
    )
    expect(page.locator("tr", has_text="real")).to_have_count(0)
    with service.client(token) as client:
        assert client.get("/v2/images").json()["images"] == []
    # The button is back, so the person can fix the format and try again.
    expect(page.get_by_role("button", name="Upload")).to_be_enabled()


@pytest.fixture(scope="module")
def small_service() -> Iterator[Service]:
    with Service(env={"IMAGEDEPOT_MAX_IMAGE_BYTES": str(SMALL_LIMIT)}) as running:
        yield running


def test_an_image_over_the_size_limit_is_refused_in_the_servers_words(
    page: Page, small_service: Service, tmp_path: Path
) -> None:
    token = small_service.credential("console-limit", "member")
    disk = make_disk(tmp_path / "big.qcow2", "qcow2", "64M")
    assert disk.stat().st_size > SMALL_LIMIT
    sign_in(page, small_service, token)

    page.set_input_files("#image-file", str(disk))
    page.get_by_role("button", name="Upload").click()

    expect(page.get_by_role("alert")).to_have_text(
        f"The upload was refused: image data is over the limit of {SMALL_LIMIT} bytes. "
        "Nothing was kept."
    )
    with small_service.client(token) as client:
        assert client.get("/v2/images").json()["images"] == []


def test_without_javascript_the_form_says_uploads_need_it(
    browser: Browser, service: Service
) -> None:
    member = service.credential("console-noscript", "member")
    with browser_page(browser, java_script_enabled=False) as page:
        sign_in(page, service, member)
        expect(page.get_by_text("Uploading needs JavaScript")).to_be_visible()
        expect(page.get_by_role("button", name="Upload")).to_be_disabled()
        expect(page.locator(".empty")).to_contain_text("No VM images yet")


def test_a_reader_sees_images_without_controls_and_is_refused_when_forcing(
    page: Page, service: Service
) -> None:
    member = service.credential("console-readers", "member")
    reader = service.credential("console-readers", "reader")
    data = qcow2()
    image_id = glance_image(service, member, "shared-base", data)
    errors = console_errors(page)
    sign_in(page, service, reader)

    row = page.locator(f'tr[data-image-id="{image_id}"]')
    expect(row.locator('[data-field="status"]')).to_have_text("active")
    expect(row.get_by_role("link", name="Download")).to_be_visible()
    expect(page.locator("form[data-image-upload]")).to_have_count(0)
    expect(page.get_by_role("heading", name="Upload an image")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    expect(page.get_by_role("button", name="Deactivate")).to_have_count(0)
    with page.expect_download() as started:
        row.get_by_role("link", name="Download").click()
    assert Path(started.value.path()).read_bytes() == data

    csrf = csrf_of(page)
    base = f"{service.url}/ui/images"
    for action in ("delete", "deactivate"):
        forced = page.request.post(f"{base}/{image_id}/{action}", form={"csrf": csrf})
        assert forced.status == 403, (action, forced.text())
        assert "role reader may not ims:image:" in forced.text()
    created = page.request.post(
        base,
        headers={"X-CSRF-Token": csrf, "Accept": "application/json"},
        data={"name": "sneaky", "disk_format": "raw", "container_format": "bare"},
    )
    assert created.status == 403
    uploaded = page.request.put(
        f"{base}/{image_id}/file",
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/octet-stream"},
        data=b"x" * 512,
    )
    assert uploaded.status == 403
    with service.client(member) as client:
        listed = client.get("/v2/images").json()["images"]
    assert [(image["name"], image["status"]) for image in listed] == [("shared-base", "active")]
    assert errors == []


def test_a_change_without_the_sessions_csrf_token_is_refused(page: Page, service: Service) -> None:
    member = service.credential("console-csrf", "member")
    image_id = glance_image(service, member, "kept", qcow2())
    sign_in(page, service, member)

    forged = page.request.post(f"{service.url}/ui/images/{image_id}/delete", form={"csrf": "x"})
    assert forged.status == 403
    unsigned = page.request.put(
        f"{service.url}/ui/images/{image_id}/file",
        headers={"Content-Type": "application/octet-stream"},
        data=b"x",
    )
    assert unsigned.status == 403
    with service.client(member) as client:
        assert client.get(f"/v2/images/{image_id}").json()["status"] == "active"


def test_a_hostile_name_is_shown_as_text(page: Page, service: Service) -> None:
    member = service.credential("console-names", "member")
    image_id = glance_image(service, member, HOSTILE_NAME, None)
    errors = console_errors(page)
    asked = accept_dialogs(page)
    sign_in(page, service, member)

    row = page.locator(f'tr[data-image-id="{image_id}"]')
    expect(row.get_by_role("link", name=HOSTILE_NAME, exact=True)).to_be_visible()
    expect(row.locator('[data-field="status"]')).to_have_text("queued")
    assert page.locator("img").count() == 0
    row.get_by_role("link", name=HOSTILE_NAME, exact=True).click()
    expect(page.get_by_role("heading", name=HOSTILE_NAME, level=1)).to_be_visible()
    assert page.locator("img").count() == 0
    assert asked == []
    assert errors == []


def test_the_images_page_fits_a_phone(phone_page: Page, service: Service) -> None:
    member = service.credential("console-phone", "member")
    glance_image(service, member, "phone-base", qcow2())
    errors = console_errors(phone_page)
    sign_in(phone_page, service, member)

    row = phone_page.locator("tr", has_text="phone-base")
    expect(row.locator('[data-field="status"]')).to_have_text("active")
    expect(row.get_by_role("button", name="Delete")).to_be_visible()
    expect(phone_page.get_by_label("Disk image file")).to_be_visible()
    assert phone_page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(phone_page, "images-phone")
    assert errors == []


def test_an_image_shared_with_the_project_names_its_owner_and_offers_no_changes(
    page: Page, service: Service
) -> None:
    owner = service.credential("console-owner", "member")
    guest = service.credential("console-guest", "member")
    image_id = glance_image(service, owner, "offered", qcow2())
    own_id = glance_image(service, guest, "own", None)
    with service.client(guest) as client:
        guest_project = glance_image_owner(client, own_id)
    with service.client(owner) as client:
        added = client.post(f"/v2/images/{image_id}/members", json={"member": guest_project})
        assert added.status_code == 200, added.text
    with service.client(guest) as client:
        accepted = client.put(
            f"/v2/images/{image_id}/members/{guest_project}", json={"status": "accepted"}
        )
        assert accepted.status_code == 200, accepted.text
    sign_in(page, service, guest)

    offered = page.locator(f'tr[data-image-id="{image_id}"]')
    expect(offered.locator('[data-field="owner"]')).to_have_text("console-owner")
    expect(offered.get_by_role("link", name="Download")).to_be_visible()
    expect(offered.get_by_role("button")).to_have_count(0)
    own = page.locator(f'tr[data-image-id="{own_id}"]')
    expect(own.get_by_role("button", name="Delete")).to_be_visible()
    forced = page.request.post(
        f"{service.url}/ui/images/{image_id}/delete", form={"csrf": csrf_of(page)}
    )
    assert forced.status == 403
    assert "belongs to another project" in forced.text()


def glance_image_owner(client: httpx.Client, image_id: str) -> str:
    owner: str = client.get(f"/v2/images/{image_id}").json()["owner"]
    return owner
