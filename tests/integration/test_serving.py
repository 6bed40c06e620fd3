"""The registry port's resolution rules in-process, on a real SQLite store and blob directory:
which cache a tag comes from, who sees what, and how often a use is written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from imagedepot.adapters.blobs.filesystem import FilesystemBlobStore
from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.domain.caches import CacheSpec, ImageCache, ImageProgress
from imagedepot.domain.identity import Project
from imagedepot.domain.manifests import OCI_MANIFEST
from imagedepot.ports import BlobInfo
from imagedepot.services.serving import (
    ANONYMOUS,
    BlobUnknown,
    ManifestUnknown,
    NameAmbiguous,
    NameUnknown,
    Puller,
    ServingService,
)
from tests.support.images import sha256_digest

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def now(self) -> datetime:
        return T0


class Harness:
    def __init__(self, root: Path) -> None:
        self.store = SqlMetadataStore(f"sqlite:///{root / 'db.sqlite'}")
        self.blobs = FilesystemBlobStore(root / "blobs")
        self.serving = ServingService(self.store, self.blobs, Clock())
        self._count = 0

    def project(self, project_id: str, *, anonymous: bool = False) -> Puller:
        with self.store.transaction() as uow:
            uow.identity.add_project(Project(project_id, project_id, T0))
            uow.identity.set_anonymous_pull(project_id, anonymous)
        return Puller(project_id)

    def cache(self, project_id: str, image: str, *, minutes: int = 0) -> tuple[ImageCache, str]:
        """An Available cache of `image` created `minutes` after T0; its manifest's digest."""
        self._count += 1
        manifest = json.dumps({"mediaType": OCI_MANIFEST, "n": self._count}).encode()
        digest = sha256_digest(manifest)
        self.blobs.put_bytes(digest, manifest)
        cache = ImageCache.new(
            project_id, CacheSpec(f"c{self._count}", (image,)), T0 + timedelta(minutes=minutes)
        )
        cache.mark_available([ImageProgress(image, digest, len(manifest))], cache.created_at)
        with self.store.transaction() as uow:
            uow.caches.add(cache)
            uow.blob_refs.add_refs(cache.id, [BlobInfo(digest, len(manifest), OCI_MANIFEST)])
        return cache, digest


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    made = Harness(tmp_path)
    yield made
    made.store.close()


def test_the_newest_available_cache_wins_a_tag(harness: Harness) -> None:
    me = harness.project("p1")
    harness.cache("p1", "r.example.com/team/app:v1", minutes=0)
    newest, newest_digest = harness.cache("p1", "r.example.com/team/app:v1", minutes=2)
    middle, middle_digest = harness.cache("p1", "other.example.com/team/app:v1", minutes=1)
    served = harness.serving.manifest(me, "team/app", "v1")
    assert (served.digest, served.cache_id) == (newest_digest, newest.id)
    # the upstream host picks among them; a digest is never ambiguous
    assert harness.serving.manifest(me, "other.example.com/team/app", "v1").cache_id == middle.id
    assert harness.serving.manifest(me, "team/app", middle_digest).cache_id == middle.id


def test_anonymous_pullers_see_every_anonymous_project_and_nothing_else(
    harness: Harness,
) -> None:
    harness.project("open-a", anonymous=True)
    harness.project("open-b", anonymous=True)
    private = harness.project("private")
    harness.cache("open-a", "nginx:stable", minutes=0)
    newer, _ = harness.cache("open-b", "nginx:stable", minutes=5)
    _, private_digest = harness.cache("private", "nginx:stable", minutes=9)

    assert harness.serving.manifest(ANONYMOUS, "nginx", "stable").cache_id == newer.id
    assert harness.serving.manifest(private, "library/nginx", "stable").digest == private_digest
    with pytest.raises(ManifestUnknown):
        harness.serving.manifest(ANONYMOUS, "nginx", private_digest)
    with pytest.raises(BlobUnknown):
        harness.serving.blob(ANONYMOUS, "nginx", private_digest)
    with pytest.raises(NameUnknown):
        harness.serving.manifest(Puller("nobody"), "nginx", "stable")
    assert harness.serving.catalog(ANONYMOUS).items == ["library/nginx"]


def test_no_anonymous_project_can_shadow_another_with_a_same_named_image(
    harness: Harness,
) -> None:
    """B caches `team/app:v1` from a registry of its own, newer than A's: anonymous pullers of
    the bare name get neither (the name stands for two upstreams), and each stays reachable
    by the name that pins its upstream; one project alone keeps newest-wins."""
    harness.project("open-a", anonymous=True)
    b = harness.project("open-b", anonymous=True)
    genuine, genuine_digest = harness.cache("open-a", "registry.a.example/team/app:v1")
    _, shadow_digest = harness.cache("open-b", "evil.example/team/app:v1", minutes=5)
    harness.cache("open-b", "evil.example/registry.a.example/team/app:v1", minutes=6)

    for name in ("team/app", "registry.a.example/team/app"):
        with pytest.raises(NameAmbiguous, match="several upstreams"):
            harness.serving.manifest(ANONYMOUS, name, "v1")
        with pytest.raises(NameAmbiguous):
            harness.serving.tags(ANONYMOUS, name)
    pinned = harness.serving.manifest(ANONYMOUS, "team/app", "v1", upstream="registry.a.example")
    assert (pinned.digest, pinned.cache_id) == (genuine_digest, genuine.id)
    theirs = harness.serving.manifest(ANONYMOUS, "team/app", "v1", upstream="evil.example")
    assert theirs.digest == shadow_digest
    # with its own credential, B sees only its own caches, where the newest wins
    assert harness.serving.manifest(b, "team/app", "v1").digest == shadow_digest


def test_a_use_is_written_at_most_once_per_interval_per_cache(harness: Harness) -> None:
    me = harness.project("p1")
    cache, _ = harness.cache("p1", "team/app:v1")
    served = harness.serving.manifest(me, "team/app", "v1")
    assert harness.serving.use_due(served.cache_id) is True
    assert harness.serving.use_due(served.cache_id) is False
    assert harness.serving.use_due("another-cache") is True
    harness.serving.record_use(served.cache_id)
    with harness.store.transaction() as uow:
        stored = uow.caches.get(cache.id)
    assert stored is not None
    assert stored.last_used_at == T0
    assert stored.resource_version == cache.resource_version
