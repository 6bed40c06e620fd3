"""How `GET /v2/images` reads its query string: the filters (`name`, `status`, `in:` lists,
`tag`, `visibility`, times with operators, arbitrary properties…), the sort keys in both of
Glance's spellings, and the `first` / `next` page links. Parsing a query is pure (a Request
in, an `ImageQuery` out), so it is kept apart from the routes and read on its own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from imagedepot.api.wire import JSON_INTEGER_MAX, decimal_integer
from imagedepot.domain.errors import InvalidInput
from imagedepot.domain.sharing import MemberStatus
from imagedepot.domain.vmimages import (
    COMPARISONS,
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    SORT_KEYS,
    ImageQuery,
    ImageStatus,
    ImageType,
    SortKey,
    TimeFilter,
    Visibility,
)

_SORT_PARAMS = frozenset({"sort_key", "sort-key", "sort_dir", "sort-dir", "sort"})
_IN_FILTERS = {
    "id": "ids",
    "name": "names",
    "status": "statuses",
    "disk_format": "disk_formats",
    "container_format": "container_formats",
}
_TYPES = {
    "snapshot": ImageType.SNAPSHOT,
    "server": ImageType.SNAPSHOT,
    "image": ImageType.IMAGE,
    "base": ImageType.IMAGE,
}


def parse_time(field: str, text: str) -> datetime:
    """`text` as a UTC time; refused where it is not ISO 8601, or falls outside years
    1-9999 once in UTC (`0001-01-01T00:00:00+01:00` is in year 0)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{field}: {text!r} is not an ISO 8601 time", field=field) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidInput(
            f"{field}: {text!r} is out of range (years 1-9999 in UTC)", field=field
        ) from None


def _boolean(field: str, text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise InvalidInput(f"{field} must be true or false, got {text!r}", field=field)


def parse_integer(field: str, text: str, minimum: int = 0) -> int:
    value = decimal_integer(text)
    if value is None:
        raise InvalidInput(
            f"{field} must be an integer of at most {JSON_INTEGER_MAX}, got {text[:40]!r}",
            field=field,
        )
    if value < minimum:
        raise InvalidInput(f"{field} must be at least {minimum}, got {value}", field=field)
    return value


def parse_sort(params: list[tuple[str, str]]) -> tuple[SortKey, ...]:
    keys = [v for k, v in params if k in ("sort_key", "sort-key")]
    dirs = [v for k, v in params if k in ("sort_dir", "sort-dir")]
    combined = [v for k, v in params if k == "sort"]
    if combined and (keys or dirs):
        raise InvalidInput("sort cannot be combined with sort_key / sort_dir", field="sort")
    pairs: list[tuple[str, str]] = []
    if combined:
        for entry in ",".join(combined).split(","):
            key, _, direction = entry.strip().partition(":")
            pairs.append((key, direction or "desc"))
    elif keys:
        if len(dirs) > 1 and len(dirs) != len(keys):
            raise InvalidInput("give one sort_dir, or one per sort_key", field="sort_dir")
        pairs = [
            (key, dirs[0] if len(dirs) == 1 else (dirs[i] if dirs else "desc"))
            for i, key in enumerate(keys)
        ]
    elif dirs:
        if len(dirs) > 1:
            raise InvalidInput("sort_dir without sort_key", field="sort_dir")
        pairs = [("created_at", dirs[0])]
    else:
        return (SortKey("created_at", True),)
    result: list[SortKey] = []
    for key, direction in pairs:
        if key not in SORT_KEYS:
            raise InvalidInput(
                f"sort key {key!r} is not one of {', '.join(SORT_KEYS)}", field="sort_key"
            )
        if direction not in ("asc", "desc"):
            raise InvalidInput(
                f"sort direction {direction!r} must be asc or desc", field="sort_dir"
            )
        result.append(SortKey(key, direction == "desc"))
    return tuple(result)


def _split_in(field: str, text: str) -> tuple[str, ...]:
    if text.startswith("in:"):
        values = tuple(part for part in text[3:].split(",") if part)
        if not values:
            raise InvalidInput(f"{field}: 'in:' needs at least one value", field=field)
        return values
    return (text,)


def parse_query(request: Request, project_id: str) -> ImageQuery:
    params = request.query_params.multi_items()
    fields: dict[str, Any] = {
        "project_id": project_id,
        "sort": parse_sort(params),
        "include_visible": True,
    }
    tags: list[str] = []
    properties: list[tuple[str, str]] = []
    times: list[TimeFilter] = []
    in_values: dict[str, list[str]] = {}
    for key, value in params:
        if key in _SORT_PARAMS:
            continue
        if key == "limit":
            fields["limit"] = min(parse_integer("limit", value), LIST_LIMIT_MAX)
        elif key == "marker":
            fields["marker"] = value
        elif key in _IN_FILTERS:
            in_values.setdefault(key, []).extend(_split_in(key, value))
        elif key == "owner":
            fields["owner"] = value
        elif key == "tag":
            tags.append(value)
        elif key == "visibility":
            if value not in ("all", *[v.value for v in Visibility]):
                raise InvalidInput(f"visibility {value!r} is not valid", field="visibility")
            fields["visibility"] = value
        elif key in ("protected", "os_hidden"):
            fields[key] = _boolean(key, value)
        elif key in ("size_min", "size_max"):
            fields[key] = parse_integer(key, value)
        elif key in ("created_at", "updated_at"):
            operator, _, moment = value.partition(":")
            if operator not in COMPARISONS or not moment:
                raise InvalidInput(
                    f"{key} must be OPERATOR:TIME with OPERATOR one of {', '.join(COMPARISONS)}",
                    field=key,
                )
            times.append(TimeFilter(key, operator, parse_time(key, moment)))
        elif key in ("changes-since", "changes_since"):
            fields["changes_since"] = parse_time(key, value)
        elif key == "type":
            lowered = value.lower()
            if lowered != "all" and lowered not in _TYPES:
                raise InvalidInput(f"type {value!r} must be snapshot, image or all", field="type")
            fields["image_type"] = _TYPES.get(lowered)
        elif key == "member_status":
            if value not in ("all", *[status.value for status in MemberStatus]):
                raise InvalidInput(
                    f"member_status must be pending, accepted, rejected or all, got {value!r}",
                    field="member_status",
                )
            fields["member_status"] = value
        else:
            properties.append((key, value))
    statuses = in_values.get("status", [])
    for status in statuses:
        if status not in [s.value for s in ImageStatus]:
            raise InvalidInput(f"status {status!r} is not an image status", field="status")
    for key, target in _IN_FILTERS.items():
        if key in in_values:
            fields[target] = tuple(in_values[key])
    fields["tags"] = tuple(tags)
    fields["properties"] = tuple(properties)
    fields["times"] = tuple(times)
    fields.setdefault("limit", LIST_LIMIT_DEFAULT)
    return ImageQuery(**fields)


def page_link(request: Request, marker: str | None) -> str:
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
    if marker is not None:
        kept.append(("marker", marker))
    return "/v2/images" + (f"?{urlencode(kept)}" if kept else "")
