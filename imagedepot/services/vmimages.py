"""VM image use cases shared by every image dialect (Glance, the seed's snapshot list, DiDi):
create, read, list, change, upload, download, deactivate, delete.

Image bytes stream through an `ImageUpload` into the content-addressed blob store: size, md5
and sha512 are computed on the way, the header is checked against the declared disk format, the blob is stored once under its sha256, and a blob
reference owned by the image keeps garbage collection away from it.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from imagedepot.domain.diskformats import PREFIX_BYTES, TAIL_BYTES, HeaderView
from imagedepot.domain.diskformats import inspect as inspect_disk
from imagedepot.domain.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    StorageFull,
)
from imagedepot.domain.identity import Principal
from imagedepot.domain.sharing import check_visibility_change
from imagedepot.domain.vmimages import (
    ImageJob,
    ImageQuery,
    ImageStatus,
    ImageType,
    JobType,
    VmImage,
    apply_create,
)
from imagedepot.ports import (
    BlobInfo,
    BlobSource,
    BlobStore,
    BlobStoreFull,
    Clock,
    MetadataStore,
    UnitOfWork,
    UploadWriter,
)
from imagedepot.services.digests import UploadDigests
from imagedepot.services.saving import LOST_RACE, LostRace, save_with_retries

SAVE_ATTEMPTS = 5
IMAGE_MEDIA_TYPE = "application/octet-stream"
DEFAULT_MAX_IMAGE_BYTES = 1 << 40
DECLARED_SIZE = "declared_size"
"""The field an upload's size promise is reported under; each dialect names its own header."""


def blob_owner(image_id: str) -> str:
    """The blob reference owner of an image's bytes (caches own theirs by their bare id)."""
    return f"vmimage:{image_id}"


@dataclass(frozen=True)
class ImageCopy:
    """One new image to make from an existing one's bytes."""

    source_id: str
    name: str
    region: str
    kind: JobType
    description: str | None = None
    source_region: str | None = None
    require_snapshot: bool = False
    source_field: str = "id"
    """How the caller named the source, for error messages."""


@dataclass(frozen=True)
class ImageData:
    """Where a downloadable image's bytes are, with what a response needs to describe them."""

    image: VmImage
    source: BlobSource | None
    """Where its bytes are (under `image.blob_digest`); None when it has none (yet)."""
    size: int = 0


