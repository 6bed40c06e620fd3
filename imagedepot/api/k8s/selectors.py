"""What a list or watch request selects and where a page starts: label selectors, the
`metadata.name` field selector, and continue tokens (which carry the first page's revision).
Kept apart from the routes because
the selector grammar and the paging arithmetic are self-contained and tested on their own.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request

from imagedepot.api.k8s.status import bad_request
from imagedepot.api.wire import JSON_INTEGER_MAX, decimal_integer
from imagedepot.domain.caches import ImageCache

_REQUIREMENT = re.compile(
    r"^\s*(?P<key>[A-Za-z0-9_./-]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9_.-]*)"
    r"|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)


def _split_requirements(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part for part in parts if part.strip()]


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in ("=", "in"):
            return value in self.values
        return value not in self.values


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[_Requirement, ...]

    def __call__(self, labels: dict[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


def label_selector(selector: str) -> LabelSelector:
    """`a=b,c!=d,e,!f,g in (x,y),h notin (z)` as Kubernetes reads it."""
    requirements: list[_Requirement] = []
    for requirement in _split_requirements(selector):
        text = requirement.strip()
        if text.startswith("!"):
            requirements.append(_Requirement(text[1:].strip(), "!exists"))
            continue
        match = _REQUIREMENT.match(text)
        if match is None:
            raise bad_request(f"unable to parse requirement {text!r} of labelSelector")
        key, op = match["key"], match["op"]
        if op in ("=", "=="):
            requirements.append(_Requirement(key, "=", frozenset({match["value"]})))
        elif op == "!=":
            requirements.append(_Requirement(key, "!=", frozenset({match["value"]})))
        elif match["set"]:
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(_Requirement(key, match["set"], values))
        else:
            requirements.append(_Requirement(key, "exists"))
    return LabelSelector(tuple(requirements))


@dataclass(frozen=True)
class NameSelector:
    equal: tuple[str, ...]
    unequal: tuple[str, ...]

    def __call__(self, name: str) -> bool:
        return all(name == v for v in self.equal) and all(name != v for v in self.unequal)


def field_selector(selector: str) -> NameSelector:
    """Only `metadata.name` (`=`, `==`, `!=`) is a supported field, as for custom resources."""
    equal: list[str] = []
    unequal: list[str] = []
    for requirement in _split_requirements(selector):
        match = re.fullmatch(r"\s*([A-Za-z.]+)\s*(==|=|!=)\s*([^,]*?)\s*", requirement)
        if match is None:
            raise bad_request(f"invalid fieldSelector requirement {requirement!r}")
        field_name, op, value = match.groups()
        if field_name != "metadata.name":
            raise bad_request(f'field label not supported: "{field_name}" (only metadata.name is)')
        (unequal if op == "!=" else equal).append(value)
    return NameSelector(tuple(equal), tuple(unequal))


def continue_token(last: ImageCache, revision: int) -> str:
    """Where the next page starts: after this object in (creation, uid) order, so objects
    removed meanwhile shift nothing; and the revision of the first page, which every page
    reports, so a watch started from the last page replays whatever the pages missed."""
    key = {"after": [micros(last.created_at), last.id], "revision": revision}
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


@dataclass(frozen=True)
class Continuation:
    created_micros: int
    uid: str
    revision: int

    def precedes(self, cache: ImageCache) -> bool:
        return (micros(cache.created_at), cache.id) > (self.created_micros, self.uid)


def continuation(token: str) -> Continuation:
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
        created, uid = key["after"]
        revision = key["revision"]
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
        raise bad_request("the continue token is not valid") from None
    if (
        not all(isinstance(v, int) and 0 <= v <= JSON_INTEGER_MAX for v in (created, revision))
        or not isinstance(uid, str)
        or not uid.isascii()
    ):
        raise bad_request("the continue token is not valid")
    return Continuation(created, uid, revision)


def int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    value = decimal_integer(raw)
    if value is None:
        raise bad_request(
            f"{name} must be an integer of at most {JSON_INTEGER_MAX}, got {raw[:40]!r}"
        )
    if value < 0:
        raise bad_request(f"{name} must not be negative")
    return value


def resource_version_param(text: str) -> int:
    """A resourceVersion the client sends (a list's, a watch's): a revision number."""
    value = decimal_integer(text)
    if value is None or value < 0:
        raise bad_request(f"resourceVersion must be a non-negative integer, got {text[:40]!r}")
    return value


def snapshot_filter(request: Request) -> Callable[[ImageCache], bool]:
    """The request's labelSelector and fieldSelector as one test of a snapshot."""
    labels = label_selector(request.query_params.get("labelSelector", ""))
    names = field_selector(request.query_params.get("fieldSelector", ""))
    return lambda cache: labels(cache.labels) and names(cache.spec.name)


def micros(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)
