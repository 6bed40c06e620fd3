"""Core v1 `Event`s about ImageSnapshots, so that `kubectl describe imagesnapshot` and
`kubectl get events` tell what happened: created, pulling (with bytes so far), each image
pulled with its digest and size, available, failed and why, deleting.

They are the cache's history (`domain/cache_history`), read from its own state. Events of cluster-scoped
objects live in the `default` namespace, as in a cluster; only `list` is served.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imagedepot.api.context import ApiContext
from imagedepot.api.k8s.names import API_VERSION, KIND
from imagedepot.api.k8s.status import bad_request, render_error
from imagedepot.api.k8s.tables import Column, human_age, table_document, wants_table
from imagedepot.api.wire import utc_timestamp
from imagedepot.domain.cache_history import history
from imagedepot.domain.caches import ImageCache
from imagedepot.domain.identity import Principal

EVENTS_NAMESPACE = "default"
COMPONENT = "imagedepot"
_EVENT_IDS = uuid.UUID("5d1f9c9e-3f0e-4d3a-9a57-6f1c3e8b2a10")
_SELECTABLE = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.name",
    "metadata.namespace",
)
_COLUMNS: list[Column] = [
    ("Last Seen", "string", 0, "Time since the event was last seen."),
    ("Type", "string", 0, "Normal or Warning."),
    ("Reason", "string", 0, "Why the event happened, in one word."),
    ("Object", "string", 0, "What the event is about."),
    ("Message", "string", 0, "What happened."),
]


def _event(
    cache: ImageCache, index: int, kind: str, reason: str, at: datetime, message: str
) -> dict[str, Any]:
    name = cache.spec.name
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{name}.{reason.lower()}.{index}",
            "namespace": EVENTS_NAMESPACE,
            "uid": str(uuid.uuid5(_EVENT_IDS, f"{cache.id}/{index}/{reason}")),
            "resourceVersion": str(cache.resource_version),
            "creationTimestamp": utc_timestamp(at),
        },
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": name,
            "namespace": "",
            "uid": cache.id,
            "resourceVersion": str(cache.resource_version),
        },
        "reason": reason,
        "message": message,
        "source": {"component": COMPONENT},
        "firstTimestamp": utc_timestamp(at),
        "lastTimestamp": utc_timestamp(at),
        "count": 1,
        "type": kind,
        "eventTime": None,
        "reportingComponent": COMPONENT,
        "reportingInstance": "",
    }


def events_of(cache: ImageCache) -> list[tuple[datetime, dict[str, Any]]]:
    """What happened to `cache`, oldest first, each with its time."""
    return [
        (event.at, _event(cache, index, event.type, event.reason, event.at, event.message))
        for index, event in enumerate(history(cache))
    ]


def _field(event: dict[str, Any], path: str) -> str:
    value: Any = event
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if path == "source" and isinstance(value, dict):
        value = value.get("component")
    return "" if value is None else str(value)


def event_filter(selector: str) -> Callable[[dict[str, Any]], bool]:
    """A fieldSelector over the fields Kubernetes lets one select events by."""
    wanted: list[tuple[str, bool, str]] = []
    for requirement in filter(None, (part.strip() for part in selector.split(","))):
        match = re.fullmatch(r"([A-Za-z.]+)\s*(==|=|!=)\s*(.*)", requirement)
        if match is None:
            raise bad_request(f"invalid fieldSelector requirement {requirement!r}")
        path, op, value = match.groups()
        if path not in _SELECTABLE:
            raise bad_request(f'field label not supported: "{path}"')
        wanted.append((path, op != "!=", value.strip()))
    return lambda event: all((_field(event, p) == v) is same for p, same, v in wanted)


def event_routes(context: ApiContext) -> list[Route]:
    caches = context.caches
    clock = context.gate.clock

    def list_events(request: Request, _: bytes, principal: Principal) -> Response:
        namespace = request.path_params.get("namespace")
        matches = event_filter(request.query_params.get("fieldSelector", ""))
        found, revision = caches.list_at_revision(principal)
        timed: list[tuple[datetime, dict[str, Any]]] = []
        if namespace in (None, EVENTS_NAMESPACE):
            timed = [pair for cache in found for pair in events_of(cache) if matches(pair[1])]
        timed.sort(key=lambda pair: pair[0])  # stable: one object's events keep their order
        meta = {"resourceVersion": str(revision)}
        if wants_table(request):
            now = clock.now()
            rows = [
                (
                    [
                        human_age((now - at).total_seconds()),
                        event["type"],
                        event["reason"],
                        f"imagesnapshot/{event['involvedObject']['name']}",
                        event["message"],
                    ],
                    event["metadata"],
                )
                for at, event in timed
            ]
            return JSONResponse(table_document(_COLUMNS, rows, meta))
        items = [event for _, event in timed]
        return JSONResponse(
            {"apiVersion": "v1", "kind": "EventList", "metadata": meta, "items": items}
        )

    actions = {"GET": ("cci:event:list", list_events)}
    gate = context.gate
    return [
        Route("/api/v1/events", gate.route(actions, render_error), methods=["GET"]),
        Route(
            "/api/v1/namespaces/{namespace}/events",
            gate.route(actions, render_error),
            methods=["GET"],
        ),
    ]
