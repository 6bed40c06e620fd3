"""Glance's interoperable import with the glance-direct method: stage the data, then import
it, over plain HTTP (every status) and as openstacksdk does it (`use_import=True`)."""

from __future__ import annotations

import hashlib
import os

import openstack
import pytest

from tests.support.glance import assert_error, create, project_client
from tests.support.service import Service

OCTETS = {"Content-Type": "application/octet-stream"}


def test_stage_then_import_makes_the_image_active(service: Service) -> None:
    data = os.urandom(400_000)
    with project_client(service) as client:
        info = client.get("/v2/info/import").json()
        assert info["import-methods"]["value"] == ["glance-direct"]
        response = client.post(
            "/v2/images",
            json={"name": "imported", "disk_format": "raw", "container_format": "bare"},
        )
        assert response.headers["openstack-image-import-methods"] == "glance-direct"
        image = response.json()
        path = f"/v2/images/{image['id']}"
        glance_direct = {"method": {"name": "glance-direct"}}
        assert_error(client.post(f"{path}/import", json=glance_direct), 409, "stage")

        assert client.put(f"{path}/stage", content=data, headers=OCTETS).status_code == 204
        staged = client.get(path).json()
        assert staged["status"] == "uploading"
        assert client.get(f"{path}/file").status_code == 204  # not the image's data yet
        assert_error(client.put(f"{path}/stage", content=data, headers=OCTETS), 409)
        assert_error(client.put(f"{path}/file", content=data, headers=OCTETS), 409)
        web = {"method": {"name": "web-download", "uri": "http://example.invalid/disk.img"}}
        assert_error(client.post(f"{path}/import", json=web), 400, "web-download")
        assert client.get(path).json()["status"] == "uploading"

        assert client.post(f"{path}/import", json=glance_direct).status_code == 202
        active = client.get(path).json()
        assert active["status"] == "active"
        assert active["size"] == len(data)
        assert active["os_hash_value"] == hashlib.sha512(data).hexdigest()
        assert client.get(f"{path}/file").content == data
        assert_error(client.post(f"{path}/import", json=glance_direct), 409)

        # Staging into a read-only image of another project is not allowed.
        other = create(client, name="plain")
        with project_client(service) as stranger:
            refused = stranger.put(f"/v2/images/{other['id']}/stage", content=data, headers=OCTETS)
            assert_error(refused, 404)


# openstacksdk warns about its own future changes (find_* defaults, influxdb, internals).
@pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning")
def test_openstacksdk_imports_with_glance_direct(service: Service) -> None:
    token = service.credential("sdk-import")
    connection = openstack.connect(
        auth_type="admin_token",
        auth={"endpoint": service.url, "token": token},
        image_endpoint_override=service.url,
    )
    data = os.urandom(300_000)
    created = connection.image.create_image(
        name="sdk-imported",
        data=data,
        disk_format="raw",
        container_format="bare",
        use_import=True,
    )
    image = connection.image.get_image(created.id)
    assert image.status == "active"
    assert image.size == len(data)
    downloaded = connection.image.download_image(image)
    assert downloaded.content == data
