"""imagedepot on many machines' storage: replicas on one PostgreSQL and one S3 bucket (a real
SeaweedFS and a real Ceph radosgw), building from a real docker-registry and serving skopeo.
Any replica answers for what another built or received; no blob bytes land on a replica's
disk; collection leaves the bucket holding exactly what is still used."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.support import glance
from tests.support.commands import run_command
from tests.support.faultproxy import FaultProxy
from tests.support.images import make_layer, push_image, sha256_digest
from tests.support.ports import free_port
from tests.support.postgres import PostgresCluster
from tests.support.registry import RegistryServer, require_binary
from tests.support.s3engines import S3Engine
from tests.support.service import (
    Service,
    WorkerProcess,
    imagedepot_command,
    wait_for_status,
    wait_gone,
)

pytestmark = pytest.mark.peers

MiB = 1 << 20
PREFIX = "depot"


@dataclass
class Deployment:
    engine: S3Engine
    bucket: str
    env: dict[str, str]

    def replica(self, tmp_path: Path, name: str, *serve_args: str, **env: str) -> Service:
        return Service(tmp_path / name, env={**self.env, **env}, serve_args=serve_args)

    def stored(self) -> set[str]:
        """The digests of every blob in the bucket."""
        client = self.engine.client()
        listed = client.list_objects_v2(Bucket=self.bucket, Prefix=f"{PREFIX}/blobs/sha256/")
        return {"sha256:" + item["Key"].rsplit("/", 1)[1] for item in listed.get("Contents", [])}

    def leftovers(self) -> list[str]:
        client = self.engine.client()
        uploads = client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])
        staged = client.list_objects_v2(Bucket=self.bucket, Prefix=f"{PREFIX}/staging/")
        return [u["Key"] for u in uploads] + [o["Key"] for o in staged.get("Contents", [])]


def deployment_on(engine: S3Engine, cluster: PostgresCluster) -> Iterator[Deployment]:
    bucket = engine.new_bucket("depot")
    database = cluster.create_database()
    env = {
        **engine.env(),
        "IMAGEDEPOT_DATABASE_URL": cluster.url(database),
        "IMAGEDEPOT_BLOB_STORE": f"s3://{bucket}/{PREFIX}",
        # What every replica must share: the key secrets are sealed with and pull tokens signed.
        "IMAGEDEPOT_SECRET_KEY": Fernet.generate_key().decode(),
        "IMAGEDEPOT_S3_PART_MIB": "5",
    }
    try:
        yield Deployment(engine, bucket, env)
    finally:
        cluster.drop_database(database)


@pytest.fixture(params=["seaweedfs", "radosgw"])
def deployment(
    request: pytest.FixtureRequest, postgres_cluster: PostgresCluster
) -> Iterator[Deployment]:
    yield from deployment_on(request.getfixturevalue(request.param), postgres_cluster)


@pytest.fixture
def seaweed_deployment(
    seaweedfs: S3Engine, postgres_cluster: PostgresCluster
) -> Iterator[Deployment]:
    yield from deployment_on(seaweedfs, postgres_cluster)


@pytest.fixture
def radosgw_deployment(
    radosgw: S3Engine, postgres_cluster: PostgresCluster
) -> Iterator[Deployment]:
    yield from deployment_on(radosgw, postgres_cluster)


def skopeo_copy(replica: Service, token: str, source: str, layout: Path) -> None:
    run_command(
        [
            require_binary("/usr/bin/skopeo"),
            "--override-os",
            "linux",
            "--override-arch",
            "amd64",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--src-creds",
            f"any:{token}",
            f"docker://127.0.0.1:{replica.registry_port}/{source}",
            f"oci:{layout}:pulled",
        ]
    )


def layout_digests(layout: Path) -> set[str]:
    """Every blob of an OCI layout, each checked against its name."""
    found = set()
    for path in (layout / "blobs" / "sha256").iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
        found.add("sha256:" + path.name)
    return found


def registry_get(
    replica: Service, token: str, path: str, method: str = "GET", **headers: str
) -> httpx.Response:
    """A request on the registry port with the project's token as the basic password."""
    url = f"http://127.0.0.1:{replica.registry_port}{path}"
    with httpx.Client(auth=("any", token), follow_redirects=False, timeout=30) as client:
        return client.request(method, url, headers=headers)


def serve_refused(env: dict[str, str], data_dir: Path) -> str:
    """Run `serve` with `env`, which must refuse to start: exit 1, no traceback; its stderr."""
    command = imagedepot_command(
        "serve",
        "--port",
        str(free_port()),
        "--registry-port",
        str(free_port()),
        "--data-dir",
        str(data_dir),
    )
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip()


