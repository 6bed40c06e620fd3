"""Blob housekeeping: garbage collection of unreferenced blobs and `fsck`.

Collection runs under the store's collect guard so that no builder can be
deciding to reuse a blob while it is removed; a blob is removed only when no
owner references it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from imagedepot.ports import BlobStore, MetadataStore


@dataclass
class FsckReport:
    checked: int = 0
    damaged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    """Not stored yet, but only caches still being built use them: in flight, not lost."""

    @property
    def healthy(self) -> bool:
        return not self.damaged and not self.missing


class BlobService:
    def __init__(self, store: MetadataStore, blobs: BlobStore) -> None:
        self._store = store
        self._blobs = blobs

    def collect(self, candidates: Iterable[str] | None = None) -> list[str]:
        """Remove the candidates (every stored blob when None) that nothing references."""
        with self._blobs.collect_guard():
            digests = list(self._blobs.digests() if candidates is None else candidates)
            with self._store.transaction() as uow:
                kept = uow.blob_refs.referenced(digests)
            removed = [d for d in digests if d not in kept and self._blobs.has(d)]
            for digest in removed:
                self._blobs.delete(digest)
        return removed

    def fsck(self) -> FsckReport:
        """Re-hash every stored blob; report damaged ones, referenced-but-missing (apart from
        those only builds in progress wait for), and orphans."""
        report = FsckReport()
        stored = set(self._blobs.digests())
        for digest in sorted(stored):
            report.checked += 1
            if not self._blobs.verify(digest):
                report.damaged.append(digest)
        with self._store.transaction(read_only=True) as uow:
            referenced = uow.blob_refs.all_referenced()
            settled = uow.blob_refs.referenced_by_settled_owners()
        absent = referenced - stored
        report.missing = sorted(absent & settled)
        report.pending = sorted(absent - settled)
        report.unreferenced = sorted(stored - referenced)
        return report
