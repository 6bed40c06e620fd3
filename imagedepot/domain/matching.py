"""Which image snapshot a workload should use, as CCI decides for a pod's images.

A pod asks with annotations (`cci.io/image-snapshot-usage-strategy: size|quantity`, a
specified name, reject-if-not-available, create-if-not-present); the dialects turn those into
a MatchRequest and this module picks: the Available snapshot covering the most bytes (`size`)
or the most images (`quantity`) of the request, ties going to the newest. Pure logic, so every
dialect and the worker agree on the answer.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from imagedepot.domain.caches import CacheStatus, ImageCache
from imagedepot.domain.errors import InvalidInput
from imagedepot.domain.references import parse_reference


class Strategy(enum.StrEnum):
    SIZE = "size"
    QUANTITY = "quantity"


@dataclass(frozen=True)
class Candidate:
    """A snapshot and what it would give the workload."""

    cache: ImageCache
    covered: tuple[str, ...]
    """The requested images (as requested) that the snapshot holds."""
    covered_bytes: int


def normalise(image: str, field: str) -> str:
    try:
        return str(parse_reference(image))
    except InvalidInput as error:
        raise InvalidInput(f"{field}: {error.message}", field=field) from None


def coverage(cache: ImageCache, images: Sequence[str]) -> Candidate:
    held: dict[str, int] = {}
    for progress in cache.images:
        held[normalise(progress.image, "image")] = progress.size_bytes
    covered = [image for image in images if normalise(image, "image") in held]
    size = sum(held[normalise(image, "image")] for image in covered)
    return Candidate(cache, tuple(covered), size)


def best_match(
    caches: Sequence[ImageCache], images: Sequence[str], strategy: Strategy
) -> Candidate | None:
    """The Available snapshot that covers the request best; None when none covers any image."""
    candidates = [
        coverage(cache, images) for cache in caches if cache.status is CacheStatus.AVAILABLE
    ]
    useful = [c for c in candidates if c.covered]
    if not useful:
        return None

    def rank(candidate: Candidate) -> tuple[int, float]:
        if strategy is Strategy.SIZE:
            return (candidate.covered_bytes, candidate.cache.created_at.timestamp())
        return (len(candidate.covered), candidate.cache.created_at.timestamp())

    return max(useful, key=rank)
