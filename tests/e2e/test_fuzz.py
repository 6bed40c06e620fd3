"""A fuzz suite over every dialect's routes, bounded in count and seeded (a failure names the
seed and the request, and reruns the same): random JSON bodies mutated from valid ones (deep
nesting, huge and negative numbers, lone surrogates, control characters, wrong types,
unknown and missing fields, bytes that are no JSON), random query parameters and path
segments. Every answer must be below 500, a refusal must carry the dialect's own error body,
and a refused request must change nothing (the project's caches, images and upstreams are
compared around it). Against a real `imagedepot serve`."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.support.service import Service

SEED = int(os.environ.get("IMAGEDEPOT_FUZZ_SEED", "20261206"))
REQUESTS_PER_ROUTE = int(os.environ.get("IMAGEDEPOT_FUZZ_REQUESTS", "40"))
MERGE_PATCH = "application/merge-patch+json"
GLANCE_PATCH = "application/openstack-images-v2.1-json-patch"

_STRINGS = [
    "",
    "a",
    "busybox",
    "x" * 300,
    "é" * 70,
    "\u0000",
    "\n\r\t",
    "../../etc/passwd",
    "%00",
    "💥",
    "sha256:" + "0" * 64,
    "nginx:latest",
    "default:regcred",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59-14:00",
    "gt:0001-01-01T00:00:00+01:00",
    "²",
    "-1",
    "1e99",
]
_NUMBERS: list[Any] = [0, -1, 1, 20, 401, 2**31, 2**63, 2**64, -(2**63) - 1, 1.5, 1e308, -0.0]


def random_scalar(rng: random.Random) -> Any:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.choice(_STRINGS)
    if kind == 1:
        return rng.choice(_NUMBERS)
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(1, 20)))
    return int("9" * rng.randrange(20, 400))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    if depth > 4 or rng.random() < 0.5:
        return random_scalar(rng)
    if rng.random() < 0.5:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(_STRINGS): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def mutate(rng: random.Random, valid: dict[str, Any]) -> Any:
    """A body near `valid`: one field replaced, dropped or added, or something else entirely."""
    body = json.loads(json.dumps(valid))
    choice = rng.randrange(6)
    keys = list(body)
    if choice == 0 and keys:
        body[rng.choice(keys)] = random_value(rng)
    elif choice == 1 and keys:
        del body[rng.choice(keys)]
    elif choice == 2:
        body[rng.choice(_STRINGS)] = random_value(rng)
    elif choice == 3:
        return random_value(rng)
    elif choice == 4 and keys:
        key = rng.choice(keys)
        body[key] = {"nested": random_value(rng)} if rng.random() < 0.5 else [body[key]]
    else:
        for key in keys:
            if rng.random() < 0.3:
                body[key] = random_value(rng)
    return body


def raw_body(rng: random.Random, value: Any) -> bytes:
    """Usually the JSON of `value`; sometimes bytes that are not quite JSON."""
    roll = rng.random()
    if roll < 0.05:
        return b"[" * 50_000 + b"]" * 50_000
    if roll < 0.10:
        return b'{"name": "\\udfff"}'
    if roll < 0.15:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if roll < 0.18:
        return b'{"a": NaN}'
    return json.dumps(value).encode()


def random_query(rng: random.Random, names: list[str]) -> str:
    parts = []
    for _ in range(rng.randrange(1, 4)):
        name = rng.choice(names) if rng.random() < 0.85 else rng.choice(_STRINGS)
        value = rng.choice(_STRINGS) if rng.random() < 0.7 else str(random_scalar(rng))
        parts.append(f"{quote(str(name), safe='')}={quote(str(value), safe='')}")
    return "&".join(parts)


def random_segment(rng: random.Random) -> str:
    return quote(rng.choice([*_STRINGS, "0" * 2000, "a" * 70]) or "x", safe="")


# --- error shapes ---------------------------------------------------------------------------


def cce_shaped(body: Any, status: int) -> bool:
    return isinstance(body, dict) and set(body) == {"error_code", "error_msg"}


def k8s_shaped(body: Any, status: int) -> bool:
    return isinstance(body, dict) and body.get("kind") == "Status" and body.get("code") == status


def glance_shaped(body: Any, status: int) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and error.get("code") == status and "message" in error


def didi_shaped(body: Any, status: int) -> bool:
    return isinstance(body, dict) and body.get("errno") not in (None, 0) and "errmsg" in body


def oci_shaped(body: Any, status: int) -> bool:
    errors = body.get("errors") if isinstance(body, dict) else None
    return isinstance(errors, list) and bool(errors) and all("code" in e for e in errors)


@dataclass(frozen=True)
class Route:
    name: str
    shaped: Callable[[Any, int], bool]
    request: Callable[[random.Random], tuple[str, str, bytes | None, dict[str, str]]]
    """(method, path with query, body, headers)."""
    registry_port: bool = False


def json_request(
    method: str, path: str, valid: dict[str, Any], content_type: str = "application/json"
) -> Callable[[random.Random], tuple[str, str, bytes | None, dict[str, str]]]:
    def make(rng: random.Random) -> tuple[str, str, bytes | None, dict[str, str]]:
        return method, path, raw_body(rng, mutate(rng, valid)), {"Content-Type": content_type}

    return make


def query_request(
    path: str, names: list[str]
) -> Callable[[random.Random], tuple[str, str, bytes | None, dict[str, str]]]:
    def make(rng: random.Random) -> tuple[str, str, bytes | None, dict[str, str]]:
        return "GET", f"{path}?{random_query(rng, names)}", None, {}

    return make


def path_request(
    method: str, template: str
) -> Callable[[random.Random], tuple[str, str, bytes | None, dict[str, str]]]:
    def make(rng: random.Random) -> tuple[str, str, bytes | None, dict[str, str]]:
        return method, template.format(random_segment(rng)), None, {}

    return make


def routes(image_id: str) -> list[Route]:
    cache = {"name": "fuzzed", "images": ["busybox"], "image_cache_size": 20, "retention_days": 1}
    snapshot = {
        "apiVersion": "cci/v2",
        "kind": "ImageSnapshot",
        "metadata": {"name": "fuzzed", "labels": {"a": "b"}},
        "spec": {"images": [{"image": "busybox"}], "imageSnapshotSize": 20},
    }
    image = {"name": "fuzzed", "disk_format": "raw", "container_format": "bare", "min_ram": 1}
    didi_create = {"regionId": "default", "name": "fuzzed", "sourceImageId": image_id}
    return [
        Route("cce create", cce_shaped, json_request("POST", "/v5/imagecaches", cache)),
        Route("cce list", cce_shaped, query_request("/v5/imagecaches", ["name", "limit"])),
        Route("cce get", cce_shaped, path_request("GET", "/v5/imagecaches/{}")),
        Route("cce delete", cce_shaped, path_request("DELETE", "/v5/imagecaches/{}")),
        Route(
            "upstream create",
            cce_shaped,
            json_request("POST", "/v5/upstreams", {"registry": "quay.io", "check": "always"}),
        ),
        Route("upstream delete", cce_shaped, path_request("DELETE", "/v5/upstreams/{}")),
        Route(
            "k8s create",
            k8s_shaped,
            json_request("POST", "/apis/cci/v2/imagesnapshots", snapshot),
        ),
        Route(
            "k8s patch",
            k8s_shaped,
            json_request(
                "PATCH", "/apis/cci/v2/imagesnapshots/kept", {"metadata": {}}, MERGE_PATCH
            ),
        ),
        Route(
            "k8s list",
            k8s_shaped,
            query_request(
                "/apis/cci/v2/imagesnapshots",
                ["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion"],
            ),
        ),
        Route("glance create", glance_shaped, json_request("POST", "/v2/images", image)),
        Route(
            "glance list",
            glance_shaped,
            query_request(
                "/v2/images",
                [
                    "limit",
                    "marker",
                    "sort_key",
                    "sort_dir",
                    "sort",
                    "name",
                    "status",
                    "visibility",
                    "size_min",
                    "size_max",
                    "created_at",
                    "updated_at",
                    "tag",
                    "member_status",
                    "changes-since",
                ],
            ),
        ),
        Route(
            "glance patch",
            glance_shaped,
            json_request(
                "PATCH",
                f"/v2/images/{image_id}",
                {"op": "replace", "path": "/name", "value": "x"},
                GLANCE_PATCH,
            ),
        ),
        Route("glance get", glance_shaped, path_request("GET", "/v2/images/{}")),
        Route(
            "didi list",
            didi_shaped,
            json_request(
                "POST", "/dicloud/i/storage/cimg/list", {"regionId": "default", "limit": 10}
            ),
        ),
        Route(
            "didi create",
            didi_shaped,
            json_request("POST", "/dicloud/i/storage/cimg/create", didi_create),
        ),
        Route(
            "didi rename",
            didi_shaped,
            json_request(
                "POST",
                "/dicloud/i/storage/cimg/changeName",
                {"regionId": "default", "imageId": image_id, "name": "x"},
            ),
        ),
        Route(
            "didi result", didi_shaped, query_request("/dicloud/i/result", ["jobIds", "regionId"])
        ),
        Route(
            "oci tags",
            oci_shaped,
            query_request("/v2/fuzz/app/tags/list", ["n", "last"]),
            registry_port=True,
        ),
        Route("oci manifest", oci_shaped, path_request("GET", "/v2/fuzz/app/manifests/{}"), True),
        Route("oci blob", oci_shaped, path_request("GET", "/v2/fuzz/app/blobs/{}"), True),
        Route(
            "oci referrers",
            oci_shaped,
            query_request(f"/v2/fuzz/app/referrers/sha256:{'a' * 64}", ["artifactType"]),
            registry_port=True,
        ),
        Route("oci name", oci_shaped, path_request("GET", "/v2/{}/tags/list"), True),
    ]


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    """A server of its own with the per-credential rate limit off: the fuzzing sends
    hundreds of requests a second from one credential."""
    with Service(env={"IMAGEDEPOT_RATE_LIMIT": "0"}) as running:
        yield running


@pytest.fixture(scope="module")
def token(service: Service) -> str:
    return service.credential("fuzzed", "member")


@pytest.fixture(scope="module")
def image_id(service: Service, token: str) -> str:
    with service.client(token) as client:
        created = client.post("/v2/images", json={"name": "fuzz-target"})
        assert created.status_code == 201, created.text
        # a snapshot the patches aim at
        kept = client.post(
            "/apis/cci/v2/imagesnapshots",
            json={
                "apiVersion": "cci/v2",
                "kind": "ImageSnapshot",
                "metadata": {"name": "kept"},
                "spec": {"images": [{"image": "busybox"}]},
            },
        )
        assert kept.status_code == 201, kept.text
        image: str = created.json()["id"]
        return image


def state(client: httpx.Client) -> str:
    """What a refused request must leave as it was: the project's objects and what callers
    set on them (not the status the worker moves on its own: builds of `busybox` fail here,
    having no network)."""
    caches = client.get("/v5/imagecaches").json()["image_caches"]
    images = client.get("/v2/images?limit=1000").json()["images"]
    upstreams = client.get("/v5/upstreams").json()["upstreams"]
    kept = client.get("/apis/cci/v2/imagesnapshots/kept").json()
    return json.dumps(
        [
            sorted((c["id"], c["name"], c["images"]) for c in caches),
            sorted((i["id"], i["name"], i["status"], i["updated_at"]) for i in images),
            upstreams,
            [kept["metadata"].get(key) for key in ("labels", "annotations", "generation")],
            kept["spec"],
        ]
    )


@pytest.fixture
def clients(service: Service, token: str) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """The API as the fuzzed project; the registry port as a project of its own, with no
    upstreams (the API fuzzing adds some, and an unreachable upstream is a 503 by right)."""
    headers = {"Authorization": f"Bearer {token}"}
    puller = {"Authorization": f"Bearer {service.credential('fuzzed-puller', 'reader')}"}
    with (
        httpx.Client(base_url=service.url, headers=headers, timeout=30) as api,
        httpx.Client(
            base_url=f"http://127.0.0.1:{service.registry_port}", headers=puller, timeout=30
        ) as registry,
    ):
        yield api, registry


@pytest.mark.parametrize("route_name", [route.name for route in routes("id")])
def test_no_input_gets_a_5xx_a_foreign_error_body_or_a_change(
    route_name: str, image_id: str, clients: tuple[httpx.Client, httpx.Client]
) -> None:
    api, registry = clients
    (route,) = [r for r in routes(image_id) if r.name == route_name]
    rng = random.Random(f"{SEED}-{route_name}")
    for number in range(REQUESTS_PER_ROUTE):
        method, path, body, headers = route.request(rng)
        client = registry if route.registry_port else api
        before = state(api)
        answer = client.request(method, path, content=body, headers=headers)
        where = f"seed {SEED}, {route_name} #{number}: {method} {path[:200]} {body!r:.200}"
        assert answer.status_code < 500, f"{where} -> {answer.status_code} {answer.text[:300]}"
        if answer.status_code >= 400:
            try:
                document = answer.json()
            except ValueError:
                document = None
            assert route.shaped(document, answer.status_code), (
                f"{where} -> {answer.status_code} {answer.text[:300]}"
            )
            assert state(api) == before, f"{where} changed state with {answer.status_code}"
