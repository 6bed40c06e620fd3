"""Tenant isolation across everything projects share, with real upstreams: upstream logins,
deduplicated blobs (stored and in flight), imports, and the secret key while servers run.

Project B always tries to reach what project A built from a private docker-registry
(htpasswd): by building the same image without A's login, by naming A's layer in a
manifest served from a registry of its own that does not hold it, by joining A's download
while it is in flight, and by importing a layout that merely names the digest.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from tests.support.faultproxy import FaultProxy
from tests.support.images import (
    KIB,
    OCI_LAYER,
    PushedImage,
    build_image,
    make_layer,
    push_image,
    sha256_digest,
)
from tests.support.postgres import PostgresCluster
from tests.support.registry import RegistryServer
from tests.support.s3engines import S3Engine
from tests.support.service import Service, WorkerProcess, wait_for_status
from tests.support.tinyregistry import TinyRegistry

pytestmark = pytest.mark.peers

USERS = {"alice": "alice-Pa55word", "bob": "bob-Pa55word"}
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture(scope="module")
def private() -> Iterator[RegistryServer]:
    with RegistryServer(users=USERS) as server:
        yield server


def start_build(service: Service, token: str, image: str, secrets: tuple[str, ...] = ()) -> str:
    with service.client(token) as client:
        created = client.post(
            "/v5/imagecaches",
            json={
                "name": unique("iso"),
                "images": [image],
                "building_config": {"image_pull_secrets": list(secrets)},
            },
        )
    assert created.status_code == 201, created.text
    cache_id: str = created.json()["image_cache"]["id"]
    return cache_id


def build(
    service: Service, token: str, image: str, secrets: tuple[str, ...] = ()
) -> dict[str, Any]:
    cache_id = start_build(service, token, image, secrets)
    with service.client(token) as client:
        return wait_for_status(client, cache_id, {"Available", "Failed"})


def pull(service: Service, token: str, path: str) -> httpx.Response:
    return httpx.get(
        f"http://127.0.0.1:{service.registry_port}/v2/{path}",
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.oci.image.manifest.v1+json",
        },
        timeout=30,
    )


def private_image(registry: RegistryServer, repository: str, size: int, seed: int) -> PushedImage:
    layer = make_layer(size, seed=seed)
    return push_image(registry.url, repository, "v1", [layer], auth=("alice", USERS["alice"]))


def test_an_upstream_login_is_never_lent_to_another_project(
    service: Service, private: RegistryServer
) -> None:
    pushed = private_image(private, "a/private", 64 * KIB, seed=1001)
    image = f"{private.endpoint}/a/private:v1"
    token_a, token_b = service.credential("iso-login-a"), service.credential("iso-login-b")
    service.add_pull_secret("iso-login-a", "regcred", private.endpoint, "alice", USERS["alice"])
    assert build(service, token_a, image, ("default:regcred",))["status"] == "Available"

    # Right after A, in the same server process: B has no login, and gets none of A's.
    refused = build(service, token_b, image)
    assert refused["status"] == "Failed", refused
    assert "unauthorized" in refused["message"].lower()
    assert (
        pull(service, token_b, f"a/private/manifests/{pushed.manifest_digest}").status_code == 404
    )

    # A wrong login of its own is not helped by A's good one either.
    service.add_pull_secret("iso-login-b", "wrong", private.endpoint, "bob", "not-the-password")
    wrong = build(service, token_b, image, ("default:wrong",))
    assert wrong["status"] == "Failed", wrong
    assert "unauthorized" in wrong["message"].lower()

    # With a valid login of its own, B builds it and may pull it.
    service.add_pull_secret("iso-login-b", "regcred", private.endpoint, "bob", USERS["bob"])
    assert build(service, token_b, image, ("default:regcred",))["status"] == "Available"
    served = pull(service, token_b, f"a/private/blobs/{pushed.layer_digests[0]}")
    assert served.status_code == 200
    assert sha256_digest(served.content) == pushed.layer_digests[0]


def naming_manifest(tiny: TinyRegistry, repository: str, victim: PushedImage) -> str:
    """A manifest on the tiny registry naming the victim's layer (digest and size), with a
    config of its own; the tiny registry serves the manifest and the config only."""
    decoy = build_image([make_layer(1 * KIB, seed=7)], label=unique("decoy"))
    document = json.loads(decoy.manifest)
    document["layers"] = [
        {"mediaType": OCI_LAYER, "digest": victim.layer_digests[0], "size": victim.layer_sizes[0]}
    ]
    body = json.dumps(document).encode()
    tiny.blobs[decoy.config.digest] = decoy.config.data
    tiny.manifest(repository, "v1", body, decoy.media_type)
    return f"{tiny.endpoint}/{repository}:v1"


def assert_unreadable(service: Service, token: str, digest: str, names: list[str]) -> None:
    for name in names:
        assert pull(service, token, f"{name}/blobs/{digest}").status_code == 404, name
        assert pull(service, token, f"{name}/manifests/{digest}").status_code == 404, name


def test_naming_a_stored_blob_in_a_manifest_gives_no_access_to_it(
    service: Service, private: RegistryServer
) -> None:
    victim = private_image(private, "a/layers", 64 * KIB, seed=1002)
    layer = victim.layer_digests[0]
    service.add_pull_secret("iso-dedup-a", "regcred", private.endpoint, "alice", USERS["alice"])
    token_a, token_b = service.credential("iso-dedup-a"), service.credential("iso-dedup-b")
    assert (
        build(service, token_a, f"{private.endpoint}/a/layers:v1", ("default:regcred",))["status"]
        == "Available"
    )
    assert layer in service.stored_digests()

    with TinyRegistry() as tiny:
        image = naming_manifest(tiny, "evil/app", victim)
        failed = build(service, token_b, image)
        assert failed["status"] == "Failed", failed
        assert layer in failed["message"]
        assert tiny.seen("HEAD", layer) >= 1  # B's own upstream was asked, and said no
        names = ["evil/app", f"{tiny.endpoint}/evil/app", "a/layers", "anything/else"]
        assert_unreadable(service, token_b, layer, names)

        # When B's upstream does hold the blob, B gets it, without moving the bytes again.
        tiny.blobs[layer] = pull(service, token_a, f"a/layers/blobs/{layer}").content
        assert build(service, token_b, image)["status"] == "Available"
        assert tiny.seen("GET", f"/blobs/{layer}") == 0
        assert pull(service, token_b, f"evil/app/blobs/{layer}").status_code == 200


def wait_for_layer_bytes(client: httpx.Client, cache_id: str, image: PushedImage) -> None:
    """Until the build's progress shows some of the image's layer bytes arrived."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = client.get(f"/v5/imagecaches/{cache_id}/progress").json()
        assert state["status"] == "Creating", state
        pulled = sum(entry["pulled_bytes"] for entry in state["images"])
        if pulled > len(image.manifest) + image.config_size:
            return
        time.sleep(0.05)
    raise AssertionError(f"the download of cache {cache_id} never started")


