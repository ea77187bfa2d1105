"""The cache's disk side (osimage.server.cache.disk): what is published, and when not.

The "store" here is a plain async generator of bytes (what `BlobStore.get` returns);
the e2e suite (tests/e2e/test_cache.py) runs the same paths against Swift and S3.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import resource
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import anyio
import pytest

from osimage.server.cache.disk import ImageCache, sweep
from osimage.server.stores.base import StoreUnavailable

pytestmark = pytest.mark.anyio
MIB = 1024 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def source(
    data: bytes, *, fail_at: int | None = None, gate: anyio.Event | None = None
) -> Callable[[], AsyncIterator[bytes]]:
    """A store read of `data` in 64 KiB chunks; it may break at `fail_at` or wait on `gate`
    half way."""
    reads: list[int] = []

    async def read() -> AsyncIterator[bytes]:
        reads.append(1)
        for offset in range(0, len(data), 65536):
            if fail_at is not None and offset >= fail_at:
                raise StoreUnavailable("the store broke off")
            if gate is not None and offset >= len(data) // 2:
                await gate.wait()
            yield data[offset : offset + 65536]

    read.reads = reads  # type: ignore[attr-defined]
    return read


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def listing(cache: ImageCache) -> tuple[list[str], list[str]]:
    return sorted(os.listdir(cache.entries)), sorted(os.listdir(cache.incomplete))


async def test_a_verified_fill_is_published_and_then_hit(tmp_path: Path) -> None:
    data, image_id = os.urandom(3 * MIB + 5), str(uuid.uuid4())
    checksum = hashlib.md5(data).hexdigest()
    store = source(data)
    async with anyio.create_task_group() as tasks:
        cache = ImageCache(tmp_path, 10 * MIB, tasks)
        assert await collect(cache.read(image_id, checksum, len(data), store)) == data
        await wait_until(lambda: listing(cache)[0] != [])
        assert await collect(cache.read(image_id, checksum, len(data), store)) == data
    assert listing(cache) == ([f"{image_id}.{checksum}"], [])
    assert len(store.reads) == 1  # type: ignore[attr-defined]
    assert (cache.counters.hits, cache.counters.misses) == (1, 1)
    assert cache.counters.bytes_from_cache == len(data) == cache.counters.bytes_filled


def cached(cache: ImageCache, image_id: str, checksum: str) -> bool:
    return cache.lookup(image_id, checksum, MIB) is not None


async def wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):  # up to 20 s
        if condition():
            return
        await anyio.sleep(0.01)
    raise AssertionError("the condition did not come true within 20 s")


async def test_data_that_does_not_match_the_record_is_never_published(tmp_path: Path) -> None:
    data, image_id = os.urandom(MIB), str(uuid.uuid4())
    wrong = hashlib.md5(b"other data").hexdigest()
    async with anyio.create_task_group() as tasks:
        cache = ImageCache(tmp_path, 10 * MIB, tasks)
        with pytest.raises(StoreUnavailable, match="md5"):
            await collect(cache.read(image_id, wrong, len(data), source(data)))
    assert listing(cache) == ([], [])
    assert cache.counters.fills_failed == 1


async def test_a_store_error_leaves_nothing(tmp_path: Path) -> None:
    data, image_id = os.urandom(3 * MIB), str(uuid.uuid4())
    checksum = hashlib.md5(data).hexdigest()
    async with anyio.create_task_group() as tasks:
        cache = ImageCache(tmp_path, 10 * MIB, tasks)
        with pytest.raises(StoreUnavailable, match="broke off"):
            await collect(cache.read(image_id, checksum, len(data), source(data, fail_at=2 * MIB)))
    assert listing(cache) == ([], [])


async def test_a_fill_every_reader_left_stops_and_leaves_nothing(tmp_path: Path) -> None:
    data, image_id = os.urandom(4 * MIB), str(uuid.uuid4())
    checksum = hashlib.md5(data).hexdigest()
    gate = anyio.Event()
    async with anyio.create_task_group() as tasks:
        cache = ImageCache(tmp_path, 10 * MIB, tasks)
        chunks = cache.read(image_id, checksum, len(data), source(data, gate=gate))
        assert await anext(chunks)
        assert listing(cache)[1] != []  # the fill is under way
        await chunks.aclose()  # the only client goes away
        await wait_until(lambda: listing(cache) == ([], []))
        gate.set()
    assert cache.counters.fills_failed == 1


async def test_a_reader_that_does_not_read_does_not_hold_back_the_fill(tmp_path: Path) -> None:
    data, image_id = os.urandom(4 * MIB), str(uuid.uuid4())
    checksum = hashlib.md5(data).hexdigest()
    store = source(data)
    async with anyio.create_task_group() as tasks:
        cache = ImageCache(tmp_path, 10 * MIB, tasks)
        idle = cache.read(image_id, checksum, len(data), store)
        first = await anext(idle)  # then it reads nothing more for a while
        await wait_until(lambda: listing(cache)[0] != [])  # the fill completed regardless
        assert first + await collect(idle) == data
    assert len(store.reads) == 1  # type: ignore[attr-defined]


async def test_eviction_is_least_recently_used_and_sweep_removes_partials(tmp_path: Path) -> None:
    blobs = [os.urandom(MIB) for _ in range(3)]
    ids = [str(uuid.uuid4()) for _ in blobs]
    sums = [hashlib.md5(blob).hexdigest() for blob in blobs]
    async with anyio.create_task_group() as tasks:
        cache = ImageCache(tmp_path, 2 * MIB, tasks)
        for n in (0, 1, 0, 2):  # 1 is the least recently used when 2 arrives
            await collect(cache.read(ids[n], sums[n], MIB, source(blobs[n])))
            await wait_until(partial(cached, cache, ids[n], sums[n]))
    assert sorted(entry.image_id for entry in cache.cached()) == sorted([ids[0], ids[2]])
    assert cache.counters.evictions == 1
    (cache.incomplete / f"{ids[1]}.{sums[1]}").write_bytes(b"half")
    assert sweep(tmp_path) == [f"{ids[1]}.{sums[1]}"]
    assert listing(cache)[1] == []


async def test_a_partial_of_a_live_filler_is_left_alone_and_a_dead_ones_replaced(
    tmp_path: Path,
) -> None:
    data, image_id = os.urandom(MIB), str(uuid.uuid4())
    checksum = hashlib.md5(data).hexdigest()
    async with anyio.create_task_group() as tasks:
        cache = ImageCache(tmp_path, 10 * MIB, tasks)
        partial_path = cache.incomplete / f"{image_id}.{checksum}"
        partial_path.write_bytes(b"half")
        os.utime(partial_path, (0, 0))  # untouched for long
        with partial_path.open("rb") as held:  # as another worker filling it would hold it
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)
            store = source(data)
            assert await collect(cache.read(image_id, checksum, len(data), store)) == data
            assert listing(cache) == ([], [partial_path.name])  # streamed, not cached
        # the worker died: its lock is gone with it
        assert await collect(cache.read(image_id, checksum, len(data), store)) == data
        await wait_until(partial(cached, cache, image_id, checksum))
    assert listing(cache) == ([partial_path.name], [])
    assert len(store.reads) == 2  # type: ignore[attr-defined]


async def test_a_failing_cache_disk_means_uncached_downloads_for_a_while(tmp_path: Path) -> None:
    data, image_id = os.urandom(2 * MIB), str(uuid.uuid4())
    checksum = hashlib.md5(data).hexdigest()
    store = source(data)
    # files of this process may not grow past 1 MiB: the fill's writes fail with EFBIG,
    # as they would with ENOSPC on a full disk
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (MIB, limits[1]))
    try:
        async with anyio.create_task_group() as tasks:
            cache = ImageCache(tmp_path, 10 * MIB, tasks)
            with pytest.raises(StoreUnavailable, match="fill failed"):
                await collect(cache.read(image_id, checksum, len(data), store))
            assert await collect(cache.read(image_id, checksum, len(data), store)) == data
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert listing(cache) == ([], [])
    assert len(store.reads) == 2  # type: ignore[attr-defined]
