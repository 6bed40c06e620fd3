"""The VmImage aggregate: one VM disk image, spelled a Glance image, the seed's "云主机快照" list
item, or a DiDi `cimg`.

The Glance status machine and every rule about which fields a caller may set live here, so
each dialect only translates names and shapes. Nothing here does I/O: the bytes of an image
are a content-addressed blob that the services store and reference by `blob_digest`.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from imagedepot.domain.errors import Conflict, Forbidden, InvalidInput
from imagedepot.domain.text import is_unicode

_Enum = TypeVar("_Enum", bound=enum.StrEnum)


class ImageStatus(enum.StrEnum):
    QUEUED = "queued"
    SAVING = "saving"
    UPLOADING = "uploading"
    IMPORTING = "importing"
    ACTIVE = "active"
    KILLED = "killed"
    DEACTIVATED = "deactivated"
    PENDING_DELETE = "pending_delete"
    DELETED = "deleted"


class Visibility(enum.StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"
    SHARED = "shared"
    COMMUNITY = "community"


class ImageType(enum.StrEnum):
    """Base images are uploaded as they are; snapshots are taken from a server (Nova's
    `image_type=snapshot`)."""

    IMAGE = "image"
    SNAPSHOT = "snapshot"


DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
NAME_MAX = 255
TAG_MAX = 255
PROPERTY_KEY_MAX = 255
PROPERTY_VALUE_MAX = 65535
INTEGER_MAX = (1 << 63) - 1
"""The largest min_disk / min_ram: what Glance's BIGINT columns (and ours) hold."""
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\Z"
)
OS_HASH_ALGO = "sha512"

READ_ONLY_FIELDS = frozenset(
    {
        "checksum",
        "created_at",
        "file",
        "os_hash_algo",
        "os_hash_value",
        "schema",
        "self",
        "size",
        "status",
        "updated_at",
        "virtual_size",
        "direct_url",
        "locations",
    }
)
"""Fields only the server sets: a create or patch that names one is refused (403)."""
RESERVED_FIELDS = frozenset({"owner", "deleted", "deleted_at", "location"})
"""Fields a caller may not set as properties either (403)."""
SETTABLE_FIELDS = frozenset(
    {
        "name",
        "visibility",
        "protected",
        "os_hidden",
        "min_disk",
        "min_ram",
        "disk_format",
        "container_format",
        "tags",
    }
)
"""Core attributes a caller may set; any other key is a string property."""
VISIBLE_STATUSES = tuple(s for s in ImageStatus if s is not ImageStatus.DELETED)
DOWNLOADABLE = (ImageStatus.ACTIVE,)


