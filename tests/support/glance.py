"""Glance v2 requests the Glance end-to-end suites share: a project's client, create, upload,
JSON-patch, and the Glance error body check."""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx

from tests.support.service import Service

_projects = itertools.count()


PATCH = "application/openstack-images-v2.1-json-patch"


def project_client(service: Service, role: str = "member") -> httpx.Client:
    return service.client(service.credential(f"glance-{next(_projects)}", role))


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("disk_format", "raw")
    body.setdefault("container_format", "bare")
    response = client.post("/v2/images", json=body)
    assert response.status_code == 201, response.text
    image: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v2/images/{image['id']}"
    return image


def upload(client: httpx.Client, image_id: str, data: bytes) -> httpx.Response:
    return client.put(
        f"/v2/images/{image_id}/file",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )


def patch(client: httpx.Client, image_id: str, operations: list[dict[str, Any]]) -> httpx.Response:
    return client.patch(
        f"/v2/images/{image_id}",
        content=json.dumps(operations).encode(),
        headers={"Content-Type": PATCH},
    )


def assert_error(response: httpx.Response, status: int, mentions: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status
    assert error["title"]
    if mentions is not None:
        assert mentions in error["message"], error