def refused_while_a_fetches(
    service: Service,
    client_a: httpx.Client,
    cache_a: str,
    token_b: str,
    tiny: TinyRegistry,
    repository: str,
    victim: PushedImage,
) -> None:
    """B's build of a manifest naming the victim's layer (which B's own registry does not
    serve) fails naming the layer, after asking B's registry, while A is still fetching it."""
    layer = victim.layer_digests[0]
    failed = build(service, token_b, naming_manifest(tiny, repository, victim))
    still = client_a.get(f"/v5/imagecaches/{cache_a}").json()["image_cache"]
    assert still["status"] == "Creating", "A finished first: joining its fetch was not tried"
    assert failed["status"] == "Failed", failed
    assert layer in failed["message"]
    assert tiny.seen("HEAD", layer) >= 1


def test_joining_another_projects_download_needs_the_same_check(
    service: Service, private: RegistryServer
) -> None:
    victim = private_image(private, "a/inflight", 1536 * KIB, seed=1003)
    layer = victim.layer_digests[0]
    with FaultProxy(private.url) as proxy:
        proxy.throttle(f"/blobs/{layer}", 256 * KIB)
        service.add_pull_secret("iso-join-a", "regcred", proxy.endpoint, "alice", USERS["alice"])
        token_a, token_b = service.credential("iso-join-a"), service.credential("iso-join-b")
        cache_a = start_build(
            service, token_a, f"{proxy.endpoint}/a/inflight:v1", ("default:regcred",)
        )
        with service.client(token_a) as client:
            wait_for_layer_bytes(client, cache_a, victim)
            with TinyRegistry() as tiny:
                refused_while_a_fetches(
                    service, client, cache_a, token_b, tiny, "evil/join", victim
                )
            assert wait_for_status(client, cache_a, {"Available", "Failed"})["status"] == (
                "Available"
            )
    assert_unreadable(service, token_b, layer, ["evil/join", "a/inflight"])