def create_caches(replicas: list[Service], token: str, images: dict[str, str]) -> dict[str, str]:
    """Create one cache per (name, image) at once, through the replicas in turn; name -> id."""

    def create(index_and_item: tuple[int, tuple[str, str]]) -> tuple[str, str]:
        index, (name, image) = index_and_item
        with replicas[index % len(replicas)].client(token) as client:
            created = client.post("/v5/imagecaches", json={"name": name, "images": [image]})
        assert created.status_code == 201, created.text
        return name, created.json()["image_cache"]["id"]

    with ThreadPoolExecutor(len(images)) as pool:
        return dict(pool.map(create, enumerate(images.items())))


def wait_all_available(replica: Service, token: str, ids: list[str]) -> None:
    with replica.client(token) as client:
        for cache_id in ids:
            done = wait_for_status(client, cache_id, {"Available", "Failed"}, timeout=180)
            assert done["status"] == "Available", done


def test_replicas_share_one_bucket_build_serve_and_collect(
    deployment: Deployment, registry: RegistryServer, tmp_path: Path
) -> None:
    big, small = make_layer(6 * MiB + 123, seed=1), make_layer(300_000, seed=2)
    pushed = push_image(registry.url, "team/app", "v1", [big, small])
    image = f"{registry.endpoint}/team/app:v1"
    with (
        deployment.replica(tmp_path, "a") as builder,
        deployment.replica(tmp_path, "b", "--no-worker") as front,
    ):
        token = builder.credential("team", "admin")
        # Created through the replica without a worker: the other replica builds it.
        cache_id = create_caches([front], token, {"web": image})["web"]
        wait_all_available(front, token, [cache_id])
        wanted = {pushed.manifest_digest, *pushed.blob_digests}
        assert deployment.stored() == wanted
        assert deployment.leftovers() == []

        for replica in (builder, front):
            layout = tmp_path / f"pulled-{replica.port}"
            skopeo_copy(replica, token, "team/app:v1", layout)
            assert layout_digests(layout) == wanted
            assert not list(replica.data_dir.glob("blobs/sha256/*/*")), "no bytes on a replica"

        # Ranges and HEAD come from the bucket too.
        layer = f"/v2/team/app/blobs/{big.digest}"
        part = registry_get(front, token, layer, Range=f"bytes={5 * MiB - 10}-{5 * MiB + 9}")
        assert part.status_code == 206, part.text
        assert part.content == big.data[5 * MiB - 10 : 5 * MiB + 10]
        assert part.headers["content-range"] == f"bytes {5 * MiB - 10}-{5 * MiB + 9}/{big.size}"
        tail = registry_get(front, token, layer, Range="bytes=-7")
        assert tail.content == big.data[-7:]
        refused = registry_get(front, token, layer, Range=f"bytes={big.size}-")
        assert refused.status_code == 416
        assert refused.headers["content-range"] == f"bytes */{big.size}"

        # A VM image uploaded through one replica is downloaded through the other.
        disk = b"disk image bytes " * 400_000
        with front.client(token) as client:
            image_id = glance.create(client, name="disk")["id"]
            uploaded = glance.upload(client, image_id, disk)
            assert uploaded.status_code == 204, uploaded.text
        with builder.client(token) as client:
            downloaded = client.get(f"/v2/images/{image_id}/file")
            assert downloaded.status_code == 200
            assert downloaded.content == disk
            ranged = client.get(f"/v2/images/{image_id}/file", headers={"Range": "bytes=3-9"})
            assert ranged.status_code == 206
            assert ranged.content == disk[3:10]
        assert sha256_digest(disk) in deployment.stored()
        assert deployment.leftovers() == [], "the staged upload was placed and removed"

        with builder.client(token) as client:
            assert client.delete(f"/v5/imagecaches/{cache_id}").status_code in (200, 202, 204)
            wait_gone(client, cache_id)
    collected = builder.cli("gc", "--grace", "0")
    assert collected.returncode == 0, collected.stderr
    assert deployment.stored() == {sha256_digest(disk)}

    # Bytes changed behind imagedepot's back in the bucket: fsck says so, quickly by size.
    assert builder.cli("fsck").returncode == 0
    digest = sha256_digest(disk)
    key = f"{PREFIX}/blobs/sha256/{digest[7:9]}/{digest[7:]}"
    deployment.engine.client().put_object(Bucket=deployment.bucket, Key=key, Body=disk[:-1])
    for mode in ((), ("--quick",)):
        checked = builder.cli("fsck", *mode, check=False)
        assert checked.returncode == 1, checked.stdout
        assert f"damaged: {digest}" in checked.stdout


