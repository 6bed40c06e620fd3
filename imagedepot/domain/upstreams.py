"""The registries a project may pull through the registry port, and how often a cached tag is
checked against its upstream.

Pull-through is opt-in per project and per registry: a project with no upstream gets exactly
the registry port it had (only what its caches hold). An upstream names the registry host as
images name it (`docker.io`, `registry.example.com:5000`), the mirrors to try first, the pull
secret whose login is used, how to reach it (plain HTTP, or TLS without verification), and
the check policy for tags: `always` (ask the upstream, with a HEAD, on every tag pull),
`if-older-than=DURATION` (ask when the last check is older), or `never` (a cached tag is
served as it is until a refresh moves it).
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from imagedepot.domain.caches import NAME_MAX, SECRET_REF_RE, ImageCache
from imagedepot.domain.durations import format_duration, parse_duration
from imagedepot.domain.errors import InvalidInput
from imagedepot.domain.references import ImageReference, parse_reference
from imagedepot.domain.served_names import upstream_host

MIRRORS_MAX = 8
PULL_THROUGH_LABEL = "imagedepot.io/pull-through"
"""Set (to the upstream host) on every cache a pull-through made."""
PIN_LABEL = "imagedepot.io/pinned"
"""A cache labelled `imagedepot.io/pinned: "true"` is never evicted to make room."""


def is_pull_through(cache: ImageCache) -> bool:
    return PULL_THROUGH_LABEL in cache.labels


class CheckMode(enum.StrEnum):
    ALWAYS = "always"
    IF_OLDER_THAN = "ifOlderThan"
    NEVER = "never"


@dataclass(frozen=True)
class CheckPolicy:
    mode: CheckMode = CheckMode.ALWAYS
    max_age: timedelta = timedelta(0)
    """For `ifOlderThan`: how old the last check of a tag may be before it is asked again."""

    def due(self, last_checked: datetime | None, now: datetime) -> bool:
        """Whether a pull of a cached tag should ask the upstream first."""
        if self.mode is CheckMode.NEVER:
            return False
        if self.mode is CheckMode.ALWAYS or last_checked is None:
            return True
        return now - last_checked >= self.max_age

    def __str__(self) -> str:
        if self.mode is CheckMode.IF_OLDER_THAN:
            return f"if-older-than={format_duration(self.max_age)}"
        return self.mode.value

    @classmethod
    def parse(cls, text: str, field_name: str = "check") -> CheckPolicy:
        """`always`, `never`, `if-older-than=30m` (or `ifOlderThan=30m`); units s, m, h, d."""
        if not isinstance(text, str):
            raise InvalidInput(f"{field_name} must be a string", field=field_name)
        mode, _, duration = text.partition("=")
        if mode in ("always", "never") and not duration:
            return cls(CheckMode(mode))
        if mode in ("if-older-than", "ifOlderThan") and duration:
            return cls(CheckMode.IF_OLDER_THAN, parse_duration(duration, field_name))
        raise InvalidInput(
            f"{field_name} must be 'always', 'never' or 'if-older-than=DURATION' "
            f"(e.g. 30m, 6h, 1d), got {text[:64]!r}",
            field=field_name,
        )


@dataclass(frozen=True)
class Upstream:
    project_id: str
    registry: str
    """The host images name (`docker.io`, `registry.example.com:5000`)."""
    mirrors: tuple[str, ...] = ()
    pull_secret: str | None = None
    plain_http: bool = False
    insecure_skip_verify: bool = False
    check: CheckPolicy = field(default_factory=CheckPolicy)
    created_at: datetime | None = None

    def validate(self) -> None:
        _check_host(self.registry, "registry")
        if len(self.mirrors) > MIRRORS_MAX:
            raise InvalidInput(f"mirrors: at most {MIRRORS_MAX}", field="mirrors")
        for index, mirror in enumerate(self.mirrors):
            _check_host(mirror, f"mirrors[{index}]")
        if self.pull_secret is not None and not SECRET_REF_RE.match(self.pull_secret):
            raise InvalidInput(
                f"pull_secret must be 'namespace:name', got {self.pull_secret[:64]!r}",
                field="pull_secret",
            )
        if self.plain_http and self.insecure_skip_verify:
            raise InvalidInput(
                "plain_http and insecure_skip_verify exclude each other", field="plain_http"
            )


def normal_host(text: str) -> str:
    """A registry host as images spell it: `https://registry-1.docker.io/` is `docker.io`."""
    return upstream_host(text)


def _check_host(text: object, field_name: str) -> None:
    if not isinstance(text, str) or not text or text != normal_host(text):
        shown = text[:64] if isinstance(text, str) else text
        raise InvalidInput(
            f"{field_name} must be a registry host such as docker.io or "
            f"registry.example.com:5000 (no scheme or path), got {shown!r}",
            field=field_name,
        )
    try:
        parse_reference(f"{text}/probe/name:tag")
    except InvalidInput:
        raise InvalidInput(
            f"{field_name}: {text[:64]!r} is not a registry host", field=field_name
        ) from None
    if "." not in text and ":" not in text and text != "localhost":
        raise InvalidInput(
            f"{field_name}: {text[:64]!r} is not a registry host (it needs a dot, a port, or "
            "to be localhost, as image names tell a registry from a path)",
            field=field_name,
        )


def pull_through_cache_name(image: ImageReference, manifest_digest: str) -> str:
    """The name of the cache a pull-through of `image` at `manifest_digest` leaves behind:
    `pt-<repository>-<tag>-<12 hex of the digest>`, lowercased, every other character a
    dash, shortened to fit; one cache per content, so a moved tag makes a new one."""
    hex12 = manifest_digest.removeprefix("sha256:")[:12]
    slug = re.sub(r"[^a-z0-9]+", "-", f"{image.repository}-{image.tag or 'digest'}".lower())
    room = NAME_MAX - len("pt--") - len(hex12)
    slug = slug.strip("-")[:room].strip("-") or hashlib.sha256(str(image).encode()).hexdigest()[:8]
    return f"pt-{slug}-{hex12}"
