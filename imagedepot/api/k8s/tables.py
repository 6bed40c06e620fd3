"""The `Table` form that `kubectl get` asks for (`Accept: ...;as=Table`): the document shape,
the ImageSnapshot columns, and kubectl's way of writing ages and sizes. It exists so that the columns a
human sees are defined in one place, apart from the JSON objects clients program against.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request

from imagedepot.api.k8s.objects import render
from imagedepot.domain.cache_history import human_bytes
from imagedepot.domain.caches import ImageCache


def wants_table(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    first = accept.split(",")[0]
    return "as=Table" in first


def human_age(seconds: float) -> str:
    """kubectl's way of writing an age: 45s, 3m12s, 17m, 5h3m, 20h, 3d4h, 12d, 2y."""
    s = max(int(seconds), 0)
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 730:
        return f"{days}d"
    return f"{days // 365}y"


Column = tuple[str, str, int, str]
"""name, type, priority (0: always shown, 1: with -o wide), description."""

_COLUMNS: list[Column] = [
    ("Name", "string", 0, "Name must be unique within a project."),
    ("Phase", "string", 0, "Where the snapshot is in its lifecycle."),
    ("Images", "integer", 0, "How many images the snapshot holds."),
    ("Size", "string", 0, "Bytes the images take (manifests, configs and layers)."),
    ("Age", "string", 0, "Time since the snapshot was created."),
    ("Budget", "string", 1, "spec.imageSnapshotSize, in GiB."),
    ("TTL", "string", 1, "spec.ttlDaysAfterCreated (0: kept forever)."),
    ("UID", "string", 1, "metadata.uid, the CCE image cache id."),
    ("Message", "string", 1, "Why the snapshot is in this phase."),
]


def table_document(
    columns: list[Column], rows: list[tuple[list[Any], dict[str, Any]]], list_meta: dict[str, Any]
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table: the column definitions, then per row its cells and the
    object's metadata (which kubectl uses for names, -w and --show-labels)."""
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": [
            {
                "name": name,
                "type": kind,
                "format": "name" if name == "Name" else "",
                "description": description,
                "priority": priority,
            }
            for name, kind, priority, description in columns
        ],
        "rows": [
            {
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                },
            }
            for cells, metadata in rows
        ],
    }


def table(caches: list[ImageCache], now: datetime, list_meta: dict[str, Any]) -> dict[str, Any]:
    rows = [
        (
            [
                cache.spec.name,
                cache.status.value,
                len(cache.spec.images),
                human_bytes(cache.total_bytes),
                human_age((now - cache.created_at).total_seconds()),
                f"{cache.spec.size_gib}Gi",
                f"{cache.spec.retention_days}d",
                cache.id,
                cache.message or "",
            ],
            render(cache)["metadata"],
        )
        for cache in caches
    ]
    return table_document(_COLUMNS, rows, list_meta)
