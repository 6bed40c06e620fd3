"""What the store holds, counted over every project: the gauges operators watch (caches and
VM images by status, blobs in use and their bytes). Aggregates only, never names, so they
can be shown to a metrics scraper without leaking any project's objects."""

from __future__ import annotations

from dataclasses import dataclass

from imagedepot.ports import MetadataStore


@dataclass(frozen=True)
class Inventory:
    caches_by_status: dict[str, int]
    vm_images_by_status: dict[str, int]
    blobs: int
    blob_bytes: int


class InventoryService:
    def __init__(self, store: MetadataStore) -> None:
        self._store = store

    def count(self) -> Inventory:
        with self._store.transaction(read_only=True) as uow:
            blobs, blob_bytes = uow.blob_refs.referenced_totals()
            return Inventory(
                uow.caches.count_by_status(), uow.vm_images.count_by_status(), blobs, blob_bytes
            )
