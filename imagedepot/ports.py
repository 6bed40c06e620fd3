"""The small interfaces the use cases need from the outside world.

Services depend on these Protocols only; `bootstrap` picks the adapters. Each
port is as narrow as its callers need, so that every backend can pass the same
contract tests.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from imagedepot.domain.caches import CacheChange, CacheStatus, ImageCache
from imagedepot.domain.identity import Credential, Project
from imagedepot.domain.references import ImageReference
from imagedepot.domain.sharing import ImageMember
from imagedepot.domain.upstreams import Upstream
from imagedepot.domain.vmimages import ImageJob, ImageQuery, VmImage


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


# --- metadata -------------------------------------------------------------------------------


class CacheRepository(Protocol):
    def add(self, cache: ImageCache) -> None:
        """Insert with the next revision (set on `cache`); raises Conflict when the project
        already has a cache of that name."""

    def get(self, cache_id: str, project_id: str | None = None) -> ImageCache | None:
        """One cache by id; with `project_id`, only if it belongs to that project."""

    def list(self, project_id: str, name: str | None = None) -> list[ImageCache]:
        """The project's caches, oldest first; `name` is an exact match."""

    def save(self, cache: ImageCache, expected_version: int) -> bool:
        """Write `cache` if its stored resource_version is still `expected_version`, giving
        it the next revision (set on `cache`).

        False (nothing written) when another writer got there first or the row is gone.
        """

    def remove(self, cache_id: str, at: datetime) -> bool:
        """Delete the row (logged as a change at `at`); False when it was already gone."""

    def revision(self) -> int:
        """The newest revision any cache write took (the store-wide resourceVersion)."""

    def compacted_revision(self) -> int:
        """Changes at or below this revision are no longer kept."""

    def changes_after(
        self, project_id: str, revision: int, limit: int
    ) -> builtins.list[CacheChange]:
        """The project's cache changes after `revision`, oldest first, at most `limit`."""

    def compact_changes(self, before: datetime) -> int:
        """Forget the changes logged before `before`; how many were dropped."""

    def claim(
        self,
        statuses: tuple[CacheStatus, ...],
        holder: str,
        now: datetime,
        lease_until: datetime,
        dead_holders: tuple[str, ...] = (),
        *,
        refresh_due: bool = False,
    ) -> ImageCache | None:
        """(With `refresh_due`, an Available cache whose refresh is due is work too.) Lease one cache in one of `statuses` whose lease is free, expired, or held by a dead holder."""

    def renew(self, cache_id: str, holder: str, lease_until: datetime) -> bool:
        """Extend a lease we hold; False when we lost it."""

    def release(self, cache_id: str, holder: str) -> None:
        """Give up a lease we hold."""

    def lease_holders(self) -> builtins.list[str]:
        """Every holder that currently has a lease (alive or not)."""

    def expired(self, now: datetime) -> builtins.list[ImageCache]:
        """Available, Failed or Unavailable caches whose retention has run out."""

    def available(
        self, project_ids: Sequence[str], *, building_of: str | None = None
    ) -> builtins.list[ImageCache]:
        """The Available caches of these projects, newest (by creation) first; with
        `building_of`, that project's caches being built (Creating) among them, in one read."""

    def building(self, project_id: str) -> builtins.list[ImageCache]:
        """The project's caches being built (Creating), newest first."""

    def count_by_status(self) -> dict[str, int]:
        """How many caches each status has, over every project."""

    def record_use(self, cache_id: str, at: datetime) -> bool:
        """Move last_used_at forward to `at` (never back); the resource version stays, since a
        pull changes nothing about the cache. False when nothing changed."""


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class BlobUsage:
    """What some caches reference, counted two ways: as if each cache kept its own copy of
    every blob it uses, and as stored (each distinct blob once)."""

    caches: int
    referenced_bytes: int
    """Every cache's blobs, a blob shared by two caches counted twice ("without dedup")."""
    stored_bytes: int
    """Each distinct blob once: what the blob store holds for these caches."""
    blobs: int
    """How many distinct blobs."""