class ImageUpload:
    """One upload in progress: bytes are hashed three ways at once and streamed into the blob
    store.

    `finish` makes the image active; `abort` puts it back to queued and leaves no blob behind.
    """

    def __init__(
        self,
        service: VmImageService,
        principal: Principal,
        image: VmImage,
        writer: UploadWriter,
        declared_size: int | None,
        max_bytes: int,
    ) -> None:
        self._service = service
        self._principal = principal
        self.image = image
        self._writer = writer
        self._declared_size = declared_size
        self._max_bytes = max_bytes
        self._digests = UploadDigests()
        self._size = 0
        self._done = False
        self._prefix = bytearray()
        self._tail = b""

    @property
    def size(self) -> int:
        return self._size

    def write(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self._max_bytes:
            raise PayloadTooLarge(f"image data is over the limit of {self._max_bytes} bytes")
        if self._declared_size is not None and self._size > self._declared_size:
            raise InvalidInput(
                f"image data is longer than the declared {self._declared_size} bytes",
                field=DECLARED_SIZE,
            )
        self._digests.update(chunk)
        self._keep_header(chunk)
        with _store_full_refused(self.image.id):
            self._writer.write(chunk)

    def _keep_header(self, chunk: bytes) -> None:
        """Keep the first PREFIX_BYTES and the last TAIL_BYTES for the format inspector."""
        room = PREFIX_BYTES - len(self._prefix)
        if room > 0:
            self._prefix += chunk[:room]
        if len(chunk) >= TAIL_BYTES:
            self._tail = chunk[-TAIL_BYTES:]
        else:
            self._tail = (self._tail + chunk)[-TAIL_BYTES:]

    def finish(self) -> VmImage:
        if self._declared_size is not None and self._size != self._declared_size:
            raise InvalidInput(
                f"image data has {self._size} bytes, the declared size is {self._declared_size}",
                field=DECLARED_SIZE,
            )
        view = HeaderView(bytes(self._prefix), bytes(self._tail), self._size)
        virtual_size = inspect_disk(view, self.image.disk_format or "")
        checksum, os_hash_value = self._digests.hexdigests()
        with _store_full_refused(self.image.id):
            image = self._service._finish_upload(
                self._principal,
                self.image.id,
                self._writer,
                size=self._size,
                checksum=checksum,
                os_hash_value=os_hash_value,
                virtual_size=virtual_size,
            )
        self._done = True
        return image

    def abort(self) -> None:
        """Throw the bytes away and put the image back to queued (safe after finish)."""
        self._writer.abort()
        if not self._done:
            self._done = True
            self._service._abandon_upload(self._principal, self.image.id)


@contextlib.contextmanager
def _store_full_refused(image_id: str) -> Iterator[None]:
    try:
        yield
    except BlobStoreFull as error:
        raise StorageFull(
            f"image {image_id}: the image store has no room for its data ({error}); the "
            "image is back to queued and may be uploaded again once there is room"
        ) from None


def owned_image(uow: UnitOfWork, principal: Principal, image_id: str) -> VmImage:
    """The caller's own image, for a change; Forbidden when it may only read it (shared,
    community, public), NotFound when it may not even see it."""
    image = uow.vm_images.get(image_id, principal.project_id)
    if image is not None:
        return image
    if uow.vm_images.get_visible(image_id, principal.project_id) is not None:
        raise Forbidden(
            f"image {image_id} belongs to another project; only its owner may change it"
        )
    raise NotFound(f"no image with id {image_id}")


IMPORT_METHODS = ("glance-direct",)
"""web-download would fetch URLs from the server: not offered (it needs a host allow-list)."""


class VmImageService:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        clock: Clock,
        *,
        regions: Sequence[str] = ("default",),
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        holder: str | None = None,
    ) -> None:
        self._holder = holder
        self._store = store
        self._blobs = blobs
        self._clock = clock
        self.regions = tuple(regions) or ("default",)
        self.default_region = self.regions[0]
        self._max_image_bytes = max_image_bytes

    # --- reading ----------------------------------------------------------------------------

    def get(self, principal: Principal, image_id: str) -> VmImage:
        with self._store.transaction(read_only=True) as uow:
            image = uow.vm_images.get(image_id, principal.project_id)
        if image is None:
            raise NotFound(f"no image with id {image_id}")
        return image

    def get_visible(self, principal: Principal, image_id: str) -> VmImage:
        """The image if the caller may read it: its own, or one shared with it, community
        or public (Glance's sharing)."""
        with self._store.transaction(read_only=True) as uow:
            image = uow.vm_images.get_visible(image_id, principal.project_id)
        if image is None:
            raise NotFound(f"no image with id {image_id}")
        return image

    def list(self, query: ImageQuery) -> list[VmImage]:
        with self._store.transaction(read_only=True) as uow:
            return uow.vm_images.list(query)

    def count(self, query: ImageQuery) -> int:
        with self._store.transaction(read_only=True) as uow:
            return uow.vm_images.count(query)

    def jobs(self, principal: Principal, job_ids: Sequence[str]) -> builtins.list[ImageJob]:
        with self._store.transaction(read_only=True) as uow:
            return uow.vm_images.jobs(principal.project_id, job_ids)

    def check_region(self, region: object, field: str) -> str:
        if not isinstance(region, str) or region not in self.regions:
            raise InvalidInput(
                f"{field} must be one of the configured regions ({', '.join(self.regions)}), "
                f"got {region!r}",
                field=field,
            )
        return region

    # --- batches (DiDi): every entry or none ----------------------------------------------

    def copy_images(
        self, principal: Principal, copies: Sequence[ImageCopy]
    ) -> builtins.list[ImageJob]:
        """New images sharing the bytes of existing ones (an image from a snapshot, or a copy
        into another region): no byte is copied, the blob gains a reference."""
        now = self._clock.now()
        jobs: builtins.list[ImageJob] = []
        with self._store.transaction() as uow:
            for copy in copies:
                source = uow.vm_images.get(copy.source_id, principal.project_id)
                if source is None or (
                    copy.source_region is not None and source.region != copy.source_region
                ):
                    raise NotFound(f"no image with id {copy.source_id}", field=copy.source_field)
                if copy.require_snapshot and source.image_type is not ImageType.SNAPSHOT:
                    raise InvalidInput(
                        f"image {copy.source_id} is not a snapshot", field=copy.source_field
                    )
                if source.status is not ImageStatus.ACTIVE or source.blob_digest is None:
                    raise Conflict(
                        f"image {copy.source_id} is {source.status}, not active",
                        field=copy.source_field,
                    )
                image = VmImage.new(principal.project_id, now, region=copy.region)
                image.set_attribute("name", copy.name)
                for attribute in ("disk_format", "container_format", "min_disk", "min_ram"):
                    setattr(image, attribute, getattr(source, attribute))
                image.properties = {
                    key: value for key, value in source.properties.items() if key != "image_type"
                }
                image.description = copy.description
                image.size, image.virtual_size = source.size, source.virtual_size
                image.checksum, image.os_hash_algo = source.checksum, source.os_hash_algo
                image.os_hash_value, image.blob_digest = source.os_hash_value, source.blob_digest
                image.status = ImageStatus.ACTIVE
                uow.vm_images.add(image)
                uow.blob_refs.add_refs(
                    blob_owner(image.id),
                    [BlobInfo(source.blob_digest, source.size or 0, IMAGE_MEDIA_TYPE)],
                )
                job = ImageJob.finished(principal.project_id, copy.region, copy.kind, image.id, now)
                uow.vm_images.add_job(job)
                jobs.append(job)
        return jobs

    def rename_images(
        self, principal: Principal, region: str, renames: Sequence[tuple[str, str]]
    ) -> builtins.list[ImageJob]:
        now = self._clock.now()
        jobs: builtins.list[ImageJob] = []
        with self._store.transaction() as uow:
            for image_id, name in renames:
                image = self._in_region(uow.vm_images.get(image_id, principal.project_id), region)
                if image is None:
                    raise NotFound(f"no image with id {image_id}")
                read_version = image.version
                image.set_attribute("name", name)
                image.touch(now)
                if not uow.vm_images.save(image, read_version):
                    raise Conflict(f"image {image_id} is changing too fast; retry")
                job = ImageJob.finished(
                    principal.project_id, region, JobType.CHANGE_NAME, image.id, now
                )
                uow.vm_images.add_job(job)
                jobs.append(job)
        return jobs

    def delete_images(
        self, principal: Principal, region: str, image_ids: Sequence[str]
    ) -> builtins.list[ImageJob]:
        now = self._clock.now()
        jobs: builtins.list[ImageJob] = []
        with self._store.transaction() as uow:
            for image_id in image_ids:
                image = self._in_region(uow.vm_images.get(image_id, principal.project_id), region)
                if image is None:
                    raise NotFound(f"no image with id {image_id}")
                read_version = image.version
                image.mark_deleted(now)
                if not uow.vm_images.save(image, read_version):
                    raise Conflict(f"image {image_id} is changing too fast; retry")
                uow.blob_refs.drop_refs(blob_owner(image.id))
                job = ImageJob.finished(principal.project_id, region, JobType.DELETE, image.id, now)
                uow.vm_images.add_job(job)
                jobs.append(job)
        return jobs

    @staticmethod
    def _in_region(image: VmImage | None, region: str) -> VmImage | None:
        return image if image is not None and image.region == region else None

    # --- changing ---------------------------------------------------------------------------

    def create(self, principal: Principal, attributes: Mapping[str, object]) -> VmImage:
        """A queued image with the caller's attributes (a client-supplied `id` is kept)."""
        image_id = attributes.get("id")
        if image_id is not None and not isinstance(image_id, str):
            raise InvalidInput("id must be a string", field="id")
        image = VmImage.new(
            principal.project_id,
            self._clock.now(),
            image_id=image_id,
            region=self.default_region,
        )
        apply_create(image, attributes)
        check_visibility_change(None, image.visibility, principal.system_admin)
        with self._store.transaction() as uow:
            uow.vm_images.add(image)
        return image

    def change(
        self, principal: Principal, image_id: str, apply: Callable[[VmImage], None]
    ) -> VmImage:
        """Apply `apply` to the stored image and save it, retrying when a writer races us;
        nothing is saved when `apply` raises."""

        def attempt(uow: UnitOfWork) -> VmImage | LostRace:
            image = owned_image(uow, principal, image_id)
            read_version, visibility = image.version, image.visibility
            apply(image)
            check_visibility_change(visibility, image.visibility, principal.system_admin)
            if image.version == read_version:
                image.touch(self._clock.now())
            return image if uow.vm_images.save(image, read_version) else LOST_RACE

        return save_with_retries(
            self._store,
            attempt,
            attempts=SAVE_ATTEMPTS,
            give_up=Conflict(f"image {image_id} is changing too fast; retry"),
        )

    def deactivate(self, principal: Principal, image_id: str) -> VmImage:
        return self.change(principal, image_id, lambda image: image.deactivate(self._clock.now()))

    def reactivate(self, principal: Principal, image_id: str) -> VmImage:
        return self.change(principal, image_id, lambda image: image.reactivate(self._clock.now()))

    def add_tag(self, principal: Principal, image_id: str, tag: str) -> VmImage:
        return self.change(principal, image_id, lambda image: image.add_tag(tag))

    def remove_tag(self, principal: Principal, image_id: str, tag: str) -> VmImage:
        def remove(image: VmImage) -> None:
            if not image.remove_tag(tag):
                raise NotFound(f"image {image_id} has no tag {tag!r}")

        return self.change(principal, image_id, remove)

    def delete(self, principal: Principal, image_id: str) -> VmImage:
        """Mark the image deleted (it stays listed by `changes-since`) and release its bytes."""

        def attempt(uow: UnitOfWork) -> VmImage | LostRace:
            image = owned_image(uow, principal, image_id)
            read_version = image.version
            image.mark_deleted(self._clock.now())
            if not uow.vm_images.save(image, read_version):
                return LOST_RACE
            uow.blob_refs.drop_refs(blob_owner(image.id))
            return image

        return save_with_retries(
            self._store,
            attempt,
            attempts=SAVE_ATTEMPTS,
            give_up=Conflict(f"image {image_id} is changing too fast; retry the deletion"),
        )

    # --- data -------------------------------------------------------------------------------

    def begin_upload(
        self,
        principal: Principal,
        image_id: str,
        declared_size: int | None,
        *,
        stage: bool = False,
    ) -> ImageUpload:
        """Move the image to saving (or, to stage data for an import, uploading; 409 unless
        queued) and open a writer for its bytes."""
        if declared_size is not None and declared_size > self._max_image_bytes:
            raise PayloadTooLarge(f"image data is over the limit of {self._max_image_bytes} bytes")
        image = self.change(
            principal,
            image_id,
            lambda found: found.start_upload(self._clock.now(), self._holder, stage=stage),
        )
        try:
            writer = self._blobs.upload_writer()
        except BaseException:
            self._abandon_upload(principal, image_id)
            raise
        return ImageUpload(self, principal, image, writer, declared_size, self._max_image_bytes)

    def import_image(self, principal: Principal, image_id: str, method: object) -> VmImage:
        """Glance's interoperable import; `method` is the request's `method` object. Only
        glance-direct (data staged before) is offered."""
        name = method.get("name") if isinstance(method, dict) else None
        if name not in IMPORT_METHODS:
            offered = ", ".join(IMPORT_METHODS)
            raise InvalidInput(
                f"import method {name!r} is not offered here; use one of: {offered}",
                field="method",
            )
        return self.change(
            principal, image_id, lambda image: image.import_staged(self._clock.now())
        )

    def recover_interrupted_uploads(
        self, dead: Callable[[builtins.list[str]], tuple[str, ...]]
    ) -> int:
        """Put back to queued every image whose upload died with its process (the dead
        writer's temp file is the blob store's to clean); the count recovered."""
        with self._store.transaction(read_only=True) as uow:
            gone = dead(uow.vm_images.upload_holders())
        if not gone:
            return 0
        recovered = 0
        with self._store.transaction() as uow:
            for image in uow.vm_images.saving_held_by(gone):
                read_version = image.version
                image.abandon_upload(self._clock.now())
                recovered += uow.vm_images.save(image, read_version)
        return recovered

    def _abandon_upload(self, principal: Principal, image_id: str) -> None:
        with contextlib.suppress(NotFound):
            self.change(principal, image_id, lambda image: image.abandon_upload(self._clock.now()))

    def _finish_upload(
        self,
        principal: Principal,
        image_id: str,
        writer: UploadWriter,
        *,
        size: int,
        checksum: str,
        os_hash_value: str,
        virtual_size: int | None,
    ) -> VmImage:
        digest = writer.finish()

        def attempt(uow: UnitOfWork) -> VmImage | LostRace:
            image = uow.vm_images.get(image_id, principal.project_id)
            if image is None:
                raise NotFound(f"image {image_id} was deleted during the upload")
            # Placed under its digest in the transaction that references it, with the blob
            # held: no collector, on any machine, can take it in between.
            uow.blob_locks.hold_for_reuse([digest])
            writer.commit()
            read_version = image.version
            image.finish_upload(
                size=size,
                checksum=checksum,
                os_hash_value=os_hash_value,
                blob_digest=digest,
                virtual_size=virtual_size,
                now=self._clock.now(),
            )
            if not uow.vm_images.save(image, read_version):
                return LOST_RACE
            uow.blob_refs.add_refs(blob_owner(image.id), [BlobInfo(digest, size, IMAGE_MEDIA_TYPE)])
            return image

        return save_with_retries(
            self._store,
            attempt,
            attempts=SAVE_ATTEMPTS,
            give_up=Conflict(f"image {image_id} is changing too fast; retry the upload"),
        )

    def data(self, principal: Principal, image_id: str) -> ImageData:
        """The image (the caller's, or one it may read) and its bytes' path; path None when
        the image has no data (yet)."""
        image = self.get_visible(principal, image_id)
        image.check_downloadable()
        if image.status is not ImageStatus.ACTIVE or image.blob_digest is None:
            return ImageData(image, None)
        size = self._blobs.size(image.blob_digest)
        if size is None:
            raise NotFound(f"the data of image {image_id} is missing from the blob store")
        return ImageData(image, self._blobs, size)
