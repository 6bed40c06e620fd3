"""Cache records for the metadata store's contract suites: one fully populated cache (every
spec field set) and the small writes the suites share."""

from __future__ import annotations

from datetime import UTC, datetime

from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.domain.caches import CacheSpec, ImageCache, RegistryAccess

T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def new_cache(
    name: str = "alpha", project_id: str = "p1", now: datetime = T0, retention_days: int = 0
) -> ImageCache:
    spec = CacheSpec(
        name=name,
        images=("docker.io/library/nginx:1.25", "quay.io/org/app@sha256:" + "a" * 64),
        size_gib=40,
        retention_days=retention_days,
        cluster="cluster-1",
        pull_secrets=("default:regcred",),
        registries=(
            RegistryAccess(server="registry.local:5000", plain_http=True, pull_secret="ns:x"),
            RegistryAccess(server="quay.io", insecure_skip_verify=True),
        ),
        timeout_minutes=60,
    )
    return ImageCache.new(project_id, spec, now)


def add(store: SqlMetadataStore, *caches: ImageCache) -> None:
    with store.transaction() as uow:
        for cache in caches:
            uow.caches.add(cache)


def get(store: SqlMetadataStore, cache_id: str) -> ImageCache | None:
    with store.transaction() as uow:
        return uow.caches.get(cache_id)
