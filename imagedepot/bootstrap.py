"""The one composition root: settings -> stores and clients -> services -> apps and worker.

Nothing else constructs an adapter, so swapping SQLite for PostgreSQL or the
filesystem for another blob backend is a change here only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagedepot.adapters.blobs.filesystem import FilesystemBlobStore
from imagedepot.adapters.blobs.s3 import S3BlobStore, S3Location, S3Tuning
from imagedepot.adapters.clock import SystemClock
from imagedepot.adapters.db.copy import TargetNotEmpty, copy_database
from imagedepot.adapters.db.store import SqlMetadataStore
from imagedepot.adapters.processes import dead_holders, new_holder_id
from imagedepot.adapters.secretbox import (
    FernetSecretBox,
    key_source,
    load_or_create_key,
    new_key,
    write_key_file,
)
from imagedepot.adapters.sibling_counts import SiblingCounts
from imagedepot.api.metrics import Metrics
from imagedepot.config import Settings
from imagedepot.domain.errors import InvalidInput
from imagedepot.domain.policy import Policy
from imagedepot.ports import BlobStore, BlobStoreUnavailable
from imagedepot.services.audit import AuditService
from imagedepot.services.blobs import BlobService
from imagedepot.services.caches import CacheService, Quotas
from imagedepot.services.identity import IdentityService
from imagedepot.services.image_sharing import ImageSharingService
from imagedepot.services.inventory import InventoryService
from imagedepot.services.liveness import Liveness
from imagedepot.services.oci_layouts import OciLayoutService
from imagedepot.services.secrets import SecretService, WrongSecretKey
from imagedepot.services.serving import ServingService
from imagedepot.services.upstreams import UpstreamService
from imagedepot.services.vmimages import VmImageService

if TYPE_CHECKING:
    from imagedepot.adapters.registry.client import AiohttpRegistryClient
    from imagedepot.api.context import RegistryContext
    from imagedepot.api.limits import AuthFailureLimiter
    from imagedepot.services.building import BlobFetcher, BuildPolicy
    from imagedepot.services.pull_through import PullThrough
    from imagedepot.worker.loop import WorkerLoop

log = logging.getLogger("imagedepot")
ADMIN_TOKEN_FILE = "admin-token"  # noqa: S105 - a file name, not a secret
PORT_NAMES = {"api": "API", "registry": "registry"}
"""How messages name each port (the keys are the ports' names in metrics)."""
TLS_HANDSHAKE = b"\x16"
"""The first byte of every TLS connection (a handshake record), never of an HTTP request."""


@dataclass
class Core:
    """Everything that does not need an event loop: stores and synchronous services."""

    settings: Settings
    store: SqlMetadataStore
    blobs: BlobStore
    clock: SystemClock
    identity: IdentityService
    caches: CacheService
    secrets: SecretService
    upstreams: UpstreamService
    blob_service: BlobService
    audit: AuditService
    serving: ServingService
    layouts: OciLayoutService
    admin_token_path: Path | None
    vm_images: VmImageService
    image_sharing: ImageSharingService
    inventory: InventoryService
    metrics: Metrics
    """This process's counters, shared by its ports and its worker."""
    holder: str
    """This process as a lease and upload holder (host/pid/nonce), shared by the API and worker."""
    liveness: Liveness
    """Its heartbeat, and which other holders are dead processes, on any host."""

    def close(self) -> None:
        self.store.close()
        self.blobs.close()


def open_blob_store(settings: Settings) -> BlobStore:
    """The blob store the settings name: `DATA_DIR/blobs`, or a bucket; SystemExit with one
    line when the setting cannot be used."""
    if settings.blob_store is None:
        return FilesystemBlobStore(settings.data_dir / "blobs")
    try:
        location = S3Location.parse(settings.blob_store)
    except ValueError as error:
        raise SystemExit(f"imagedepot: IMAGEDEPOT_BLOB_STORE: {error}") from None
    tuning = S3Tuning(
        part_size=settings.s3_part_mib << 20,
        parallel_parts=settings.s3_parallel_parts,
        redirect_seconds=settings.s3_redirect_seconds,
        stale_after=timedelta(hours=settings.s3_stale_upload_hours),
    )
    return S3BlobStore(location, tuning)


@dataclass(frozen=True)
class StoreMove:
    rows: dict[str, int]
    """Rows copied per table (empty when the database stays)."""
    blobs: int
    """Blobs copied (0 when the blob store stays)."""


def move_store(core: Core, database_url: str | None, blob_store: str | None) -> StoreMove:
    """Copy the metadata store into the empty database `database_url` and the blobs into
    `blob_store` (either or both), for a single machine becoming several. The source is left
    as it was; SystemExit with one line when a target cannot be used."""
    rows: dict[str, int] = {}
    copied = 0
    if blob_store is not None:
        target_blobs = open_blob_store(replace(core.settings, blob_store=blob_store))
        try:
            check_blob_store(target_blobs)
            copied = core.blob_service.copy_to(target_blobs)
        finally:
            target_blobs.close()
    if database_url is not None:
        target = SqlMetadataStore(database_url)
        try:
            rows = copy_database(core.store, target)
        except TargetNotEmpty as error:
            raise SystemExit(f"imagedepot: {error}; nothing was copied") from None
        finally:
            target.close()
    return StoreMove(rows, copied)


class QuietCancellations(logging.Filter):
    """Requests cut short when a shutdown's grace runs out are cancelled: uvicorn logs each
    as "Exception in ASGI application" with a traceback, which is not an error here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


def check_secret_key(core: Core) -> None:
    """SystemExit with one line when this process's key cannot open the store's secrets."""
    try:
        core.secrets.check_key()
    except WrongSecretKey as error:
        raise SystemExit(f"imagedepot: {error}") from None


async def keep_beating(liveness: Liveness, stop: asyncio.Event) -> None:
    """Beat until `stop`; a beat that fails (the database restarting) is tried again."""
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=liveness.beat_every)
        if stop.is_set():
            return
        try:
            await asyncio.to_thread(liveness.beat)
        except Exception as error:  # whatever the driver raises while the database is away
            log.warning("heartbeat failed: %s", str(error).splitlines()[0] if str(error) else error)


def check_blob_store(blobs: BlobStore) -> None:
    """SystemExit with one line naming the store when it cannot be reached or written."""
    try:
        blobs.check()
    except BlobStoreUnavailable as error:
        raise SystemExit(f"imagedepot: {error}") from None


def admin_token(settings: Settings) -> tuple[str, Path | None]:
    """IMAGEDEPOT_ADMIN_TOKEN, else the token stored in the data dir (made on first start)."""
    if settings.admin_token:
        return settings.admin_token, None
    path = settings.data_dir / ADMIN_TOKEN_FILE
    if not path.exists():
        temp = path.with_suffix(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("idp_admin_" + secrets.token_urlsafe(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    return path.read_text().strip(), path


def open_core(settings: Settings) -> Core:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SqlMetadataStore(settings.resolved_database_url)
    blobs = open_blob_store(settings)
    clock = SystemClock()
    token, token_path = admin_token(settings)
    box = FernetSecretBox(
        load_or_create_key(settings.data_dir, settings.secret_key),
        reload=key_source(settings.data_dir, settings.secret_key),
    )
    quotas = Quotas(settings.quota_caches, settings.quota_images, settings.quota_gib)
    holder = new_holder_id(settings.node_name)
    liveness = Liveness(
        store,
        clock,
        holder,
        timedelta(seconds=settings.lease_seconds),
        lambda holders: dead_holders(holders, holder),
    )
    blob_service = BlobService(
        store, blobs, clock, grace=timedelta(seconds=settings.gc_grace_seconds)
    )
    return Core(
        settings=settings,
        store=store,
        blobs=blobs,
        clock=clock,
        identity=IdentityService(store, clock, token, box, load_policy(settings.policy_file)),
        caches=CacheService(store, clock, quotas),
        secrets=SecretService(store, box, clock),
        upstreams=UpstreamService(store, clock),
        blob_service=blob_service,
        audit=AuditService(store),
        serving=ServingService(store, blobs, clock),
        layouts=OciLayoutService(store, blobs, clock, quotas, blob_service),
        admin_token_path=token_path,
        vm_images=VmImageService(
            store,
            blobs,
            clock,
            regions=settings.regions,
            max_image_bytes=settings.max_image_bytes,
            holder=holder,
        ),
        image_sharing=ImageSharingService(store, clock),
        inventory=InventoryService(store),
        metrics=Metrics(),
        holder=holder,
        liveness=liveness,
    )


def checked_core(settings: Settings) -> Core:
    """`open_core`, with the blob store and the secret key checked before anything is served
    (SystemExit naming what is wrong; nothing left open then)."""
    core = open_core(settings)
    try:
        check_blob_store(core.blobs)
        check_secret_key(core)
    except BaseException:
        core.close()
        raise
    return core


def rotate_secret_key(settings: Settings) -> int:
    """Seal every secret under a new key; the count re-sealed.

    With the key file: write NEW,OLD, re-seal, then keep NEW only, so a crash in between
    leaves a file that still opens everything. Running servers follow the file (they re-read
    it before sealing and when a ciphertext does not open), so they need no restart; one
    that sealed a secret under OLD just before it saw NEW,OLD is caught by a second pass
    after NEW alone is written. With IMAGEDEPOT_SECRET_KEY the operator sets it to NEW,OLD
    on every server first; this re-seals under NEW, after which OLD can be dropped.
    """
    current = load_or_create_key(settings.data_dir, settings.secret_key)
    keys = current if settings.secret_key else new_key() + b"," + current
    if not settings.secret_key:
        write_key_file(settings.data_dir, keys)
    store = SqlMetadataStore(settings.resolved_database_url)
    try:
        service = SecretService(store, FernetSecretBox(keys), SystemClock())
        resealed = service.reseal_all()
        if not settings.secret_key:
            write_key_file(settings.data_dir, keys.split(b",", 1)[0])
            service.reseal_all()
    finally:
        store.close()
    return resealed


def load_policy(path: Path | None) -> Policy:
    if path is None:
        return Policy.default()
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InvalidInput(f"policy file {path}: {error}") from None
    return Policy.from_document(document)


def build_policy(settings: Settings) -> BuildPolicy:
    from imagedepot.services.building import BuildPolicy

    return BuildPolicy(
        platforms=settings.platforms,
        insecure_registries=settings.insecure_registries,
        mirrors=settings.mirrors,
        parallel_blobs=settings.parallel_blobs,
    )


STAGED_SWEEP_SECONDS = 3600.0
"""How often a worker looks for what dead writers left staged in the blob store."""


def blob_fetcher(core: Core, registry: AiohttpRegistryClient) -> BlobFetcher:
    """The one fetcher of this process: builds and pull-throughs share its downloads (one per
    blob), and registry clients can follow each download as it arrives."""
    from imagedepot.adapters.spool import FileSpools
    from imagedepot.services.building import BlobFetcher
    from imagedepot.services.fetch_claims import FetchClaims

    settings = core.settings
    claims = FetchClaims(
        core.store,
        core.clock,
        core.holder,
        timedelta(seconds=settings.lease_seconds),
        core.liveness.dead,
    )
    spools = FileSpools(settings.data_dir / "spool") if settings.pull_through_streaming else None
    return BlobFetcher(core.blobs, registry, settings.parallel_blobs, claims, spools=spools)


def project_mirrors(core: Core) -> Callable[[str, str], tuple[str, ...]]:
    def mirrors(project_id: str, registry: str) -> tuple[str, ...]:
        with core.store.transaction(read_only=True) as uow:
            upstream = uow.upstreams.get(project_id, registry)
        return () if upstream is None else upstream.mirrors

    return mirrors


def worker_for(core: Core, fetcher: BlobFetcher) -> WorkerLoop:
    from imagedepot.services.building import CacheBuilder
    from imagedepot.worker.loop import WorkerLoop, at_most_every
    from imagedepot.worker.reconciler import Reconciler

    settings = core.settings
    policy = build_policy(settings)

    dead = core.liveness.dead

    loop = WorkerLoop(
        core.store,
        core.blobs,
        core.clock,
        holder=core.holder,
        lease_seconds=settings.lease_seconds,
        poll_seconds=settings.worker_poll_seconds,
        housekeeping=[
            lambda: core.vm_images.recover_interrupted_uploads(dead),
            core.caches.forget_changes,
            # What dead writers left staged (swept at the worker's start, then hourly).
            at_most_every(STAGED_SWEEP_SECONDS, core.blobs.clean_temporary),
        ],
        dead_holders=dead,
    )
    builder = CacheBuilder(
        core.store, core.blobs, fetcher.registry, fetcher, policy, core.clock, project_mirrors(core)
    )

    def build_finished(outcome: str, seconds: float) -> None:
        core.metrics.builds.inc(outcome=outcome)
        core.metrics.build_seconds.observe(seconds)

    loop.reconciler = Reconciler(
        core.store,
        core.clock,
        builder,
        core.blob_service,
        core.secrets,
        policy,
        loop.renew_lease,
        build_finished,
    )
    return loop


def new_registry_client(settings: Settings) -> AiohttpRegistryClient:
    from imagedepot.adapters.registry.client import AiohttpRegistryClient

    return AiohttpRegistryClient(
        max_retries=settings.max_retries, retry_base_delay=settings.retry_base_delay
    )


def pull_through_for(
    core: Core, fetcher: BlobFetcher, notify_worker: Callable[[], None]
) -> PullThrough:
    from imagedepot.services.pull_through import PullThrough, PullThroughCounters

    metrics = core.metrics
    return PullThrough(
        core.store,
        core.blobs,
        core.clock,
        fetcher.registry,
        fetcher,
        core.serving,
        core.secrets,
        build_policy(core.settings),
        notify_worker=notify_worker,
        counters=PullThroughCounters(
            miss=lambda: metrics.pull_through_misses.inc(),
            stale=lambda reason: metrics.stale_serves.inc(reason=reason),
        ),
    )


def registry_context(
    core: Core,
    auth_failures: AuthFailureLimiter | None = None,
    pull_through: PullThrough | None = None,
) -> RegistryContext:
    """The registry port's services; its pull tokens are signed with a key derived from the
    newest secret key, so rotating that key only cuts short the tokens of the last minutes."""
    from imagedepot.api.context import RegistryContext
    from imagedepot.api.limits import AuthFailureLimiter
    from imagedepot.services.pull_tokens import PullTokens, derive_key

    keys = load_or_create_key(core.settings.data_dir, core.settings.secret_key)
    signing_key = derive_key(keys.split(b",", 1)[0])
    return RegistryContext(
        core.serving,
        PullTokens(core.identity, core.clock, signing_key),
        auth_failures or AuthFailureLimiter(0, 1),
        readiness=lambda: readiness(core),
        pull_through=pull_through,
    )


def readiness(core: Core) -> str | None:
    """None when a read of the database and of the blob store both work; else which failed."""
    try:
        with core.store.transaction(read_only=True) as uow:
            uow.caches.revision()
        mismatch = core.store.schema_mismatch()
    except Exception as error:  # whatever the driver raises, the database does not answer
        return f"database: {type(error).__name__}: {error}".splitlines()[0]
    if mismatch is not None:
        return f"database: {mismatch}"
    try:
        core.blobs.check(writable=False)  # reachable; writing was checked at start
    except (OSError, BlobStoreUnavailable) as error:
        return f"blob store: {error}"
    return None


def listening_socket(host: str, port: int, name: str, *, shared: bool = False) -> socket.socket:
    """A socket bound to host:port and listening; SystemExit with one line naming the address
    when that cannot be, so that a port in use stops `serve` before anything starts.
    `shared`: one of several sockets on the port (SO_REUSEPORT), among which the kernel
    spreads new connections evenly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: accepted sockets inherit it, and asyncio turns Nagle off
    # (TCP_NODELAY) only on sockets that say they are TCP. With Nagle on, every keep-alive
    # response written in two parts waited ~40 ms for the client's delayed ACK.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((host, port))
        listener.listen()
    except OSError as error:
        listener.close()
        reason = error.strerror or str(error)
        raise SystemExit(
            f"imagedepot: cannot listen on {address(host, port)} ({name} port): {reason.lower()}"
        ) from None
    return listener


def bind_ports(settings: Settings, *, shared: bool = False) -> dict[str, socket.socket]:
    """The API and registry ports, bound and listening (SystemExit naming one that is not)."""
    listeners: dict[str, socket.socket] = {}
    try:
        for name, port in (("api", settings.port), ("registry", settings.registry_port)):
            listeners[name] = listening_socket(settings.host, port, PORT_NAMES[name], shared=shared)
    except BaseException:
        for listener in listeners.values():
            listener.close()
        raise
    return listeners


async def share_counts(metrics: Metrics, counts: SiblingCounts, stop: asyncio.Event) -> None:
    """Leave this process's counts for its siblings every second, and once more at the end;
    read theirs at scrape time."""
    metrics.siblings = counts.others
    while True:
        with contextlib.suppress(OSError):
            await asyncio.to_thread(counts.write, metrics.snapshot())
        if stop.is_set():
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)


