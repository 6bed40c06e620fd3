"""The names under which the registry port serves a cached image.

A node pulls what a cache holds by the names its users already write: the image
`registry.example.com/team/app:v1` answers to `team/app` and to
`registry.example.com/team/app`, and in mirror mode, where containerd names the
upstream host in `?ns=`, to `team/app` with `ns=registry.example.com`. Docker Hub's
official images also answer to their short names: `docker.io/library/nginx` is
`library/nginx` and `nginx`.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagedepot.domain.references import DOCKER_HUB, ImageReference, parse_repository_name

_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


@dataclass(frozen=True)
class ServedName:
    """A repository name asked for on the registry port, as the (registry, repository) pairs it
    may stand for; a None registry stands for any."""

    text: str
    candidates: tuple[tuple[str | None, str], ...]

    def serves(self, image: ImageReference) -> bool:
        return any(
            (registry is None or registry == image.registry) and repository == image.repository
            for registry, repository in self.candidates
        )


def served_name(name: str, upstream: str | None = None) -> ServedName:
    """What `name` (and the upstream host containerd sends as `ns`) may stand for; raises
    InvalidInput when `name` is not a repository name."""
    registry, repository = parse_repository_name(name)
    if upstream:
        host = upstream_host(upstream)
        candidates: list[tuple[str | None, str]] = [(host, name)]
        if host == DOCKER_HUB and "/" not in name:
            candidates.append((host, f"library/{name}"))
        return ServedName(name, tuple(candidates))
    if registry is not None:
        return ServedName(name, ((registry, repository), (None, name)))
    candidates = [(None, name)]
    if "/" not in name:
        candidates.append((DOCKER_HUB, f"library/{name}"))
    return ServedName(name, tuple(candidates))


def upstream_host(text: str) -> str:
    """`https://registry-1.docker.io/` -> `docker.io`; other hosts as given, without scheme or path."""
    host = text.strip()
    for scheme in ("https://", "http://"):
        host = host.removeprefix(scheme)
    host = host.split("/", 1)[0]
    return DOCKER_HUB if host.lower() in _DOCKER_HUB_ALIASES else host
