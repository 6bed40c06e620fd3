"""A full disk: the data dir (blobs and SQLite together) on a small tmpfs made by the test.
A cache whose images do not fit fails saying so, a Glance upload gets Glance's 413 and its
image goes back to queued, nothing staged is left behind, reads keep working, a full
database answers 503 rather than 500, and writes work again as soon as there is room,
without a restart. Real docker-registry upstream."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.glance import assert_error, create, upload
from tests.support.images import make_layer, push_image
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status

MIB = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if made.returncode != 0:
        message = f"cannot mount a small tmpfs (root and mount are needed): {made.stderr}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def resize(disk: Path, megabytes: int) -> None:
    subprocess.run(
        ["mount", "-o", f"remount,size={megabytes}m", str(disk)], check=True, capture_output=True
    )


def staged_files(data_dir: Path) -> list[Path]:
    return [path for path in (data_dir / "blobs" / "tmp").iterdir()]


def test_a_full_disk_fails_what_does_not_fit_and_recovers_when_room_returns(
    small_disk: Path,
) -> None:
    with RegistryServer() as registry, Service(data_dir=small_disk) as service:
        small = push_image(registry.url, "disk/small", "v1", [make_layer(seed=5400)])
        push_image(registry.url, "disk/huge", "v1", [make_layer(30 * MIB, seed=5401)])
        token = service.credential("full-disk")
        with service.client(token) as client:
            first = client.post(
                "/v5/imagecaches",
                json={"name": "small", "images": [f"{registry.endpoint}/disk/small:v1"]},
            ).json()["image_cache"]["id"]
            assert wait_for_status(client, first, {"Available", "Failed"})["status"] == "Available"
            free_before = os.statvfs(small_disk).f_bavail

            huge = client.post(
                "/v5/imagecaches",
                json={"name": "huge", "images": [f"{registry.endpoint}/disk/huge:v1"]},
            ).json()["image_cache"]["id"]
            failed = wait_for_status(client, huge, {"Available", "Failed"})
            assert failed["status"] == "Failed", failed
            progress = client.get(f"/v5/imagecaches/{huge}/progress").json()
            assert progress["reason"] == "StorageFull"
            assert "blob store is full" in failed["message"]
            assert "bytes in all" in failed["message"]

            # Nothing staged is left, and the store holds what it held before (the space the
            # build took is back; the log and the database grew by a few pages).
            assert staged_files(small_disk) == []
            assert service.stored_digests() == {small.manifest_digest, *small.blob_digests}
            assert os.statvfs(small_disk).f_bavail >= free_before - 64
            fsck = service.cli("fsck", "--data-dir", str(small_disk), "--json")
            assert '"leftovers": []' in fsck.stdout

            # Reads keep working.
            pulled = httpx.get(
                f"http://127.0.0.1:{service.registry_port}/v2/disk/small/blobs/"
                f"{small.layer_digests[0]}",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert pulled.status_code == 200

            # A Glance upload that does not fit: 413 in Glance's body, the image queued again.
            image = create(client, name="too-big")
            refused = upload(client, image["id"], os.urandom(30 * MIB))
            assert_error(refused, 413, "no room")
            assert client.get(f"/v2/images/{image['id']}").json()["status"] == "queued"
            assert staged_files(small_disk) == []
            fits = upload(client, image["id"], os.urandom(1 * MIB))
            assert fits.status_code == 204, fits.text
            assert client.get(f"/v2/images/{image['id']}").json()["status"] == "active"

            # Room returns: the same cache builds, with no restart.
            resize(small_disk, 96)
            again = client.post(
                "/v5/imagecaches",
                json={"name": "huge-again", "images": [f"{registry.endpoint}/disk/huge:v1"]},
            ).json()["image_cache"]["id"]
            assert wait_for_status(client, again, {"Available", "Failed"})["status"] == "Available"


def test_a_full_database_disk_answers_503_not_500(small_disk: Path) -> None:
    with Service(data_dir=small_disk) as service:
        token = service.credential("full-db")
        filler = small_disk / "filler"
        with filler.open("wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * MIB)
                    handle.flush()
            except OSError:
                pass
        with service.client(token) as client:
            answers = []
            for index in range(20):
                answer = client.post(
                    "/v5/imagecaches", json={"name": f"db-{index}", "images": ["busybox"]}
                )
                answers.append(answer.status_code)
                if answer.status_code != 201:
                    assert answer.status_code in (503, 507), answer.text
                    assert answer.json()["error_msg"]
            assert 500 not in answers
            assert client.get("/v5/imagecaches").status_code == 200  # reads keep working
            filler.unlink()
            after = client.post("/v5/imagecaches", json={"name": "db-after", "images": ["busybox"]})
            assert after.status_code == 201, after.text