def test_blob_gets_can_be_redirected_to_the_bucket(
    seaweed_deployment: Deployment, registry: RegistryServer, tmp_path: Path
) -> None:
    layer = make_layer(2 * MiB, seed=3)
    pushed = push_image(registry.url, "team/app", "redirected", [layer])
    with seaweed_deployment.replica(tmp_path, "r", IMAGEDEPOT_S3_REDIRECT_SECONDS="300") as replica:
        token = replica.credential("team", "admin")
        image = f"{registry.endpoint}/team/app:redirected"
        wait_all_available(
            replica, token, list(create_caches([replica], token, {"r": image}).values())
        )
        answer = registry_get(replica, token, f"/v2/team/app/blobs/{layer.digest}")
        assert answer.status_code == 307
        location = answer.headers["location"]
        assert location.startswith(seaweed_deployment.engine.endpoint)
        assert httpx.get(location, timeout=30).content == layer.data
        head = registry_get(replica, token, f"/v2/team/app/blobs/{layer.digest}", "HEAD")
        assert head.status_code == 200, "HEAD is answered here, from the bucket's metadata"
        assert head.headers["content-length"] == str(layer.size)
        # Manifests stay served by imagedepot; skopeo follows the blob redirects.
        manifest = registry_get(replica, token, "/v2/team/app/manifests/redirected")
        assert manifest.status_code == 200
        layout = tmp_path / "pulled"
        skopeo_copy(replica, token, "team/app:redirected", layout)
        assert layout_digests(layout) == {pushed.manifest_digest, *pushed.blob_digests}


def test_serve_refuses_a_bucket_it_cannot_use(
    seaweed_deployment: Deployment, tmp_path: Path
) -> None:
    env = {**seaweed_deployment.env, "IMAGEDEPOT_BLOB_STORE": "s3://no-such-bucket/x"}
    line = serve_refused(env, tmp_path / "data").splitlines()[-1]
    assert "no-such-bucket" in line
    assert seaweed_deployment.engine.endpoint in line
    wrong_key = {**seaweed_deployment.env, "AWS_SECRET_ACCESS_KEY": "not-the-key"}
    refused = serve_refused(wrong_key, tmp_path / "data")
    assert seaweed_deployment.bucket in refused
    assert "not-the-key" not in refused


def wait_mid_pull(replica: Service, token: str, cache_ids: list[str]) -> None:
    """Return once one of the caches has pulled some bytes of an image but not all of them."""
    deadline = time.monotonic() + 60
    with replica.client(token) as client:
        while time.monotonic() < deadline:
            for cache_id in cache_ids:
                shown = client.get(f"/v5/imagecaches/{cache_id}/progress").json()
                if any(0 < i["pulled_bytes"] < (i["size_bytes"] or 0) for i in shown["images"]):
                    return
            time.sleep(0.1)
    raise AssertionError("no build was caught in the middle of a pull")


def completed_gets(proxy: FaultProxy, digest: str) -> int:
    return len(proxy.seen(f"/blobs/{digest}", "GET"))


