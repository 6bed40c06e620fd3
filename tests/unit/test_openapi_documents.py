"""Each dialect's OpenAPI document names every route and method the dialect serves, and no
other (so a route added without its description, or one removed, fails here rather than
leaving users' generated clients behind)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route

from imagedepot import bootstrap, config
from imagedepot.api import cce_openapi, didi_openapi
from imagedepot.api.app import api_app
from imagedepot.api.auth import Gate
from imagedepot.api.context import ApiContext
from imagedepot.api.glance import openapi as glance_openapi
from imagedepot.api.k8s import openapi as k8s_openapi
from imagedepot.api.limits import RateLimiter

OPERATIONS = {"get", "put", "post", "delete", "patch"}


def served(tmp_path: Path) -> dict[str, set[str]]:
    """Every path of the API port and the methods it answers (HEAD is GET's)."""
    core = bootstrap.open_core(config.Settings(data_dir=tmp_path, admin_token="t"))
    try:
        gate = Gate(core.identity, core.audit, RateLimiter(0, 1), core.clock, 1024)
        context = ApiContext(
            gate,
            core.caches,
            lambda: None,
            vm_images=core.vm_images,
            image_sharing=core.image_sharing,
            upstreams=core.upstreams,
        )
        app = api_app(context)
    finally:
        core.close()
    paths: dict[str, set[str]] = {}
    for route in app.routes:
        if isinstance(route, Route):
            methods = {m.lower() for m in route.methods or ()} - {"head"}
            paths.setdefault(route.path, set()).update(methods)
    return paths


def described(document: dict[str, Any]) -> dict[str, set[str]]:
    return {path: set(item) & OPERATIONS for path, item in document["paths"].items()}


@pytest.mark.parametrize(
    ("dialect", "belongs"),
    [
        ("cce", lambda path: path.startswith("/v5/") and path != cce_openapi.OPENAPI_PATH),
        ("imagesnapshot", lambda path: path.startswith("/apis/cci/v2/imagesnapshots")),
        (
            "glance",
            lambda path: (
                path in ("/", "/versions")
                or (path.startswith("/v2/") and path != glance_openapi.OPENAPI_PATH)
            ),
        ),
        (
            "didi",
            lambda path: path.startswith("/dicloud/") and path != didi_openapi.OPENAPI_PATH,
        ),
    ],
)
def test_each_document_describes_exactly_its_dialects_routes(
    tmp_path: Path, dialect: str, belongs: Any
) -> None:
    documents = {
        "cce": cce_openapi.openapi_document(),
        "imagesnapshot": k8s_openapi.openapi_document(),
        "glance": glance_openapi.openapi_document(),
        "didi": didi_openapi.openapi_document(("default",)),
    }
    routes = {path: methods for path, methods in served(tmp_path).items() if belongs(path)}
    assert routes, "no route of the dialect was found"
    assert described(documents[dialect]) == routes


def test_every_response_of_every_operation_carries_the_request_id() -> None:
    for document in (
        cce_openapi.openapi_document(),
        k8s_openapi.openapi_document(),
        glance_openapi.openapi_document(),
        didi_openapi.openapi_document(("default",)),
    ):
        for path, item in document["paths"].items():
            for method in set(item) & OPERATIONS:
                responses = item[method]["responses"]
                assert "405" in responses, (path, method)
                assert "Allow" in responses["405"]["headers"], (path, method)
                for code, answer in responses.items():
                    assert "X-Request-Id" in answer["headers"], (path, method, code)
