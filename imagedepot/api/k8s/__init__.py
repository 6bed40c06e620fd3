"""The Kubernetes-style CCI v2 dialect: `ImageSnapshot` on `/apis/cci/v2/imagesnapshots`, plus
the discovery documents kubectl and the kubernetes client read before they call it.

An ImageSnapshot is the same ImageCache the CCE dialect shows (`metadata.uid` is the CCE id);
this package only translates shapes and follows the Kubernetes API conventions: errors are
`Status` objects, updates are guarded by `resourceVersion`, deletion goes through the
service's finalizer (the object stays visible with `deletionTimestamp` until the worker has
released its blobs), `kubectl get` gets a `Table`, and `?watch=true` streams events.

Each module owns one noun: `status` (errors as Status), `objects` (rendering and parsing an
ImageSnapshot), `patches`, `selectors` (selectors and paging), `tables`, `discovery`,
`openapi`, `snapshots` (the ImageSnapshot routes), `watch` (event streams), `matching`
(ImageSnapshotMatch), `events` (core v1 Events read from a snapshot's state), `secrets` and
`protobuf` (core v1 Secrets). This module lists every route of the dialect (`routes`) and
re-exports what the app and the tests use.
"""

from __future__ import annotations

from starlette.routing import Route

from imagedepot.api.context import ApiContext
from imagedepot.api.k8s.discovery import discovery_routes
from imagedepot.api.k8s.events import event_routes
from imagedepot.api.k8s.matching import match_routes
from imagedepot.api.k8s.objects import parse_object
from imagedepot.api.k8s.openapi import openapi_routes
from imagedepot.api.k8s.patches import json_patch, merge_patch
from imagedepot.api.k8s.secrets import secret_routes
from imagedepot.api.k8s.selectors import field_selector, label_selector
from imagedepot.api.k8s.snapshots import snapshot_routes
from imagedepot.api.k8s.status import StatusError, http_error, is_k8s_path, render_error
from imagedepot.api.k8s.tables import human_age

__all__ = [
    "StatusError",
    "field_selector",
    "http_error",
    "human_age",
    "is_k8s_path",
    "json_patch",
    "label_selector",
    "merge_patch",
    "parse_object",
    "render_error",
    "routes",
]


def routes(context: ApiContext) -> list[Route]:
    """Every route of the dialect, in the order the app mounts them."""
    return [
        *discovery_routes(context.secrets is not None),
        *openapi_routes(),
        *snapshot_routes(context),
        *secret_routes(context),
        *match_routes(context),
        *event_routes(context),
    ]
