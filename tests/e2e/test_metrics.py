"""`/metrics` against a real `serve`: the store's gauges, the builds the worker finished, the
answers of both ports and the blob bytes sent, in the Prometheus text format, with no
project's names in it."""

from __future__ import annotations

import re

import httpx

from tests.support.images import make_layer, push_image
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status

SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def scrape(service: Service) -> dict[str, float]:
    response = httpx.get(f"{service.url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    for line in response.text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match is not None, line
        samples[match[1] + (match[2] or "")] = float(match[3])
    return samples


def test_metrics_count_what_the_store_holds_and_what_was_served(
    service: Service, registry: RegistryServer
) -> None:
    before = scrape(service)
    assert before["imagedepot_blobs"] == 0
    pushed = push_image(
        registry.url, "metrics/app", "v1", [make_layer(300_000, seed=1900), make_layer(seed=1901)]
    )
    token = service.credential("metrics-secret-team")
    with service.client(token) as client:
        created = client.post(
            "/v5/imagecaches",
            json={
                "name": "metrics-secret-cache",
                "images": [f"{registry.endpoint}/metrics/app:v1"],
            },
        )
        cache_id = created.json()["image_cache"]["id"]
        assert wait_for_status(client, cache_id, {"Available"})["status"] == "Available"
    layer = pushed.layer_digests[0]
    blob = httpx.get(
        f"http://127.0.0.1:{service.registry_port}/v2/metrics/app/blobs/{layer}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert blob.status_code == 200

    text = httpx.get(f"{service.url}/metrics").text
    assert "metrics-secret" not in text
    assert token not in text
    after = scrape(service)
    assert after['imagedepot_caches{status="Available"}'] == 1
    assert after["imagedepot_blobs"] == len(pushed.blob_digests) + 1  # and the manifest
    assert after["imagedepot_blob_bytes"] >= sum(pushed.layer_sizes)
    assert after['imagedepot_cache_builds_total{outcome="available"}'] == 1
    assert after["imagedepot_cache_build_seconds_count"] == 1
    assert after['imagedepot_cache_build_seconds_bucket{le="+Inf"}'] == 1
    assert after["imagedepot_registry_blob_bytes_total"] == len(blob.content)
    api_ok = 'imagedepot_http_requests_total{code="2xx",port="api"}'
    assert after[api_ok] > before.get(api_ok, 0)
    assert after['imagedepot_http_requests_total{code="2xx",port="registry"}'] >= 1