def test_an_import_naming_a_stored_blob_must_hold_its_bytes(
    service: Service, private: RegistryServer, tmp_path: Path
) -> None:
    victim = private_image(private, "a/imported", 32 * KIB, seed=1004)
    layer = victim.layer_digests[0]
    service.add_pull_secret("iso-import-a", "regcred", private.endpoint, "alice", USERS["alice"])
    token_a = service.credential("iso-import-a")
    token_b = service.credential("iso-import-b")
    assert (
        build(service, token_a, f"{private.endpoint}/a/imported:v1", ("default:regcred",))["status"]
        == "Available"
    )

    decoy = build_image([make_layer(1 * KIB, seed=8)], label="import-decoy")
    document = json.loads(decoy.manifest)
    document["layers"] = [{"mediaType": OCI_LAYER, "digest": layer, "size": victim.layer_sizes[0]}]
    manifest = json.dumps(document).encode()
    blobs = tmp_path / "layout" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for data in (manifest, decoy.config.data):
        (blobs / sha256_digest(data).removeprefix("sha256:")).write_bytes(data)
    (blobs / layer.removeprefix("sha256:")).write_bytes(b"\0" * victim.layer_sizes[0])
    (tmp_path / "layout" / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    entry = {
        "mediaType": decoy.media_type,
        "digest": sha256_digest(manifest),
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "example.com/evil/import:v1"},
    }
    (tmp_path / "layout" / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [entry]})
    )
    refused = service.cli(
        "import",
        "--data-dir",
        str(service.data_dir),
        "--project",
        "iso-import-b",
        "--name",
        "naming-only",
        "--oci-layout",
        str(tmp_path / "layout"),
        check=False,
    )
    assert refused.returncode != 0
    assert layer in refused.stderr + refused.stdout
    with service.client(token_b) as client:
        assert client.get("/v5/imagecaches").json()["image_caches"] == []
    assert_unreadable(service, token_b, layer, ["evil/import", "a/imported"])


# --- the secret key while servers run ---------------------------------------------------------


@pytest.fixture
def own_service() -> Iterator[Service]:
    with Service() as running:
        yield running


def read_secret(service: Service, token: str, name: str) -> httpx.Response:
    with service.client(token) as client:
        return client.get(f"/api/v1/namespaces/default/secrets/{name}")