@dataclass
class VmImage:
    id: str
    project_id: str
    created_at: datetime
    updated_at: datetime
    name: str | None = None
    status: ImageStatus = ImageStatus.QUEUED
    visibility: Visibility = Visibility.SHARED
    protected: bool = False
    os_hidden: bool = False
    disk_format: str | None = None
    container_format: str | None = None
    min_disk: int = 0
    min_ram: int = 0
    size: int | None = None
    virtual_size: int | None = None
    checksum: str | None = None
    os_hash_algo: str | None = None
    os_hash_value: str | None = None
    blob_digest: str | None = None
    image_type: ImageType = ImageType.IMAGE
    tags: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    region: str | None = None
    """Where the image lives; a copy to another region is another image sharing the bytes."""
    description: str | None = None
    deleted_at: datetime | None = None
    upload_holder: str | None = None
    """The process writing the data while `saving` (host/pid/nonce), to undo a crashed upload."""
    version: int = 1

    @classmethod
    def new(
        cls,
        project_id: str,
        now: datetime,
        *,
        image_id: str | None = None,
        region: str | None = None,
    ) -> VmImage:
        if image_id is not None and not UUID_RE.match(image_id):
            raise InvalidInput(f"id {image_id!r} is not a UUID", field="id")
        return cls(
            id=str(uuid.UUID(image_id)) if image_id else str(uuid.uuid4()),
            project_id=project_id,
            created_at=now,
            updated_at=now,
            region=region,
        )

    # --- attributes ---------------------------------------------------------------------

    def set_attribute(self, key: str, value: object) -> None:
        """Set one core attribute or string property, as a create or a patch names it."""
        if key in READ_ONLY_FIELDS:
            raise Forbidden(f"attribute '{key}' is read-only", field=key)
        if key in RESERVED_FIELDS:
            raise Forbidden(f"attribute '{key}' is reserved", field=key)
        if key == "id":
            raise Forbidden("attribute 'id' is read-only", field=key)
        if key == "name":
            self.name = _optional_text(key, value, NAME_MAX)
        elif key == "visibility":
            self.visibility = _choice(key, value, Visibility)
        elif key in ("protected", "os_hidden"):
            if not isinstance(value, bool):
                raise InvalidInput(f"{key} must be true or false", field=key)
            setattr(self, key, value)
        elif key in ("min_disk", "min_ram"):
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 0 <= value <= INTEGER_MAX
            ):
                raise InvalidInput(
                    f"{key} must be a non-negative integer of at most {INTEGER_MAX}", field=key
                )
            setattr(self, key, value)
        elif key in ("disk_format", "container_format"):
            self._set_format(key, value)
        elif key == "tags":
            self.tags = validate_tags(value)
        else:
            self.set_property(key, value)

    def _set_format(self, key: str, value: object) -> None:
        allowed = DISK_FORMATS if key == "disk_format" else CONTAINER_FORMATS
        if value is not None and (not isinstance(value, str) or value not in allowed):
            raise InvalidInput(
                f"{key} must be one of {', '.join(allowed)}; got {value!r}", field=key
            )
        if self.status is not ImageStatus.QUEUED and value != getattr(self, key):
            raise Forbidden(f"{key} can only be changed while the image is queued", field=key)
        setattr(self, key, value)

    def set_property(self, key: str, value: object) -> None:
        if not isinstance(key, str) or not 1 <= len(key) <= PROPERTY_KEY_MAX:
            raise InvalidInput(
                f"property names must be 1-{PROPERTY_KEY_MAX} characters", field=str(key)
            )
        if key in READ_ONLY_FIELDS or key in RESERVED_FIELDS or key == "id":
            raise Forbidden(f"attribute '{key}' is read-only", field=key)
        if not isinstance(value, str) or len(value) > PROPERTY_VALUE_MAX:
            raise InvalidInput(
                f"property {key} must be a string of at most {PROPERTY_VALUE_MAX} characters",
                field=key,
            )
        if not is_unicode(key) or not is_unicode(value):
            raise InvalidInput(
                f"property {_escaped(key)} must be valid Unicode (no lone surrogates)",
                field=_escaped(key),
            )
        self.properties[key] = value
        if key == "image_type":
            self.image_type = ImageType.SNAPSHOT if value == "snapshot" else ImageType.IMAGE

    def remove_attribute(self, key: str) -> None:
        """A patch's `remove`: only properties can be removed (Glance: 409 for core ones)."""
        if key in READ_ONLY_FIELDS or key in RESERVED_FIELDS or key in SETTABLE_FIELDS:
            raise Forbidden(f"attribute '{key}' cannot be removed", field=key)
        if key not in self.properties:
            raise Conflict(f"property '{key}' does not exist", field=key)
        del self.properties[key]
        if key == "image_type":
            self.image_type = ImageType.IMAGE

    def add_tag(self, tag: str) -> None:
        _check_tag("tag", tag)
        if tag not in self.tags:
            self.tags.append(tag)

    def remove_tag(self, tag: str) -> bool:
        if tag in self.tags:
            self.tags.remove(tag)
            return True
        return False

    # --- status machine -----------------------------------------------------------------

    def touch(self, now: datetime) -> None:
        self.updated_at = now
        self.version += 1

    def start_upload(
        self, now: datetime, holder: str | None = None, *, stage: bool = False
    ) -> None:
        """Data starts arriving: `saving` for an upload, `uploading` for Glance's staging
        (the first step of an interoperable import)."""
        if self.status is not ImageStatus.QUEUED:
            raise Conflict(f"image {self.id} is {self.status}; data can only be uploaded once")
        if self.disk_format is None or self.container_format is None:
            raise InvalidInput(
                "disk_format and container_format must be set before uploading data",
                field="disk_format" if self.disk_format is None else "container_format",
            )
        self.status = ImageStatus.UPLOADING if stage else ImageStatus.SAVING
        self.upload_holder = holder
        self.touch(now)

    def abandon_upload(self, now: datetime) -> None:
        """An upload failed or was interrupted: back to queued, ready for another attempt.
        Data already staged (uploading, no writer left) stays for its import."""
        writing = self.status is ImageStatus.SAVING or (
            self.status is ImageStatus.UPLOADING and self.blob_digest is None
        )
        if writing:
            self.status = ImageStatus.QUEUED
            self.upload_holder = None
            self.touch(now)

    def finish_upload(
        self,
        *,
        size: int,
        checksum: str,
        os_hash_value: str,
        blob_digest: str,
        virtual_size: int | None,
        now: datetime,
    ) -> None:
        if self.status not in (ImageStatus.SAVING, ImageStatus.UPLOADING):
            raise Conflict(f"image {self.id} is {self.status}, not receiving data")
        self.size = size
        self.checksum = checksum
        self.os_hash_algo = OS_HASH_ALGO
        self.os_hash_value = os_hash_value
        self.blob_digest = blob_digest
        self.virtual_size = virtual_size
        if self.status is ImageStatus.SAVING:
            self.status = ImageStatus.ACTIVE  # staged data waits in `uploading` for its import
        self.upload_holder = None
        self.touch(now)

    def import_staged(self, now: datetime) -> None:
        """Glance's glance-direct import: the staged data (already verified and stored)
        becomes the image's."""
        if self.status is not ImageStatus.UPLOADING or self.blob_digest is None:
            raise Conflict(
                f"image {self.id} is {self.status} with no staged data; "
                "PUT its data to /v2/images/{id}/stage first"
            )
        self.status = ImageStatus.ACTIVE
        self.touch(now)

    def deactivate(self, now: datetime) -> None:
        if self.status is ImageStatus.DEACTIVATED:
            return
        if self.status is not ImageStatus.ACTIVE:
            raise Conflict(f"image {self.id} is {self.status}; only active images deactivate")
        self.status = ImageStatus.DEACTIVATED
        self.touch(now)

    def reactivate(self, now: datetime) -> None:
        if self.status is ImageStatus.ACTIVE:
            return
        if self.status is not ImageStatus.DEACTIVATED:
            raise Conflict(f"image {self.id} is {self.status}; only deactivated images reactivate")
        self.status = ImageStatus.ACTIVE
        self.touch(now)

    def check_downloadable(self) -> None:
        if self.status is ImageStatus.DEACTIVATED:
            raise Forbidden(f"image {self.id} is deactivated; its data cannot be downloaded")

    def mark_deleted(self, now: datetime) -> None:
        if self.protected:
            raise Forbidden(f"image {self.id} is protected and cannot be deleted")
        self.status = ImageStatus.DELETED
        self.deleted_at = now
        self.touch(now)