class BlobRefRepository(Protocol):
    def add_refs(self, owner_id: str, blobs: list[BlobInfo]) -> None:
        """Record that `owner_id` uses these blobs (idempotent)."""

    def refs_of(self, owner_id: str) -> list[BlobInfo]:
        """The blobs `owner_id` uses."""

    def drop_refs(self, owner_id: str) -> None:
        """Forget every reference held by `owner_id`."""

    def referenced(self, digests: list[str]) -> set[str]:
        """Which of `digests` at least one owner still uses."""

    def all_referenced(self) -> set[str]:
        """Every digest that some owner uses."""

    def recorded_sizes(self) -> dict[str, int]:
        """Every referenced blob's size as its owners recorded it."""

    def referenced_totals(self) -> tuple[int, int]:
        """How many distinct blobs some owner uses, and their bytes."""

    def referenced_by_settled_owners(self) -> set[str]:
        """The digests used by some owner other than a cache still being built (whose
        references are recorded before its bytes arrive)."""

    def owners_of(self, digest: str, owner_ids: Sequence[str]) -> dict[str, BlobInfo]:
        """Which of `owner_ids` use `digest`, each with what it recorded about it."""

    def held_by_project(
        self, project_id: str, digests: Sequence[str], excluding_owner: str
    ) -> set[str]:
        """Which of `digests` an Available or Unavailable cache of `project_id` (other than
        `excluding_owner`) uses: blobs the project has already shown it may read."""

    def available_ref(self, digest: str, project_ids: Sequence[str]) -> BlobInfo | None:
        """`digest` as an Available cache of one of these projects recorded it; None when no
        such cache holds it."""

    def cache_usage_by_project(self) -> dict[str, BlobUsage]:
        """Per project id, what its caches (other than those still being built) reference:
        every blob counted once per cache, and once per distinct blob. Projects whose caches
        reference nothing are left out."""

    def cache_usage_total(self) -> BlobUsage:
        """The same over every project's caches: a blob two projects share is stored once."""


class BlobLockRepository(Protocol):
    """Blob reuse against garbage collection, held until the transaction ends, wherever the
    builders and the collector run."""

    def hold_for_reuse(self, digests: Sequence[str]) -> None:
        """No collector may remove these blobs until this transaction ends; waits for one that
        is removing one of them now (so a blob checked after this is really there)."""

    def hold_for_removal(self, digest: str) -> bool:
        """Take `digest` for removal until this transaction ends; False (without waiting) when
        a builder or another collector holds it."""


class BlobOrphanRepository(Protocol):
    """The collector's grace clock: since when each unreferenced blob has been seen so."""

    def note(self, digests: Sequence[str], now: datetime) -> None:
        """Start the clock of those of `digests` not already running."""

    def forget(self, digests: Sequence[str]) -> None:
        """Stop their clocks (referenced again, or removed)."""

    def noted(self) -> set[str]:
        """Every digest whose clock runs."""

    def due(self, cutoff: datetime) -> builtins.list[str]:
        """The digests seen unreferenced since `cutoff` or earlier."""


class BlobFetchRepository(Protocol):
    """Which process is downloading which blob: one download per blob across every worker."""

    def claim(
        self,
        digest: str,
        holder: str,
        now: datetime,
        lease_until: datetime,
        dead_holders: Sequence[str] = (),
    ) -> str:
        """Take the fetch of `digest` when nobody holds it, its lease ran out, or its holder is
        dead; the holder afterwards (`holder` when the claim is ours)."""

    def renew(self, digest: str, holder: str, lease_until: datetime) -> bool:
        """Extend our claim; False when we lost it."""

    def release(self, digest: str, holder: str) -> None: ...

    def holders(self) -> builtins.list[str]:
        """Every process that holds a fetch claim."""


class HeartbeatRepository(Protocol):
    """When each process was last seen alive: liveness across hosts."""

    def beat(self, holder: str, now: datetime) -> None: ...

    def silent(self, holders: Sequence[str], since: datetime) -> builtins.list[str]:
        """Which of `holders` have not beaten since `since` (or never did)."""

    def forget_silent(self, before: datetime) -> int:
        """Drop the heartbeats of processes silent since before `before`; the count."""


