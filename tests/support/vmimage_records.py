"""VM image records for the metadata store's contract suites."""

from __future__ import annotations

from datetime import UTC, datetime

from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.domain.vmimages import VmImage

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def image(
    name: str | None,
    *,
    project_id: str = "p1",
    at: datetime = T0,
    size: int | None = None,
    tags: tuple[str, ...] = (),
    properties: dict[str, str] | None = None,
) -> VmImage:
    made = VmImage.new(project_id, at)
    made.name = name
    made.size = size
    made.tags = list(tags)
    for key, value in (properties or {}).items():
        made.set_property(key, value)
    return made


def add(store: SqlMetadataStore, *images: VmImage) -> None:
    with store.transaction() as uow:
        for one in images:
            uow.vm_images.add(one)