def _optional_text(key: str, value: object, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidInput(f"{key} must be a string of at most {limit} characters", field=key)
    return value


def _escaped(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _choice(key: str, value: object, kind: type[_Enum]) -> _Enum:
    allowed = ", ".join(member.value for member in kind)
    if not isinstance(value, str) or value not in allowed.split(", "):
        raise InvalidInput(f"{key} must be one of {allowed}; got {value!r}", field=key)
    return kind(value)


def _check_tag(key: str, tag: object) -> None:
    if not isinstance(tag, str) or not 1 <= len(tag) <= TAG_MAX:
        raise InvalidInput(f"{key} must be a string of 1-{TAG_MAX} characters", field=key)


def validate_tags(value: object) -> list[str]:
    if not isinstance(value, list):
        raise InvalidInput("tags must be an array of strings", field="tags")
    tags: list[str] = []
    for index, tag in enumerate(value):
        _check_tag(f"tags[{index}]", tag)
        if tag not in tags:
            tags.append(tag)
    return tags


def apply_create(image: VmImage, attributes: Mapping[str, object]) -> None:
    """Set every attribute a create names, refusing read-only and reserved ones."""
    for key, value in attributes.items():
        if key == "id":
            continue
        image.set_attribute(key, value)


# --- jobs -----------------------------------------------------------------------------------


class JobType(enum.StrEnum):
    """What a job did to an image, named as DiDi names its CIMG jobs."""

    CREATE = "CreateCIMG"
    DELETE = "DeleteCIMG"
    IMPORT = "ImportCIMG"
    CHANGE_NAME = "ChangeCIMGName"


@dataclass(frozen=True)
class ImageJob:
    """A record of one change to an image, which callers poll for. Changes that copy no bytes
    finish at once, so a job is stored already done."""

    id: str
    project_id: str
    region: str
    type: JobType
    resource_id: str
    created_at: datetime
    progress: int = 100
    done: bool = True
    success: bool = True
    status: str = "Success"
    result: str | None = None

    @classmethod
    def finished(
        cls, project_id: str, region: str, kind: JobType, resource_id: str, now: datetime
    ) -> ImageJob:
        return cls(str(uuid.uuid4()), project_id, region, kind, resource_id, now)


# --- listing --------------------------------------------------------------------------------

SORT_KEYS = (
    "name",
    "status",
    "container_format",
    "disk_format",
    "size",
    "id",
    "created_at",
    "updated_at",
)
COMPARISONS = ("gt", "gte", "eq", "neq", "lt", "lte")
LIST_LIMIT_DEFAULT = 25
LIST_LIMIT_MAX = 1000


@dataclass(frozen=True)
class SortKey:
    key: str
    descending: bool


@dataclass(frozen=True)
class TimeFilter:
    field: str
    operator: str
    value: datetime


@dataclass(frozen=True)
class ImageQuery:
    """What a list asks for; every dialect's parameters translate into this."""

    project_id: str
    ids: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    disk_formats: tuple[str, ...] = ()
    container_formats: tuple[str, ...] = ()
    visibility: str | None = None
    protected: bool | None = None
    os_hidden: bool | None = False
    """False: hidden images are left out (Glance's default); None: no filter."""
    image_type: ImageType | None = None
    region: str | None = None
    tags: tuple[str, ...] = ()
    properties: tuple[tuple[str, str], ...] = ()
    size_min: int | None = None
    size_max: int | None = None
    times: tuple[TimeFilter, ...] = ()
    changes_since: datetime | None = None
    """Images updated at or after this time, deleted ones included (the Nova list)."""
    sort: tuple[SortKey, ...] = (SortKey("created_at", True),)
    limit: int = LIST_LIMIT_DEFAULT
    marker: str | None = None
    offset: int = 0
    """Rows to skip before the page (DiDi's `start`); markers are the better way."""
    include_visible: bool = False
    """Also other projects' images this one may see (Glance's sharing); `visibility` then
    selects among them as Glance does, and `member_status` (default accepted) which shared
    images count."""
    member_status: str | None = None
    owner: str | None = None
