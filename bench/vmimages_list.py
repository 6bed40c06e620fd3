"""Benchmark: listing VM images from a store holding many of them (100k by default), the way
the Glance and DiDi dialects ask: the default page, sorted pages walked by marker, filters.

Fills a fresh SQLite store (or `--database-url postgresql://…`) through the repository in
large transactions, then times each query shape. Not a test: nothing is asserted.
Usage: python bench/vmimages_list.py [--images 100000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.domain.vmimages import ImageQuery, ImageStatus, SortKey, VmImage

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def fill(store: SqlMetadataStore, count: int, start: int = 0) -> None:
    """Images `start` up to `count` of the series (so a store can be grown in steps); another
    project's image comes with the first step."""
    batch = 5000
    for first in range(start, count, batch):
        with store.transaction() as uow:
            for index in range(first, min(first + batch, count)):
                image = VmImage.new("bench", T0 + timedelta(seconds=index), region="default")
                image.name = f"image-{index % 5000:05d}"
                image.status = ImageStatus.ACTIVE if index % 3 else ImageStatus.QUEUED
                image.size = index * 1024
                image.tags = ["even"] if index % 2 == 0 else []
                uow.vm_images.add(image)
    if start == 0:
        with store.transaction() as uow:
            uow.vm_images.add(VmImage.new("other", T0))


def timed(store: SqlMetadataStore, label: str, query: ImageQuery, pages: int = 1) -> None:
    started = time.perf_counter()
    marker = None
    for _ in range(pages):
        with store.transaction(read_only=True) as uow:
            page = uow.vm_images.list(
                ImageQuery(**{**query.__dict__, "marker": marker})  # type: ignore[arg-type]
            )
        if not page:
            break
        marker = page[-1].id
    elapsed = (time.perf_counter() - started) * 1000 / pages
    print(f"{label:<50} {elapsed:8.2f} ms per page")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{Path(scratch) / 'bench.db'}"
        store = SqlMetadataStore(url)
        try:
            started = time.perf_counter()
            fill(store, args.images)
            print(f"filled {args.images} images in {time.perf_counter() - started:.1f} s")
            base = ImageQuery("bench")
            timed(store, "default page (created_at desc, 25)", base)
            timed(store, "10 pages by marker, created_at desc", base, pages=10)
            by_name = ImageQuery("bench", sort=(SortKey("name", False),), limit=20)
            timed(store, "seed query: limit=20 sort name asc", by_name)
            timed(store, "10 pages by marker, name asc", by_name, pages=10)
            timed(store, "name = image-00042", ImageQuery("bench", names=("image-00042",)))
            timed(store, "status = queued", ImageQuery("bench", statuses=("queued",)))
            timed(store, "tag = even", ImageQuery("bench", tags=("even",)))
            since = T0 + timedelta(seconds=args.images - 100)
            timed(store, "changes-since (last 100)", ImageQuery("bench", changes_since=since))
            with store.transaction(read_only=True) as uow:
                started = time.perf_counter()
                total = uow.vm_images.count(ImageQuery("bench", region="default"))
                print(
                    f"{'count (DiDi list)':<50} {(time.perf_counter() - started) * 1000:8.2f} ms"
                    f" ({total})"
                )
        finally:
            store.close()


if __name__ == "__main__":
    main()
