"""Hostile input against a real `imagedepot serve`: bodies that are JSON but that no endpoint can
hold (100,000 levels deep, a 5,000-digit integer, a lone surrogate, an integer past 64 bits),
query parameters past what SQLite or `datetime` can hold, and digits `int` refuses (`²`).
Each must be answered in the dialect's own error body with a 400 naming the field or
parameter, and must change nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.kube import BASE, unique
from tests.support.service import Service

DEEP = b"[" * 100_000 + b"]" * 100_000
HUGE_INTEGER = b'{"name": ' + b"9" * 5000 + b"}"
GLANCE_PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
APPLY_PATCH = {"Content-Type": "application/apply-patch+yaml"}
TOO_BIG = 2**63


def cce_message(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error_code", "error_msg"}, body
    message: str = body["error_msg"]
    return message


def k8s_message(response: httpx.Response) -> str:
    body = response.json()
    assert body["kind"] == "Status", body
    assert body["status"] == "Failure", body
    assert body["code"] == response.status_code
    message: str = body["message"]
    return message


def glance_message(response: httpx.Response) -> str:
    error = response.json()["error"]
    assert error["code"] == response.status_code
    message: str = error["message"]
    return message


def didi_message(response: httpx.Response) -> str:
    body = response.json()
    assert body["errno"] != 0, body
    assert body["data"] is None, body
    message: str = body["errmsg"]
    return message


@pytest.fixture(scope="module")
def token(service: Service) -> str:
    return service.credential("hostile", "member")


@pytest.fixture
def http(service: Service, token: str) -> Iterator[httpx.Client]:
    with service.client(token) as client:
        yield client


@pytest.fixture
def didi(service: Service, token: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def image_id(service: Service, token: str) -> str:
    with service.client(token) as client:
        created = client.post("/v2/images", json={"name": "target", "x_note": "kept"})
        assert created.status_code == 201, created.text
        identifier: str = created.json()["id"]
        return identifier


@pytest.fixture(scope="module")
def snapshot_name(service: Service, token: str) -> str:
    name = unique("hostile")
    with service.client(token) as client:
        made = client.post(
            BASE,
            json={
                "apiVersion": "cci/v2",
                "kind": "ImageSnapshot",
                "metadata": {"name": name},
                "spec": {"images": [{"image": "127.0.0.1:1/none/such:v1"}]},
            },
        )
        assert made.status_code == 201, made.text
        # Settled, so that the worker changes nothing while the tests compare states.
        deadline = time.monotonic() + 60
        while client.get(f"{BASE}/{name}").json().get("status", {}).get("phase") != "Failed":
            assert time.monotonic() < deadline, "the snapshot never failed"
            time.sleep(0.2)
    return name


def state(http: httpx.Client) -> Any:
    """Everything the project holds, as its dialects list it."""
    caches = http.get("/v5/imagecaches")
    images = http.get("/v2/images")
    snapshots = http.get(BASE)
    assert caches.status_code == images.status_code == snapshots.status_code == 200
    return (
        caches.json()["image_caches"],
        images.json()["images"],
        [item["metadata"] for item in snapshots.json()["items"]],
    )


def refused(response: httpx.Response, message_of: Callable[[httpx.Response], str]) -> str:
    assert response.status_code == 400, (response.status_code, response.text[:500])
    return message_of(response)


@pytest.mark.parametrize(
    ("body", "named"), [(DEEP, "nests deeper than 100 levels"), (HUGE_INTEGER, "name: ")]
)
def test_bodies_no_parser_survives_are_refused_in_every_dialect(
    http: httpx.Client,
    didi: httpx.Client,
    image_id: str,
    snapshot_name: str,
    body: bytes,
    named: str,
) -> None:
    before = state(http)
    item = f"{BASE}/{snapshot_name}"
    for response, message_of in [
        (http.post("/v5/imagecaches", content=body), cce_message),
        (http.post(BASE, content=body), k8s_message),
        (http.put(item, content=body), k8s_message),
        (http.patch(item, content=body, headers=MERGE_PATCH), k8s_message),
        (http.patch(item, content=body, headers=JSON_PATCH), k8s_message),
        (
            http.patch(item, content=body, headers=APPLY_PATCH, params={"fieldManager": "me"}),
            k8s_message,
        ),
        (http.post("/v2/images", content=body), glance_message),
        (http.patch(f"/v2/images/{image_id}", content=body, headers=GLANCE_PATCH), glance_message),
        (didi.post("/dicloud/i/storage/cimg/list", content=body), didi_message),
    ]:
        message = refused(response, message_of)
        assert named in message, (response.request.url, message)
        assert "body" in message, message
    assert state(http) == before


def test_a_lone_surrogate_in_a_glance_property_is_refused_naming_it(
    http: httpx.Client, image_id: str
) -> None:
    before = state(http)
    created = http.post(
        "/v2/images",
        content=b'{"name": "s", "x_note": "\\udfff"}',
        headers={"Content-Type": "application/json"},
    )
    assert "x_note" in refused(created, glance_message)
    patched = http.patch(
        f"/v2/images/{image_id}",
        content=b'[{"op": "add", "path": "/x_note", "value": "\\udfff"}]',
        headers=GLANCE_PATCH,
    )
    assert "/x_note" in refused(patched, glance_message)
    assert state(http) == before


def test_a_lone_surrogate_elsewhere_is_refused_in_the_dialects_own_body(
    http: httpx.Client, didi: httpx.Client
) -> None:
    before = state(http)
    name = unique("surrogate")
    annotated = (
        b'{"apiVersion": "cci/v2", "kind": "ImageSnapshot", "metadata": {"name": "'
        + name.encode()
        + b'", "annotations": {"note": "\\ud800"}}, "spec": {"images": [{"image": "busybox"}]}}'
    )
    message = refused(http.post(BASE, content=annotated), k8s_message)
    assert "metadata.annotations.note" in message
    cce = b'{"name": "x\\udfff", "images": ["busybox"]}'
    assert "name" in refused(http.post("/v5/imagecaches", content=cce), cce_message)
    listed = didi.post("/dicloud/i/storage/cimg/list", content=b'{"name": "\\udfff"}')
    assert "name" in refused(listed, didi_message)
    assert state(http) == before


def test_glance_min_ram_past_64_bits_is_refused_naming_it(
    http: httpx.Client, image_id: str
) -> None:
    before = state(http)
    created = http.post("/v2/images", json={"name": "big", "min_ram": TOO_BIG})
    assert "min_ram" in refused(created, glance_message)
    patched = http.patch(
        f"/v2/images/{image_id}",
        json=[{"op": "replace", "path": "/min_ram", "value": TOO_BIG}],
        headers=GLANCE_PATCH,
    )
    assert "min_ram" in refused(patched, glance_message)
    assert state(http) == before
    # The largest that fits is kept, as Glance's BigInteger column keeps it.
    largest = http.patch(
        f"/v2/images/{image_id}",
        json=[{"op": "replace", "path": "/min_ram", "value": TOO_BIG - 1}],
        headers=GLANCE_PATCH,
    )
    assert largest.status_code == 200, largest.text
    assert largest.json()["min_ram"] == TOO_BIG - 1
    assert http.get(f"/v2/images/{image_id}").json()["min_ram"] == TOO_BIG - 1
    reset = http.patch(
        f"/v2/images/{image_id}",
        json=[{"op": "replace", "path": "/min_ram", "value": 0}],
        headers=GLANCE_PATCH,
    )
    assert reset.status_code == 200


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("size_min", "1e20"),
        ("size_min", str(10**20)),
        ("size_max", str(TOO_BIG)),
        ("size_min", "²"),
        ("limit", "9" * 5000),
        ("created_at", "gt:0001-01-01T00:00:00+01:00"),
        ("updated_at", "lt:9999-12-31T23:59:59-14:00"),
        ("changes-since", "9999-12-31T23:59:59-14:00"),
    ],
)
def test_glance_list_parameters_out_of_range_are_refused_naming_them(
    http: httpx.Client, parameter: str, value: str
) -> None:
    response = http.get("/v2/images", params={parameter: value})
    assert parameter in refused(response, glance_message)


def test_glance_list_times_at_the_edges_of_the_calendar_still_work(http: httpx.Client) -> None:
    for parameter, value in [
        ("created_at", "gt:0001-01-01T01:00:00+01:00"),
        ("changes-since", "9999-12-31T23:59:59+00:00"),
    ]:
        response = http.get("/v2/images", params={parameter: value})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("version", ["²", "9" * 5000, "-1", str(TOO_BIG)])
def test_a_resource_version_int_refuses_is_a_400_status(
    http: httpx.Client, snapshot_name: str, version: str
) -> None:
    got = http.get(f"{BASE}/{snapshot_name}", params={"resourceVersion": version})
    assert got.status_code in (200, 400), got.text
    if got.status_code == 400:
        assert "resourceVersion" in k8s_message(got)
    for params in [
        {"resourceVersion": version},
        {"resourceVersion": version, "resourceVersionMatch": "NotOlderThan"},
        {"resourceVersion": version, "watch": "true", "timeoutSeconds": "1"},
    ]:
        message = refused(http.get(BASE, params=params), k8s_message)
        assert "resourceVersion" in message


def test_a_superscript_array_index_in_a_json_patch_is_not_a_500(http: httpx.Client) -> None:
    name = unique("index")
    made = http.post(
        BASE,
        json={
            "apiVersion": "cci/v2",
            "kind": "ImageSnapshot",
            "metadata": {"name": name, "finalizers": ["example.com/keep"]},
            "spec": {"images": [{"image": "127.0.0.1:1/none/such:v1"}]},
        },
    )
    assert made.status_code == 201, made.text
    finalizers = made.json()["metadata"]["finalizers"]
    assert "example.com/keep" in finalizers
    patch = [{"op": "remove", "path": "/metadata/finalizers/²"}]
    response = http.patch(f"{BASE}/{name}", json=patch, headers=JSON_PATCH)
    assert response.status_code == 422, response.text
    assert "/metadata/finalizers/²" in k8s_message(response)
    after = http.get(f"{BASE}/{name}").json()
    assert after["metadata"]["finalizers"] == finalizers
    kept = [value for value in finalizers if value != "example.com/keep"]
    cleared = http.patch(
        f"{BASE}/{name}", json={"metadata": {"finalizers": kept}}, headers=MERGE_PATCH
    )
    assert cleared.status_code == 200, cleared.text
    assert http.delete(f"{BASE}/{name}").status_code == 200


@pytest.mark.parametrize("parameter", ["limit", "timeoutSeconds"])
def test_k8s_integer_parameters_past_64_bits_are_refused(
    http: httpx.Client, parameter: str
) -> None:
    params = {parameter: str(TOO_BIG)}
    if parameter == "timeoutSeconds":
        params["watch"] = "true"
    message = refused(http.get(BASE, params=params), k8s_message)
    assert parameter in message
