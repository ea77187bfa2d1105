"""The pace a copy must keep (`copies.paced`), on real timers with short windows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from osimage.server import copies
from osimage.server.errors import ServiceUnavailable, TooManyRequests

pytestmark = pytest.mark.anyio


async def trickle(pieces: int, pause: float) -> AsyncIterator[bytes]:
    for _ in range(pieces):
        yield b"x" * 100
        await anyio.sleep(pause)


async def wanted() -> bool:
    return True


async def drain(chunks: AsyncIterator[bytes]) -> int:
    return sum([len(chunk) async for chunk in chunks])


async def test_a_source_fast_enough_passes() -> None:
    paced = copies.paced(trickle(10, 0.01), min_rate=100, still_wanted=wanted, window=0.2)
    assert await drain(paced) == 1000


async def test_a_source_slower_than_the_minimum_fails() -> None:
    paced = copies.paced(trickle(10, 0.3), min_rate=10_000, still_wanted=wanted, window=0.2)
    with pytest.raises(copies.CopyTooSlow):
        await drain(paced)


async def test_a_silent_source_fails_within_a_window() -> None:
    async def silent() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await anyio.sleep(30)
        yield b"never"

    with anyio.fail_after(5):
        paced = copies.paced(silent(), min_rate=10, still_wanted=wanted, window=0.2)
        with pytest.raises(copies.CopyTooSlow):
            await drain(paced)


async def test_a_copy_no_longer_wanted_is_cancelled() -> None:
    async def gone() -> bool:
        return False

    paced = copies.paced(trickle(10, 0.02), min_rate=0, still_wanted=gone, check_every=0.05)
    with pytest.raises(copies.CopyCancelled):
        await drain(paced)


def test_caps_count_per_project_and_in_all() -> None:
    caps = copies.Copies(limit=2, per_project=1)
    alice = caps.acquire("alice")
    with pytest.raises(TooManyRequests, match="copy_max_per_project"):
        caps.acquire("alice")
    caps.acquire("bob")
    with pytest.raises(ServiceUnavailable, match="copy_max"):
        caps.acquire("carol")
    alice.release()
    alice.release()  # idempotent
    assert caps.running == 1
    caps.acquire("carol")
