"""Schemathesis over each dialect's published OpenAPI document, against a real `imagedepot
serve`: the CCE v5 one (`/v5/openapi.json`), ImageSnapshot (`/openapi/v3/apis/cci/v2`), Glance
v2 (`/v2/openapi.json`) and DiDi CIMG (`/dicloud/openapi.json`).

Each document is fetched as a user would (without a credential), and every operation in it is
run through schemathesis' phases (the document's examples, its coverage of boundaries and
refused values, and random fuzzing, positive and negative), a bounded, seeded number of cases
each, with these checks on every answer: no 5xx; a status code, Content-Type, headers and body
the document declares for it (so each error in the dialect's own body); a request the document
says is invalid refused with a 4xx; a method the path does not answer refused with 405 and
`Allow`; and nothing answered 2xx without the credential. Not checked: that every request
the document allows is accepted, since what no schema can say (an image reference's grammar, a
pull secret that must exist, an id that must name an object) is refused by right.

`IMAGEDEPOT_SCHEMATHESIS_EXAMPLES` raises the cases per operation (default 12);
`IMAGEDEPOT_SCHEMATHESIS_SEED` changes the seed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import Case
from schemathesis.openapi import from_dict

from imagedepot.api import cce_openapi, didi_openapi
from imagedepot.api.glance import openapi as glance_openapi
from imagedepot.api.k8s import openapi as k8s_openapi
from tests.support.service import Service

EXAMPLES = int(os.environ.get("IMAGEDEPOT_SCHEMATHESIS_EXAMPLES", "12"))
SEED = int(os.environ.get("IMAGEDEPOT_SCHEMATHESIS_SEED", "20261207"))
# Hypothesis keeps caches (of constants, of Unicode tables) in ./.hypothesis even with no
# example database; they go to the temp dir instead, never into the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "imagedepot-hypothesis")

REGIONS = ("default", "north")
"""The test server's regions, which the DiDi document names."""
DOCUMENTS = {
    "cce": "/v5/openapi.json",
    "imagesnapshot": "/openapi/v3/apis/cci/v2",
    "glance": "/v2/openapi.json",
    "didi": "/dicloud/openapi.json",
}


@schemathesis.serializer(
    "application/apply-patch+yaml",
    "application/openstack-images-v2.1-json-patch",
    "application/openstack-images-v2.0-json-patch",
)
def _as_json(ctx: Any, value: Any) -> bytes:
    """Bodies of media types that are JSON by another name: Glance's two json-patch types,
    and a server-side apply (JSON is YAML, and the server reads JSON only)."""
    return json.dumps(value).encode()


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    """A server of its own with the per-credential rate limit off (schemathesis sends hundreds
    of requests a second from one credential)."""
    env = {"IMAGEDEPOT_RATE_LIMIT": "0", "IMAGEDEPOT_REGIONS": ",".join(REGIONS)}
    with Service(env=env) as running:
        yield running


@pytest.fixture(scope="module")
def token(service: Service) -> str:
    return service.credential("conformance", "member")


def configured(document: dict[str, Any]) -> Any:
    """`document` ready to run: seeded, bounded, with no example database written anywhere."""
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "max-examples": EXAMPLES,
                "database": "none",
                "deterministic": True,
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {"positive_data_acceptance": {"enabled": False}},
        }
    )
    return from_dict(document, config=config)


# The documents the server publishes are made by these functions; test_published_documents
# checks that what it serves is exactly them. (Schemathesis' pytest integration needs the
# schema when tests are collected, before any server runs.)
cce = configured(cce_openapi.openapi_document())
imagesnapshot = configured(k8s_openapi.openapi_document())
glance = configured(glance_openapi.openapi_document())
didi = configured(didi_openapi.openapi_document(REGIONS))


@pytest.mark.parametrize(
    ("dialect", "made"),
    [
        ("cce", cce_openapi.openapi_document),
        ("imagesnapshot", k8s_openapi.openapi_document),
        ("glance", glance_openapi.openapi_document),
        ("didi", lambda: didi_openapi.openapi_document(REGIONS)),
    ],
)
def test_published_documents(
    service: Service, dialect: str, made: Callable[[], dict[str, Any]]
) -> None:
    """Published without a credential, as JSON, and exactly the document tested below."""
    answer = httpx.get(f"{service.url}{DOCUMENTS[dialect]}", timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == json.loads(json.dumps(made()))


def run(case: Case, service: Service, token: str) -> None:
    case.call_and_validate(base_url=service.url, headers={"X-Auth-Token": token}, timeout=30)


@cce.parametrize()
def test_cce_conforms(case: Case, service: Service, token: str) -> None:
    run(case, service, token)


@imagesnapshot.parametrize()
def test_imagesnapshot_conforms(case: Case, service: Service, token: str) -> None:
    run(case, service, token)


@glance.parametrize()
def test_glance_conforms(case: Case, service: Service, token: str) -> None:
    run(case, service, token)


@didi.parametrize()
def test_didi_conforms(case: Case, service: Service, token: str) -> None:
    run(case, service, token)
