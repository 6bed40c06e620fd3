"""The blob store in an S3-compatible bucket (AWS S3, Ceph radosgw, MinIO, SeaweedFS, Swift's
S3 layer), so that any number of machines share one copy of every blob.

Blobs live at `PREFIX/blobs/sha256/<2 hex>/<64 hex>`, the filesystem layout under a key
prefix. Nothing unverified is ever visible under such a key: a blob whose digest is known
streams into a multipart upload at its final key, hashed as it goes, and the upload is
completed only once size and sha256 match (aborted otherwise). Bytes whose digest is learnt
as they arrive (uploads, imports) go to `PREFIX/staging/`, and are copied into place on the
server once their digest is known. The ETag of a completed upload is never read: Ceph
radosgw answers an empty one.

Memory is bounded: each writer buffers one part, and at most `parallel_parts` parts are in
flight across the whole store. Parts grow as an upload grows (doubling every 1,000 parts),
so an object of any size fits S3's 10,000 parts.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from imagedepot.adapters.blobs.promises import Promise, Tally
from imagedepot.domain.references import DIGEST_RE
from imagedepot.ports import BlobCorrupt, BlobStore, BlobStoreFull, BlobStoreUnavailable, write_blob

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

READ_CHUNK: Final = 1 << 20
PARTS_PER_SIZE_STEP: Final = 1000
"""Every this many parts the part size doubles: 10,000 parts then hold petabytes."""
_MISSING: Final = frozenset({"404", "NoSuchKey", "NotFound"})
_FULL: Final = frozenset({"QuotaExceeded", "XMinioStorageFull", "XMinioAdminBucketQuotaExceeded"})
"""Error codes that say the bucket has no room: Ceph radosgw's bucket and user quotas
(403 QuotaExceeded), MinIO's full disks and bucket quotas; any engine's 507 too."""
_AWS_HOST_SUFFIX: Final = ".amazonaws.com"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    """Empty, or ending in `/`."""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """`s3://BUCKET[/PREFIX]`; ValueError naming what is wrong."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"blob store {url!r} is not s3://BUCKET[/PREFIX]")
        if parts.query or parts.fragment:
            raise ValueError(f"blob store {url!r} must not carry a query or fragment")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, prefix + "/" if prefix else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class S3Tuning:
    part_size: int = 8 << 20
    parallel_parts: int = 8
    redirect_seconds: int = 0
    stale_after: timedelta = timedelta(hours=24)


