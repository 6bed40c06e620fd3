"""The ImageCache aggregate: a frozen set of container images, spelled `ImageCache` by CCE and
`ImageSnapshot` by CCI.

Everything a dialect may say about a cache is here: the spec the user asked for,
the status the worker reached, and the rules that move it between phases. The
dialects only translate names and shapes.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from imagedepot.domain.errors import Conflict, InvalidInput
from imagedepot.domain.references import parse_reference

NAME_RE = re.compile(r"^[a-z](?:[-a-z0-9]*[a-z0-9])?\Z")
NAME_MAX = 128
IMAGES_MIN, IMAGES_MAX = 1, 20
SIZE_GIB_MIN, SIZE_GIB_MAX, SIZE_GIB_DEFAULT = 20, 400, 20
RETENTION_MIN, RETENTION_MAX = 0, 10000
TIMEOUT_MIN, TIMEOUT_MAX, TIMEOUT_DEFAULT = 30, 10080, 1440
REFRESH_MIN, REFRESH_MAX = 10, 365 * 86400
"""Seconds between refreshes of a cache's tags, when it has any (0: never)."""
SECRET_REF_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?:[a-z0-9](?:[-.a-z0-9]*[a-z0-9])?\Z")
GIB = 1024**3


class CacheStatus(enum.StrEnum):
    CREATING = "Creating"
    AVAILABLE = "Available"
    UNAVAILABLE = "Unavailable"
    FAILED = "Failed"
    DELETING = "Deleting"


REBUILDABLE = frozenset({CacheStatus.CREATING, CacheStatus.FAILED})
"""Statuses in which a cache holds nothing built yet, so its spec may still change."""


class FailureReason(enum.StrEnum):
    """Why a build failed; the message names the image and tells the details."""

    NOT_FOUND = "ImageNotFound"
    UNAUTHORIZED = "Unauthorized"
    SIZE_EXCEEDED = "SizeBudgetExceeded"
    TIMEOUT = "Timeout"
    UPSTREAM = "UpstreamError"
    CORRUPT = "DigestMismatch"
    EXPIRED = "Expired"
    SECRET_UNREADABLE = "PullSecretUnreadable"  # noqa: S105 - a reason, not a secret
    QUOTA = "QuotaExceeded"
    """The project's quota of stored bytes, with everything evictable evicted, is too small."""
    STORAGE_FULL = "StorageFull"
    """The blob store had no room for the images (a full disk); nothing partial is kept."""
    STORAGE = "BlobStoreUnavailable"
    """The blob store stayed unreachable past the client's retries (about a minute)."""


@dataclass(frozen=True)
class RegistryAccess:
    """How to reach one registry: the CCI `registries[]` entry, also used for server settings."""

    server: str
    plain_http: bool = False
    insecure_skip_verify: bool = False
    pull_secret: str | None = None


@dataclass(frozen=True)
class CacheSpec:
    name: str
    images: tuple[str, ...]
    size_gib: int = SIZE_GIB_DEFAULT
    retention_days: int = 0
    cluster: str | None = None
    pull_secrets: tuple[str, ...] = ()
    registries: tuple[RegistryAccess, ...] = ()
    timeout_minutes: int = TIMEOUT_DEFAULT
    refresh_seconds: int = 0
    """Re-resolve the tags this often and build what moved as the next generation; 0: never."""

    def validate(
        self, *, max_images: int = IMAGES_MAX, field_names: FieldNames | None = None
    ) -> None:
        """Raise InvalidInput naming the first field (in the caller's spelling) that breaks a rule."""
        names = field_names or FieldNames()
        if not isinstance(self.name, str) or not 1 <= len(self.name) <= NAME_MAX:
            raise InvalidInput(f"{names.name} must be 1-{NAME_MAX} characters", field=names.name)
        if not NAME_RE.match(self.name):
            raise InvalidInput(
                f"{names.name} {self.name!r} must start with a lowercase letter, contain only "
                "lowercase letters, digits and '-', and not end with '-'",
                field=names.name,
            )
        if not IMAGES_MIN <= len(self.images) <= max_images:
            raise InvalidInput(
                f"{names.images} must list {IMAGES_MIN} to {max_images} images, got {len(self.images)}",
                field=names.images,
            )
        seen: set[str] = set()
        for index, image in enumerate(self.images):
            where = f"{names.images}[{index}]"
            try:
                normalised = str(parse_reference(image))
            except InvalidInput as error:
                raise InvalidInput(f"{where}: {error.message}", field=where) from None
            if normalised in seen:
                raise InvalidInput(f"{where}: {image!r} is listed twice", field=where)
            seen.add(normalised)
        _check_range(names.size_gib, self.size_gib, SIZE_GIB_MIN, SIZE_GIB_MAX)
        _check_range(names.retention_days, self.retention_days, RETENTION_MIN, RETENTION_MAX)
        _check_range(names.timeout_minutes, self.timeout_minutes, TIMEOUT_MIN, TIMEOUT_MAX)
        if self.refresh_seconds:
            _check_range(names.refresh_interval, self.refresh_seconds, REFRESH_MIN, REFRESH_MAX)
        for index, secret in enumerate(self.pull_secrets):
            where = f"{names.pull_secrets}[{index}]"
            if not isinstance(secret, str) or not SECRET_REF_RE.match(secret):
                raise InvalidInput(f"{where} must be 'namespace:name', got {secret!r}", field=where)