def test_replicas_and_workers_on_many_machines_fetch_each_blob_once(
    seaweed_deployment: Deployment, registry: RegistryServer, tmp_path: Path
) -> None:
    deployment = seaweed_deployment
    with FaultProxy(registry.url) as upstream:
        base = make_layer(3 * MiB, seed=10)
        pushed = {
            f"app{n}": push_image(
                registry.url, f"fleet/app{n}", "v1", [base, make_layer(50_000 + n)]
            )
            for n in range(10)
        }
        images = {name: f"{upstream.endpoint}/fleet/{name}:v1" for name in pushed}
        upstream.throttle(base.digest, 1 * MiB)  # ~3 s: builds overlap on the shared layer
        replicas = [
            deployment.replica(tmp_path, "front-a", "--no-worker"),
            deployment.replica(tmp_path, "front-b", "--no-worker"),
        ]
        # Each worker on a machine of its own: a dead one is known by its silence alone.
        workers = [
            WorkerProcess(
                tmp_path / f"worker-{n}", {**deployment.env, "IMAGEDEPOT_NODE_NAME": f"w{n}"}
            )
            for n in range(2)
        ]
        with replicas[0], replicas[1], workers[0], workers[1]:
            token = replicas[0].credential("fleet", "admin")
            first = dict(list(images.items())[:6])
            ids = create_caches(replicas, token, first)
            wait_all_available(replicas[1], token, list(ids.values()))
            # Two workers, six caches sharing a layer: it came from the upstream once.
            assert completed_gets(upstream, base.digest) == 1
            for name in first:
                (unique,) = pushed[name].layer_digests[1:]
                assert completed_gets(upstream, unique) == 1

            # A worker killed while it builds: the others finish its caches once its leases
            # run out, and what it had half written never becomes a blob.
            second_base = make_layer(4 * MiB, seed=11)
            for name in list(images)[6:]:
                pushed[name] = push_image(
                    registry.url, f"fleet/{name}", "v2", [second_base, make_layer(60_000)]
                )
                images[name] = f"{upstream.endpoint}/fleet/{name}:v2"
            upstream.throttle(second_base.digest, 1 * MiB)
            more = create_caches(replicas, token, {n: images[n] for n in list(images)[6:]})
            wait_mid_pull(replicas[0], token, list(more.values()))
            workers[0].kill9()
            ids.update(more)
            wait_all_available(replicas[0], token, list(ids.values()))
            assert 1 <= completed_gets(upstream, second_base.digest) <= 2

            everything = {d for p in pushed.values() for d in (p.manifest_digest, *p.blob_digests)}
            assert deployment.stored() == everything
            for replica in replicas:
                layout = tmp_path / f"pulled-{replica.port}"
                skopeo_copy(replica, token, "fleet/app9:v2", layout)
                assert layout_digests(layout) == {
                    pushed["app9"].manifest_digest,
                    *pushed["app9"].blob_digests,
                }
                assert not list(replica.data_dir.glob("blobs/sha256/*/*"))
            for worker in workers:
                assert not list(worker.data_dir.glob("blobs/sha256/*/*"))

            with replicas[1].client(token) as client:
                for name, cache_id in ids.items():
                    if name != "app9":
                        assert client.delete(f"/v5/imagecaches/{cache_id}").status_code < 300
                for name, cache_id in ids.items():
                    if name != "app9":
                        wait_gone(client, cache_id, timeout=60)
        collected = replicas[0].cli("gc", "--grace", "0")
        assert collected.returncode == 0, collected.stderr
        assert deployment.stored() == {pushed["app9"].manifest_digest, *pushed["app9"].blob_digests}


def test_an_upload_cut_short_by_a_dead_replica_is_found_from_another(
    seaweed_deployment: Deployment, tmp_path: Path
) -> None:
    deployment = seaweed_deployment
    with (
        # Two machines: no pid of the other can be checked.
        deployment.replica(tmp_path, "doomed", "--no-worker", IMAGEDEPOT_NODE_NAME="m1") as doomed,
        deployment.replica(tmp_path, "survivor", IMAGEDEPOT_NODE_NAME="m2") as survivor,
    ):
        token = survivor.credential("uploads", "member")
        with survivor.client(token) as client:
            image_id = glance.create(client, name="cut")["id"]
        piece, sent = os.urandom(256 * 1024), threading.Event()

        def slow_body() -> Iterator[bytes]:
            for index in range(400):
                if index == 30:  # past a whole part: the dead writer left a multipart upload
                    sent.set()
                yield piece
                time.sleep(0.02)

        def upload() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the replica dies under it
                httpx.put(
                    f"{doomed.url}/v2/images/{image_id}/file",
                    content=slow_body(),
                    headers={"X-Auth-Token": token, "Content-Type": "application/octet-stream"},
                    timeout=30,
                )

        uploader = threading.Thread(target=upload)
        uploader.start()
        assert sent.wait(30)
        doomed.kill9()
        killed_at = time.monotonic()
        uploader.join()
        with survivor.client(token) as client:
            assert client.get(f"/v2/images/{image_id}").json()["status"] == "saving"
            # Another machine's process cannot be asked for its pid: its silence for a lease
            # (10 s here) is what tells the survivor's worker the upload is dead.
            deadline = time.monotonic() + 40
            while (status := client.get(f"/v2/images/{image_id}").json()["status"]) != "queued":
                assert time.monotonic() < deadline, f"the image stayed {status}"
                time.sleep(0.2)
            assert time.monotonic() - killed_at > 10 - 10 / 3, "not before its lease ran out"
            data = os.urandom(300 * 1024)
            retried = glance.upload(client, image_id, data)
            assert retried.status_code == 204, retried.text
            assert client.get(f"/v2/images/{image_id}").json()["status"] == "active"
        assert deployment.stored() == {sha256_digest(data)}, "nothing partial under a blob key"


