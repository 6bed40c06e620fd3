"""Benchmark: imagedepot's Glance v2 dialect next to a real OpenStack Glance 33, in one run.

Both servers run at once on free loopback ports of this machine, each on a fresh store:
imagedepot (`imagedepot serve`, SQLite, one process) and Glance (its WSGI app under gunicorn,
one worker of 8 threads, SQLite, the filesystem store, no Keystone). Timed on both, the
servers taking turns: image creates (sequential POST /v2/images), list pages at a few store
sizes (the default page, a walk by marker, a `name=` filter, `sort_key=name`), GET of one
image, the upload of a large image streamed from a file (PUT /v2/images/{id}/file) with each
server's peak RSS and CPU time during it, and its download. Transfers are timed with curl as
well as httpx: httpx tops out near 500 MB/s on this machine, so its downloads time the client.
Prints the figures and the ratios imagedepot / Glance (below 1: imagedepot takes less time).

Then a flat-list check of imagedepot alone: a store filled directly through the repository
(bench/vmimages_list.py's fill) to 2,000, 20,000 and 100,000 images, each page shape timed
over HTTP at each size, on SQLite and, with `--database-url URL` (an empty database) or
`--postgres` (a throwaway PostgreSQL 15 cluster), on PostgreSQL (ANALYZEd after each fill,
as autovacuum would have it).

Glance is installed once into a virtualenv under `--cache-dir` (recipe:
../shared/reference/glance-peer.md) and reused after. Not a test: nothing is asserted.
Usage: python bench/vmimages.py [--sizes 200,1000,2000] [--upload-mb 500] [--rounds 2]
       [--flat-sizes 2000,20000,100000] [--postgres | --database-url URL] [--profile]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psycopg
from sqlalchemy.engine import make_url

from bench.serve import process_tree, tree_cpu_seconds
from bench.vmimages_list import T0, fill
from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.domain.identity import Project
from imagedepot.domain.vmimages import ImageQuery, SortKey
from tests.support.ports import free_port, wait_for_http
from tests.support.postgres import running_cluster
from tests.support.service import Service, _Supervised

MB = 1024 * 1024
GLANCE_REQUIREMENTS = ("glance>=33,<34", "gunicorn")
IMAGEDEPOT = "imagedepot"
GLANCE = "glance"
SERVERS = (IMAGEDEPOT, GLANCE)
BODY = {"disk_format": "raw", "container_format": "bare"}


# --- Glance, installed once and started per run -------------------------------------------


def default_cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "imagedepot-bench" / "glance"


def ensure_glance(cache: Path) -> Path:
    """The virtualenv holding glance and gunicorn, installed on first use."""
    venv = cache / "venv"
    ready = cache / "installed"
    if ready.exists() and (venv / "bin" / "gunicorn").exists():
        return venv
    print(f"installing Glance into {venv} (once)…", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip", "wheel", "setuptools"], check=True)
    subprocess.run([*pip, *GLANCE_REQUIREMENTS], check=True)
    version = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import glance.version as v; print(v.version_string())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ready.write_text(version + "\n")
    return venv


def glance_version(cache: Path) -> str:
    return (cache / "installed").read_text().strip()


GLANCE_CONF = """\
[DEFAULT]
enabled_backends = fs:file
debug = false
log_file = {state}/logs/glance-api.log
public_endpoint = http://127.0.0.1:{port}
image_size_cap = 10737418240
limit_param_default = 25
api_limit_max = 1000

[database]
connection = sqlite:///{state}/data/glance.sqlite

[paste_deploy]
flavor =
config_file = {state}/etc/glance-api-paste.ini

[glance_store]
default_backend = fs

[fs]
filesystem_store_datadir = {state}/data/images

[os_glance_staging_store]
filesystem_store_datadir = {state}/data/staging

[os_glance_tasks_store]
filesystem_store_datadir = {state}/data/tasks

[oslo_concurrency]
lock_path = {state}/data/locks

