"""The upload's md5 and sha512, hashed on other threads in batches, equal hashlib's over the
same bytes, whatever the chunking."""

from __future__ import annotations

import hashlib
import os

import pytest

from imagedepot.services.digests import BATCH, UploadDigests


@pytest.mark.parametrize("size", [0, 1, BATCH - 1, BATCH, 3 * BATCH + 17])
@pytest.mark.parametrize("piece", [1000, 64 * 1024, 2 * BATCH])
def test_the_digests_are_those_of_the_bytes(size: int, piece: int) -> None:
    data = os.urandom(size)
    digests = UploadDigests()
    for start in range(0, size, piece):
        digests.update(data[start : start + piece])
    assert digests.hexdigests() == (
        hashlib.md5(data, usedforsecurity=False).hexdigest(),
        hashlib.sha512(data).hexdigest(),
    )


def test_small_and_large_chunks_mixed_keep_their_order() -> None:
    """Large chunks skip the batch; one arriving while small ones wait must not overtake."""
    sizes = [1000, 2 * BATCH, 17, BATCH, BATCH - 1, 3 * BATCH, 5]
    chunks = [os.urandom(size) for size in sizes]
    digests = UploadDigests()
    for chunk in chunks:
        digests.update(chunk)
    data = b"".join(chunks)
    assert digests.hexdigests() == (
        hashlib.md5(data, usedforsecurity=False).hexdigest(),
        hashlib.sha512(data).hexdigest(),
    )