class KeyCheckRepository(Protocol):
    """Values sealed with the deployment's secret key, so that a process holding another key
    is caught at start rather than when it first meets a secret."""

    def sealed(self, name: str) -> bytes | None: ...

    def put(self, name: str, ciphertext: bytes) -> None: ...

    def add_if_absent(self, name: str, ciphertext: bytes) -> bytes:
        """Store `ciphertext` unless a value is stored already; the stored value."""


class VmImageRepository(Protocol):
    def add(self, image: VmImage) -> None:
        """Insert with its tags and properties; Conflict when the id is taken (even by a
        deleted image)."""

    def get(
        self, image_id: str, project_id: str | None = None, *, include_deleted: bool = False
    ) -> VmImage | None:
        """One image by id; with `project_id`, only if it belongs to that project."""

    def save(self, image: VmImage, expected_version: int) -> bool:
        """Write `image` (tags and properties too) if its stored version is still
        `expected_version`; False when another writer got there first."""

    def count_by_status(self) -> dict[str, int]:
        """How many images each status has, over every project (deleted ones left out)."""

    def get_visible(self, image_id: str, project_id: str) -> VmImage | None:
        """The image if `project_id` may read it: owned, public, community, or shared with it
        (whatever its member status); deleted images never."""

    def add_member(self, member: ImageMember) -> None:
        """Record a member; Conflict (field `member`) when it already is one."""

    def member(self, image_id: str, member_id: str) -> ImageMember | None: ...

    def members(self, image_id: str) -> builtins.list[ImageMember]:
        """The image's members, oldest first."""

    def save_member(self, member: ImageMember) -> None: ...

    def remove_member(self, image_id: str, member_id: str) -> bool:
        """False when it was not a member."""

    def list(self, query: ImageQuery) -> builtins.list[VmImage]:
        """One page, in the query's order, after its marker; InvalidInput (field `marker`)
        when the marker is not an image the query could return."""

    def count(self, query: ImageQuery) -> int:
        """How many images match the query's filters (paging ignored)."""

    def upload_holders(self) -> builtins.list[str]:
        """Every process recorded as uploading some image's data."""

    def saving_held_by(self, holders: Sequence[str]) -> builtins.list[VmImage]:
        """Images still `saving` whose upload belongs to one of these (dead) holders."""

    def add_job(self, job: ImageJob) -> None: ...

    def jobs(self, project_id: str, job_ids: Sequence[str]) -> builtins.list[ImageJob]:
        """The project's jobs among `job_ids`, in that order; unknown ids are left out."""


@dataclass(frozen=True)
class ProjectSummary:
    """A project as the operator's overview lists it."""

    project: Project
    anonymous_pull: bool
    credentials: int
    """Every credential ever issued to it, revoked and expired ones included."""
    usable_credentials: int
    caches: int


class IdentityRepository(Protocol):
    def add_project(self, project: Project) -> None: ...

    def project_by_name(self, name: str) -> Project | None: ...

    def project_by_id(self, project_id: str) -> Project | None: ...

    def add_credential(self, credential: Credential) -> None: ...

    def credential_by_token_hash(self, token_sha256: str) -> Credential | None: ...

    def credential_by_access_key(self, access_key: str) -> Credential | None: ...

    def credential(self, credential_id: str) -> Credential | None: ...

    def credentials(self, project_id: str | None = None) -> builtins.list[Credential]:
        """Every credential (of one project), oldest first."""

    def revoke_credential(self, credential_id: str, at: datetime) -> bool:
        """Mark revoked; False when unknown or already revoked."""

    def reseal_credential_secrets(self, reseal: Callable[[bytes], bytes]) -> int:
        """Re-encrypt every stored secret key with `reseal` (key rotation); the count changed."""

    def set_anonymous_pull(self, project_id: str, allowed: bool) -> bool:
        """Let anyone pull the project's caches on the registry port, or stop that; False
        when there is no such project."""

    def anonymous_pull_projects(self) -> builtins.list[str]:
        """The ids of the projects whose caches anyone may pull."""

    def set_stored_bytes_quota(self, project_id: str, quota: int | None) -> bool:
        """The most bytes the project's caches may hold (each blob once); None: no limit."""

    def stored_bytes_quota(self, project_id: str) -> int | None: ...

    def project_summaries(self, now: datetime) -> builtins.list[ProjectSummary]:
        """Every project by name, with its anonymous-pull setting and how many credentials
        (all issued, and those usable at `now`) and caches it has."""


