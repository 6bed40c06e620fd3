"""Blob housekeeping: garbage collection of unreferenced blobs and `fsck`.

Collection is coordinated through the metadata store, never a local lock, so builders and
collectors may run on different machines: a blob is removed in a transaction that holds it
for removal (builders hold what they reuse in the transaction that records their
references) and that sees no reference to it. A sweep over every stored blob also waits a
grace period from the first time it saw a blob unreferenced, so bytes that land a moment
before their reference (an upload, an import) are never taken.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from imagedepot.ports import BlobStore, Clock, MetadataStore, write_blob

DEFAULT_GC_GRACE: Final = timedelta(hours=1)


@dataclass
class FsckReport:
    checked: int = 0
    damaged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unreferenced: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    """Not stored yet, but only caches still being built use them: in flight, not lost."""
    leftovers: list[str] = field(default_factory=list)
    """What writers that died left staged (removed by the worker, or `gc`)."""

    @property
    def healthy(self) -> bool:
        return not self.damaged and not self.missing


class BlobService:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        clock: Clock,
        *,
        grace: timedelta = DEFAULT_GC_GRACE,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._clock = clock
        self._grace = grace

    def collect(
        self, candidates: Iterable[str] | None = None, *, grace: timedelta | None = None
    ) -> list[str]:
        """Remove blobs that nothing references; the digests removed.

        Without candidates, a sweep of every stored blob: one is removed once it has been
        seen unreferenced for the grace period (the setting's, unless `grace` is given).
        Candidates (what a deleted cache or a failed import let go of) are removed at once
        when unreferenced.
        """
        if candidates is None:
            targets = self._due_orphans(self._grace if grace is None else grace)
        else:
            targets = list(dict.fromkeys(candidates))
        return [digest for digest in targets if self._remove_if_unreferenced(digest)]

    def _due_orphans(self, grace: timedelta) -> list[str]:
        stored = set(self._blobs.digests())
        now = self._clock.now()
        with self._store.transaction() as uow:
            kept = uow.blob_refs.referenced(sorted(stored))
            uow.blob_orphans.forget(sorted(uow.blob_orphans.noted() - (stored - kept)))
            uow.blob_orphans.note(sorted(stored - kept), now)
            return uow.blob_orphans.due(now - grace)

    def _remove_if_unreferenced(self, digest: str) -> bool:
        with self._store.transaction() as uow:
            if not uow.blob_locks.hold_for_removal(digest):
                return False  # a builder is reusing it right now, or another collector has it
            if uow.blob_refs.referenced([digest]):
                uow.blob_orphans.forget([digest])
                return False
            stored = self._blobs.has(digest)
            if stored:
                self._blobs.delete(digest)
            uow.blob_orphans.forget([digest])
        return stored

    def copy_to(self, target: BlobStore) -> int:
        """Copy every stored blob `target` lacks, each verified on its way in; the count."""
        copied = 0
        for digest in self._blobs.digests():
            if target.has(digest):
                continue
            with self._blobs.open(digest) as chunks:
                write_blob(target.writer(digest, self._blobs.size(digest)), chunks)
            copied += 1
        return copied

    def fsck(self, *, quick: bool = False) -> FsckReport:
        """Re-hash every stored blob (`quick`: compare its size with the recorded one, which
        reads no bytes, for a bucket too large to re-hash); report damaged ones,
        referenced-but-missing (apart from those only builds in progress wait for), and
        orphans."""
        report = FsckReport()
        with self._store.transaction(read_only=True) as uow:
            referenced = uow.blob_refs.all_referenced()
            settled = uow.blob_refs.referenced_by_settled_owners()
            recorded = uow.blob_refs.recorded_sizes() if quick else {}
        stored = set(self._blobs.digests())
        for digest in sorted(stored):
            report.checked += 1
            if quick:
                intact = digest not in recorded or self._blobs.size(digest) == recorded[digest]
            else:
                intact = self._intact(digest)
            if not intact:
                report.damaged.append(digest)
        absent = referenced - stored
        report.missing = sorted(absent & settled)
        report.pending = sorted(absent - settled)
        report.unreferenced = sorted(stored - referenced)
        report.leftovers = self._blobs.leftovers()
        return report

    def _intact(self, digest: str) -> bool:
        hasher = hashlib.sha256()
        try:
            with self._blobs.open(digest) as chunks:
                for chunk in chunks:
                    hasher.update(chunk)
        except FileNotFoundError:
            return False
        return "sha256:" + hasher.hexdigest() == digest
