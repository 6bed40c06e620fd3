"""One way to answer with a stored blob, whatever the backend: the kernel sends a local file
(`sendfile`, with Starlette's own Range handling); a backend set to redirect answers GETs with
a 307 to a short-lived URL so the bytes skip this process; anything else streams `open()`
with a single `Range` honoured (several ranges get the whole blob, as RFC 9110 allows).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Final

from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from imagedepot.ports import BlobSource

SEND_CHUNK: Final = 1 << 20
"""Local files are read in 1 MiB pieces when sendfile cannot serve (TLS, ranges)."""

_SINGLE_RANGE: Final = re.compile(r"bytes=(\d{0,19})-(\d{0,19})\Z", re.ASCII)


class _LargeChunkFileResponse(FileResponse):
    chunk_size = SEND_CHUNK


def _requested_range(header: str | None, size: int) -> tuple[int, int] | bool | None:
    """The (start, length) one `Range` header asks for; None to send the whole blob (no
    header, or one this server answers whole); False when nothing of it lies in the blob."""
    if header is None:
        return None
    match = _SINGLE_RANGE.match(header.strip())
    if match is None or match.group(0) == "bytes=-":
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # a suffix: the last N bytes
        suffix = int(last)
        if suffix == 0:
            return False
        start = max(size - suffix, 0)
        return start, size - start
    start = int(first)
    end = size - 1 if not last else min(int(last), size - 1)
    if start >= size or (last and int(last) < start):
        return False
    return start, end - start + 1


async def _stream(
    opened: AbstractContextManager[Iterator[bytes]], chunks: Iterator[bytes]
) -> AsyncIterator[bytes]:
    try:
        async for chunk in iterate_in_threadpool(chunks):
            yield chunk
    finally:
        await run_in_threadpool(opened.__exit__, None, None, None)


async def blob_response(
    request: Request,
    source: BlobSource,
    digest: str,
    size: int,
    headers: Mapping[str, str],
    *,
    filename: str | None = None,
    may_redirect: bool = False,
) -> Response:
    """The answer to a GET or HEAD of a committed blob `digest` of `size` bytes;
    FileNotFoundError when the backend no longer holds it."""
    media_type = "application/octet-stream"
    path = source.local_file(digest)
    if path is not None:
        return _LargeChunkFileResponse(
            path, media_type=media_type, headers=dict(headers), filename=filename
        )
    if may_redirect and request.method == "GET":
        url = await run_in_threadpool(source.redirect_url, digest)
        if url is not None:
            return RedirectResponse(url, status_code=307, headers=dict(headers))
    answer = {**headers, "Accept-Ranges": "bytes"}
    if filename is not None:
        answer["Content-Disposition"] = f'attachment; filename="{filename}"'
    wanted = _requested_range(request.headers.get("range"), size)
    if wanted is False:
        answer["Content-Range"] = f"bytes */{size}"
        return Response(status_code=416, headers=answer)
    start, length, status = 0, size, 200
    if isinstance(wanted, tuple):
        start, length = wanted
        answer["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"
        status = 206
    answer["Content-Length"] = str(length)
    if request.method == "HEAD" or length == 0:
        return Response(status_code=status, headers=answer, media_type=media_type)
    opened = source.open(digest, start, length)
    # Opened before the status line goes out: a blob gone from the backend is still a 404.
    chunks = await run_in_threadpool(opened.__enter__)
    return StreamingResponse(
        _stream(opened, chunks), status_code=status, headers=answer, media_type=media_type
    )