@dataclass(frozen=True)
class AuditEvent:
    """One state-changing call: who, for which project, what, on which object, and the outcome."""

    at: datetime
    credential_id: str | None
    project_id: str | None
    action: str
    target: str
    status: int
    request_id: str
    remote: str | None = None


REFUSED_STATUS = 400
"""An audit event with this status or above records a refused call (API and CLI alike)."""


@dataclass(frozen=True)
class AuditQuery:
    project_id: str | None = None
    action: str | None = None
    """A part of the action, any case (`credential` finds `iam:credential:create`)."""
    refused: bool | None = None
    """True: only refused calls (REFUSED_STATUS and up); False: only those that went through."""
    limit: int = 100


class AuditRepository(Protocol):
    def add(self, event: AuditEvent) -> None: ...

    def recent(self, project_id: str | None = None, limit: int = 100) -> builtins.list[AuditEvent]:
        """The newest events first."""

    def search(self, query: AuditQuery) -> builtins.list[AuditEvent]:
        """The newest events first that match every filter the query sets."""


@dataclass(frozen=True)
class StoredSecret:
    project_id: str
    namespace: str
    name: str
    type: str
    ciphertext: bytes
    created_at: datetime


class SecretRepository(Protocol):
    def put(self, secret: StoredSecret) -> None:
        """Insert or replace the secret `namespace/name` of the project."""

    def get(self, project_id: str, namespace: str, name: str) -> StoredSecret | None: ...

    def list(
        self, project_id: str, namespace: str | None = None
    ) -> builtins.list[StoredSecret]: ...

    def delete(self, project_id: str, namespace: str, name: str) -> bool: ...

    def reseal_all(self, reseal: Callable[[bytes], bytes]) -> int:
        """Re-encrypt every secret's data with `reseal` (key rotation); the count changed."""


class UpstreamRepository(Protocol):
    def put(self, upstream: Upstream) -> None:
        """Insert or replace the project's upstream for `upstream.registry`."""

    def get(self, project_id: str, registry: str) -> Upstream | None: ...

    def list(self, project_id: str) -> builtins.list[Upstream]:
        """The project's upstreams, by registry host."""

    def remove(self, project_id: str, registry: str) -> bool: ...


@dataclass(frozen=True)
class ConsoleSession:
    """A browser signed in to the web console: which credential, acting in which project."""

    id_sha256: str
    """The sha256 of the cookie's secret; the secret itself is never stored."""
    credential_id: str
    project_id: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None


class ConsoleSessionRepository(Protocol):
    def add(self, session: ConsoleSession) -> None: ...

    def get(self, id_sha256: str) -> ConsoleSession | None: ...

    def revoke(self, id_sha256: str, at: datetime) -> bool:
        """Mark it signed out; False when unknown or already revoked."""

    def forget_expired(self, before: datetime) -> int:
        """Delete sessions that expired (or were revoked) before `before`; how many."""


class UnitOfWork(Protocol):
    """One transaction: everything done through it commits together when the block ends cleanly."""

    caches: CacheRepository
    blob_refs: BlobRefRepository
    vm_images: VmImageRepository
    identity: IdentityRepository
    secrets: SecretRepository
    audit: AuditRepository
    console_sessions: ConsoleSessionRepository
    blob_locks: BlobLockRepository
    blob_orphans: BlobOrphanRepository
    blob_fetches: BlobFetchRepository
    heartbeats: HeartbeatRepository
    key_checks: KeyCheckRepository
    upstreams: UpstreamRepository


class MetadataStore(Protocol):
    def transaction(self, *, read_only: bool = False) -> AbstractContextManager[UnitOfWork]:
        """A unit of work; committed on clean exit, rolled back on an exception.

        `read_only` promises no writes, so a backend can let it run beside a writer.
        """

    def close(self) -> None: ...


