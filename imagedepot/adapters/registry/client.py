"""The `RegistryClient` port over aiohttp: pull manifests and blobs from OCI registries.

Building a cache means pulling many large blobs from registries that are slow, flaky,
private or behind a corrupting proxy. This adapter hides that from the builder: it
answers token (Bearer) and basic auth challenges, verifies manifests fetched by
digest, streams blobs into a `BlobWriter` without ever holding one whole in memory,
resumes broken downloads with `Range`, retries 5xx/429 answers with backoff, and turns
every failure into a `RegistryError` whose `kind` the caller can act on.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from imagedepot.domain.manifests import (
    ACCEPT_MANIFESTS,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
)
from imagedepot.domain.references import DOCKER_HUB, ImageReference
from imagedepot.ports import (
    BlobCorrupt,
    BlobWriter,
    FetchedManifest,
    ProgressCallback,
    RegistryCredentials,
    RegistryError,
    Transport,
)

T = TypeVar("T")

DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
MAX_RETRY_DELAY = 30.0
"""Cap of the exponential backoff, and the largest Retry-After we are willing to honour."""
DEFAULT_TOKEN_SECONDS = 60
"""How long a token lives when the token service does not say (the spec's default)."""
MAX_ERROR_BODY = 64 * 1024
MAX_TOKEN_BODY = 1024 * 1024
CONNECTION_LIMIT = 32
MAX_CONNECT_SECONDS = 30.0
"""A host that does not accept a connection within this is unreachable, whatever the timeout."""

_CHALLENGE_PARAM = re.compile(r'([A-Za-z][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}\Z")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_BROKEN = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError)
"""Failures of the connection itself, worth a retry (asyncio.TimeoutError is TimeoutError)."""


class _Retryable(Exception):
    """An answer that may go away if asked again (5xx, 429, a range we did not ask for)."""

    def __init__(self, cause: str, retry_after: float | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.retry_after = retry_after


@dataclass(frozen=True)
class _AuthScope:
    """What an upstream authorization is good for: one endpoint, repository and login."""

    endpoint: str
    repository: str
    login: str
    """A fingerprint of the credentials ("" when anonymous), never the credentials themselves."""


def _login_fingerprint(credentials: RegistryCredentials | None) -> str:
    if credentials is None:
        return ""
    pair = f"{len(credentials.username)}:{credentials.username}:{credentials.password}"
    return hashlib.sha256(pair.encode()).hexdigest()


@dataclass
class _Authorization:
    header: str
    expires_at: float
    """time.monotonic() after which the header is not sent pre-emptively any more."""


class _Progress:
    """What we told `on_progress`, so that a restart can take it back."""

    def __init__(self, callback: ProgressCallback) -> None:
        self._callback = callback
        self.reported = 0

    def add(self, count: int) -> None:
        if count:
            self.reported += count
            self._callback(count)

    def rewind(self) -> None:
        if self.reported:
            self._callback(-self.reported)
            self.reported = 0


class AiohttpRegistryClient:
    """One aiohttp session (created lazily, on the running loop) shared by every download."""

    def __init__(
        self,
        max_retries: int = 4,
        retry_base_delay: float = 0.5,
        timeout_seconds: float = 300,
        chunk_size: int = 1 << 20,
    ) -> None:
        if max_retries < 0 or retry_base_delay < 0 or timeout_seconds <= 0 or chunk_size <= 0:
            raise ValueError("retries and delay must be >= 0, timeout and chunk size > 0")
        self._max_retries = max_retries
        self._retry_base_delay = retry_base_delay
        self._chunk_size = chunk_size
        # A whole manifest must arrive within the timeout; a blob only has to keep moving.
        connect = min(timeout_seconds, MAX_CONNECT_SECONDS)
        self._manifest_timeout = aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=connect)
        self._blob_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect, sock_read=timeout_seconds
        )
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._authorizations: dict[_AuthScope, _Authorization] = {}
        self._auth_locks: dict[_AuthScope, asyncio.Lock] = {}

    # --- the port ---------------------------------------------------------------------------

    async def fetch_manifest(
        self, transport: Transport, image: ImageReference, reference: str
    ) -> FetchedManifest:
        name = _image_name(image, reference)
        url = f"{_base_url(transport)}/v2/{image.repository}/manifests/{reference}"
        headers = {"Accept": ACCEPT_MANIFESTS, "Accept-Encoding": "identity"}

        async def attempt() -> tuple[bytes, str | None]:
            response = await self._send(transport, image, url, headers, self._manifest_timeout)
            async with response:
                if response.status != 200:
                    await self._fail(
                        response, transport, f"manifest {name}", f"manifest unknown: {name}"
                    )
                body = await _read_limited(response, MAX_MANIFEST_BYTES, f"manifest {name}")
                return body, response.headers.get("Content-Type")

        body, content_type = await self._retrying(attempt, transport, f"manifest {name}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ":" in reference and reference != digest:  # tags cannot contain ':'
            raise RegistryError(
                "corrupt", f"manifest {name} has digest {digest}, not the one asked for"
            )
        return FetchedManifest(body=body, media_type=_media_type(content_type, body), digest=digest)

    async def fetch_referrers(
        self, transport: Transport, image: ImageReference, digest: str
    ) -> bytes | None:
        url = f"{_base_url(transport)}/v2/{image.repository}/referrers/{digest}"
        headers = {"Accept": OCI_INDEX, "Accept-Encoding": "identity"}
        try:
            response = await self._send(transport, image, url, headers, self._manifest_timeout)
            async with response:
                if response.status != 200:
                    return None  # no referrers API (registry 2.x answers 404), or none to say
                return await _read_limited(
                    response, MAX_MANIFEST_BYTES, f"referrers of {digest} in {image}"
                )
        except (RegistryError, aiohttp.ClientError, TimeoutError):
            return None

    async def manifest_digest(
        self, transport: Transport, image: ImageReference, reference: str, seconds: float
    ) -> str:
        """One HEAD of the manifest (a tag check that spares the upstream's pull rate limit, as
        Docker Hub counts GETs only), no retries: a check that fails is answered from the
        cache. The digest comes from `Docker-Content-Digest`, or from a GET when it is absent."""
        name = _image_name(image, reference)
        url = f"{_base_url(transport)}/v2/{image.repository}/manifests/{reference}"
        headers = {"Accept": ACCEPT_MANIFESTS, "Accept-Encoding": "identity"}
        limits = aiohttp.ClientTimeout(total=seconds)
        try:
            response = await self._send(transport, image, url, headers, limits, method="HEAD")
            async with response:
                if response.status == 404:
                    raise RegistryError("not_found", f"manifest unknown: {name}")
                if response.status != 200:
                    raise RegistryError(
                        "upstream",
                        f"manifest {name}: {transport.endpoint} answered HTTP {response.status}",
                    )
                digest = response.headers.get("Docker-Content-Digest", "").strip()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise RegistryError(
                "unreachable", f"manifest {name}: {transport.endpoint}: {_describe(error)}"
            ) from error
        if _DIGEST.match(digest):
            return digest
        fetched = await self.fetch_manifest(transport, image, reference)
        return fetched.digest

    async def fetch_blob(
        self,
        transport: Transport,
        image: ImageReference,
        digest: str,
        writer: BlobWriter,
        on_progress: ProgressCallback,
    ) -> None:
        name = f"{image.registry}/{image.repository}"
        url = f"{_base_url(transport)}/v2/{image.repository}/blobs/{digest}"
        progress = _Progress(on_progress)
        failure: BlobCorrupt | None = None
        # A corrupting proxy may be transient: after a digest mismatch, start over once.
        for _ in range(2):
            try:
                await self._retrying(
                    lambda: self._download(transport, image, url, name, digest, writer, progress),
                    transport,
                    f"blob {digest} of {name}",
                    mark=lambda: writer.written,
                )
                await asyncio.to_thread(writer.commit)
                return
            except BlobCorrupt as error:
                failure = error
                writer.reset()
                progress.rewind()
        raise RegistryError(
            "corrupt", f"blob {digest} of {name} does not match its digest ({failure})"
        )

    async def check_blob(
        self, transport: Transport, image: ImageReference, digest: str, size: int
    ) -> None:
        name = f"{image.registry}/{image.repository}"
        url = f"{_base_url(transport)}/v2/{image.repository}/blobs/{digest}"
        what = f"blob {digest} of {name}"

        async def attempt() -> int | None:
            response = await self._send(
                transport,
                image,
                url,
                {"Accept-Encoding": "identity"},
                self._manifest_timeout,
                method="HEAD",
            )
            async with response:
                if response.status != 200:
                    await self._fail(response, transport, what, f"blob unknown: {digest} in {name}")
                if response.content_length is not None:
                    return response.content_length
            # No length in the HEAD answer: ask for the first byte and read the total.
            response = await self._send(
                transport,
                image,
                url,
                {"Accept-Encoding": "identity", "Range": "bytes=0-0"},
                self._manifest_timeout,
            )
            async with response:
                if response.status not in (200, 206):
                    await self._fail(response, transport, what, f"blob unknown: {digest} in {name}")
                if response.status == 206:
                    return _range_total(response.headers.get("Content-Range"))
                return response.content_length

        held = await self._retrying(attempt, transport, what)
        if held is None:
            raise RegistryError(
                "upstream", f"{what}: {transport.endpoint} does not tell the blob's size"
            )
        if held != size:
            raise RegistryError(
                "corrupt", f"{what} is {held} bytes at {transport.endpoint}, not {size}"
            )

    async def close(self) -> None:
        self._closed = True  # a download still running must not open a session nobody closes
        self._auth_locks.clear()  # they belong to the loop that is finishing
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- downloading ------------------------------------------------------------------------

    async def _download(
        self,
        transport: Transport,
        image: ImageReference,
        url: str,
        name: str,
        digest: str,
        writer: BlobWriter,
        progress: _Progress,
    ) -> None:
        """One GET of the blob, resumed from `writer.written` when we already have a prefix."""
        offset = writer.written
        headers = {"Accept-Encoding": "identity"}
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
        response = await self._send(transport, image, url, headers, self._blob_timeout)
        async with response:
            if response.status == 416 and offset > 0:
                return  # we seem to hold every byte already; commit() will judge
            if response.status not in (200, 206):
                await self._fail(
                    response,
                    transport,
                    f"blob {digest} of {name}",
                    f"blob unknown: {digest} in {name}",
                )
            if response.status == 206:
                start = _range_start(response.headers.get("Content-Range"))
                if start != offset:
                    writer.reset()
                    progress.rewind()
                    raise _Retryable(f"answered a range starting at {start}, not at {offset}")
            elif offset > 0:
                # The server ignored Range and sends everything: start over, honestly.
                writer.reset()
                progress.rewind()
            await self._copy(response, writer, progress)

    async def _copy(
        self, response: aiohttp.ClientResponse, writer: BlobWriter, progress: _Progress
    ) -> None:
        """Stream the body into `writer` in chunks of about chunk_size, off the event loop."""
        pieces: list[bytes] = []
        buffered = 0
        try:
            async for piece in response.content.iter_any():
                pieces.append(piece)
                buffered += len(piece)
                if buffered >= self._chunk_size:
                    await self._write(writer, pieces, progress)
                    pieces, buffered = [], 0
        except _BROKEN:
            # Bytes that did arrive are good: keep them so that the resume starts after them.
            await self._write(writer, pieces, progress)
            raise
        await self._write(writer, pieces, progress)

    @staticmethod
    async def _write(writer: BlobWriter, pieces: list[bytes], progress: _Progress) -> None:
        if not pieces:
            return
        chunk = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        await asyncio.to_thread(writer.write, chunk)
        progress.add(len(chunk))

    # --- retries ----------------------------------------------------------------------------

    async def _retrying(
        self,
        attempt: Callable[[], Awaitable[T]],
        transport: Transport,
        what: str,
        mark: Callable[[], int] = lambda: 0,
    ) -> T:
        """Run `attempt` until it succeeds, retrying broken connections, 5xx and 429.

        The retry budget counts failures in a row without progress: a download that keeps
        moving forward (its `mark` grows) between failures gets a fresh budget.
        """
        failures = 0
        high_water = mark()
        while True:
            retry_after: float | None = None
            unreachable = False
            try:
                return await attempt()
            except _Retryable as error:
                cause = f"{transport.endpoint} {error.cause}"
                retry_after = error.retry_after
            except aiohttp.ClientSSLError as error:
                raise RegistryError(
                    "unreachable", f"{what}: TLS with {transport.endpoint} failed: {error}"
                ) from error
            except aiohttp.ClientConnectorError as error:
                unreachable = True
                cause = f"cannot connect to {error.host}:{error.port}: {error.os_error or error}"
            except aiohttp.ConnectionTimeoutError as error:
                unreachable = True
                cause = f"connecting to {transport.endpoint} timed out: {_describe(error)}"
            except _BROKEN as error:
                cause = f"connection to {transport.endpoint} broke: {_describe(error)}"
            except aiohttp.ClientError as error:
                raise RegistryError(
                    "upstream", f"{what}: {transport.endpoint}: {_describe(error)}"
                ) from error
            now = mark()
            if now > high_water:
                high_water, failures = now, 0
            failures += 1
            if failures > self._max_retries:
                raise RegistryError(
                    "unreachable" if unreachable else "upstream",
                    f"{what}: {cause} (gave up after {failures} failed attempts in a row)",
                )
            await asyncio.sleep(self._delay(failures - 1, retry_after))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay: float = min(self._retry_base_delay * float(2**attempt), MAX_RETRY_DELAY)
        if retry_after is not None and retry_after <= MAX_RETRY_DELAY:
            delay = max(delay, retry_after)
        return delay

    @staticmethod
    async def _fail(
        response: aiohttp.ClientResponse, transport: Transport, what: str, not_found: str
    ) -> None:
        """Raise for an answer that is not a success (401 and 403 are handled in `_send`)."""
        if response.status == 404:
            raise RegistryError("not_found", not_found)
        detail = await _error_detail(response)
        cause = f"answered HTTP {response.status}{detail}"
        if response.status == 429 or response.status >= 500:
            raise _Retryable(cause, _retry_after(response.headers.get("Retry-After")))
        raise RegistryError("upstream", f"{what}: {transport.endpoint} {cause}")

    # --- HTTP and authentication ------------------------------------------------------------

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RegistryError("unreachable", "the registry client has been closed")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=CONNECTION_LIMIT),
                auto_decompress=False,  # blobs are gzip already and must arrive byte for byte
                read_bufsize=min(self._chunk_size, 4 << 20),
                headers={"User-Agent": "imagedepot"},
            )
        return self._session

    async def _request(
        self,
        method: str,
        transport: Transport,
        url: str,
        headers: dict[str, str],
        limits: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        session = self._session_for_loop()
        return await session.request(
            method,
            url,
            headers=headers,
            timeout=limits,
            ssl=transport.verify_tls,
            allow_redirects=True,  # aiohttp drops Authorization when the origin changes
        )

    async def _send(
        self,
        transport: Transport,
        image: ImageReference,
        url: str,
        headers: dict[str, str],
        limits: aiohttp.ClientTimeout,
        *,
        method: str = "GET",
    ) -> aiohttp.ClientResponse:
        """GET (or HEAD) `url`, answering an auth challenge once; the caller releases the
        response. An authorization is reused only for the same endpoint, repository and
        login: two projects with different logins (or one with none) never share one."""
        key = _AuthScope(
            transport.endpoint, image.repository, _login_fingerprint(transport.credentials)
        )
        known = self._authorizations.get(key)
        sent = dict(headers)
        if known is not None and known.expires_at > time.monotonic():
            sent["Authorization"] = known.header
        response = await self._request(method, transport, url, sent, limits)
        if response.status not in (401, 403):
            return response
        challenge = response.headers.get("WWW-Authenticate", "")
        status = response.status
        response.release()
        if status == 403:
            raise _unauthorized(transport, image, status)
        # Parallel downloads of one repository all meet the challenge: ask for one token.
        async with self._auth_locks.setdefault(key, asyncio.Lock()):
            current = self._authorizations.get(key)
            if (
                current is not None
                and current.header != sent.get("Authorization")
                and current.expires_at > time.monotonic()
            ):
                authorization = current  # another task got a fresh one meanwhile
            else:
                authorization = await self._authenticate(transport, image, challenge, limits)
                self._authorizations[key] = authorization
        response = await self._request(
            method, transport, url, {**headers, "Authorization": authorization.header}, limits
        )
        if response.status in (401, 403):
            status = response.status
            response.release()
            if self._authorizations.get(key) is authorization:
                del self._authorizations[key]
            raise _unauthorized(transport, image, status)
        return response

    async def _authenticate(
        self,
        transport: Transport,
        image: ImageReference,
        challenge: str,
        limits: aiohttp.ClientTimeout,
    ) -> _Authorization:
        scheme, params = _parse_challenge(challenge)
        credentials = transport.credentials
        basic = _basic_header(credentials) if credentials is not None else None
        if scheme == "basic":
            if basic is None:
                raise _unauthorized(transport, image, 401)
            return _Authorization(basic, float("inf"))
        if scheme != "bearer" or not params.get("realm"):
            raise RegistryError(
                "unauthorized",
                f"{transport.endpoint} asks for authentication we cannot answer "
                f"({challenge or 'no WWW-Authenticate'}) for {image.repository}",
            )
        query = {"scope": f"repository:{image.repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        session = self._session_for_loop()
        started = time.monotonic()
        response = await session.get(
            params["realm"],
            params=query,
            headers={"Authorization": basic} if basic else None,
            timeout=limits,
            ssl=transport.verify_tls,
        )
        async with response:
            if response.status in (401, 403):
                raise _unauthorized(transport, image, response.status, token_service=True)
            if response.status != 200:
                cause = f"token service {params['realm']} answered HTTP {response.status}"
                if response.status == 429 or response.status >= 500:
                    raise _Retryable(cause, _retry_after(response.headers.get("Retry-After")))
                raise RegistryError("upstream", f"{cause} for {image.repository}")
            body = await _read_limited(response, MAX_TOKEN_BODY, "token")
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        token = None
        if isinstance(document, dict):
            token = document.get("token") or document.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(
                "upstream", f"token service {params['realm']} answered without a token"
            )
        lifetime = document.get("expires_in") if isinstance(document, dict) else None
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_SECONDS
        # Stop using the token a little early: it was issued before we got it.
        return _Authorization(f"Bearer {token}", started + max(lifetime * 0.9 - 5, 1))


def _base_url(transport: Transport) -> str:
    endpoint = transport.endpoint
    if endpoint in (DOCKER_HUB, "index.docker.io"):
        endpoint = DOCKER_HUB_ENDPOINT
    return f"{'http' if transport.plain_http else 'https'}://{endpoint}"


def _basic_header(credentials: RegistryCredentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _image_name(image: ImageReference, reference: str) -> str:
    separator = "@" if ":" in reference else ":"
    return f"{image.registry}/{image.repository}{separator}{reference}"


def _unauthorized(
    transport: Transport, image: ImageReference, status: int, *, token_service: bool = False
) -> RegistryError:
    who = "the token service of " if token_service else ""
    how = "with the given credentials" if transport.credentials else "without credentials"
    return RegistryError(
        "unauthorized",
        f"{who}registry {transport.endpoint} refused access to repository "
        f"{image.repository} {how} (HTTP {status})",
    )


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…"` → ("bearer", {"realm": …, "service": …})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        match.group(1).lower(): (
            match.group(2).replace('\\"', '"') if match.group(2) is not None else match.group(3)
        )
        for match in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


def _range_start(header: str | None) -> int | None:
    match = _CONTENT_RANGE.match(header or "")
    return int(match.group(1)) if match else None


def _range_total(header: str | None) -> int | None:
    match = _CONTENT_RANGE.match(header or "")
    return int(match.group(3)) if match and match.group(3) != "*" else None


def _retry_after(header: str | None) -> float | None:
    try:
        value = float(header) if header else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    return value if value is not None and value >= 0 else None


def _media_type(content_type: str | None, body: bytes) -> str:
    """The Content-Type without parameters; the body's own mediaType when that is vague."""
    declared = content_type.split(";", 1)[0].strip() if content_type else ""
    if declared in MANIFEST_TYPES:
        return declared
    try:
        document = json.loads(body)
    except ValueError:
        return declared
    inner = document.get("mediaType") if isinstance(document, dict) else None
    return inner if isinstance(inner, str) and inner else declared


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


async def _read_limited(response: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    if response.content_length is not None and response.content_length > limit:
        raise RegistryError("upstream", f"{what} is {response.content_length} bytes, over {limit}")
    pieces: list[bytes] = []
    total = 0
    async for piece in response.content.iter_any():
        total += len(piece)
        if total > limit:
            raise RegistryError("upstream", f"{what} is larger than {limit} bytes")
        pieces.append(piece)
    return b"".join(pieces)


async def _error_detail(response: aiohttp.ClientResponse) -> str:
    """`: CODE message` from a distribution error body, when there is one."""
    try:
        body = b""
        while len(body) < MAX_ERROR_BODY:
            piece = await response.content.read(MAX_ERROR_BODY - len(body))
            if not piece:
                break
            body += piece
        errors = json.loads(body).get("errors")
        first = errors[0]
        return f": {first.get('code', '')} {first.get('message', '')}".rstrip()
    except (*_BROKEN, ValueError, AttributeError, TypeError, IndexError, KeyError):
        return ""
