"""Benchmark: API and registry-port load while builds run, on SQLite and on PostgreSQL, in one run.

Pushes small images and a few ~100 MB ones to a fresh docker-registry. Then, for each store
(SQLite in a temp data dir; a throwaway PostgreSQL 15 cluster), starts `imagedepot serve`
with the per-credential rate limit off, builds a cache of every small image (something to
list and pull) and makes a few Glance image records, times the big builds alone (all at
once), and runs `--clients` concurrent clients for `--duration` seconds mixing

* `GET /v5/imagecaches` (CCE list),
* `GET /v5/imagecaches/{id}` (CCE get of one cache),
* `GET /v2/images` (Glance list),
* `GET /v2/<name>/manifests/<tag>` on the registry port (with a pull token from `/token`),

while as many other big builds of distinct images run. Prints per store: requests/s,
p50/p95/p99 latency, errors, the server's CPU (all its processes, from /proc) and each
build's time under load against alone; then PostgreSQL/SQLite throughput. `--processes N`
passes IMAGEDEPOT_API_PROCESSES=N to the server. Not a test: nothing is asserted.
Usage: python bench/load.py [--clients 50] [--duration 20] [--builds 3] [--build-mb 100]
       [--stores sqlite,postgresql] [--processes N] [--py-spy DIR [--gil]]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.serve import tree_cpu_seconds
from tests.support.images import KIB, OCI_MANIFEST, make_layer, push_image
from tests.support.postgres import running_cluster
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status

MB = 1024 * 1024
STORES = ("sqlite", "postgresql")
KINDS = ("cce-list", "cce-get", "glance-list", "manifest")
WARM_UP = 2.0
"""Seconds of load before the builds start (and before anything is counted)."""
PY_SPY = Path(sys.executable).with_name("py-spy")


@dataclass(frozen=True)
class Images:
    small: list[str]
    """Repositories (tag v1) of the small images every store caches first."""
    alone: list[str]
    """Big images built with no other traffic."""
    loaded: list[str]
    """Big images built under load (distinct from `alone`, so their blobs are fetched)."""


@dataclass
class LoadResult:
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)

    def all_latencies(self) -> list[float]:
        return sorted(t for times in self.latencies.values() for t in times)


def push_images(registry: RegistryServer, small: int, builds: int, build_mb: int) -> Images:
    for index in range(small):
        push_image(registry.url, f"load/small{index}", "v1", [make_layer(64 * KIB, seed=index)])
    big = []
    for index in range(2 * builds):
        # One at a time: each layer is dropped once pushed.
        layer = make_layer(build_mb * MB, seed=1000 + index)
        push_image(registry.url, f"load/big{index}", "v1", [layer])
        big.append(f"load/big{index}")
    return Images([f"load/small{i}" for i in range(small)], big[:builds], big[builds:])


@contextlib.contextmanager
def store_env(store: str) -> Iterator[dict[str, str]]:
    """The server env selecting `store`: nothing for SQLite (the data dir's file), a fresh
    database on a throwaway cluster for PostgreSQL."""
    if store == "sqlite":
        yield {}
        return
    with running_cluster() as cluster:
        yield {"IMAGEDEPOT_DATABASE_URL": cluster.url(cluster.create_database())}


def build(service: Service, token: str, name: str, image: str) -> float:
    """Seconds from POSTing a cache of `image` until it is Available."""
    with service.client(token) as client:
        started = time.perf_counter()
        created = client.post("/v5/imagecaches", json={"name": name, "images": [image]})
        assert created.status_code == 201, created.text
        final = wait_for_status(
            client, created.json()["image_cache"]["id"], {"Available", "Failed"}, 600, 0.05
        )
        elapsed = time.perf_counter() - started
    assert final["status"] == "Available", final
    return elapsed


def build_all(
    pool: ThreadPoolExecutor, service: Service, token: str, prefix: str, images: list[str]
) -> list[float]:
    futures = [
        pool.submit(build, service, token, f"{prefix}{index}", image)
        for index, image in enumerate(images)
    ]
    return [future.result() for future in futures]


def pull_token(service: Service, token: str, repositories: list[str]) -> str:
    """A bearer token from the registry port's /token, as a container runtime gets one."""
    login = base64.b64encode(f"load:{token}".encode()).decode()
    scopes = [("scope", f"repository:{name}:pull") for name in repositories]
    response = httpx.get(
        f"http://127.0.0.1:{service.registry_port}/token",
        params=[("service", "imagedepot"), *scopes],
        headers={"Authorization": f"Basic {login}"},
    )
    response.raise_for_status()
    issued: str = response.json()["token"]
    return issued


async def run_load(
    service: Service,
    token: str,
    bearer: str,
    cache_ids: list[str],
    repositories: list[str],
    clients: int,
    seconds: float,
    counting: asyncio.Event,
) -> LoadResult:
    """`clients` loops, each sending one request after the other of every kind in turn, until
    `seconds` after `counting` is set; only requests started after it are counted."""
    api = service.url
    registry = f"http://127.0.0.1:{service.registry_port}"
    api_headers = {"X-Auth-Token": token}
    registry_headers = {"Authorization": f"Bearer {bearer}", "Accept": OCI_MANIFEST}
    result = LoadResult()
    stop_at = float("inf")

    def request(kind: str, n: int) -> tuple[str, dict[str, str]]:
        if kind == "cce-list":
            return f"{api}/v5/imagecaches", api_headers
        if kind == "cce-get":
            return f"{api}/v5/imagecaches/{cache_ids[n % len(cache_ids)]}", api_headers
        if kind == "glance-list":
            return f"{api}/v2/images", api_headers
        return f"{registry}/v2/{repositories[n % len(repositories)]}/manifests/v1", registry_headers

    # aiohttp rather than httpx: httpx's pool spent ~10 ms of client CPU per request with 50
    # connections, which made the client the bottleneck on a 2-core machine.
    connector = aiohttp.TCPConnector(limit=2 * clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one_client(number: int) -> None:
            n = number
            while time.perf_counter() < stop_at:
                kind = KINDS[n % len(KINDS)]
                url, headers = request(kind, n // len(KINDS))
                counted = counting.is_set()
                started = time.perf_counter()
                try:
                    async with session.get(url, headers=headers) as response:
                        await response.read()
                        failure = None if response.status == 200 else str(response.status)
                except (aiohttp.ClientError, TimeoutError) as error:
                    failure = type(error).__name__
                took = time.perf_counter() - started
                if counted and started < stop_at:
                    result.latencies[kind].append(took)
                    if failure:
                        result.errors[f"{kind} {failure}"] += 1
                n += 1

        tasks = [asyncio.create_task(one_client(number)) for number in range(clients)]
        await counting.wait()
        began = time.perf_counter()
        stop_at = began + seconds
        await asyncio.gather(*tasks)
        result.seconds = time.perf_counter() - began
    return result


def percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latency_text(ordered: list[float]) -> str:
    return " ".join(
        f"p{label} {percentile(ordered, q) * 1000:5.0f} ms"
        for label, q in (("50", 0.50), ("95", 0.95), ("99", 0.99))
    )


def py_spy(pid: int, seconds: float, output: Path, gil: bool) -> subprocess.Popen[bytes]:
    """py-spy sampling the server (and what it forked) in the collapsed-stack format; `gil`
    samples only the thread holding the GIL (where a GIL-bound server's CPU goes)."""
    command = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(int(seconds))]
    command += [
        "--rate",
        "50",
        "--format",
        "raw",
        "--subprocesses",
        "--nonblocking",
        "--output",
        str(output),
    ]
    if gil:
        command.append("--gil")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def measure_store(
    store: str, images: Images, registry: RegistryServer, args: argparse.Namespace
) -> float:
    processes = {"IMAGEDEPOT_API_PROCESSES": str(args.processes)} if args.processes else {}
    with store_env(store) as env:
        service = Service(env={"IMAGEDEPOT_RATE_LIMIT": "0", **processes, **env})
        try:
            with service, ThreadPoolExecutor(2 * args.builds) as pool:
                token = service.credential("load")
                small = [f"{registry.endpoint}/{name}:v1" for name in images.small]
                build_all(pool, service, token, "small", small)
                with service.client(token) as client:
                    listed = client.get("/v5/imagecaches").json()["image_caches"]
                    cache_ids = [cache["id"] for cache in listed]
                    for index in range(args.glance_images):
                        created = client.post(
                            "/v2/images",
                            json={
                                "name": f"vm{index}",
                                "disk_format": "raw",
                                "container_format": "bare",
                            },
                        )
                        assert created.status_code == 201, created.text
                bearer = pull_token(service, token, images.small)
                big = [f"{registry.endpoint}/{name}:v1" for name in images.alone]
                alone = build_all(pool, service, token, "alone", big)

                counting = asyncio.Event()
                spy: subprocess.Popen[bytes] | None = None

                async def scenario() -> tuple[LoadResult, list[float], float]:
                    nonlocal spy
                    load = asyncio.create_task(
                        run_load(
                            service,
                            token,
                            bearer,
                            cache_ids,
                            images.small,
                            args.clients,
                            args.duration,
                            counting,
                        )
                    )
                    await asyncio.sleep(WARM_UP)
                    if args.py_spy:
                        spy = py_spy(
                            service.pid, args.duration, args.py_spy / f"{store}.txt", args.gil
                        )
                    cpu_before = tree_cpu_seconds(service.pid)
                    counting.set()
                    loaded = [f"{registry.endpoint}/{name}:v1" for name in images.loaded]
                    builds = asyncio.create_task(
                        asyncio.to_thread(build_all, pool, service, token, "loaded", loaded)
                    )
                    result = await load
                    cpu = tree_cpu_seconds(service.pid) - cpu_before
                    return result, await builds, cpu

                client_before = resource.getrusage(resource.RUSAGE_SELF)
                result, under_load, server_cpu = asyncio.run(scenario())
                client_after = resource.getrusage(resource.RUSAGE_SELF)
                if spy is not None:
                    spy.wait()
        finally:
            shutil.rmtree(service.data_dir, ignore_errors=True)

    ordered = result.all_latencies()
    rate = len(ordered) / result.seconds
    client_cpu = (client_after.ru_utime + client_after.ru_stime) - (
        client_before.ru_utime + client_before.ru_stime
    )
    title = f"{store}, {args.processes or 'default'} API process(es)"
    print(f"== {title}: {args.clients} clients for {result.seconds:.1f}s ==")
    print(
        f"  all          {rate:7.1f} req/s  {latency_text(ordered)}"
        f"  errors {sum(result.errors.values())}"
    )
    for kind in KINDS:
        times = sorted(result.latencies[kind])
        print(f"  {kind:<12} {len(times) / result.seconds:7.1f} req/s  {latency_text(times)}")
    for error, count in result.errors.most_common():
        print(f"  error: {error} x{count}")
    print(
        f"  server CPU {100 * server_cpu / result.seconds:.0f}% of one core"
        f" (load client {100 * client_cpu / result.seconds:.0f}%, builds included)"
    )
    for index, (quiet, busy) in enumerate(zip(alone, under_load, strict=True)):
        print(
            f"  build {index + 1}: {busy:6.2f}s under load, {quiet:6.2f}s alone ({busy / quiet:.1f}x)"
        )
    print(
        f"  mean build: {statistics.mean(under_load) / statistics.mean(alone):.1f}x alone",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--builds", type=int, default=3)
    parser.add_argument("--build-mb", type=int, default=100)
    parser.add_argument("--small-images", type=int, default=20, help="caches to list and pull")
    parser.add_argument("--glance-images", type=int, default=20)
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated")
    parser.add_argument("--processes", type=int, default=0, help="IMAGEDEPOT_API_PROCESSES")
    parser.add_argument("--py-spy", type=Path, help="write a py-spy profile per store here")
    parser.add_argument("--gil", action="store_true", help="py-spy samples the GIL holder only")
    args = parser.parse_args()
    stores = [store.strip() for store in args.stores.split(",") if store.strip()]
    unknown = set(stores) - set(STORES)
    if unknown:
        parser.error(f"unknown store(s) {sorted(unknown)}: choose from {STORES}")
    if args.py_spy:
        args.py_spy.mkdir(parents=True, exist_ok=True)

    print(
        f"pushing {args.small_images} small and {2 * args.builds} x {args.build_mb} MB images…",
        flush=True,
    )
    results: dict[str, float] = {}
    with RegistryServer() as registry:
        images = push_images(registry, args.small_images, args.builds, args.build_mb)
        for store in stores:
            results[store] = measure_store(store, images, registry, args)

    if set(results) == set(STORES):
        ratio = results["postgresql"] / results["sqlite"]
        print(f"postgresql / sqlite throughput = {ratio:.2f}  (target >= 0.8)")


if __name__ == "__main__":
    main()