def test_a_key_rotated_while_serving_needs_no_restart(
    own_service: Service, private: RegistryServer
) -> None:
    service = own_service
    victim = private_image(private, "a/rotated", 1024 * KIB, seed=1005)
    with FaultProxy(private.url) as proxy:
        proxy.throttle(f"/blobs/{victim.layer_digests[0]}", 384 * KIB)
        service.add_pull_secret("iso-rotate", "regcred", proxy.endpoint, "alice", USERS["alice"])
        token = service.credential("iso-rotate", "admin")
        image = f"{proxy.endpoint}/a/rotated:v1"
        in_flight = start_build(service, token, image, ("default:regcred",))
        with service.client(token) as client:
            assert (
                client.get(f"/v5/imagecaches/{in_flight}").json()["image_cache"]["status"]
                == "Creating"
            )
            key_before = (service.data_dir / "secret.key").read_bytes()
            rotated = service.cli("secrets", "rotate-key", "--data-dir", str(service.data_dir))
            assert "re-sealed" in rotated.stdout
            assert (service.data_dir / "secret.key").read_bytes() != key_before
            done = wait_for_status(client, in_flight, {"Available", "Failed"})
            assert done["status"] == "Available", done
        proxy.clear()
        # A new build with the same secret opens it under the new key, without a restart.
        assert build(service, token, image, ("default:regcred",))["status"] == "Available"
    answered = read_secret(service, token, "regcred")
    assert answered.status_code == 200, answered.text
    assert "Traceback" not in service.log


def test_a_secret_no_key_opens_fails_the_build_at_once_naming_it(
    own_service: Service, private: RegistryServer
) -> None:
    service = own_service
    private_image(private, "a/lost", 16 * KIB, seed=1006)
    service.add_pull_secret("iso-lost", "regcred", private.endpoint, "alice", USERS["alice"])
    token = service.credential("iso-lost", "admin")
    # The key is lost: the server refuses to start with one that never sealed anything,
    # rather than failing every secret it meets.
    service.stop()
    key_file = service.data_dir / "secret.key"
    kept_key = key_file.read_bytes()
    key_file.write_bytes(Fernet.generate_key() + b"\n")
    with pytest.raises(RuntimeError, match="every replica must use the same key"):
        service.start()
    # With the key back, one secret damaged at rest is what no key opens.
    key_file.write_bytes(kept_key)
    with sqlite3.connect(service.data_dir / "imagedepot.db") as database:
        database.execute(
            "UPDATE secrets SET ciphertext = ? WHERE name = 'regcred'",
            (Fernet(Fernet.generate_key()).encrypt(b"{}"),),
        )
    service.start()
    started = time.monotonic()
    failed = build(service, token, f"{private.endpoint}/a/lost:v1", ("default:regcred",))
    assert failed["status"] == "Failed", failed
    assert time.monotonic() - started < 15  # not after rounds of retries
    assert "default/regcred" in failed["message"]
    assert "decrypt" in failed["message"]
    answered = read_secret(service, token, "regcred")
    assert answered.status_code == 500
    status = answered.json()
    assert status["kind"] == "Status"
    assert "default/regcred" in status["message"]
    assert "Traceback" not in service.log