def take_wake_ups(channel: socket.socket, worker: WorkerLoop) -> None:
    """Read every waiting wake-up datagram (they say only "look for work") and wake once."""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while channel.recv(64):
            pass
    worker.wake()


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def plain_http_protocol(base: Any, name: str) -> Any:
    """uvicorn's HTTP protocol `base` that answers a TLS handshake on a plain-HTTP port with
    one debug line saying so, instead of uvicorn's bare "Invalid HTTP request received."
    warning: skopeo and docker try HTTPS first on every registry, so this is routine there.
    It still answers 400, which TLS clients read as "server gave HTTP response to HTTPS
    client" and fall back to HTTP where they are allowed to. `base` "auto" stays as it is."""
    if not isinstance(base, type):
        return base

    class PlainHttpProtocol(base):  # type: ignore[misc]
        _first_data = True

        def data_received(self, data: bytes) -> None:
            first, self._first_data = self._first_data, False
            if first and data[:1] == TLS_HANDSHAKE and self.scheme == "http":
                port = self.server[1] if self.server else "?"
                client = address(*self.client) if self.client else "an unknown address"
                log.debug(
                    "a TLS handshake arrived on the plain-HTTP %s port %s from %s; answered 400 "
                    "(clients such as skopeo try HTTPS first)",
                    name,
                    port,
                    client,
                )
                self.send_400_response("this port speaks plain HTTP, not TLS")
                return
            super().data_received(data)

    return PlainHttpProtocol


