"""Following a download as it arrives: the last byte only once the blob is verified and
committed, and a cut instead of bytes that could be wrong."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from imagedepot.adapters.spool import FileSpool
from imagedepot.services.live_blobs import LiveBlob, LiveBlobFailed


async def collect(live: LiveBlob, into: list[bytes]) -> None:
    async for chunk in live.follow():
        into.append(chunk)


def spooled(directory: Path, size: int) -> LiveBlob:
    """A download of `size` bytes that feeds a spool (call it on the running loop)."""
    live = LiveBlob(size, asyncio.get_running_loop())
    live.attach(spool=FileSpool(directory))
    return live


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


def test_the_last_byte_waits_for_the_commit(tmp_path: Path) -> None:
    async def scenario() -> None:
        live = spooled(tmp_path, 6)
        received: list[bytes] = []
        follower = asyncio.ensure_future(collect(live, received))
        live.append(b"abc")
        live.append(b"def")
        await settle()
        assert b"".join(received) == b"abcde"  # all but the last byte
        assert not follower.done()
        live.finish(committed=True)
        await follower
        assert b"".join(received) == b"abcdef"

    asyncio.run(scenario())


def test_a_failed_download_cuts_its_followers_short(tmp_path: Path) -> None:
    async def scenario() -> None:
        live = spooled(tmp_path, 6)
        received: list[bytes] = []
        follower = asyncio.ensure_future(collect(live, received))
        live.append(b"abcdef")
        await settle()
        live.finish(committed=False)
        with pytest.raises(LiveBlobFailed):
            await follower
        assert b"".join(received) != b"abcdef"

    asyncio.run(scenario())


def test_a_restart_is_followed_from_zero_but_cuts_a_follower_that_had_bytes(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        live = spooled(tmp_path, 4)
        early: list[bytes] = []
        had_bytes = asyncio.ensure_future(collect(live, early))
        live.append(b"xx")
        await settle()
        live.restart()
        late: list[bytes] = []
        fresh = asyncio.ensure_future(collect(live, late))
        live.append(b"good")
        live.finish(committed=True)
        with pytest.raises(LiveBlobFailed):
            await had_bytes
        await fresh
        assert b"".join(late) == b"good"

    asyncio.run(scenario())
