"""Benchmark: building a cache from a loopback docker-registry, next to the peers, in one run.

Pushes several synthetic images (hundreds of MB, shared base layers) to a fresh
docker-registry, then times, on the same machine and data:

* `skopeo copy` of each image into one OCI layout (sequential, as a script would);
* the raw limit: every unique blob read in parallel with sha256 and written once;
* imagedepot: `POST /v5/imagecaches` until `Available`, on a fresh data dir.

Prints the times and the ratios. Not a test: nothing is asserted.
Usage: python bench/build_cache.py [--base-mb 80] [--layer-mb 40] [--images 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import print_round, print_summary
from tests.support.images import make_layer, push_image
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status

MB = 1024 * 1024


def skopeo_copy(registry: RegistryServer, refs: list[str], layout: Path) -> float:
    started = time.perf_counter()
    for ref in refs:
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                f"docker://{registry.endpoint}/{ref}",
                f"oci:{layout}:{ref.replace('/', '-')}",
            ],
            check=True,
        )
    return time.perf_counter() - started


async def _raw_fetch(
    registry: RegistryServer, blobs: dict[str, str], target: Path, durable: bool
) -> None:
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def fetch(digest: str, repository: str) -> None:
            hasher = hashlib.sha256()
            path = target / digest.removeprefix("sha256:")
            async with session.get(f"{registry.url}/v2/{repository}/blobs/{digest}") as response:
                with path.open("wb") as file:
                    async for chunk in response.content.iter_chunked(1 << 20):
                        hasher.update(chunk)
                        file.write(chunk)
                    if durable:
                        file.flush()
                        os.fsync(file.fileno())
            assert "sha256:" + hasher.hexdigest() == digest

        await asyncio.gather(*(fetch(d, r) for d, r in blobs.items()))


def raw_limit(
    registry: RegistryServer, blobs: dict[str, str], target: Path, *, durable: bool = False
) -> float:
    """Every unique blob fetched at once with sha256 and written once; `durable` adds the
    fsync that imagedepot's commit rule requires."""
    target.mkdir(parents=True)
    started = time.perf_counter()
    asyncio.run(_raw_fetch(registry, blobs, target, durable))
    return time.perf_counter() - started


def imagedepot_build(registry: RegistryServer, refs: list[str]) -> float:
    with Service() as service:
        token = service.credential("bench", "admin")
        with service.client(token) as client:
            started = time.perf_counter()
            created = client.post(
                "/v5/imagecaches",
                json={
                    "name": "bench",
                    "images": [f"{registry.endpoint}/{ref}" for ref in refs],
                    "image_cache_size": 400,
                },
            )
            assert created.status_code == 201, created.text
            cache_id = created.json()["image_cache"]["id"]
            final = wait_for_status(
                client, cache_id, {"Available", "Failed"}, timeout=600, poll=0.01
            )
            elapsed = time.perf_counter() - started
            assert final["status"] == "Available", final
        shutil.rmtree(service.data_dir, ignore_errors=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-mb", type=int, default=80)
    parser.add_argument("--layer-mb", type=int, default=40)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    print("generating layers…", flush=True)
    base = make_layer(args.base_mb * MB, seed=1)
    with RegistryServer() as registry:
        refs, blobs = [], {}
        for index in range(args.images):
            layers = [
                base,
                make_layer(args.layer_mb * MB, seed=100 + 2 * index),
                make_layer(args.layer_mb // 2 * MB, seed=101 + 2 * index),
            ]
            pushed = push_image(registry.url, f"bench/app{index}", "v1", layers)
            refs.append(f"bench/app{index}:v1")
            for digest in pushed.blob_digests:
                blobs.setdefault(digest, f"bench/app{index}")
        total_mb = args.base_mb + args.images * (args.layer_mb + args.layer_mb // 2)
        print(f"{args.images} images, {len(blobs)} unique blobs, ~{total_mb} MB unique", flush=True)

        results: dict[str, list[float]] = {
            "skopeo": [],
            "raw": [],
            "raw+fsync": [],
            "imagedepot": [],
        }
        for round_number in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
                work = Path(scratch)
                # Each run starts with nothing dirty in the page cache: the writes of the
                # runs before it that do not fsync (skopeo, raw) would otherwise still be
                # going to disk, in the way of the fsyncs of the run after them.
                os.sync()
                results["skopeo"].append(skopeo_copy(registry, refs, work / "layout"))
                os.sync()
                results["raw"].append(raw_limit(registry, blobs, work / "raw"))
                os.sync()
                results["raw+fsync"].append(
                    raw_limit(registry, blobs, work / "raw-durable", durable=True)
                )
                os.sync()
                results["imagedepot"].append(imagedepot_build(registry, refs))
            print_round(round_number, results)

    best = print_summary(results)
    print(f"imagedepot / skopeo    = {best['imagedepot'] / best['skopeo']:.2f}  (target < 1)")
    print(f"imagedepot / raw limit = {best['imagedepot'] / best['raw']:.2f}  (target <= 1.3)")
    print(f"imagedepot / raw+fsync = {best['imagedepot'] / best['raw+fsync']:.2f}")


if __name__ == "__main__":
    main()
