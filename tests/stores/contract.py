"""`StoreContract`: what every BlobStore promises, run against each store by a fixture class.

A subclass provides the fixtures `store` (a fresh, empty store), `leftovers` (an
async callable listing everything the store holds, partial uploads included) and
`segment` (the store's segment or part size, so that data can span several).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import psutil
import pytest

from osimage.server.stores.base import CHUNK_SIZE, BlobNotFound, BlobStore

Leftovers = Callable[[], Awaitable[list[str]]]
MiB = 1024 * 1024


def new_id() -> str:
    return str(uuid.uuid4())


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


async def chunked(
    data: bytes, sizes: tuple[int, ...] = (65536, 1, 100_003, 7)
) -> AsyncIterator[bytes]:
    """`data` in chunks of irregular sizes, so that chunk and segment edges never line up."""
    offset, turn = 0, 0
    while offset < len(data):
        step = sizes[turn % len(sizes)]
        yield data[offset : offset + step]
        offset += step
        turn += 1
        await anyio.lowlevel.checkpoint()


async def read(
    store: BlobStore, location: str, chunk_size: int = CHUNK_SIZE
) -> tuple[str, int, int]:
    """(md5, size, largest chunk) of what `get` streams."""
    digest, size, largest = hashlib.md5(usedforsecurity=False), 0, 0
    async for chunk in store.get(location, chunk_size=chunk_size):
        digest.update(chunk)
        size += len(chunk)
        largest = max(largest, len(chunk))
    return digest.hexdigest(), size, largest


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.mark.anyio
class StoreContract:
    """Every BlobStore passes these."""

    async def test_round_trip_of_multi_chunk_data(self, store: BlobStore, segment: int) -> None:
        data = payload(2 * segment + segment // 2, seed=1)
        image_id = new_id()
        blob = await store.put(image_id, chunked(data))
        assert blob.size == len(data)
        assert store.owns(blob.location)
        digest, size, largest = await read(store, blob.location)
        assert (digest, size) == (md5(data), len(data))
        assert largest <= CHUNK_SIZE

    async def test_chunk_size_bounds_the_chunks_asked_for(
        self, store: BlobStore, segment: int
    ) -> None:
        # downloads ask for up to 1 MiB; a store may hand on smaller chunks, never bigger
        data = payload(2 * segment + segment // 2, seed=4)
        blob = await store.put(new_id(), chunked(data))
        for chunk_size in (1000, CHUNK_SIZE + 1, 1024 * 1024):
            digest, size, largest = await read(store, blob.location, chunk_size)
            assert (digest, size) == (md5(data), len(data))
            assert largest <= chunk_size

    async def test_empty_blob_round_trips(self, store: BlobStore) -> None:
        blob = await store.put(new_id(), chunked(b""))
        assert blob.size == 0
        assert await read(store, blob.location) == (md5(b""), 0, 0)

    async def test_size_and_location_name_what_put_stored(
        self, store: BlobStore, segment: int
    ) -> None:
        data = payload(segment + 3, seed=2)
        image_id = new_id()
        assert store.owns(store.location(image_id))
        blob = await store.put(image_id, chunked(data))
        assert blob.location == store.location(image_id)
        assert await store.size(blob.location) == len(data)
        await store.delete(store.location(image_id))
        with pytest.raises(BlobNotFound):
            await store.size(blob.location)

    async def test_get_of_a_deleted_blob_raises_blob_not_found(self, store: BlobStore) -> None:
        blob = await store.put(new_id(), chunked(b"soon gone"))
        await store.delete(blob.location)
        with pytest.raises(BlobNotFound):
            await read(store, blob.location)

    async def test_deleting_a_missing_blob_is_fine(
        self, store: BlobStore, leftovers: Leftovers
    ) -> None:
        blob = await store.put(new_id(), chunked(b"twice deleted"))
        await store.delete(blob.location)
        await store.delete(blob.location)
        assert await leftovers() == []

    async def test_a_foreign_location_is_not_owned(self, store: BlobStore) -> None:
        blob = await store.put(new_id(), chunked(b"mine"))
        assert not store.owns("http://127.0.0.1:1/" + new_id())
        assert not store.owns(blob.location.rsplit("/", 1)[0] + "/not-an-image-id")

    async def test_failed_put_leaves_nothing(
        self, store: BlobStore, leftovers: Leftovers, segment: int
    ) -> None:
        async def dropped() -> AsyncIterator[bytes]:
            async for chunk in chunked(payload(segment + CHUNK_SIZE, seed=2)):
                yield chunk
            raise ConnectionResetError("client went away")

        with pytest.raises(ConnectionResetError):
            await store.put(new_id(), dropped())
        assert await leftovers() == []

    async def test_cancelled_put_leaves_nothing(
        self, store: BlobStore, leftovers: Leftovers, segment: int
    ) -> None:
        stalled = anyio.Event()

        async def stalls() -> AsyncIterator[bytes]:
            yield b"x" * segment  # one whole segment or part: it gets written
            yield b"y" * 10
            stalled.set()
            await anyio.sleep_forever()
            yield b"never"

        async with anyio.create_task_group() as tg:
            tg.start_soon(store.put, new_id(), stalls())
            await stalled.wait()
            assert await leftovers() != []  # something partial exists: cleanup has work
            tg.cancel_scope.cancel()
        assert await leftovers() == []

    async def test_large_blob_across_several_segments(self, store: BlobStore, segment: int) -> None:
        data = payload(4 * segment + 12345, seed=3)
        blob = await store.put(new_id(), chunked(data, sizes=(CHUNK_SIZE, CHUNK_SIZE - 1)))
        assert blob.size == len(data)
        assert (await read(store, blob.location))[:2] == (md5(data), len(data))

    async def test_concurrent_puts_of_different_ids(self, store: BlobStore, segment: int) -> None:
        datas = [payload(segment + 1000 * n, seed=10 + n) for n in range(3)]
        ids = [new_id() for _ in datas]
        blobs: dict[str, str] = {}

        async def one(image_id: str, data: bytes) -> None:
            blobs[image_id] = (await store.put(image_id, chunked(data))).location

        async with anyio.create_task_group() as tg:
            for image_id, data in zip(ids, datas, strict=True):
                tg.start_soon(one, image_id, data)
        assert len(set(blobs.values())) == len(ids)
        for image_id, data in zip(ids, datas, strict=True):
            assert (await read(store, blobs[image_id]))[:2] == (md5(data), len(data))

    async def test_delete_removes_everything_of_a_blob(
        self, store: BlobStore, leftovers: Leftovers, segment: int
    ) -> None:
        blob = await store.put(new_id(), chunked(payload(2 * segment + 1, seed=4)))
        assert await leftovers() != []
        await store.delete(blob.location)
        assert await leftovers() == []

    async def test_sweep_keeps_complete_blobs(self, store: BlobStore, segment: int) -> None:
        data = payload(segment + 5, seed=5)
        blob = await store.put(new_id(), chunked(data))
        assert await store.sweep() == []
        assert (await read(store, blob.location))[:2] == (md5(data), len(data))

    async def test_memory_stays_bounded_while_streaming(
        self, store: BlobStore, segment: int
    ) -> None:
        """64 MiB in and out; resident memory may grow by a part/segment buffer, not the blob."""
        process = psutil.Process()
        block = payload(MiB, seed=6)
        blocks = 64
        warm_up = await store.put(new_id(), chunked(b"clients and pools get made"))
        await read(store, warm_up.location)
        baseline = process.memory_info().rss
        peak = baseline

        async def source() -> AsyncIterator[bytes]:
            nonlocal peak
            for _ in range(blocks):
                for offset in range(0, MiB, CHUNK_SIZE):
                    yield block[offset : offset + CHUNK_SIZE]
                peak = max(peak, process.memory_info().rss)
                await anyio.lowlevel.checkpoint()

        blob = await store.put(new_id(), source())
        assert blob.size == blocks * MiB
        digest, seen = hashlib.md5(usedforsecurity=False), 0
        async for chunk in store.get(blob.location):
            digest.update(chunk)
            seen += len(chunk)
            if seen % MiB == 0:
                peak = max(peak, process.memory_info().rss)
        expected = hashlib.md5(usedforsecurity=False)
        for _ in range(blocks):
            expected.update(block)
        assert (digest.hexdigest(), seen) == (expected.hexdigest(), blocks * MiB)
        assert peak - baseline < 2 * segment + 16 * MiB