[oslo_policy]
policy_file = {state}/etc/policy.yaml
enforce_scope = false
enforce_new_defaults = false
"""

# The unauthenticated context is is_admin=True with no roles; oslo.policy rules still test
# role:admin, so admin is made always true.
GLANCE_POLICY = '"context_is_admin": "@"\n'


class GlancePeer(_Supervised):
    """Glance's API under gunicorn on a fresh state dir (config, SQLite, image files)."""

    def __init__(self, venv: Path, state: Path) -> None:
        self.venv = venv
        self.state = state
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log = state / "logs" / "gunicorn.out"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def _configure(self) -> dict[str, str]:
        for sub in ("etc", "logs", "data/images", "data/staging", "data/tasks", "data/locks"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        etc = self.state / "etc"
        (etc / "glance-api.conf").write_text(GLANCE_CONF.format(state=self.state, port=self.port))
        (etc / "policy.yaml").write_text(GLANCE_POLICY)
        paste = (self.venv / "etc" / "glance" / "glance-api-paste.ini").read_text()
        paste = paste.replace("/etc/glance/healthcheck_disable", str(etc / "healthcheck_disable"))
        (etc / "glance-api-paste.ini").write_text(paste)
        env = {**os.environ, "OS_GLANCE_CONFIG_DIR": str(etc)}
        env.pop("VIRTUAL_ENV", None)
        subprocess.run(
            [
                str(self.venv / "bin" / "glance-manage"),
                "--config-file",
                str(etc / "glance-api.conf"),
                "db_sync",
            ],
            env=env,
            capture_output=True,
            check=True,
        )
        return env

    def start(self) -> GlancePeer:
        self.port = free_port()
        env = self._configure()
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    str(self.venv / "bin" / "gunicorn"),
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    "1",
                    "--threads",
                    "8",
                    "--worker-class",
                    "gthread",
                    "--timeout",
                    "900",
                    "--graceful-timeout",
                    "5",
                    "glance.wsgi.api:application",
                ],
                cwd=self.state,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for_http(f"{self.url}/healthcheck", timeout=90)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"Glance did not start:\n{self.log}") from None
        return self

    def __enter__(self) -> GlancePeer:
        return self.start()

    def stop(self) -> None:
        """SIGTERM to the gunicorn master, then SIGKILL to whatever is left of its group."""
        group = self._process.pid if self._process else None
        super().stop()
        if group is not None:
            with suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=600)


# --- processes, memory and CPU from /proc ----------------------------------------------------


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def thread_ticks(root: int) -> dict[tuple[int, int], int]:
    """CPU clock ticks (user + system) of every thread of a process tree, by (pid, tid)."""
    ticks = {}
    for pid in process_tree(root):
        with suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with suppress(OSError):
                    fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                    ticks[(pid, int(task.name))] = int(fields[11]) + int(fields[12])
    return ticks


def busiest_threads(before: dict[tuple[int, int], int], root: int, top: int = 4) -> str:
    """The CPU seconds of the threads that were busiest since `before`, as text."""
    after = thread_ticks(root)
    hertz = os.sysconf("SC_CLK_TCK")
    spent = sorted(((after[key] - before.get(key, 0)) / hertz for key in after), reverse=True)
    processes = len({pid for pid, _ in after})
    busy = ", ".join(f"{seconds:.2f}" for seconds in spent[:top] if seconds > 0)
    return f"{busy} s ({len(after)} threads in {processes} processes)"


class PeakRss(threading.Thread):
    """Samples the RSS of a process tree every 20 ms until stopped; `peak` in MB."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.start_mb = rss_mb(process_tree(root))
        self.peak = self.start_mb
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, rss_mb(process_tree(self.root)))

    def __enter__(self) -> PeakRss:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self.join()
        self.peak = max(self.peak, rss_mb(process_tree(self.root)))


@contextmanager
def py_spy(pid: int, out: Path) -> Iterator[None]:
    """py-spy sampling `pid` while the block runs: the thread holding the GIL, if any (time in
    C with the GIL released, such as hashing large buffers, is not seen)."""
    spy = Path(sys.executable).with_name("py-spy")
    process = subprocess.Popen(
        [str(spy), "record", "--gil", "--pid", str(pid), "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def print_profile(raw: Path, top: int = 10) -> None:
    """Where the sampled process was (self time) and which of its own functions the samples
    fell under (inclusive), from py-spy's collapsed stacks."""
    if not raw.exists():
        print("  (py-spy wrote nothing)")
        return
    leaves: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(frame) for frame in stack.split(";")]
        leaves[frames[-1][0]] += int(count)
        for name in {name for name, own in frames if own}:
            inclusive[name] += int(count)
    total = sum(leaves.values()) or 1
    print(f"  {total} samples of the thread holding the GIL; self time:")
    for name, count in leaves.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("  inclusive, imagedepot's own functions:")
    for name, count in inclusive.most_common(top):
        print(f"  {100 * count / total:5.1f}%  {name}")


