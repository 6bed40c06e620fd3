"""Making room under a project's quota of stored bytes, inside the transaction that records
what a build (or a pull-through) will reference: the evicted caches are marked Deleting (the
worker releases their blobs as for any deletion), each with an Event saying why and a row in
the audit log, or nothing changes and the caller is told the numbers."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from imagedepot.domain.caches import ImageCache
from imagedepot.domain.eviction import EVICTED_REASON, Holding, caches_to_evict
from imagedepot.ports import AuditEvent, UnitOfWork

EVICT_ACTION = "system:imageCache:evict"


def make_room(
    uow: UnitOfWork, cache: ImageCache, needed: Mapping[str, int], now: datetime
) -> list[ImageCache]:
    """Evict what `cache` needs evicted to reference `needed` (digest -> size) within its
    project's quota; the evicted caches. Raises NoRoom when that cannot be."""
    quota = uow.identity.stored_bytes_quota(cache.project_id)
    if quota is None:
        return []
    others = [
        Holding(other, {ref.digest: ref.size for ref in uow.blob_refs.refs_of(other.id)})
        for other in uow.caches.list(cache.project_id)
        if other.id != cache.id
    ]
    evicted = caches_to_evict(quota, needed, others)
    for victim in evicted:
        version = victim.resource_version
        victim.request_deletion(now)
        victim.reason = EVICTED_REASON
        victim.message = f"evicted to make room for {cache.spec.name} under the project's quota"
        uow.caches.save(victim, version)
        uow.audit.add(
            AuditEvent(
                at=now,
                credential_id=None,
                project_id=cache.project_id,
                action=EVICT_ACTION,
                target=f"imagecaches/{victim.id}",
                status=200,
                request_id=uuid.uuid4().hex,
            )
        )
    return evicted