def s3_client(
    max_connections: int, *, attempts: int = 8, connect_timeout: float = 5, read_timeout: float = 60
) -> S3Client:
    """A client configured the way AWS tools are (environment, shared files), path-style
    whenever the endpoint is not AWS's own (Ceph and MinIO need it), retrying 5xx, throttling,
    SlowDown and refused connections with backoff (with 8 attempts, about a minute: a bucket
    restarting under a build does not fail it)."""
    config = Config(
        retries={"mode": "standard", "max_attempts": attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_connections,
    )
    session = boto3.session.Session()
    client: S3Client = session.client("s3", config=config)
    host = urlsplit(client.meta.endpoint_url).hostname or ""
    if not host.endswith(_AWS_HOST_SUFFIX):
        path_style = config.merge(Config(s3={"addressing_style": "path"}))
        client = session.client("s3", config=path_style)
    return client


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _missing(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _error_code(error) in _MISSING or status == 404


class _Parts:
    """An object streamed to `key` part by part: one part buffered here, the full ones sent
    through the store's pool. Nothing is visible at `key` until `complete`."""

    def __init__(self, store: S3BlobStore, key: str) -> None:
        self._store = store
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._sent: list[Future[str]] = []
        self._part_size = store.tuning.part_size

    def add(self, chunk: bytes) -> None:
        self._buffer += chunk
        while len(self._buffer) >= self._part_size:
            part = bytes(self._buffer[: self._part_size])
            del self._buffer[: self._part_size]
            self._send(part)

    def _send(self, part: bytes) -> None:
        client, bucket = self._store.client, self._store.location.bucket
        if self._upload_id is None:
            created = self._store.call(client.create_multipart_upload, Bucket=bucket, Key=self._key)
            self._upload_id = created["UploadId"]
        number = len(self._sent) + 1
        self._sent.append(self._store.send_part(self._key, self._upload_id, number, part))
        if number % PARTS_PER_SIZE_STEP == 0:
            self._part_size *= 2

    def complete(self) -> None:
        """Make the object visible at the key (every byte added so far)."""
        client, bucket = self._store.client, self._store.location.bucket
        if self._upload_id is None:
            self._store.call(
                client.put_object, Bucket=bucket, Key=self._key, Body=bytes(self._buffer)
            )
            self._buffer.clear()
            return
        if self._buffer:  # the last part; an upload already holds at least one
            self._send(bytes(self._buffer))
            self._buffer.clear()
        etags = [future.result() for future in self._sent]
        parts = [{"ETag": etag, "PartNumber": n} for n, etag in enumerate(etags, start=1)]
        self._store.call(
            client.complete_multipart_upload,
            Bucket=bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
        )
        self._upload_id = None
        self._sent = []

    def abort(self) -> None:
        """Throw away every part; nothing ever becomes visible."""
        self._buffer.clear()
        upload_id, sent = self._upload_id, self._sent
        self._upload_id, self._sent = None, []
        if upload_id is None:
            return
        for future in sent:
            future.cancel()
        for future in sent:
            with contextlib.suppress(Exception):
                future.result()
        with contextlib.suppress(ClientError, BotoCoreError):
            self._store.client.abort_multipart_upload(
                Bucket=self._store.location.bucket, Key=self._key, UploadId=upload_id
            )


class _HashedParts:
    def __init__(self, store: S3BlobStore, key: str) -> None:
        self._store = store
        self._key = key
        self._parts = _Parts(store, key)
        self._tally = Tally()
        self._done = False

    @property
    def written(self) -> int:
        return self._tally.written

    def _append(self, chunk: bytes) -> None:
        if self._done:
            raise ValueError("the blob is finished")
        self._tally.add(chunk)
        self._parts.add(chunk)

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._parts.abort()


class S3BlobWriter(_HashedParts):
    """Bytes promised to have a digest (and a size), streamed to the blob's own key and
    completed there only when they keep the promise."""

    def __init__(self, store: S3BlobStore, digest: str, size: int | None) -> None:
        super().__init__(store, store.key(digest))
        self._digest = digest
        self._promise = Promise(digest, size)
        self._aborting: list[threading.Thread] = []

    def _settle_resets(self) -> None:
        for aborting in self._aborting:
            aborting.join()
        self._aborting.clear()

    def abort(self) -> None:
        self._settle_resets()
        super().abort()

    def write(self, chunk: bytes) -> None:
        self._promise.check_room(self._tally, len(chunk))
        self._append(chunk)

    def can_tap(self) -> bool:
        return False

    def tap(self) -> None:
        return None  # the parts go to the bucket: followers need a spool

    def reset(self) -> None:
        # Called from the event loop: the old upload is aborted on a thread of its own, which
        # commit and abort wait for (nothing is left behind once the writer is done).
        aborting = threading.Thread(target=self._parts.abort, name="s3-abort", daemon=True)
        aborting.start()
        self._aborting.append(aborting)
        self._parts = _Parts(self._store, self._key)
        self._tally = Tally()

    def commit(self) -> None:
        self._settle_resets()
        self._promise.check_kept(self._tally)
        if self._store.has(self._digest):  # another writer got there: keep its copy
            self.abort()
            return
        self._parts.complete()
        self._done = True


class S3UploadWriter(_HashedParts):
    """Bytes of a digest not known in advance: staged, then copied under their digest."""

    def __init__(self, store: S3BlobStore) -> None:
        super().__init__(store, store.staging_key(uuid.uuid4().hex))
        self._finished: str | None = None
        self._placed = False

    def write(self, chunk: bytes) -> None:
        self._append(chunk)

    def finish(self) -> str:
        if self._finished is None:
            self._parts.complete()
            self._finished = self._tally.digest()
        return self._finished

    def commit(self) -> str:
        digest = self.finish()
        if not self._placed:
            if not self._store.has(digest):
                self._store.copy_into_place(self._key, digest)
            self._store.remove_key(self._key)
            self._placed = True
            self._done = True
        return digest

    def abort(self) -> None:
        if self._placed:
            return
        super().abort()
        if self._finished is not None:
            with contextlib.suppress(BlobStoreUnavailable):
                self._store.remove_key(self._key)
        self._done = True


class S3BlobStore:
    def __init__(
        self, location: S3Location, tuning: S3Tuning, client: S3Client | None = None
    ) -> None:
        self.location = location
        self.tuning = tuning
        self.client = client or s3_client(max_connections=tuning.parallel_parts + 16)
        # Health checks answer at once rather than after a minute of retries.
        self._probe = client or s3_client(2, attempts=1, connect_timeout=2, read_timeout=5)
        self._pool = ThreadPoolExecutor(tuning.parallel_parts, thread_name_prefix="s3-part")
        self._in_flight = threading.BoundedSemaphore(tuning.parallel_parts)

    def __str__(self) -> str:
        return f"{self.location} at {self.client.meta.endpoint_url}"

    # --- keys and calls ---------------------------------------------------------------------

    def key(self, digest: str) -> str:
        if not DIGEST_RE.match(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        hex_digest = digest.removeprefix("sha256:")
        return f"{self.location.prefix}blobs/sha256/{hex_digest[:2]}/{hex_digest}"

    def staging_key(self, name: str) -> str:
        return f"{self.location.prefix}staging/{name}"

    def call(self, operation: Any, **arguments: Any) -> Any:
        """One S3 call (botocore retries 5xx and SlowDown); a failure as BlobStoreUnavailable
        naming the bucket, the endpoint and the cause."""
        try:
            return operation(**arguments)
        except ClientError as error:
            if _missing(error):
                raise
            message = error.response.get("Error", {}).get("Message") or _error_code(error)
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if _error_code(error) in _FULL or status == 507:
                raise BlobStoreFull(f"no room in blob store {self}: {message}") from error
            raise BlobStoreUnavailable(f"blob store {self}: {message}") from error
        except BotoCoreError as error:
            raise BlobStoreUnavailable(f"blob store {self}: {error}") from error

    def send_part(self, key: str, upload_id: str, number: int, data: bytes) -> Future[str]:
        """Upload one part through the pool, waiting while `parallel_parts` are in flight."""
        self._in_flight.acquire()

        def upload() -> str:
            answer = self.call(
                self.client.upload_part,
                Bucket=self.location.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
            )
            return str(answer["ETag"])

        try:
            future = self._pool.submit(upload)
        except BaseException:
            self._in_flight.release()
            raise
        # Released when the part is sent, fails, or is cancelled before it started.
        future.add_done_callback(lambda _: self._in_flight.release())
        return future

    def copy_into_place(self, staged_key: str, digest: str) -> None:
        source = {"Bucket": self.location.bucket, "Key": staged_key}
        transfer = TransferConfig(
            multipart_threshold=self.tuning.part_size * 64,
            multipart_chunksize=self.tuning.part_size * 64,
            max_concurrency=self.tuning.parallel_parts,
        )
        self.call(
            self.client.copy,
            CopySource=source,
            Bucket=self.location.bucket,
            Key=self.key(digest),
            Config=transfer,
        )

    def remove_key(self, key: str) -> None:
        with contextlib.suppress(ClientError):
            self.call(self.client.delete_object, Bucket=self.location.bucket, Key=key)

    # --- BlobStat ---------------------------------------------------------------------------

    def size(self, digest: str) -> int | None:
        try:
            head = self.call(
                self.client.head_object, Bucket=self.location.bucket, Key=self.key(digest)
            )
        except ClientError:
            return None
        return int(head["ContentLength"])

    def has(self, digest: str) -> bool:
        return self.size(digest) is not None

    # --- BlobReader -------------------------------------------------------------------------

    @contextlib.contextmanager
    def open(
        self, digest: str, start: int = 0, length: int | None = None
    ) -> Iterator[Iterator[bytes]]:
        if length == 0:
            if not self.has(digest):
                raise FileNotFoundError(digest)
            yield iter(())
            return
        answer = self._get(digest, start, length)
        body = answer["Body"]
        try:
            yield body.iter_chunks(READ_CHUNK)
        finally:
            body.close()

    def read_bytes(self, digest: str, limit: int) -> bytes:
        # One GET whose length is checked before the body is read (manifests are served from
        # here on every pull: no HEAD first).
        answer = self._get(digest)
        body = answer["Body"]
        try:
            if int(answer["ContentLength"]) > limit:
                raise BlobCorrupt(f"blob {digest} is larger than {limit} bytes")
            data: bytes = body.read()
            return data
        finally:
            body.close()

    def _get(self, digest: str, start: int = 0, length: int | None = None) -> Any:
        """A GetObject of the blob (a range of it when asked); FileNotFoundError when absent."""
        arguments: dict[str, Any] = {"Bucket": self.location.bucket, "Key": self.key(digest)}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            arguments["Range"] = f"bytes={start}-{end}"
        try:
            return self.call(self.client.get_object, **arguments)
        except ClientError as error:
            raise FileNotFoundError(digest) from error

    # --- BlobIngester -----------------------------------------------------------------------

    def writer(self, digest: str, size: int | None) -> S3BlobWriter:
        return S3BlobWriter(self, digest, size)

    def upload_writer(self) -> S3UploadWriter:
        return S3UploadWriter(self)

    def put_bytes(self, digest: str, data: bytes) -> None:
        write_blob(self.writer(digest, len(data)), [data])

    # --- BlobDeleter, BlobEnumerator ----------------------------------------------------------

    def delete(self, digest: str) -> None:
        self.remove_key(self.key(digest))

    def digests(self) -> Iterator[str]:
        listed = f"{self.location.prefix}blobs/sha256/"
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=listed
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    shard, _, name = item["Key"].removeprefix(listed).partition("/")
                    digest = "sha256:" + name
                    if DIGEST_RE.match(digest) and name[:2] == shard:
                        yield digest
        except (ClientError, BotoCoreError) as error:
            raise BlobStoreUnavailable(f"blob store {self}: {error}") from error

    # --- BlobUpkeep -------------------------------------------------------------------------

    def check(self, *, writable: bool = True) -> None:
        bucket, client = self.location.bucket, self._probe
        try:
            self.call(client.head_bucket, Bucket=bucket)
        except ClientError as error:
            raise BlobStoreUnavailable(f"blob store {self}: no bucket {bucket!r}") from error
        if not writable:
            return
        probe = self.staging_key(f"probe-{uuid.uuid4().hex}")
        self.call(client.put_object, Bucket=bucket, Key=probe, Body=b"")
        with contextlib.suppress(ClientError):
            self.call(client.delete_object, Bucket=bucket, Key=probe)

    def clean_temporary(self) -> int:
        """Abort multipart uploads and remove staged objects older than `stale_after`: what
        writers that died (on any machine) left behind."""
        removed = 0
        for key, upload_id in self._stale_temporaries():
            with contextlib.suppress(ClientError):
                if upload_id is None:
                    self.remove_key(key)
                else:
                    self.client.abort_multipart_upload(
                        Bucket=self.location.bucket, Key=key, UploadId=upload_id
                    )
                removed += 1
        return removed

    def leftovers(self) -> list[str]:
        return [
            f"s3://{self.location.bucket}/{key}" + (" (multipart upload)" if upload else "")
            for key, upload in self._stale_temporaries()
        ]

    def free_bytes(self) -> None:
        return None  # a bucket does not say

    def _stale_temporaries(self) -> Iterator[tuple[str, str | None]]:
        """(key, upload id) of multipart uploads and (key, None) of staged objects older than
        `stale_after`."""
        cutoff = datetime.now(UTC) - self.tuning.stale_after
        bucket = self.location.bucket
        uploads = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=bucket, Prefix=self.location.prefix
        )
        for page in uploads:
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    yield upload["Key"], upload["UploadId"]
        staged = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=self.staging_key("")
        )
        for listing in staged:
            for item in listing.get("Contents", []):
                if item["LastModified"] < cutoff:
                    yield item["Key"], None

    # --- BlobDelivery -----------------------------------------------------------------------

    def local_file(self, digest: str) -> str | None:
        return None

    def redirect_url(self, digest: str) -> str | None:
        if self.tuning.redirect_seconds <= 0:
            return None
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.location.bucket, "Key": self.key(digest)},
            ExpiresIn=self.tuning.redirect_seconds,
        )
        return url

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


if TYPE_CHECKING:
    _conforms: type[BlobStore] = S3BlobStore
