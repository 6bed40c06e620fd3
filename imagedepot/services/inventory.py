"""What the store holds, counted over every project: the gauges operators watch (caches and
VM images by status, blobs in use and their bytes). Aggregates only, never names, so they
can be shown to a metrics scraper without leaking any project's objects. The operator's
console also gets the caches' storage per project id (`cache_storage`), never for metrics."""

from __future__ import annotations

from dataclasses import dataclass

from imagedepot.ports import BlobUsage, MetadataStore


@dataclass(frozen=True)
class Inventory:
    caches_by_status: dict[str, int]
    vm_images_by_status: dict[str, int]
    blobs: int
    blob_bytes: int


@dataclass(frozen=True)
class CacheStorage:
    """What the caches take in the blob store, per project id and over all of them; the
    difference between what they reference and what is stored is what sharing saves."""

    by_project: dict[str, BlobUsage]
    total: BlobUsage


class InventoryService:
    def __init__(self, store: MetadataStore) -> None:
        self._store = store

    def count(self) -> Inventory:
        with self._store.transaction(read_only=True) as uow:
            blobs, blob_bytes = uow.blob_refs.referenced_totals()
            return Inventory(
                uow.caches.count_by_status(), uow.vm_images.count_by_status(), blobs, blob_bytes
            )

    def cache_storage(self) -> CacheStorage:
        """Per project and in total: the bytes the caches reference, each cache counted as if
        it held its own copy, against the bytes stored once for all of them."""
        with self._store.transaction(read_only=True) as uow:
            return CacheStorage(
                uow.blob_refs.cache_usage_by_project(), uow.blob_refs.cache_usage_total()
            )