# --- blobs ----------------------------------------------------------------------------------


class BlobWriter(Protocol):
    """A blob being written: bytes are staged where no reader looks and become visible under
    their content address only once verified."""

    @property
    def written(self) -> int:
        """Bytes accepted so far (where a resumed download continues)."""

    def write(self, chunk: bytes) -> None:
        """Append; raises BlobCorrupt as soon as more bytes arrive than expected."""

    def reset(self) -> None:
        """Throw away what was written, to start over."""

    def commit(self) -> None:
        """Verify size and sha256, make the bytes durable and visible under the digest;
        BlobCorrupt when they don't match."""

    def abort(self) -> None:
        """Throw away what is staged; safe to call after commit."""

    def can_tap(self) -> bool:
        """Whether `tap` gives a reader: the writer stages its bytes in a local file."""

    def tap(self) -> ByteReader | None:
        """A reader of the bytes written so far, when the writer stages them in a local file
        (clients can then follow the download without a second copy); None otherwise."""


def write_blob(writer: BlobWriter, chunks: Iterable[bytes]) -> None:
    """Feed `chunks` to `writer` and commit them; whatever happens, nothing stays staged."""
    try:
        for chunk in chunks:
            writer.write(chunk)
        writer.commit()
    finally:
        writer.abort()


class UploadWriter(Protocol):
    """Bytes of a digest not known in advance: hashed while written, made durable where no
    reader looks by `finish`, and placed under their sha256 by `commit` (once, even when that
    blob already exists)."""

    @property
    def written(self) -> int: ...

    def write(self, chunk: bytes) -> None: ...

    def finish(self) -> str:
        """No more bytes: make them durable (still staged); the blob's `sha256:` digest."""

    def commit(self) -> str:
        """Place the finished bytes under their digest (finishing them first if needed);
        idempotent; the digest."""

    def abort(self) -> None:
        """Throw away what is staged; safe to call after commit."""


class StoreUnavailable(Exception):
    """The metadata store cannot be reached right now (a restart, a cut connection); nothing
    was committed and the same request may be tried again."""


class BlobCorrupt(Exception):
    """Bytes whose size or digest do not match what was promised."""


class BlobStoreFull(Exception):
    """The blob store has no room for the bytes being written (a full disk or quota); what
    was staged is gone, and writes work again once there is room."""


class BlobStoreUnavailable(Exception):
    """The blob store cannot be reached or used (a missing bucket, a refused login, a dead
    endpoint); the message names the store."""


# The roles a blob backend plays, after distribution's storage driver: each caller depends on
# the role it uses, and every backend passes one contract suite.


class BlobStat(Protocol):
    def has(self, digest: str) -> bool: ...

    def size(self, digest: str) -> int | None:
        """The committed blob's length; None when it is not stored."""


class BlobReader(Protocol):
    def open(
        self, digest: str, start: int = 0, length: int | None = None
    ) -> AbstractContextManager[Iterator[bytes]]:
        """Stream a committed blob's bytes (from `start`, at most `length` of them) in chunks;
        FileNotFoundError when it is not stored."""

    def read_bytes(self, digest: str, limit: int) -> bytes:
        """Read a small committed blob whole (a manifest); raises BlobCorrupt past `limit`."""


class BlobIngester(Protocol):
    def writer(self, digest: str, size: int | None) -> BlobWriter:
        """A writer that commits only bytes whose sha256 is `digest` (and length `size`, if known)."""

    def upload_writer(self) -> UploadWriter:
        """A writer for bytes whose digest is learnt as they arrive (an image upload)."""

    def put_bytes(self, digest: str, data: bytes) -> None:
        """Store a small blob (a manifest) held in memory, with the same verification."""


class BlobDeleter(Protocol):
    def delete(self, digest: str) -> None:
        """Remove a committed blob; nothing when it is not stored."""


class BlobEnumerator(Protocol):
    def digests(self) -> Iterator[str]:
        """Every committed blob."""


