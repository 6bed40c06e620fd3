"""Benchmark: imagedepot on PostgreSQL and a real S3 engine, as several machines run it.

In one run, on the same engine and data:

* building the bench images into the bucket, against the raw limit (every unique blob
  fetched at once with sha256 and put as a multipart upload with the same part size and
  parallelism);
* twenty caches built by one worker process, then by two;
* concurrent skopeo pulls through one replica, then spread over two;
* a pull whose blobs are redirected to presigned bucket URLs, against streaming them
  through imagedepot.

Prints the times and the ratios. Not a test: nothing is asserted.
Usage: python bench/scale.py [--engine seaweedfs|radosgw] [--base-mb 60] [--layer-mb 30]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import aiohttp
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.images import make_layer, push_image
from tests.support.postgres import PostgresCluster, running_cluster
from tests.support.registry import RegistryServer
from tests.support.s3engines import S3Engine, running_radosgw, running_seaweedfs
from tests.support.service import Service, WorkerProcess, wait_for_status

MB = 1024 * 1024
PART = 8 * MB
PARALLEL_PARTS = 8


class Bucketed:
    """A fresh database and bucket per measurement, with the env every process shares."""

    def __init__(self, engine: S3Engine, cluster: PostgresCluster, work: Path) -> None:
        self.engine, self.cluster, self.work = engine, cluster, work
        self.count = 0

    @contextmanager
    def env(self, **extra: str) -> Iterator[dict[str, str]]:
        self.count += 1
        database = self.cluster.create_database()
        bucket = self.engine.new_bucket("bench")
        try:
            yield {
                **self.engine.env(),
                "IMAGEDEPOT_DATABASE_URL": self.cluster.url(database),
                "IMAGEDEPOT_BLOB_STORE": f"s3://{bucket}/bench",
                "IMAGEDEPOT_SECRET_KEY": Fernet.generate_key().decode(),
                **extra,
            }
        finally:
            self.cluster.drop_database(database)

    def directory(self, name: str) -> Path:
        slug = "".join(c if c.isalnum() else "-" for c in name)
        return self.work / f"{self.count}-{slug}"


def raw_limit(registry: RegistryServer, blobs: dict[str, str], engine: S3Engine) -> float:
    """Every unique blob fetched at once, hashed, and put in PART-sized multipart parts with
    PARALLEL_PARTS in flight: what imagedepot's build does, with nothing else."""
    client = engine.client()
    bucket = engine.new_bucket("raw")
    pool = ThreadPoolExecutor(PARALLEL_PARTS)
    in_flight = asyncio.Semaphore(PARALLEL_PARTS)

    async def fetch(session: aiohttp.ClientSession, digest: str, repository: str) -> None:
        hasher, buffer, parts = hashlib.sha256(), bytearray(), []
        upload = await asyncio.to_thread(client.create_multipart_upload, Bucket=bucket, Key=digest)
        loop = asyncio.get_running_loop()

        async def put(number: int, data: bytes) -> dict[str, object]:
            async with in_flight:
                answer = await loop.run_in_executor(
                    pool,
                    lambda: client.upload_part(
                        Bucket=bucket,
                        Key=digest,
                        UploadId=upload["UploadId"],
                        PartNumber=number,
                        Body=data,
                    ),
                )
            return {"ETag": answer["ETag"], "PartNumber": number}

        async with session.get(f"{registry.url}/v2/{repository}/blobs/{digest}") as response:
            async for chunk in response.content.iter_chunked(1 << 20):
                hasher.update(chunk)
                buffer += chunk
                if len(buffer) >= PART:
                    parts.append(asyncio.ensure_future(put(len(parts) + 1, bytes(buffer))))
                    buffer.clear()
        parts.append(asyncio.ensure_future(put(len(parts) + 1, bytes(buffer))))
        done = await asyncio.gather(*parts)
        assert "sha256:" + hasher.hexdigest() == digest
        await asyncio.to_thread(
            lambda: client.complete_multipart_upload(
                Bucket=bucket,
                Key=digest,
                UploadId=upload["UploadId"],
                MultipartUpload={"Parts": done},  # type: ignore[typeddict-item]
            )
        )

    async def everything() -> None:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            await asyncio.gather(*(fetch(session, d, r) for d, r in blobs.items()))

    started = time.perf_counter()
    asyncio.run(everything())
    pool.shutdown()
    return time.perf_counter() - started


def build(service: Service, token: str, images: list[list[str]]) -> float:
    """Create one cache per entry of `images` at once; seconds until all are Available."""
    with service.client(token) as client:
        started = time.perf_counter()
        ids = []
        for index, refs in enumerate(images):
            created = client.post(
                "/v5/imagecaches",
                json={"name": f"bench-{index}", "images": refs, "image_cache_size": 400},
            )
            assert created.status_code == 201, created.text
            ids.append(created.json()["image_cache"]["id"])
        for cache_id in ids:
            final = wait_for_status(client, cache_id, {"Available", "Failed"}, 900, poll=0.02)
            assert final["status"] == "Available", final
        return time.perf_counter() - started