@dataclass(frozen=True)
class Sibling:
    """What a child process of `serve --processes N` (see `cli.supervisor`) is handed: the two
    listening sockets the supervisor bound (none for the worker), its end of the wake-up
    channel (API processes send a datagram when they make work, the worker listens), and
    where the processes leave their counts for each other's `/metrics`."""

    listeners: dict[str, socket.socket]
    wake: socket.socket
    counts: SiblingCounts


async def serve(
    settings: Settings, *, with_api: bool = True, sibling: Sibling | None = None
) -> None:
    """Run the API port, the registry port and the worker in one process until SIGINT/SIGTERM
    (a `sibling`: until SIGTERM, which its supervisor sends; SIGINT is the supervisor's).

    Both ports are bound before anything else happens: one that is in use ends the process
    (SystemExit, one line naming the address) before the database is opened or anything
    logs "serving"."""
    # Imported here: the CLI's offline commands need only open_core, and these are slow to load.
    import uvicorn

    from imagedepot.api.app import api_app, registry_app
    from imagedepot.api.auth import Gate
    from imagedepot.api.connection_limits import bounded_protocol
    from imagedepot.api.context import ApiContext
    from imagedepot.api.forwarded import behind_proxies
    from imagedepot.api.limits import AuthFailureLimiter, RateLimiter
    from imagedepot.api.metrics import CountingMiddleware
    from imagedepot.api.zero_copy import http_protocol
    from imagedepot.services.console_sessions import ConsoleSessions

    logging.getLogger("uvicorn.error").addFilter(QuietCancellations())

    class EmbeddedServer(uvicorn.Server):
        """A uvicorn server that leaves signal handling to `serve`, which runs several of them."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    listeners: dict[str, socket.socket] = dict(sibling.listeners) if sibling else {}
    try:
        if with_api and sibling is None:
            listeners = bind_ports(settings)
        core = await asyncio.to_thread(checked_core, settings)
        try:
            await asyncio.to_thread(core.liveness.beat)
        except BaseException:
            core.close()
            raise
    except BaseException:
        for listener in listeners.values():
            listener.close()
        raise
    if core.admin_token_path is not None and sibling is None:
        log.warning("admin token is in %s", core.admin_token_path)
    registry = new_registry_client(settings)
    fetcher = blob_fetcher(core, registry)
    worker = worker_for(core, fetcher) if settings.run_worker else None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    servers: list[tuple[uvicorn.Server, socket.socket]] = []

    def stop_now() -> None:
        log.warning("a second signal: stopping now, without waiting for open requests")
        for server, _ in servers:
            server.force_exit = True

    def on_signal() -> None:
        if not stop.is_set():
            stop.set()  # drain: running requests get `shutdown_seconds` to finish
        elif sibling is None:
            stop_now()

    if sibling is None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal)
    else:
        # A child drains on SIGTERM however often it comes (systemd signals every process
        # of the service, and the supervisor passes its own signal on); the supervisor says
        # "now" with SIGQUIT.
        loop.add_signal_handler(signal.SIGTERM, on_signal)
        loop.add_signal_handler(signal.SIGQUIT, stop_now)

    def notify_worker() -> None:
        if worker is not None:
            loop.call_soon_threadsafe(worker.wake)
        elif sibling is not None:
            with contextlib.suppress(OSError):  # full: the worker has wake-ups waiting
                sibling.wake.send(b"w")

    if with_api:
        # One count of failed authentications per address, whichever port they hit.
        auth_failures = AuthFailureLimiter(settings.auth_failure_rate, settings.auth_failure_burst)
        gate = Gate(
            core.identity,
            core.audit,
            RateLimiter(settings.rate_limit, settings.rate_burst),
            core.clock,
            settings.max_body_bytes,
            auth_failures,
        )
        context = ApiContext(
            gate,
            core.caches,
            notify_worker,
            vm_images=core.vm_images,
            image_sharing=core.image_sharing,
            secrets=core.secrets,
            upstreams=core.upstreams,
            metrics=core.metrics,
            inventory=core.inventory,
            readiness=lambda: readiness(core),
            console=ConsoleSessions(core.store, core.identity, core.clock),
            registry_endpoint=(
                f"{'https' if settings.tls_cert else 'http'}://"
                f"{address(settings.host, settings.registry_port)}"
            ),
        )
        for app, name, port in (
            (api_app(context), "api", settings.port),
            (
                registry_app(
                    registry_context(
                        core, auth_failures, pull_through_for(core, fetcher, notify_worker)
                    )
                ),
                "registry",
                settings.registry_port,
            ),
        ):
            config = uvicorn.Config(
                behind_proxies(
                    CountingMiddleware(app, core.metrics, name), settings.forwarded_allow_ips
                ),
                host=settings.host,
                port=port,
                http=bounded_protocol(
                    plain_http_protocol(http_protocol(), PORT_NAMES[name]),
                    settings.max_header_bytes,
                    settings.header_timeout_seconds,
                ),
                timeout_graceful_shutdown=settings.shutdown_seconds,
                log_level="warning",
                access_log=False,
                lifespan="off",
                ssl_certfile=settings.tls_cert,
                ssl_keyfile=settings.tls_key,
                # behind_proxies applies X-Forwarded-* from the configured proxies only;
                # uvicorn's own default would believe them from any loopback peer.
                proxy_headers=False,
            )
            servers.append((EmbeddedServer(config), listeners[name]))
    tasks = [asyncio.create_task(server.serve([listener])) for server, listener in servers]
    tasks.append(asyncio.create_task(keep_beating(core.liveness, stop)))
    if worker is not None:
        tasks.append(asyncio.create_task(worker.run(stop)))
    if sibling is not None:
        tasks.append(asyncio.create_task(share_counts(core.metrics, sibling.counts, stop)))
        if worker is not None:
            loop.add_reader(sibling.wake.fileno(), take_wake_ups, sibling.wake, worker)
    if sibling is not None:
        log.debug("%s process %d started", "API" if with_api else "worker", os.getpid())
    elif with_api:
        scheme = "https" if settings.tls_cert else "http"
        log.info(
            "imagedepot serving API on %s://%s, registry on %s://%s",
            scheme,
            address(settings.host, settings.port),
            scheme,
            address(settings.host, settings.registry_port),
        )
    else:
        log.info("imagedepot worker running (no API port)")
    try:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        if sibling is not None and worker is not None:
            loop.remove_reader(sibling.wake.fileno())
        for server, _ in servers:
            server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)
        for listener in listeners.values():
            listener.close()
        await registry.close()
        core.close()