class BlobUpkeep(Protocol):
    def check(self, *, writable: bool = True) -> None:
        """Raise BlobStoreUnavailable unless the store answers (and, when `writable`, can be
        written: a probe worth making at start, not on every health check)."""

    def leftovers(self) -> builtins.list[str]:
        """What `clean_temporary` would remove now, each named (for `fsck`)."""

    def free_bytes(self) -> int | None:
        """Room left for blobs, when the store can tell (a local disk); None otherwise."""

    def clean_temporary(self) -> int:
        """Remove what writers that died left staged; the count removed."""

    def close(self) -> None:
        """Let go of what the store holds open (threads, connections)."""


class BlobDelivery(Protocol):
    """How the HTTP layer hands a committed blob to a client, when the backend can do better
    than streaming `open()` through the process."""

    def local_file(self, digest: str) -> str | None:
        """A file the kernel can send the blob from (sendfile); None when the backend keeps
        no local copy."""

    def redirect_url(self, digest: str) -> str | None:
        """A short-lived URL from which the client can GET the blob straight from the
        backend; None unless the backend is set to answer with redirects."""


class ByteReader(Protocol):
    """Reads of bytes a download has written so far, for clients that follow it."""

    def read(self, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...


class Spool(ByteReader, Protocol):
    """A scratch file of one download's bytes as they arrive, for a writer that keeps no
    local copy of its own; gone (with its space) once closed."""

    def append(self, chunk: bytes) -> None: ...

    def truncate(self) -> None:
        """Start over empty (the download restarts from its first byte)."""


class BlobSource(BlobReader, BlobDelivery, Protocol):
    """What the HTTP layer needs to send a committed blob to a client."""


class BlobStore(
    BlobStat,
    BlobReader,
    BlobIngester,
    BlobDeleter,
    BlobEnumerator,
    BlobUpkeep,
    BlobDelivery,
    Protocol,
):
    """Every role at once: what the composition root builds and hands out role by role."""


# --- registries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryCredentials:
    username: str
    password: str


@dataclass(frozen=True)
class Transport:
    """How to talk to one registry host, decided by the service from settings and the spec."""

    endpoint: str
    """Host (and port) to connect to: the image's registry, or a mirror of it."""
    plain_http: bool = False
    verify_tls: bool = True
    credentials: RegistryCredentials | None = None


@dataclass(frozen=True)
class FetchedManifest:
    body: bytes
    media_type: str
    digest: str


class RegistryError(Exception):
    """A registry call failed; `kind` is one of not_found, unauthorized, upstream, corrupt, unreachable."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


ProgressCallback = Callable[[int], None]


class RegistryClient(Protocol):
    async def fetch_manifest(
        self, transport: Transport, image: ImageReference, reference: str
    ) -> FetchedManifest:
        """GET a manifest by tag or digest; a digest reference is verified against the bytes."""

    async def fetch_referrers(
        self, transport: Transport, image: ImageReference, digest: str
    ) -> bytes | None:
        """The upstream's referrers index for `digest` (an OCI index), or None when it has no
        referrers API or cannot answer."""

    async def manifest_digest(
        self, transport: Transport, image: ImageReference, reference: str, seconds: float
    ) -> str:
        """The digest the registry gives `reference` now: one quick attempt, no retries."""

    async def fetch_blob(
        self,
        transport: Transport,
        image: ImageReference,
        digest: str,
        writer: BlobWriter,
        on_progress: ProgressCallback,
    ) -> None:
        """Stream a blob into `writer` (resuming or restarting on broken connections), then commit it."""

    async def check_blob(
        self, transport: Transport, image: ImageReference, digest: str, size: int
    ) -> None:
        """Ask the registry (with the transport's own login) whether it holds `digest` of
        `size` bytes, without moving the bytes; RegistryError when it does not."""

    async def close(self) -> None: ...


class SecretUndecryptable(ValueError):
    """Ciphertext that none of the keys opens: another key, or damaged data."""


class SecretBox(Protocol):
    """Symmetric encryption of secret data at rest; decrypt and rotate raise
    SecretUndecryptable for ciphertext none of the keys opens."""

    def encrypt(self, plaintext: bytes) -> bytes: ...

    def decrypt(self, ciphertext: bytes) -> bytes: ...

    def rotate(self, ciphertext: bytes) -> bytes:
        """Re-seal under the newest key."""
