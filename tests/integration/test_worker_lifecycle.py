"""The worker's lifecycle rules in-process, with a clock the test moves: retention expiry and
the build timeout, which no end-to-end test can wait for."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from cryptography.fernet import Fernet

from imagedepot.adapters.blobs.filesystem import FilesystemBlobStore
from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.adapters.processes import dead_holders
from imagedepot.adapters.registry.client import AiohttpRegistryClient
from imagedepot.adapters.secretbox import FernetSecretBox
from imagedepot.domain.caches import CacheSpec, CacheStatus, ImageProgress
from imagedepot.domain.identity import Principal, Role
from imagedepot.ports import BlobInfo
from imagedepot.services.blobs import BlobService
from imagedepot.services.building import BlobFetcher, BuildPolicy, CacheBuilder
from imagedepot.services.caches import CacheService
from imagedepot.services.secrets import SecretService
from imagedepot.worker.loop import WorkerLoop
from imagedepot.worker.reconciler import Reconciler
from tests.support.clock import MovableClock

PROJECT = Principal("project-1", Role.ADMIN, "cred-1")


class Harness:
    def __init__(self, root: Path) -> None:
        self.clock = MovableClock()
        self.store = SqlMetadataStore(f"sqlite:///{root / 'db.sqlite'}")
        self.blobs = FilesystemBlobStore(root / "blobs")
        self.registry = AiohttpRegistryClient(max_retries=0, retry_base_delay=0.01)
        self.caches = CacheService(self.store, self.clock)
        self.blob_service = BlobService(self.store, self.blobs, self.clock)
        policy = BuildPolicy()
        self.loop = WorkerLoop(
            self.store,
            self.blobs,
            self.clock,
            "host/1/abc",
            30,
            0.05,
            dead_holders=lambda holders: dead_holders(holders, "host/1/abc"),
        )
        builder = CacheBuilder(
            self.store,
            self.blobs,
            self.registry,
            BlobFetcher(self.blobs, self.registry, 2),
            policy,
            self.clock,
        )
        secrets = SecretService(self.store, FernetSecretBox(Fernet.generate_key()), self.clock)
        self.reconciler = Reconciler(
            self.store,
            self.clock,
            builder,
            self.blob_service,
            secrets,
            policy,
            self.loop.renew_lease,
        )
        self.loop.reconciler = self.reconciler

    def status(self, cache_id: str) -> CacheStatus | None:
        with self.store.transaction() as uow:
            cache = uow.caches.get(cache_id)
        return None if cache is None else cache.status


def test_retention_expiry_deletes_the_cache_and_releases_its_blobs(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    data = b"layer bytes"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    harness.blobs.put_bytes(digest, data)
    cache = harness.caches.create(
        PROJECT, CacheSpec(name="week", images=("busybox",), retention_days=7)
    )
    with harness.store.transaction() as uow:
        uow.blob_refs.add_refs(cache.id, [BlobInfo(digest, len(data), "layer")])
        stored = uow.caches.get(cache.id)
        assert stored is not None
        stored.mark_available([ImageProgress("busybox", digest, len(data))], harness.clock.now())
        assert uow.caches.save(stored, cache.resource_version)

    async def run_ticks() -> None:
        await harness.loop.tick()
        assert harness.status(cache.id) is CacheStatus.AVAILABLE
        harness.clock.current += timedelta(days=7, seconds=1)
        await harness.loop.tick()
        for _ in range(100):
            if harness.status(cache.id) is None:
                return
            await asyncio.sleep(0.02)
            await harness.loop.tick()

    asyncio.run(run_ticks())
    assert harness.status(cache.id) is None
    assert not harness.blobs.has(digest)
    harness.store.close()


def test_a_build_that_outlives_its_timeout_fails_with_the_reason(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    image = f"127.0.0.1:{silent.getsockname()[1]}/slow/app:1"
    cache = harness.caches.create(PROJECT, CacheSpec(name="slow", images=(image,)))
    short = replace(cache, spec=replace(cache.spec, timeout_minutes=0.01))  # type: ignore[arg-type]

    async def build() -> None:
        await harness.reconciler.build(short)
        await harness.registry.close()

    asyncio.run(build())
    with harness.store.transaction() as uow:
        failed = uow.caches.get(cache.id)
    assert failed is not None
    assert failed.status is CacheStatus.FAILED
    assert failed.reason == "Timeout"
    assert "did not finish within" in (failed.message or "")
    silent.close()
    for connection in accepted:
        connection.close()
    harness.store.close()


def test_leases_of_dead_processes_on_this_host_are_taken_over() -> None:
    me = "host/100/aaaa"
    holders = ["host/100/bbbb", "host/999999999/cccc", "other/1/dddd", me, "host/1/eeee"]
    assert dead_holders(holders, me) == ("host/100/bbbb", "host/999999999/cccc")
