"""Export and import of a cache as a standard OCI image layout: the air-gapped way to carry a
snapshot from one imagedepot to another.

An export writes every manifest, config and layer the cache holds into `blobs/sha256/`, and
one `index.json` entry per image whose `org.opencontainers.image.ref.name` is the image as
the cache names it, so `skopeo copy oci:DIR:registry.example.com/team/app:v1 …` reads it. The
same layout can be written as a tar (`oci-archive:`). An import reads such a layout back into
a new Available cache, checking every blob's sha256 as it is stored; as a build does, it
records the references before writing bytes, so garbage collection cannot remove them midway.
A blob the store already holds for another project is hashed from the layout all the same
(not written again): a layout that merely names a digest gets no access to its bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

from imagedepot.domain.caches import (
    GIB,
    SIZE_GIB_MAX,
    SIZE_GIB_MIN,
    CacheSpec,
    CacheStatus,
    ImageCache,
    ImageProgress,
)
from imagedepot.domain.errors import Conflict, InvalidInput, NotFound
from imagedepot.domain.manifests import (
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    ManifestError,
    parse_manifest,
)
from imagedepot.domain.references import DIGEST_RE, parse_reference
from imagedepot.ports import BlobCorrupt, BlobInfo, BlobStore, Clock, MetadataStore, write_blob
from imagedepot.services.blobs import BlobService
from imagedepot.services.caches import Quotas

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
COPY_CHUNK = 1 << 20


class LayoutInvalid(InvalidInput):
    """The directory or archive is not an OCI image layout imagedepot can import."""


class _Layout(Protocol):
    """Read access to a layout, a directory or a tar, by path inside it."""

    def read(self, name: str, limit: int) -> bytes: ...

    def open(self, name: str) -> AbstractContextManager[IO[bytes]]: ...

    def exists(self, name: str) -> bool: ...


class OciLayoutService:
    def __init__(
        self,
        store: MetadataStore,
        blobs: BlobStore,
        clock: Clock,
        quotas: Quotas | None = None,
        blob_service: BlobService | None = None,
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._clock = clock
        self._quotas = quotas or Quotas()
        self._blob_service = blob_service or BlobService(store, blobs, clock)

    # --- export -----------------------------------------------------------------------------

    def find(self, cache: str, project_name: str | None = None) -> ImageCache:
        """A cache by id, or by name within `project_name`."""
        with self._store.transaction(read_only=True) as uow:
            if project_name is None:
                found = uow.caches.get(cache)
            else:
                project = uow.identity.project_by_name(project_name)
                if project is None:
                    raise NotFound(f"project {project_name!r} does not exist", field="project")
                found = uow.caches.get(cache, project.id) or next(
                    iter(uow.caches.list(project.id, cache)), None
                )
        if found is None:
            raise NotFound(f"image cache {cache} not found")
        if found.status is not CacheStatus.AVAILABLE:
            raise Conflict(f"image cache {found.spec.name} is {found.status}, not Available")
        return found

    def export_layout(self, cache: ImageCache, target: Path) -> int:
        """Write the cache as an OCI layout directory; the number of blobs written."""
        if target.exists() and any(target.iterdir()):
            raise Conflict(f"{target} is not empty", field="oci-layout")
        index, blobs = self._contents(cache)
        (target / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        for blob in blobs:
            path = target / "blobs" / "sha256" / blob.digest.removeprefix("sha256:")
            with self._blobs.open(blob.digest) as chunks, path.open("wb") as out:
                for chunk in chunks:
                    out.write(chunk)
        (target / "oci-layout").write_bytes(json.dumps(LAYOUT_VERSION).encode())
        (target / "index.json").write_bytes(index)
        return len(blobs)

    def export_archive(self, cache: ImageCache, target: Path) -> int:
        """Write the cache as an OCI layout in a tar (`oci-archive:`); the number of blobs."""
        if target.exists():
            raise Conflict(f"{target} already exists", field="oci-archive")
        index, blobs = self._contents(cache)
        temporary = target.with_name(f".{target.name}.partial")
        with tarfile.open(temporary, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, "oci-layout", json.dumps(LAYOUT_VERSION).encode())
            _add_bytes(tar, "index.json", index)
            _add_directory(tar, "blobs")
            _add_directory(tar, "blobs/sha256")
            for blob in blobs:
                info = tarfile.TarInfo(f"blobs/sha256/{blob.digest.removeprefix('sha256:')}")
                info.size = blob.size
                info.mode = 0o644
                with self._blobs.open(blob.digest) as chunks:
                    tar.addfile(info, _ChunkReader(chunks))
        temporary.replace(target)
        return len(blobs)

    def _contents(self, cache: ImageCache) -> tuple[bytes, list[BlobInfo]]:
        with self._store.transaction(read_only=True) as uow:
            refs = {ref.digest: ref for ref in uow.blob_refs.refs_of(cache.id)}
        manifests = []
        for image in cache.images:
            top = refs.get(image.digest or "")
            if top is None:
                raise Conflict(f"image {image.image} of cache {cache.spec.name} has no manifest")
            manifests.append(
                {
                    "mediaType": top.media_type,
                    "digest": top.digest,
                    "size": top.size,
                    "annotations": {REF_NAME: image.image},
                }
            )
        sized = []
        for ref in refs.values():
            size = self._blobs.size(ref.digest)
            if size is None:
                raise Conflict(f"blob {ref.digest} of cache {cache.spec.name} is missing")
            sized.append(BlobInfo(ref.digest, size, ref.media_type))
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return json.dumps(index, indent=2).encode(), sorted(sized, key=lambda b: b.digest)

    # --- import -----------------------------------------------------------------------------

    def import_layout(self, source: Path, project_name: str, cache_name: str) -> ImageCache:
        """A new Available cache in `project_name` holding every image the layout names,
        within the project's quotas; an import that fails leaves no blob behind that no
        other cache uses."""
        with _open_layout(source) as layout:
            images, blobs = _read_layout(layout)
            total = sum(blob.size for blob in blobs)
            size_gib = max(SIZE_GIB_MIN, math.ceil(total / GIB))
            if size_gib > SIZE_GIB_MAX:
                raise LayoutInvalid(f"the layout holds {total / GIB:.1f} GiB, over {SIZE_GIB_MAX}")
            spec = CacheSpec(cache_name, tuple(image.image for image in images), size_gib)
            spec.validate()
            with self._store.transaction() as uow:
                project = uow.identity.project_by_name(project_name)
                if project is not None:
                    # Early, before any byte is copied; again when the cache is added.
                    self._quotas.check(uow.caches.list(project.id), spec)
            if project is None:
                raise NotFound(f"project {project_name!r} does not exist", field="project")
            cache = ImageCache.new(project.id, spec, self._clock.now())
            with self._store.transaction() as uow:
                uow.blob_locks.hold_for_reuse([blob.digest for blob in blobs])
                uow.blob_refs.add_refs(cache.id, blobs)
                held = uow.blob_refs.held_by_project(
                    project.id, [blob.digest for blob in blobs], cache.id
                )
            try:
                for blob in blobs:
                    if not self._blobs.has(blob.digest):
                        self._store_blob(layout, blob)
                    elif blob.digest not in held:
                        # Stored for someone else: the layout must hold the bytes itself.
                        _check_blob(layout, blob)
                cache.mark_available(images, self._clock.now())
                with self._store.transaction() as uow:
                    self._quotas.check(uow.caches.list(project.id), spec)
                    uow.caches.add(cache)
            except BaseException:
                with self._store.transaction() as uow:
                    uow.blob_refs.drop_refs(cache.id)
                self._blob_service.collect([blob.digest for blob in blobs])
                raise
        return cache

    def _store_blob(self, layout: _Layout, blob: BlobInfo) -> None:
        try:
            with layout.open(_blob_path(blob.digest)) as source:
                chunks = iter(lambda: source.read(COPY_CHUNK), b"")
                write_blob(self._blobs.writer(blob.digest, blob.size), chunks)
        except BlobCorrupt as error:
            raise LayoutInvalid(f"the layout's {error}") from None


def _check_blob(layout: _Layout, blob: BlobInfo) -> None:
    """Hash the layout's copy of `blob` without storing it; LayoutInvalid unless it matches."""
    digest, size = hashlib.sha256(), 0
    with layout.open(_blob_path(blob.digest)) as source:
        while chunk := source.read(COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    if size != blob.size or f"sha256:{digest.hexdigest()}" != blob.digest:
        raise LayoutInvalid(
            f"the layout's blob {blob.digest} holds {size} bytes that do not match its digest"
        )


def _read_layout(layout: _Layout) -> tuple[list[ImageProgress], list[BlobInfo]]:
    """The images the layout's index names and every blob they need that the layout holds."""
    index = _json(layout, "index.json")
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise LayoutInvalid("index.json lists no manifests")
    images: list[ImageProgress] = []
    blobs: dict[str, BlobInfo] = {}
    for entry in entries:
        top = _descriptor(entry)
        name = (entry.get("annotations") or {}).get(REF_NAME)
        if not isinstance(name, str):
            raise LayoutInvalid(f"manifest {top.digest} has no {REF_NAME} annotation")
        try:
            parse_reference(name)
        except InvalidInput:
            raise LayoutInvalid(
                f"{REF_NAME} {name!r} is not an image reference; name images like "
                "registry.example.com/team/app:v1"
            ) from None
        held = _manifest_tree(layout, top)
        blobs.update({blob.digest: blob for blob in held})
        size = sum(blob.size for blob in {b.digest: b for b in held}.values())
        images.append(ImageProgress(name, top.digest, size))
    return images, list(blobs.values())


def _manifest_tree(layout: _Layout, top: BlobInfo) -> list[BlobInfo]:
    """The manifest and what it names; an index's platforms the layout lacks are left out, as
    a cache built for some platforms only holds those."""
    if top.media_type not in MANIFEST_TYPES:
        raise LayoutInvalid(f"{top.digest} has media type {top.media_type}, not a manifest")
    body = layout.read(_blob_path(top.digest), MAX_MANIFEST_BYTES)
    try:
        parsed = parse_manifest(body, top.media_type)
    except ManifestError as error:
        raise LayoutInvalid(f"manifest {top.digest}: {error}") from None
    held = [BlobInfo(top.digest, len(body), top.media_type)]
    for child in parsed.children:
        info = BlobInfo(child.digest, child.size, child.media_type)
        if parsed.is_index:
            if layout.exists(_blob_path(child.digest)):
                held.extend(_manifest_tree(layout, info))
        elif not layout.exists(_blob_path(child.digest)):
            raise LayoutInvalid(f"blob {child.digest} of manifest {top.digest} is missing")
        else:
            held.append(info)
    if parsed.is_index and len(held) == 1:
        raise LayoutInvalid(f"index {top.digest} has none of its manifests in the layout")
    return held


def _descriptor(entry: object) -> BlobInfo:
    if not isinstance(entry, dict):
        raise LayoutInvalid("index.json has a manifest entry that is not an object")
    digest, size, media_type = entry.get("digest"), entry.get("size"), entry.get("mediaType")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise LayoutInvalid(f"index.json names an unsupported digest {digest!r}")
    if not isinstance(size, int) or not isinstance(media_type, str):
        raise LayoutInvalid(f"index.json entry {digest} needs a size and a mediaType")
    return BlobInfo(digest, size, media_type)


def _json(layout: _Layout, name: str) -> dict[str, Any]:
    if not layout.exists(name):
        raise LayoutInvalid(f"not an OCI image layout: there is no {name}")
    try:
        document = json.loads(layout.read(name, MAX_MANIFEST_BYTES))
    except (ValueError, BlobCorrupt) as error:
        raise LayoutInvalid(f"{name} is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise LayoutInvalid(f"{name} is not a JSON object")
    return document


def _blob_path(digest: str) -> str:
    return f"blobs/sha256/{digest.removeprefix('sha256:')}"


class _DirectoryLayout:
    def __init__(self, root: Path) -> None:
        self._root = root

    def read(self, name: str, limit: int) -> bytes:
        with (self._root / name).open("rb") as file:
            data = file.read(limit + 1)
        if len(data) > limit:
            raise BlobCorrupt(f"{name} is larger than {limit} bytes")
        return data

    def open(self, name: str) -> AbstractContextManager[IO[bytes]]:
        return (self._root / name).open("rb")

    def exists(self, name: str) -> bool:
        return (self._root / name).is_file()


class _ArchiveLayout:
    def __init__(self, tar: tarfile.TarFile) -> None:
        self._tar = tar
        self._members = {
            member.name.removeprefix("./"): member for member in tar.getmembers() if member.isfile()
        }

    def read(self, name: str, limit: int) -> bytes:
        with self.open(name) as file:
            data = file.read(limit + 1)
        if len(data) > limit:
            raise BlobCorrupt(f"{name} is larger than {limit} bytes")
        return data

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        extracted = self._tar.extractfile(self._members[name])
        assert extracted is not None  # members are regular files
        with extracted:
            yield extracted

    def exists(self, name: str) -> bool:
        return name in self._members


@contextmanager
def _open_layout(source: Path) -> Iterator[_Layout]:
    if source.is_dir():
        yield _DirectoryLayout(source)
        return
    if not source.is_file():
        raise NotFound(f"{source} does not exist")
    if not tarfile.is_tarfile(source):
        raise LayoutInvalid(f"{source} is neither a layout directory nor a tar")
    with tarfile.open(source) as tar:
        yield _ArchiveLayout(tar)


class _ChunkReader(io.RawIOBase):
    """A readable file over a blob's chunk iterator, so tarfile can copy it without a temp file."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            self._pending = memoryview(next(self._chunks, b""))
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_directory(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)
