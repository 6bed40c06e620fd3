"""The discovery documents (`/api`, `/apis`, the group and its resource list, `/version`)
that kubectl and the kubernetes client read before they call the dialect. They are static
and public, and have nothing to do with serving the objects themselves, hence their own
module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.auth import public
from imagedepot.api.k8s.names import API_VERSION, GROUP, KIND, PLURAL, SINGULAR, VERSION

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def _discovery(document: dict[str, Any]) -> Callable[[Request], Any]:
    async def endpoint(_: Request) -> Response:
        return JSONResponse(document)

    return public(endpoint)


SECRET_RESOURCE = {
    "name": "secrets",
    "singularName": "secret",
    "namespaced": True,
    "kind": "Secret",
    "verbs": ["create", "delete", "get", "list"],
}


EVENT_RESOURCE = {
    "name": "events",
    "singularName": "event",
    "namespaced": True,
    "kind": "Event",
    "verbs": ["list"],
    "shortNames": ["ev"],
}


def discovery_routes(with_secrets: bool) -> list[Route]:
    version = {"groupVersion": API_VERSION, "version": VERSION}
    documents: dict[str, dict[str, Any]] = {
        "/api": {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        },
        "/api/v1": {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": "v1",
            "resources": [EVENT_RESOURCE, *([SECRET_RESOURCE] if with_secrets else [])],
        },
        "/apis": {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [{"name": GROUP, "versions": [version], "preferredVersion": version}],
        },
        f"/apis/{GROUP}": {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": GROUP,
            "versions": [version],
            "preferredVersion": version,
        },
        f"/apis/{API_VERSION}": {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": API_VERSION,
            "resources": [
                {
                    "name": PLURAL,
                    "singularName": SINGULAR,
                    "namespaced": False,
                    "kind": KIND,
                    "verbs": VERBS,
                    "shortNames": ["isnap"],
                    "categories": ["all"],
                },
                {
                    "name": "imagesnapshotmatches",
                    "singularName": "imagesnapshotmatch",
                    "namespaced": False,
                    "kind": "ImageSnapshotMatch",
                    "verbs": ["create"],
                },
            ],
        },
        "/version": {
            "major": "1",
            "minor": "32",
            "gitVersion": "v1.32.0+imagedepot",
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "2026-11-22T00:00:00Z",
            "goVersion": "",
            "compiler": "cpython",
            "platform": "linux/amd64",
        },
    }
    return [Route(path, _discovery(doc), methods=["GET"]) for path, doc in documents.items()]
