"""A server killed in the middle of an image upload: after a restart the image is queued
again (ready for another upload), and no partial data is left anywhere."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterator

import httpx

from tests.support.service import Service


def test_kill_9_mid_upload_leaves_the_image_queued_and_no_partial_blob() -> None:
    service = Service().start()
    try:
        token = service.credential("glance-crash", "member")
        headers = {"X-Auth-Token": token}
        with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
            created = client.post(
                "/v2/images", json={"name": "cut", "disk_format": "raw", "container_format": "bare"}
            )
            assert created.status_code == 201, created.text
            image_id = created.json()["id"]
        chunk = os.urandom(256 * 1024)
        sent = threading.Event()

        def slow_body() -> Iterator[bytes]:
            for index in range(200):
                if index == 4:
                    sent.set()
                yield chunk
                time.sleep(0.05)

        def upload() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the server dies under it
                httpx.put(
                    f"{service.url}/v2/images/{image_id}/file",
                    content=slow_body(),
                    headers={**headers, "Content-Type": "application/octet-stream"},
                    timeout=30,
                )

        uploader = threading.Thread(target=upload)
        uploader.start()
        assert sent.wait(20)
        deadline = time.monotonic() + 10
        with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
            while client.get(f"/v2/images/{image_id}").json()["status"] != "saving":
                assert time.monotonic() < deadline, "the upload never started"
                time.sleep(0.05)
        service.kill9()
        uploader.join()

        service.start()
        with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
            deadline = time.monotonic() + 20
            while (status := client.get(f"/v2/images/{image_id}").json()["status"]) != "queued":
                assert time.monotonic() < deadline, f"the image stayed {status}"
                time.sleep(0.1)
            assert list((service.data_dir / "blobs" / "tmp").iterdir()) == []
            assert service.stored_digests() == set()

            data = os.urandom(300 * 1024)
            retried = client.put(
                f"/v2/images/{image_id}/file",
                content=data,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert retried.status_code == 204, retried.text
            shown = client.get(f"/v2/images/{image_id}").json()
            assert shown["status"] == "active"
            assert shown["checksum"] == hashlib.md5(data, usedforsecurity=False).hexdigest()
    finally:
        service.stop()