def _frame(frame: str) -> tuple[str, bool]:
    """`function (path/file.py:line)` as `function (file.py:line)`, and whether it is ours."""
    function, _, where = frame.partition(" (")
    ours = where.startswith("imagedepot/") or "/imagedepot/" in where
    return f"{function} ({where.rsplit('/', 1)[-1]}", ours


# --- the side-by-side part -----------------------------------------------------------------


def median_ms(call: Callable[[], Any], reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def get_ok(client: httpx.Client, url: str, params: dict[str, str] | None = None) -> Any:
    response = client.get(url, params=params)
    assert response.status_code == 200, f"{url}: {response.status_code} {response.text[:300]}"
    return response.json()


def walk(client: httpx.Client, pages: int) -> int:
    """Follow `next` from the first page for up to `pages` pages; how many were read."""
    url: str | None = "/v2/images"
    read = 0
    while url and read < pages:
        body = get_ok(client, url)
        read += 1
        url = body.get("next")
    return read


def create_images(client: httpx.Client, start: int, stop: int) -> float:
    started = time.perf_counter()
    for index in range(start, stop):
        response = client.post("/v2/images", json={**BODY, "name": f"disk-{index:06d}"})
        assert response.status_code == 201, response.text[:300]
    return time.perf_counter() - started


def list_shapes(size: int, walk_pages: int) -> dict[str, Callable[[httpx.Client], Any]]:
    name = f"disk-{size // 2:06d}"
    return {
        "default page": lambda c: get_ok(c, "/v2/images"),
        f"marker walk, per page ({walk_pages} pages)": lambda c: walk(c, walk_pages),
        "name= filter": lambda c: get_ok(c, "/v2/images", {"name": name}),
        "sort_key=name": lambda c: get_ok(c, "/v2/images", {"sort_key": "name", "sort_dir": "asc"}),
    }


def check_same_answers(clients: dict[str, httpx.Client], size: int) -> None:
    """Both servers see `size` images and answer the shapes alike (else the figures mislead)."""
    name = f"disk-{size // 2:06d}"
    for server, client in clients.items():
        assert len(get_ok(client, "/v2/images")["images"]) == min(25, size), server
        named = get_ok(client, "/v2/images", {"name": name})["images"]
        assert [image["name"] for image in named] == [name], (server, named)
        first = get_ok(client, "/v2/images", {"sort_key": "name", "sort_dir": "asc"})["images"]
        assert first[0]["name"] == "disk-000000", (server, first[0])


def side_by_side(
    args: argparse.Namespace, clients: dict[str, httpx.Client], report: Report
) -> None:
    created = 0
    create_time = dict.fromkeys(SERVERS, 0.0)
    for step, size in enumerate(args.sizes):
        order = SERVERS if step % 2 == 0 else tuple(reversed(SERVERS))
        for server in order:
            create_time[server] += create_images(clients[server], created, size)
        created = size
        check_same_answers(clients, size)
        for shape, call in list_shapes(size, args.walk_pages).items():
            results: dict[str, float] = {}
            for server in SERVERS:
                call(clients[server])  # warm
            per_server: dict[str, list[float]] = {server: [] for server in SERVERS}
            for rep in range(args.reps):
                for server in SERVERS if rep % 2 == 0 else reversed(SERVERS):
                    started = time.perf_counter()
                    call(clients[server])
                    per_server[server].append((time.perf_counter() - started) * 1000)
            for server in SERVERS:
                results[server] = statistics.median(per_server[server])
                if shape.startswith("marker walk"):
                    pages = call(clients[server])
                    results[server] /= pages
            report.add(f"list at {size} images: {shape}", "ms", results)
    report.add(
        f"create (POST /v2/images), {created} sequential",
        "images/s",
        {server: created / create_time[server] for server in SERVERS},
        higher_is_better=True,
    )
    some = {server: get_ok(clients[server], "/v2/images")["images"][3]["id"] for server in SERVERS}
    report.add(
        "GET /v2/images/{id}",
        "ms",
        {
            server: median_ms(lambda s=server: get_ok(clients[s], f"/v2/images/{some[s]}"), 200)
            for server in SERVERS
        },
    )


def make_file(path: Path, size_mb: int) -> tuple[str, str]:
    """A file of random bytes; its md5 and sha512 (what both servers report)."""
    md5, sha512 = hashlib.md5(usedforsecurity=False), hashlib.sha512()
    chunk = os.urandom(MB)
    with path.open("wb") as out:
        for index in range(size_mb):
            block = index.to_bytes(8, "big") + chunk[8:]
            md5.update(block)
            sha512.update(block)
            out.write(block)
    return md5.hexdigest(), sha512.hexdigest()


def upload(client: httpx.Client, image_id: str, path: Path) -> None:
    with path.open("rb") as body:
        response = client.put(
            f"/v2/images/{image_id}/file",
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
    assert response.status_code == 204, response.text[:300]


def download(client: httpx.Client, image_id: str) -> int:
    received = 0
    with client.stream("GET", f"/v2/images/{image_id}/file") as response:
        assert response.status_code == 200, response.read()[:300]
        for chunk in response.iter_raw(MB):
            received += len(chunk)
    return received


def curl(client: httpx.Client, image_id: str, *options: str) -> tuple[int, int]:
    """curl on the image's file with the client's credential: (status, bytes received)."""
    auth = (
        [f"X-Auth-Token: {client.headers['X-Auth-Token']}"]
        if "X-Auth-Token" in client.headers
        else []
    )
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code} %{size_download}",
            *(part for header in auth for part in ("--header", header)),
            *options,
            f"{str(client.base_url).rstrip('/')}/v2/images/{image_id}/file",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    status, received = result.stdout.split()
    return int(status), int(received)


def curl_upload(client: httpx.Client, image_id: str, path: Path) -> None:
    status, _ = curl(
        client,
        image_id,
        "--upload-file",
        str(path),
        "--header",
        "Content-Type: application/octet-stream",
        "--header",
        "Expect:",  # no 100-continue round trip
    )
    assert status == 204, status


def curl_download(client: httpx.Client, image_id: str) -> int:
    status, received = curl(client, image_id)
    assert status == 200, status
    return received


UPLOADS = {"curl": curl_upload, "httpx": upload}
DOWNLOADS = {"curl": curl_download, "httpx": download}


def transfers(
    args: argparse.Namespace,
    clients: dict[str, httpx.Client],
    pids: dict[str, int],
    scratch: Path,
    report: Report,
) -> None:
    """Each round, each server: an upload with each client (peak RSS, server CPU and its
    busiest threads sampled), both downloads of each image, then the image deleted."""
    source = scratch / "disk.raw"
    print(f"writing a {args.upload_mb} MB file to upload…", flush=True)
    md5, sha512 = make_file(source, args.upload_mb)
    size = args.upload_mb * MB
    kinds = [kind for kind in UPLOADS if kind != "curl" or shutil.which("curl")]
    times: dict[str, dict[str, list[float]]] = {}
    cpu_spent: dict[str, dict[str, list[float]]] = {}
    peak = dict.fromkeys(SERVERS, 0.0)
    before: dict[str, float] = {}

    def timed(what: str, server: str, call: Callable[..., Any], *call_args: Any) -> Any:
        cpu = tree_cpu_seconds(pids[server])
        started = time.perf_counter()
        result = call(*call_args)
        times.setdefault(what, {s: [] for s in SERVERS})[server].append(
            time.perf_counter() - started
        )
        cpu_spent.setdefault(what, {s: [] for s in SERVERS})[server].append(
            tree_cpu_seconds(pids[server]) - cpu
        )
        return result

    for round_number in range(args.rounds):
        busiest: dict[tuple[str, str], str] = {}
        for server in SERVERS if round_number % 2 == 0 else reversed(SERVERS):
            client = clients[server]
            for kind in kinds:
                response = client.post("/v2/images", json={**BODY, "name": f"upload-{kind}"})
                assert response.status_code == 201, response.text[:300]
                image_id = response.json()["id"]
                threads = thread_ticks(pids[server])
                with PeakRss(pids[server]) as rss:
                    timed(f"upload, {kind}", server, UPLOADS[kind], client, image_id, source)
                busiest[(server, kind)] = busiest_threads(threads, pids[server])
                peak[server] = max(peak[server], rss.peak)
                before.setdefault(server, rss.start_mb)
                shown = get_ok(client, f"/v2/images/{image_id}")
                assert shown["status"] == "active", (server, shown["status"])
                assert shown["size"] == size, (server, shown["size"])
                assert (shown["checksum"], shown["os_hash_value"]) == (md5, sha512), server
                for reader in kinds:
                    received = timed(
                        f"download, {reader}", server, DOWNLOADS[reader], client, image_id
                    )
                    assert received == size, (server, reader, received)
                assert client.delete(f"/v2/images/{image_id}").status_code == 204, server
        print(
            f"round {round_number + 1}: "
            + "; ".join(
                what + " " + ", ".join(f"{s} {by_server[s][-1]:.2f}s" for s in SERVERS)
                for what, by_server in times.items()
            ),
            flush=True,
        )
        for (server, kind), threads_text in busiest.items():
            print(f"  {server} upload ({kind}), busiest threads: {threads_text}", flush=True)
    order = sorted(times, key=lambda what: (not what.startswith("upload"), what))
    for what in order:
        by_server = times[what]
        best = {server: min(values) for server, values in by_server.items()}
        report.add(
            f"{what.split(',')[0]} {args.upload_mb} MB ({what.split(', ')[1]}, best)", "s", best
        )
    for what in order:
        by_server = cpu_spent[what]
        least = {server: min(values) for server, values in by_server.items()}
        report.add(f"server CPU during the {what} (least)", "s", least)
    report.add("peak RSS during the uploads", "MB", peak)
    report.add("RSS before the first upload", "MB", before)

    if args.profile:
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            print("py-spy not installed next to this Python: no profile")
            return
        client = clients[IMAGEDEPOT]
        image_id = client.post("/v2/images", json={**BODY, "name": "profiled"}).json()["id"]
        raw = scratch / "upload.prof"
        with py_spy(pids[IMAGEDEPOT], raw):
            started = time.perf_counter()
            upload(client, image_id, source)
            took = time.perf_counter() - started
        print(f"\nimagedepot upload under py-spy ({took:.2f}s, maybe slower for the sampling):")
        print_profile(raw)
        client.delete(f"/v2/images/{image_id}")


# --- the flat-list part (imagedepot alone, stores filled through the repository) -------------


def analyze(url: str) -> None:
    """Table statistics now, as autovacuum would have them on a server up for a while (right
    after a bulk fill PostgreSQL plans without any)."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute("ANALYZE")


def flat_shapes(store: SqlMetadataStore, size: int) -> dict[str, tuple[str, dict[str, str]]]:
    """Each shape's URL and query; the deep markers are the images half way down each order."""
    with store.transaction(read_only=True) as uow:
        middle = uow.vm_images.list(ImageQuery("bench", offset=size // 2, limit=1))[0].id
        by_name = (SortKey("name", False),)
        middle_by_name = uow.vm_images.list(
            ImageQuery("bench", sort=by_name, offset=size // 2, limit=1)
        )[0].id
    by_name_params = {"sort_key": "name", "sort_dir": "asc"}
    return {
        "default page": ("/v2/images", {}),
        "page after a marker half way": ("/v2/images", {"marker": middle}),
        "name= filter": ("/v2/images", {"name": "image-00042"}),
        "sort_key=name": ("/v2/images", by_name_params),
        "sort_key=name, marker half way": (
            "/v2/images",
            {**by_name_params, "marker": middle_by_name},
        ),
    }


def flat_list(
    label: str, url: str | None, data_dir: Path, args: argparse.Namespace
) -> dict[str, dict[int, float]]:
    """Fill the store up to each size and time each shape over HTTP; ms per shape per size."""
    store = SqlMetadataStore(url or f"sqlite:///{data_dir / 'imagedepot.db'}")
    env = {"IMAGEDEPOT_RATE_LIMIT": "0", **({"IMAGEDEPOT_DATABASE_URL": url} if url else {})}
    figures: dict[str, dict[int, float]] = {}
    filled = 0
    try:
        with store.transaction() as uow:
            already = uow.vm_images.count(ImageQuery("bench"))
            if uow.identity.project_by_name("bench") is None:
                # fill() writes images owned by the project id "bench"; the credential made
                # for the project named "bench" must land in that one.
                uow.identity.add_project(Project(id="bench", name="bench", created_at=T0))
        if already:
            raise SystemExit(
                f"{label}: the store already holds {already} images; give an empty one"
            )
        for size in args.flat_sizes:
            started = time.perf_counter()
            fill(store, size, start=filled)
            filled = size
            if url:
                analyze(url)
            print(f"{label}: filled to {size} in {time.perf_counter() - started:.1f}s", flush=True)
            shapes = flat_shapes(store, size)
            with Service(data_dir=data_dir, env=env) as service:
                token = service.credential("bench")
                with service.client(token) as client:
                    assert len(get_ok(client, "/v2/images")["images"]) == 25
                    for shape, (path, params) in shapes.items():
                        get_ok(client, path, params)  # warm
                        took = median_ms(lambda p=path, q=params: get_ok(client, p, q), args.reps)
                        figures.setdefault(shape, {})[size] = took
    finally:
        store.close()
    return figures


def print_flat(label: str, figures: dict[str, dict[int, float]], sizes: list[int]) -> None:
    print(f"\nimagedepot list page times on {label}, ms (median of rounds), by store size:")
    print(f"  {'shape':<34}" + "".join(f"{size:>10}" for size in sizes) + "   largest/smallest")
    for shape, by_size in figures.items():
        cells = "".join(f"{by_size[size]:10.2f}" for size in sizes)
        print(f"  {shape:<34}{cells}   {by_size[sizes[-1]] / by_size[sizes[0]]:8.2f}x")


# --- reporting -------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, dict[str, float], bool]] = []

    def add(
        self, what: str, unit: str, values: dict[str, float], higher_is_better: bool = False
    ) -> None:
        self.rows.append((what, unit, values, higher_is_better))
        cells = "  ".join(f"{server} {values[server]:.2f}" for server in values)
        print(f"  {what}: {cells} {unit}", flush=True)

    def print(self, version: str) -> None:
        print(f"\nimagedepot vs Glance {version} (ratio = imagedepot time / Glance time):")
        print(f"  {'':<60}{'imagedepot':>12}{'glance':>12}{'ratio':>8}")
        for what, unit, values, higher_is_better in self.rows:
            mine, theirs = values[IMAGEDEPOT], values[GLANCE]
            if unit == "MB":
                ratio = f"{mine / theirs:8.2f}" if theirs else ""
            elif higher_is_better:
                ratio = f"{theirs / mine:8.2f}"
            else:
                ratio = f"{mine / theirs:8.2f}" if theirs else ""
            print(f"  {what + ' (' + unit + ')':<60}{mine:12.2f}{theirs:12.2f}{ratio}")
        print("  (for images/s the ratio is still a time ratio: Glance's rate / imagedepot's;")
        print("   for MB it is imagedepot's memory / Glance's)")


def sizes(text: str) -> list[int]:
    return sorted(int(part) for part in text.split(",") if part.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument(
        "--sizes", type=sizes, default=[200, 1000, 2000], help="store sizes (images made over HTTP)"
    )
    parser.add_argument("--walk-pages", type=int, default=20)
    parser.add_argument("--reps", type=int, default=9, help="rounds per list shape")
    parser.add_argument("--upload-mb", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2, help="upload/download rounds")
    parser.add_argument("--profile", action="store_true", help="py-spy an extra upload")
    parser.add_argument("--flat-sizes", type=sizes, default=[2000, 20000, 100000])
    parser.add_argument("--no-flat", action="store_true", help="skip the flat-list check")
    parser.add_argument("--no-peer", action="store_true", help="skip the side-by-side part")
    parser.add_argument("--database-url", help="an empty PostgreSQL database for the flat check")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL 15")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so every `with` stops its server

    with tempfile.TemporaryDirectory(prefix="bench-vmimages-") as work:
        scratch = Path(work)
        if not args.no_peer:
            venv = ensure_glance(args.cache_dir)
            version = glance_version(args.cache_dir)
            report = Report()
            service = Service(data_dir=scratch / "imagedepot", env={"IMAGEDEPOT_RATE_LIMIT": "0"})
            with service, GlancePeer(venv, scratch / "glance") as glance, ExitStack() as stack:
                print(
                    f"imagedepot on {service.url} (pid {service.pid}), "
                    f"Glance {version} on {glance.url} (pid {glance.pid})",
                    flush=True,
                )
                clients = {
                    IMAGEDEPOT: stack.enter_context(service.client(service.credential("bench"))),
                    GLANCE: stack.enter_context(glance.client()),
                }
                clients[IMAGEDEPOT].timeout = httpx.Timeout(600)
                side_by_side(args, clients, report)
                pids = {IMAGEDEPOT: service.pid, GLANCE: glance.pid}
                transfers(args, clients, pids, scratch, report)
            report.print(version)

        if not args.no_flat:
            results = {"SQLite": flat_list("SQLite", None, scratch / "flat-sqlite", args)}
            if args.database_url:
                results["PostgreSQL"] = flat_list(
                    "PostgreSQL", args.database_url, scratch / "flat-pg", args
                )
            elif args.postgres:
                with running_cluster() as cluster:
                    url = cluster.url(cluster.create_database())
                    results["PostgreSQL 15"] = flat_list(
                        "PostgreSQL", url, scratch / "flat-pg", args
                    )
            for label, figures in results.items():
                print_flat(label, figures, args.flat_sizes)


if __name__ == "__main__":
    main()