@dataclass(frozen=True)
class FieldNames:
    """The caller's spelling of each spec field, so that errors name what the user wrote."""

    name: str = "name"
    images: str = "images"
    size_gib: str = "image_cache_size"
    retention_days: str = "retention_days"
    timeout_minutes: str = "timeout_minutes"
    refresh_interval: str = "refresh_interval"
    pull_secrets: str = "building_config.image_pull_secrets"
    registry_pull_secret: str = "registries[{index}].pull_secret"  # noqa: S105 - a field name
    """The pull secret of `registries[index]` (`{index}` is filled in)."""


def _check_range(field_name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{field_name} must be an integer", field=field_name)
    if not low <= value <= high:
        raise InvalidInput(
            f"{field_name} must be between {low} and {high}, got {value}", field=field_name
        )


@dataclass(frozen=True)
class ImageProgress:
    """What the build knows of one image: resolved digest, total size and bytes pulled so far."""

    image: str
    digest: str | None = None
    size_bytes: int = 0
    pulled_bytes: int = 0
    done: bool = False
    checked_at: datetime | None = None
    """When the upstream was last asked what the tag stands for (pull-through check policy)."""
    upstream_error: str | None = None
    """Why the last such check failed, so the cached copy was served; None once one works."""
    upstream_error_at: datetime | None = None
    moved_from: str | None = None
    """The digest the tag stood for before the refresh that made this generation."""
    moved_at: datetime | None = None


class ChangeType(enum.StrEnum):
    """What a write did to a cache, as a watcher is told (the Kubernetes event types)."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass
class ImageCache:
    id: str
    project_id: str
    spec: CacheSpec
    created_at: datetime
    updated_at: datetime
    status: CacheStatus = CacheStatus.CREATING
    reason: str | None = None
    message: str | None = None
    images: list[ImageProgress] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    resource_version: int = 1
    generation: int = 1
    deletion_requested_at: datetime | None = None
    last_used_at: datetime | None = None
    finalizers: list[str] = field(default_factory=list)
    """Other parties' finalizers: while any is left, a deleted cache stays (Deleting)."""
    deletion_grace_seconds: int | None = None
    data_released: bool = False
    """The service's own finalizer has run: the cache's blobs are released."""
    phase_since: datetime | None = None
    """When the status last changed (None: not recorded, read as the creation time)."""
    refresh_due_at: datetime | None = None
    """When the worker next re-resolves the tags of an Available cache with a refresh interval."""

    @classmethod
    def new(cls, project_id: str, spec: CacheSpec, now: datetime) -> ImageCache:
        return cls(
            id=str(uuid.uuid4()),
            project_id=project_id,
            spec=spec,
            created_at=now,
            updated_at=now,
            images=[ImageProgress(image=image) for image in spec.images],
            phase_since=now,
        )

    @property
    def expires_at(self) -> datetime | None:
        if self.spec.retention_days == 0:
            return None
        return self.created_at + timedelta(days=self.spec.retention_days)

    def is_expired(self, now: datetime) -> bool:
        expiry = self.expires_at
        return expiry is not None and now >= expiry

    @property
    def total_bytes(self) -> int:
        return sum(image.size_bytes for image in self.images)

    def touch(self, now: datetime) -> None:
        self.updated_at = now
        self.resource_version += 1

    def _enter(self, status: CacheStatus, now: datetime) -> None:
        if status is not self.status:
            self.status = status
            self.phase_since = now

    def record_progress(self, images: list[ImageProgress], now: datetime) -> None:
        if self.status is not CacheStatus.CREATING:
            raise Conflict(f"cache {self.spec.name} is {self.status}, not building")
        self.images = list(images)
        self.touch(now)

    def mark_available(self, images: list[ImageProgress], now: datetime) -> None:
        if self.status is not CacheStatus.CREATING:
            raise Conflict(f"cache {self.spec.name} is {self.status}, not building")
        self.images = [
            replace(image, done=True, pulled_bytes=image.size_bytes, checked_at=now)
            for image in images
        ]
        self._schedule_refresh(now)
        self._enter(CacheStatus.AVAILABLE, now)
        self.reason = None
        self.message = None
        self.touch(now)

    def mark_failed(self, reason: FailureReason, message: str, now: datetime) -> None:
        if self.status is not CacheStatus.CREATING:
            raise Conflict(f"cache {self.spec.name} is {self.status}, not building")
        self._enter(CacheStatus.FAILED, now)
        self.reason = reason.value
        self.message = message
        self.touch(now)

    def mark_unavailable(self, reason: FailureReason, message: str, now: datetime) -> None:
        if self.status is CacheStatus.DELETING:
            return
        self._enter(CacheStatus.UNAVAILABLE, now)
        self.reason = reason.value
        self.message = message
        self.touch(now)

    def _schedule_refresh(self, now: datetime) -> None:
        seconds = self.spec.refresh_seconds
        self.refresh_due_at = now + timedelta(seconds=seconds) if seconds else None

    def note_refresh(self, errors: dict[str, str | None], now: datetime) -> None:
        """A refresh found no tag moved: when each was checked, why a check failed, and when
        the next refresh is due."""
        for image, error in errors.items():
            self.note_check(image, now, error)
        self._schedule_refresh(now)
        self.touch(now)

    def advance(self, images: list[ImageProgress], moved: dict[str, str], now: datetime) -> None:
        """The next generation is built: serve `images` from now on. `moved` maps each image
        whose tag moved to the digest it stood for before."""
        if self.status is not CacheStatus.AVAILABLE:
            raise Conflict(f"cache {self.spec.name} is {self.status}, not available")
        self.images = [
            replace(
                image,
                done=True,
                pulled_bytes=image.size_bytes,
                checked_at=now,
                moved_from=moved.get(image.image),
                moved_at=now if image.image in moved else None,
            )
            for image in images
        ]
        self.generation += 1
        self._schedule_refresh(now)
        self.touch(now)

    def retry(self, now: datetime) -> None:
        """Build a failed cache again, as a new generation of the same spec."""
        if self.status is not CacheStatus.FAILED:
            raise Conflict(f"cache {self.spec.name} is {self.status}, not failed")
        self.images = [ImageProgress(image=image) for image in self.spec.images]
        self._enter(CacheStatus.CREATING, now)
        self.reason = self.message = None
        self.generation += 1
        self.touch(now)

    def note_check(self, image: str, now: datetime, error: str | None) -> None:
        """Record a check of `image`'s tag against its upstream: when, and why it failed."""
        self.images = [
            replace(
                progress,
                checked_at=now if error is None else progress.checked_at,
                upstream_error=error,
                upstream_error_at=now if error is not None else None,
            )
            if progress.image == image
            else progress
            for progress in self.images
        ]
        self.touch(now)

    def change_spec(self, spec: CacheSpec, now: datetime) -> bool:
        """Take a new spec while nothing is built yet (building, or failed): the build starts
        over from it, as a new generation. False when it is the same spec; Conflict once the
        cache is built or being deleted, since what it holds is then frozen."""
        if spec == self.spec:
            return False
        if spec.name != self.spec.name:
            raise InvalidInput("a cache's name never changes", field="name")
        if replace(spec, refresh_seconds=self.spec.refresh_seconds) == self.spec:
            # Only how often it refreshes: the content stays, whatever the status.
            self.spec = spec
            if self.status is CacheStatus.AVAILABLE:
                self._schedule_refresh(now)
            self.generation += 1
            self.touch(now)
            return True
        if self.status not in REBUILDABLE or self.deletion_requested_at is not None:
            raise Conflict(
                f"cache {self.spec.name} is {self.status}: its spec is frozen once it is built"
            )
        self.spec = spec
        self.images = [ImageProgress(image=image) for image in spec.images]
        self._enter(CacheStatus.CREATING, now)
        self.reason = self.message = None
        self.generation += 1
        self.touch(now)
        return True

    def update_metadata(
        self,
        labels: dict[str, str],
        annotations: dict[str, str],
        now: datetime,
        finalizers: list[str] | None = None,
    ) -> bool:
        """Replace labels, annotations and (when given) finalizers; the spec stays. False
        when nothing changed. Once deletion is requested, finalizers may only be removed."""
        finalizers = list(self.finalizers if finalizers is None else finalizers)
        if self.deletion_requested_at is not None:
            added = [name for name in finalizers if name not in self.finalizers]
            if added:
                raise InvalidInput(
                    f"finalizers: no new finalizers can be added while the cache is being "
                    f"deleted: {', '.join(added)}",
                    field="finalizers",
                )
        if (labels, annotations, finalizers) == (self.labels, self.annotations, self.finalizers):
            return False
        self.labels = dict(labels)
        self.annotations = dict(annotations)
        self.finalizers = finalizers
        self.touch(now)
        return True

    def request_deletion(self, now: datetime, grace_seconds: int | None = None) -> bool:
        """Move to Deleting; False when it already was (a repeated delete changes nothing)."""
        if self.status is CacheStatus.DELETING:
            return False
        self._enter(CacheStatus.DELETING, now)
        self.deletion_requested_at = now
        self.deletion_grace_seconds = grace_seconds
        self.touch(now)
        return True

    def mark_data_released(self, now: datetime) -> None:
        """The service's part of a deletion is done; the cache lingers only for finalizers."""
        if self.status is not CacheStatus.DELETING:
            raise Conflict(f"cache {self.spec.name} is {self.status}, not being deleted")
        if not self.data_released:
            self.data_released = True
            self.touch(now)

    @property
    def removable(self) -> bool:
        """Deleted, released, and no finalizer holds it any more: the record can go."""
        return self.status is CacheStatus.DELETING and self.data_released and not self.finalizers


@dataclass(frozen=True)
class CacheChange:
    """One write to a cache, in the order of the store's global revision, with the cache as
    it was right after (for DELETED: as it was last)."""

    revision: int
    type: ChangeType
    cache: ImageCache
