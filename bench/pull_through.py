"""Benchmark: first pulls through imagedepot's registry port against a direct pull from the
upstream docker-registry and a first pull through docker-registry in proxy mode (`proxy:
remoteurl`), and five concurrent first pulls against that proxy, in one run on one machine.

Every imagedepot and proxy measurement starts from an empty server (a fresh data dir), so
each is a true first pull. Both pull-through modes are timed: streaming (a client follows
the upstream download; the last byte waits for verification) and verify-then-serve
(`IMAGEDEPOT_PULL_THROUGH_STREAMING=false`), with the time to the first byte of the largest
layer for each. Upstream GETs per blob are counted through a proxy in front of the upstream.
Not a test: nothing is asserted.
Usage: python bench/pull_through.py [--layer-mb 50] [--layers 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.report import print_round, print_summary
from bench.serve import skopeo_pull
from tests.support.faultproxy import FaultProxy
from tests.support.images import make_layer, push_image
from tests.support.registry import RegistryServer
from tests.support.service import Service

MB = 1024 * 1024
CLIENTS = 5


def concurrent_pulls(pull: Callable[[Path], float], scratch: Path) -> float:
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(pull, [scratch / f"client-{n}" for n in range(CLIENTS)]))
    return time.perf_counter() - started


def fresh_imagedepot(upstream: str, streaming: bool) -> tuple[Service, str]:
    """A server not started yet (the caller's `with` starts and stops it), on a data dir
    that already holds a project allowed to pull `upstream` through."""
    service = Service(env={"IMAGEDEPOT_PULL_THROUGH_STREAMING": "true" if streaming else "false"})
    token = service.credential("bench-through")
    service.allow_pull_through("bench-through", upstream)
    return service, token


def first_byte(service: Service, token: str, digest: str) -> float:
    """Seconds from asking a fresh server for the manifest and then `digest` to its first byte."""
    base = f"http://127.0.0.1:{service.registry_port}/v2/bench/through"
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    manifest = httpx.get(
        f"{base}/manifests/v1",
        headers={**headers, "Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=60,
    )
    manifest.raise_for_status()
    with httpx.stream("GET", f"{base}/blobs/{digest}", headers=headers, timeout=300) as response:
        response.raise_for_status()
        for _ in response.iter_raw(64 * 1024):
            return time.perf_counter() - started
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer-mb", type=int, default=50)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    print("generating layers…", flush=True)
    layers = [make_layer(args.layer_mb * MB, seed=900 + n) for n in range(args.layers)]
    total_mb = sum(layer.size for layer in layers) / MB
    largest = max(layers, key=lambda layer: layer.size).digest
    with RegistryServer() as upstream, FaultProxy(upstream.url) as counted:
        pushed = push_image(upstream.url, "bench/through", "v1", layers)
        print(f"one image, {args.layers} layers, {total_mb:.0f} MB", flush=True)
        single: dict[str, list[float]] = {
            "direct": [],
            "imagedepot": [],
            "imagedepot verify-first": [],
            "docker-registry proxy": [],
        }
        latency: dict[str, list[float]] = {"imagedepot": [], "imagedepot verify-first": []}
        five: dict[str, list[float]] = {"imagedepot": [], "docker-registry proxy": []}
        upstream_gets: dict[str, int] = {}
        with tempfile.TemporaryDirectory(prefix="bench-through-") as work:
            scratch = Path(work)
            for round_number in range(args.rounds):
                single["direct"].append(
                    skopeo_pull(f"{upstream.endpoint}/bench/through:v1", scratch / "direct")
                )
                for name, streaming in (("imagedepot", True), ("imagedepot verify-first", False)):
                    service, token = fresh_imagedepot(upstream.endpoint, streaming)
                    with service:
                        single[name].append(
                            skopeo_pull(
                                f"127.0.0.1:{service.registry_port}/bench/through:v1",
                                scratch / name,
                                f"x:{token}",
                            )
                        )
                    service, token = fresh_imagedepot(upstream.endpoint, streaming)
                    with service:
                        latency[name].append(first_byte(service, token, largest))
                with RegistryServer(proxy_remote=upstream.url) as mirror:
                    single["docker-registry proxy"].append(
                        skopeo_pull(f"{mirror.endpoint}/bench/through:v1", scratch / "proxy")
                    )
                print_round(round_number, single)

                counted.clear()
                service, token = fresh_imagedepot(counted.endpoint, True)
                with service:
                    source = f"127.0.0.1:{service.registry_port}/bench/through:v1"
                    five["imagedepot"].append(
                        concurrent_pulls(
                            lambda layout, s=source, t=token: skopeo_pull(s, layout, f"x:{t}"),
                            scratch,
                        )
                    )
                upstream_gets["imagedepot"] = sum(
                    len(counted.seen(f"/blobs/{d}", method="GET")) for d in pushed.blob_digests
                )
                counted.clear()
                with RegistryServer(proxy_remote=counted.url) as mirror:
                    source = f"{mirror.endpoint}/bench/through:v1"
                    five["docker-registry proxy"].append(
                        concurrent_pulls(lambda layout, s=source: skopeo_pull(s, layout), scratch)
                    )
                upstream_gets["docker-registry proxy"] = sum(
                    len(counted.seen(f"/blobs/{d}", method="GET")) for d in pushed.blob_digests
                )
                print_round(round_number, five)

    best = print_summary(single, total_mb)
    for name in ("imagedepot", "imagedepot verify-first", "docker-registry proxy"):
        print(f"{name} / direct = {best[name] / best['direct']:.2f}  (first pull; target <= 1.2)")
    print("time to the first byte of the largest layer, from the manifest request (best):")
    for name, times in latency.items():
        print(f"  {name:<24} {min(times):6.3f}s")
    print(f"\n{CLIENTS} concurrent first pulls:")
    best_five = print_summary(five, total_mb * CLIENTS)
    ratio = best_five["imagedepot"] / best_five["docker-registry proxy"]
    print(f"imagedepot / docker-registry proxy = {ratio:.2f}  ({CLIENTS} concurrent first pulls)")
    blobs = len(pushed.blob_digests)
    for name, gets in upstream_gets.items():
        print(f"  upstream blob GETs, last round, {name}: {gets} for {blobs} blobs")


if __name__ == "__main__":
    main()
