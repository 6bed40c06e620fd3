"""Benchmark: pulling one cached image with skopeo from imagedepot's registry port and from
Debian's docker-registry, in one run on the same machine and data.

Pushes a synthetic image (a few hundred MB of random layers) to a fresh docker-registry,
builds an imagedepot cache of it, then alternates `skopeo copy` from each server into a
fresh OCI layout and prints the times and the ratio. A raw streaming GET of every layer from
each server is timed too, which shows the servers apart from skopeo's own costs. Not a test:
nothing is asserted.
Usage: python bench/serve.py [--layer-mb 100] [--layers 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.report import print_round, print_summary
from tests.support.images import make_layer, push_image
from tests.support.registry import RegistryServer
from tests.support.service import Service, wait_for_status

MB = 1024 * 1024


def skopeo_pull(source: str, layout: Path, creds: str | None = None) -> float:
    shutil.rmtree(layout, ignore_errors=True)
    command = ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
    if creds:
        command += ["--src-creds", creds]
    started = time.perf_counter()
    subprocess.run([*command, f"docker://{source}", f"oci:{layout}:bench"], check=True)
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """User plus system time of every thread of a process so far (Linux /proc)."""
    ticks = 0
    for thread in Path(f"/proc/{pid}/task").iterdir():
        fields = (thread / "stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """`root` and its descendants, alive now (a supervisor's children, say)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def tree_cpu_seconds(root: int) -> float:
    """CPU time of `root` and its descendants so far (those that ended meanwhile left out)."""
    total = 0.0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def raw_get(
    base_url: str, layers: tuple[str, ...], headers: dict[str, str], server_pid: int
) -> tuple[float, float]:
    """Wall time of streaming every layer, and the CPU time the server spent on it."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        cpu_before = cpu_seconds(server_pid)
        started = time.perf_counter()
        for digest in layers:
            with client.stream("GET", f"/v2/bench/served/blobs/{digest}") as response:
                response.raise_for_status()
                for _ in response.iter_raw(MB):
                    pass
        return time.perf_counter() - started, cpu_seconds(server_pid) - cpu_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer-mb", type=int, default=100)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    print("generating layers…", flush=True)
    layers = [make_layer(args.layer_mb * MB, seed=300 + n) for n in range(args.layers)]
    total_mb = sum(layer.size for layer in layers) / MB
    with RegistryServer() as registry, Service() as service:
        pushed = push_image(registry.url, "bench/served", "v1", layers)
        token = service.credential("bench-serve")
        with service.client(token) as client:
            created = client.post(
                "/v5/imagecaches",
                json={"name": "served", "images": [f"{registry.endpoint}/bench/served:v1"]},
            )
            assert created.status_code == 201, created.text
            cache_id = created.json()["image_cache"]["id"]
            final = wait_for_status(client, cache_id, {"Available", "Failed"}, timeout=600)
            assert final["status"] == "Available", final
        print(f"one image, {args.layers} layers, {total_mb:.0f} MB", flush=True)

        sources = {
            "docker-registry": (f"{registry.endpoint}/bench/served:v1", None),
            "imagedepot": (f"127.0.0.1:{service.registry_port}/bench/served:v1", f"x:{token}"),
        }
        raw_sources = {
            "docker-registry": (registry.url, {}, registry.pid),
            "imagedepot": (
                f"http://127.0.0.1:{service.registry_port}",
                {"Authorization": f"Bearer {token}"},
                service.pid,
            ),
        }
        results: dict[str, list[float]] = {name: [] for name in sources}
        raw: dict[str, list[float]] = {name: [] for name in sources}
        server_cpu: dict[str, list[float]] = {name: [] for name in sources}
        with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
            for round_number in range(args.rounds):
                order = list(sources) if round_number % 2 == 0 else list(reversed(sources))
                for name in order:
                    source, creds = sources[name]
                    results[name].append(skopeo_pull(source, Path(scratch) / name, creds))
                    base_url, headers, pid = raw_sources[name]
                    took, cpu = raw_get(base_url, pushed.layer_digests, headers, pid)
                    raw[name].append(took)
                    server_cpu[name].append(cpu)
                print_round(round_number, results)

    best = print_summary(results, total_mb)
    ratio = best["imagedepot"] / best["docker-registry"]
    print(f"imagedepot / docker-registry = {ratio:.2f}  (skopeo copy; target <= 1)")
    raw_best = {name: min(times) for name, times in raw.items()}
    layer_mb = sum(pushed.layer_sizes) / MB
    print("raw streaming GET of every layer, best of rounds (and the server's CPU time):")
    for name in raw:
        print(
            f"  {name:<16} {raw_best[name]:6.2f}s  {layer_mb / raw_best[name]:7.0f} MB/s"
            f"  server CPU {min(server_cpu[name]):.2f}s"
        )
    raw_ratio = raw_best["imagedepot"] / raw_best["docker-registry"]
    print(f"imagedepot / docker-registry = {raw_ratio:.2f}  (raw GET)")
    cpu_ratio = min(server_cpu["imagedepot"]) / max(min(server_cpu["docker-registry"]), 0.01)
    print(f"imagedepot / docker-registry = {cpu_ratio:.2f}  (server CPU per pull)")


if __name__ == "__main__":
    main()