def test_waiting_on_another_machines_fetch_needs_the_same_check(
    private: RegistryServer,
    postgres_cluster: PostgresCluster,
    seaweedfs: S3Engine,
    tmp_path: Path,
) -> None:
    """Project A's layer is being fetched by one worker; project B's build, on another worker
    (another machine: the fetch is claimed in the database), names that layer in a manifest
    its own registry serves without the layer. B must not wait for A's bytes and get them."""
    victim = private_image(private, "a/remote", 1536 * KIB, seed=1010)
    keeper = private_image(private, "a/keeper", 1536 * KIB, seed=1011)
    layer = victim.layer_digests[0]
    database = postgres_cluster.create_database()
    env = {
        **seaweedfs.env(),
        "IMAGEDEPOT_DATABASE_URL": postgres_cluster.url(database),
        "IMAGEDEPOT_BLOB_STORE": f"s3://{seaweedfs.new_bucket('iso')}/depot",
        "IMAGEDEPOT_SECRET_KEY": Fernet.generate_key().decode(),
    }
    try:
        with (
            FaultProxy(private.url) as proxy,
            Service(tmp_path / "front", env=env, serve_args=("--no-worker",)) as front,
            WorkerProcess(tmp_path / "w0", {**env, "IMAGEDEPOT_NODE_NAME": "m0"}),
        ):
            # ~24 s per layer: room for a second worker process to start and B to be built.
            proxy.throttle("/blobs/", 64 * KIB)
            front.add_pull_secret("iso-far-a", "regcred", proxy.endpoint, "alice", USERS["alice"])
            token_a, token_b = front.credential("iso-far-a"), front.credential("iso-far-b")
            secrets = ("default:regcred",)
            # Two slow builds fill the first worker (two at a time), so B's goes to the second.
            cache_a = start_build(front, token_a, f"{proxy.endpoint}/a/remote:v1", secrets)
            start_build(front, token_a, f"{proxy.endpoint}/a/keeper:v1", secrets)
            with front.client(token_a) as client:
                wait_for_layer_bytes(client, cache_a, victim)
                with (
                    WorkerProcess(tmp_path / "w1", {**env, "IMAGEDEPOT_NODE_NAME": "m1"}),
                    TinyRegistry() as tiny,
                ):
                    refused_while_a_fetches(
                        front, client, cache_a, token_b, tiny, "evil/far", victim
                    )
                assert (
                    wait_for_status(client, cache_a, {"Available", "Failed"}, timeout=120)["status"]
                    == "Available"
                )
            assert keeper.layer_digests[0] != layer
            assert_unreadable(front, token_b, layer, ["evil/far", "a/remote"])
    finally:
        postgres_cluster.drop_database(database)


def test_a_pull_through_in_flight_is_never_lent_to_another_project(
    private: RegistryServer,
) -> None:
    """A's first pull of a private image is still streaming its layer when B pulls, through
    its own upstream, a manifest naming that layer: B gets 404 after its own registry said it
    lacks the layer, during A's download and after it. No worker runs, so B's pull-through
    cache stays in the making (a worker would fail it at once) and only the registry port's
    own check stands between B and A's bytes."""
    victim = private_image(private, "a/through", 1536 * KIB, seed=1004)
    layer = victim.layer_digests[0]
    with (
        Service(serve_args=("--no-worker",)) as service,
        FaultProxy(private.url) as proxy,
        TinyRegistry() as tiny,
    ):
        proxy.throttle(f"/blobs/{layer}", 256 * KIB)
        service.add_pull_secret("iso-pt-a", "regcred", proxy.endpoint, "alice", USERS["alice"])
        token_a, token_b = service.credential("iso-pt-a"), service.credential("iso-pt-b")
        service.allow_pull_through("iso-pt-a", proxy.endpoint, "--pull-secret", "default:regcred")
        service.allow_pull_through("iso-pt-b", tiny.endpoint)
        assert pull(service, token_a, "a/through/manifests/v1").status_code == 200
        received: list[int] = []

        def pull_layer() -> None:
            received.append(len(pull(service, token_a, f"a/through/blobs/{layer}").content))

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            streaming = pool.submit(pull_layer)
            naming_manifest(tiny, "evil/through", victim)
            assert pull(service, token_b, "evil/through/manifests/v1").status_code == 200
            during = pull(service, token_b, f"evil/through/blobs/{layer}")
            assert not streaming.done(), "A's download finished first: nothing was tried"
            assert during.status_code == 404, during.text
            assert tiny.seen("HEAD", layer) >= 1
            streaming.result(timeout=60)
        assert received == [victim.layer_sizes[0]]
        after = pull(service, token_b, f"evil/through/blobs/{layer}")
        assert after.status_code == 404
        deadline = time.monotonic() + 10  # the proxy records a request once it has finished
        while not proxy.seen(f"/blobs/{layer}", method="GET") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(proxy.seen(f"/blobs/{layer}", method="GET")) == 1  # A's one download