def test_a_replica_with_another_secret_key_is_refused(
    seaweed_deployment: Deployment, tmp_path: Path
) -> None:
    with seaweed_deployment.replica(tmp_path, "first"):
        pass  # seals the deployment's key check
    env = {**seaweed_deployment.env, "IMAGEDEPOT_SECRET_KEY": Fernet.generate_key().decode()}
    refused = serve_refused(env, tmp_path / "second")
    assert refused.splitlines()[-1].endswith("every replica must use the same key")


def test_a_single_machine_moves_onto_postgresql_and_a_bucket(
    seaweed_deployment: Deployment,
    postgres_cluster: PostgresCluster,
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    layer = make_layer(1 * MiB, seed=20)
    pushed = push_image(registry.url, "team/moved", "v1", [layer])
    single = Service(tmp_path / "single")
    with single:
        token = single.credential("team", "admin")
        image = f"{registry.endpoint}/team/moved:v1"
        wait_all_available(
            single, token, list(create_caches([single], token, {"moved": image}).values())
        )
        with single.client(token) as client:
            image_id = glance.create(client, name="disk")["id"]
            disk = os.urandom(100_000)
            assert glance.upload(client, image_id, disk).status_code == 204
    key = (single.data_dir / "secret.key").read_text().strip()
    database = postgres_cluster.create_database()
    try:
        target = {
            "--to-database": postgres_cluster.url(database),
            "--to-blob-store": seaweed_deployment.env["IMAGEDEPOT_BLOB_STORE"],
        }
        moving = Service(single.data_dir, env=seaweed_deployment.engine.env())
        moved = moving.cli(
            "migrate-store", "--data-dir", str(single.data_dir), *sum(target.items(), ())
        )
        assert "copied 4 blobs" in moved.stdout, moved.stdout
        again = moving.cli(
            "migrate-store",
            "--data-dir",
            str(single.data_dir),
            *sum(target.items(), ()),
            check=False,
        )
        assert again.returncode == 1
        assert "already holds" in again.stderr
        env = {
            **seaweed_deployment.env,
            "IMAGEDEPOT_DATABASE_URL": postgres_cluster.url(database),
            "IMAGEDEPOT_SECRET_KEY": key,
        }
        with Service(tmp_path / "replica", env=env) as replica:
            layout = tmp_path / "pulled"
            skopeo_copy(replica, token, "team/moved:v1", layout)
            assert layout_digests(layout) == {pushed.manifest_digest, *pushed.blob_digests}
            with replica.client(token) as client:
                assert client.get(f"/v2/images/{image_id}/file").content == disk
                # New rows after the copied ones: ids and revisions go on where they stopped.
                more = client.post("/v5/imagecaches", json={"name": "after", "images": ["a/b:c"]})
                assert more.status_code == 201, more.text
                listed = client.get("/v5/imagecaches").json()["image_caches"]
                assert sorted(c["name"] for c in listed) == ["after", "moved"]
            assert not list(replica.data_dir.glob("blobs/sha256/*/*"))
            audit = json.loads(replica.cli("audit", "--project", "team", "--json").stdout)
            assert audit[0]["action"] == "cce:imageCache:create"
    finally:
        postgres_cluster.drop_database(database)


def test_the_bucket_going_away_mid_build_leaves_nothing_partial(
    seaweed_deployment: Deployment, registry: RegistryServer, tmp_path: Path
) -> None:
    deployment = seaweed_deployment
    layer = make_layer(8 * MiB, seed=30)
    pushed = push_image(registry.url, "team/outage", "v1", [layer])
    with (
        FaultProxy(registry.url) as upstream,
        deployment.replica(tmp_path, "r") as replica,
    ):
        token = replica.credential("team", "admin")
        upstream.throttle(layer.digest, MiB // 2)  # 16 s: the bucket goes away in the middle
        image = f"{upstream.endpoint}/team/outage:v1"
        cache_id = create_caches([replica], token, {"outage": image})["outage"]
        wait_mid_pull(replica, token, [cache_id])
        with replica.client(token) as client:
            deployment.engine.stop()
            try:
                during = client.get(f"/v5/imagecaches/{cache_id}").json()["image_cache"]
                assert during["status"] == "Creating", during
                asked = time.monotonic()
                ready = client.get("/readyz")
                assert time.monotonic() - asked < 10, "a health check answers at once"
                assert ready.status_code == 503
                assert ready.json()["reason"].startswith("blob store")
                time.sleep(3)
                during = client.get(f"/v5/imagecaches/{cache_id}").json()["image_cache"]
                assert during["status"] == "Creating", "the build waits for the bucket"
            finally:
                deployment.engine.start()
            assert client.get("/readyz").status_code == 200
            # Back within the client's retries (about a minute): the build just goes on.
            done = wait_for_status(client, cache_id, {"Available", "Failed"}, timeout=120)
            assert done["status"] == "Available", done
        assert deployment.stored() == {pushed.manifest_digest, *pushed.blob_digests}
        layout = tmp_path / "pulled"
        skopeo_copy(replica, token, "team/outage:v1", layout)
        assert layout_digests(layout) == {pushed.manifest_digest, *pushed.blob_digests}


def test_a_bucket_over_its_quota_fails_the_build_as_storage_full(
    radosgw_deployment: Deployment, registry: RegistryServer, tmp_path: Path
) -> None:
    """radosgw refuses writes past a bucket quota (403 QuotaExceeded): the build says the
    store is full, leaves no multipart upload or staged object, and the store still takes
    what fits."""
    deployment = radosgw_deployment
    # Below one part (IMAGEDEPOT_S3_PART_MIB=5): radosgw checks the quota as each part or
    # object arrives, so the big layer's first part is refused whatever the bucket holds.
    deployment.engine.limit_bucket(deployment.bucket, 4 * MiB)
    big = push_image(registry.url, "team/quota-big", "v1", [make_layer(12 * MiB, seed=51)])
    small = push_image(registry.url, "team/quota-small", "v1", [make_layer(MiB, seed=52)])
    with deployment.replica(tmp_path, "r") as replica:
        token = replica.credential("team", "admin")
        ids = create_caches(
            [replica],
            token,
            {"big": f"{registry.endpoint}/team/quota-big:v1"},
        )
        with replica.client(token) as client:
            failed = wait_for_status(client, ids["big"], {"Available", "Failed"}, timeout=120)
            assert failed["status"] == "Failed", failed
            progress = client.get(f"/v5/imagecaches/{ids['big']}/progress").json()
            assert progress["reason"] == "StorageFull", progress
            assert "QuotaExceeded" in failed["message"], failed["message"]
            assert deployment.bucket in failed["message"]
        assert deployment.leftovers() == []
        assert not set(big.blob_digests) & deployment.stored()
        ids = create_caches([replica], token, {"small": f"{registry.endpoint}/team/quota-small:v1"})
        wait_all_available(replica, token, list(ids.values()))
        assert set(small.blob_digests) <= deployment.stored()


def test_replicas_and_workers_ride_out_a_postgresql_restart(
    seaweed_deployment: Deployment,
    postgres_cluster: PostgresCluster,
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    deployment = seaweed_deployment
    layer = make_layer(4 * MiB, seed=40)
    push_image(registry.url, "team/steady", "v1", [layer])
    answers: list[int] = []
    with (
        FaultProxy(registry.url) as upstream,
        deployment.replica(tmp_path, "front", "--no-worker") as front,
        WorkerProcess(tmp_path / "worker", deployment.env),
    ):
        token = front.credential("team", "admin")
        # The load reads with a credential of its own, paced under the per-credential rate
        # limit (50/s): requests are quick enough now to reach it, and a 429 is not what
        # this test is about.
        reader_token = front.credential("team", "reader")
        upstream.throttle(layer.digest, MiB)
        first = create_caches([front], token, {"steady": f"{upstream.endpoint}/team/steady:v1"})
        done = threading.Event()

        def load() -> None:
            with front.client(reader_token) as client:
                while not done.is_set():
                    answers.append(client.get("/v5/imagecaches").status_code)
                    time.sleep(0.03)

        reader = threading.Thread(target=load)
        reader.start()
        try:
            wait_mid_pull(front, token, list(first.values()))
            postgres_cluster.restart()
            # Neither the replica nor the worker is restarted: both find the database again.
            wait_all_available(front, token, list(first.values()))
            after = create_caches([front], token, {"after": f"{registry.endpoint}/team/steady:v1"})
            wait_all_available(front, token, list(after.values()))
        finally:
            done.set()
            reader.join()
    assert answers[-1] == 200
    assert set(answers) == {200, 503}, "503 (retry) while the database was away, never a 500"
    assert "Traceback" not in front.log
