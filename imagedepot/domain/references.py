"""Image references as Docker spells them, normalised the way Docker does.

`busybox` is `docker.io/library/busybox:latest`; a first path component with a
dot, a colon or equal to `localhost` names a registry. Parsing is strict so
that a bad reference is refused when the cache is created, not when it builds.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from imagedepot.domain.errors import InvalidInput

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
_DOMAIN_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?\Z|^\[[0-9a-fA-F:.]+\](?::[0-9]+)?\Z"
)
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}\Z")
MAX_REFERENCE_LENGTH = 255


@dataclass(frozen=True)
class ImageReference:
    """A fully qualified reference: registry host, repository path, and tag and/or digest."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        """What to ask the registry's manifest endpoint for: the digest wins over the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> ImageReference:
    """Parse and normalise `text`, raising InvalidInput with the reason when it is not a reference."""
    if not isinstance(text, str) or not text:
        raise InvalidInput("image reference must be a non-empty string")
    if len(text) > MAX_REFERENCE_LENGTH:
        raise InvalidInput(f"image reference {text!r} is longer than {MAX_REFERENCE_LENGTH}")
    remainder = text
    digest: str | None = None
    if "@" in remainder:
        remainder, digest = remainder.split("@", 1)
        if not DIGEST_RE.match(digest):
            raise InvalidInput(f"image reference {text!r} has an invalid digest {digest!r}")
    tag: str | None = None
    last_slash = remainder.rfind("/")
    last_colon = remainder.rfind(":")
    if last_colon > last_slash:
        remainder, tag = remainder[:last_colon], remainder[last_colon + 1 :]
        if not TAG_RE.match(tag):
            raise InvalidInput(f"image reference {text!r} has an invalid tag {tag!r}")
    registry, _, path = remainder.partition("/")
    if not path or not _looks_like_registry(registry):
        registry, path = DOCKER_HUB, remainder
    if registry == "index.docker.io":
        registry = DOCKER_HUB
    if not _DOMAIN_RE.match(registry):
        raise InvalidInput(f"image reference {text!r} has an invalid registry {registry!r}")
    if not _PATH_RE.match(path):
        raise InvalidInput(f"image reference {text!r} has an invalid repository {path!r}")
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageReference(registry=registry, repository=path, tag=tag, digest=digest)


def parse_repository_name(text: str) -> tuple[str | None, str]:
    """A repository name as a registry API path carries it: `team/app`, or with the registry
    host in front (`registry.example.com/team/app`, `docker.io/nginx`), normalised as Docker
    does. The host is None when the name has none; InvalidInput when it is not a name."""
    registry, _, path = text.partition("/")
    if path and _looks_like_registry(registry):
        if not _DOMAIN_RE.match(registry) or not _PATH_RE.match(path):
            raise InvalidInput(f"{text!r} is not a repository name")
        reference = parse_reference(text)
        return reference.registry, reference.repository
    if len(text) > MAX_REFERENCE_LENGTH or not _PATH_RE.match(text):
        raise InvalidInput(f"{text!r} is not a repository name")
    return None, text


def _looks_like_registry(component: str) -> bool:
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or (component.startswith("["))
    )


def is_loopback_host(registry: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1, with or without a port: Docker allows plain HTTP there."""
    host = registry
    if host.startswith("["):
        host = host[1 : host.index("]")]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
