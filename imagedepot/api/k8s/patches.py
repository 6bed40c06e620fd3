"""PATCH bodies: RFC 7386 JSON merge patches and RFC 6902 JSON patches, applied to an
ImageSnapshot as rendered. They are pure functions over JSON documents, kept apart from the
routes so that they can be tested on their own and read without the HTTP handling around
them; a failing patch is reported as a 400 or 422 `Status`.
"""

from __future__ import annotations

import copy
from typing import Any

from imagedepot.api.k8s.status import StatusError, bad_request

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
"""Server-side apply; kubectl sends the applied configuration as JSON (which is YAML)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"JSON pointer {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(key: str) -> int | None:
    """An array index in a JSON pointer: ASCII digits only (`str.isdigit` is true of `²`)."""
    return int(key) if key.isascii() and key.isdigit() and len(key) <= 18 else None


def _parent(document: Any, parts: list[str], path: str) -> tuple[Any, str]:
    node = document
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and (index := _index(part)) is not None and index < len(node):
            node = node[index]
        else:
            raise StatusError(422, f"JSON patch path {path!r} does not exist")
    return node, parts[-1]


def _get(document: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return document
    parent, key = _parent(document, parts, path)
    if isinstance(parent, dict) and key in parent:
        return parent[key]
    if isinstance(parent, list) and (index := _index(key)) is not None and index < len(parent):
        return parent[index]
    raise StatusError(422, f"JSON patch path {path!r} does not exist")


def _remove(document: Any, path: str) -> Any:
    parent, key = _parent(document, _pointer(path) or [""], path)
    if isinstance(parent, dict) and key in parent:
        return parent.pop(key)
    if isinstance(parent, list) and (index := _index(key)) is not None and index < len(parent):
        return parent.pop(index)
    raise StatusError(422, f"JSON patch cannot remove {path!r}: it does not exist")


def _add(document: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, key = _parent(document, parts, path)
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list) and key == "-":
        parent.append(value)
    elif isinstance(parent, list) and (index := _index(key)) is not None and index <= len(parent):
        parent.insert(index, value)
    else:
        raise StatusError(422, f"JSON patch cannot add at {path!r}")
    return document


def json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902 over a copy of `document`; any failing operation fails the whole patch."""
    if not isinstance(operations, list):
        raise bad_request("a JSON patch must be an array of operations")
    result = copy.deepcopy(document)
    for index, op in enumerate(operations):
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise bad_request(f"JSON patch operation {index} needs an 'op' and a 'path'")
        kind, path = op.get("op"), op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise bad_request(f"JSON patch operation {index} ({kind}) needs a 'value'")
        if kind == "add":
            result = _add(result, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(result, path)
        elif kind == "replace":
            _get(result, path)
            if _pointer(path):
                _remove(result, path)
            result = _add(result, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise bad_request(f"JSON patch operation {index} ({kind}) needs a 'from'")
            value = (
                _remove(result, source) if kind == "move" else copy.deepcopy(_get(result, source))
            )
            result = _add(result, path, value)
        elif kind == "test":
            if _get(result, path) != op["value"]:
                raise StatusError(422, f"JSON patch test failed at {path!r}")
        else:
            raise bad_request(f"JSON patch operation {index} has an unknown op {kind!r}")
    return result