def skopeo_pull(service: Service, token: str, ref: str, layout: Path) -> None:
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--src-creds",
            f"any:{token}",
            f"docker://127.0.0.1:{service.registry_port}/{ref}",
            f"oci:{layout}:x",
        ],
        check=True,
    )


def pulls(replicas: list[Service], token: str, ref: str, clients: int, work: Path) -> float:
    """`clients` skopeo pulls at once, spread over `replicas`; seconds for all of them."""
    work.mkdir(parents=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(
            pool.map(
                lambda n: skopeo_pull(replicas[n % len(replicas)], token, ref, work / f"p{n}"),
                range(clients),
            )
        )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["seaweedfs", "radosgw"], default="seaweedfs")
    parser.add_argument("--base-mb", type=int, default=60)
    parser.add_argument("--layer-mb", type=int, default=30)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-")))
        running = running_seaweedfs if args.engine == "seaweedfs" else running_radosgw
        engine = stack.enter_context(running(work / "engine"))
        cluster = stack.enter_context(running_cluster())
        registry = stack.enter_context(RegistryServer())
        bucketed = Bucketed(engine, cluster, work)
        print("generating layers…", flush=True)
        base = make_layer(args.base_mb * MB, seed=1)
        refs, blobs = [], {}
        for index in range(3):
            layers = [base, make_layer(args.layer_mb * MB, seed=100 + index)]
            pushed = push_image(registry.url, f"bench/app{index}", "v1", layers)
            refs.append(f"{registry.endpoint}/bench/app{index}:v1")
            for digest in pushed.blob_digests:
                blobs.setdefault(digest, f"bench/app{index}")
        small = []
        for index in range(20):
            layers = [make_layer(4 * MB, seed=500 + index), make_layer(1 * MB, seed=600 + index)]
            push_image(registry.url, f"bench/small{index}", "v1", layers)
            small.append([f"{registry.endpoint}/bench/small{index}:v1"])
        total_mb = args.base_mb + 3 * args.layer_mb
        print(f"engine {engine.name}; {len(blobs)} unique blobs, ~{total_mb} MB", flush=True)

        figures: dict[str, float] = {"raw": raw_limit(registry, blobs, engine)}
        with bucketed.env() as env, Service(bucketed.directory("build"), env=env) as service:
            token = service.credential("bench", "admin")
            figures["build"] = build(service, token, [refs])

        for workers in (1, 2):
            with ExitStack() as inner:
                env = inner.enter_context(bucketed.env())
                front = inner.enter_context(
                    Service(bucketed.directory("front"), env=env, serve_args=("--no-worker",))
                )
                for n in range(workers):
                    inner.enter_context(WorkerProcess(bucketed.directory(f"worker{n}"), env))
                token = front.credential("bench", "admin")
                figures[f"20 caches, {workers} worker"] = build(front, token, small)

        for redirect in ("0", "300"):
            with ExitStack() as inner:
                env = inner.enter_context(bucketed.env(IMAGEDEPOT_S3_REDIRECT_SECONDS=redirect))
                first = inner.enter_context(Service(bucketed.directory("r1"), env=env))
                token = first.credential("bench", "admin")
                build(first, token, [refs[:1]])
                ref = "bench/app0:v1"
                if redirect == "0":
                    second = inner.enter_context(
                        Service(bucketed.directory("r2"), env=env, serve_args=("--no-worker",))
                    )
                    for replicas in ([first], [first, second]):
                        name = f"{args.clients} pulls, {len(replicas)} replica"
                        figures[name] = pulls(
                            replicas, token, ref, args.clients, bucketed.directory(name)
                        )
                label = "pull, presigned redirect" if redirect != "0" else "pull, streamed"
                figures[label] = pulls([first], token, ref, 1, bucketed.directory(label))

    print("\nseconds:")
    for name, seconds in figures.items():
        print(f"  {name:<28} {seconds:7.2f}")
    ratio = figures["build"] / figures["raw"]
    print(f"\nbuild into S3 / raw limit           = {ratio:.2f}  (target <= 1.3)")
    scaling = figures["20 caches, 1 worker"] / figures["20 caches, 2 worker"]
    print(f"20 caches: 1 worker / 2 workers      = {scaling:.2f}  (2 would be linear)")
    one = args.clients / figures[f"{args.clients} pulls, 1 replica"]
    two = args.clients / figures[f"{args.clients} pulls, 2 replica"]
    print(f"pulls per second: 1 replica {one:.2f}, 2 replicas {two:.2f} ({two / one:.2f}x)")
    redirect_ratio = figures["pull, presigned redirect"] / figures["pull, streamed"]
    print(f"pull with redirect / streamed        = {redirect_ratio:.2f}")


if __name__ == "__main__":
    main()
