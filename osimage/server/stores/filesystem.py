"""Image data as files in one directory: written beside the target, fsynced, then renamed."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import anyio
from anyio import CancelScope, to_thread

from osimage.server.durable import settle
from osimage.server.stores.base import (
    CHUNK_SIZE,
    Blob,
    BlobNotFound,
    StoreConfigError,
    StoreError,
    StoreFull,
    StoreUnavailable,
    accepts,
    check_image_id,
)

_PARTIAL_SUFFIX = ".partial"
_READ_SIZE = 1024 * 1024  # bytes read per worker-thread hop when streaming a blob out


def _store_error(error: OSError) -> StoreError:
    """The store error for a failure of our own disk (not of the chunks being written)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(f"Image storage media is full: {error.strerror}")
    return StoreUnavailable(f"cannot write to the image store: {error}")


@contextmanager
def _disk() -> Iterator[None]:
    """Raise a disk operation's OSError as the store error it means."""
    try:
        yield
    except OSError as error:
        raise _store_error(error) from error


def _read_pieces(handle: IO[bytes], size: int, count: int) -> list[bytes]:
    """Up to `count` pieces of at most `size` bytes read from `handle`; [] at its end."""
    pieces: list[bytes] = []
    for _ in range(count):
        piece = handle.read(size)
        if not piece:
            break
        pieces.append(piece)
    return pieces


async def _write_all(out: IO[bytes], chunks: AsyncIterator[bytes]) -> int:
    """Write `chunks` in order, each in a worker thread while the next one arrives; return
    how many bytes were written. Returns or raises only once no write is running."""
    loop = asyncio.get_running_loop()
    writing: asyncio.Future[int] | None = None
    size = 0
    try:
        async for chunk in chunks:
            if writing is not None:
                with _disk():
                    await asyncio.shield(writing)
            writing = loop.run_in_executor(None, out.write, chunk)
            size += len(chunk)
            del chunk  # the write holds it while it runs, and nothing after
        if writing is not None:
            with _disk():
                await asyncio.shield(writing)
    finally:
        if writing is not None and not writing.done():
            with CancelScope(shield=True):  # the file must not be closed under a write
                await asyncio.wait([writing])
            if not writing.cancelled():
                writing.exception()  # retrieved: the error that got us here is the one raised
    return size


class FilesystemStore:
    """`file:///some/dir`: one file per image, named by the image id."""

    scheme = "file"

    def __init__(self, root: Path) -> None:
        self.root = anyio.Path(root)

    @classmethod
    def from_url(cls, url: str) -> FilesystemStore:
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise StoreConfigError(f"not a local file URL: {url!r}")
        root = Path(unquote(parts.path))
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    @classmethod
    def from_options(cls, url: str, options: Mapping[str, Any]) -> FilesystemStore:
        """As `from_url`: the file store has no options."""
        return cls.from_url(url)

    def location(self, image_id: str) -> str:
        """Where `put` stores the blob of `image_id`."""
        return Path(self.root / check_image_id(image_id)).as_uri()

    def _path(self, location: str) -> anyio.Path:
        parts = urlsplit(location)
        path = Path(unquote(parts.path))
        if parts.scheme != "file" or path.parent != Path(self.root):
            raise BlobNotFound(f"not a blob of this store: {location!r}")
        try:
            check_image_id(path.name)
        except ValueError:
            raise BlobNotFound(f"not a blob of this store: {location!r}") from None
        return self.root / path.name

    def owns(self, location: str) -> bool:
        return accepts(self._path, location)

    async def put(self, image_id: str, chunks: AsyncIterator[bytes]) -> Blob:
        image_id = check_image_id(image_id)
        final = self.root / image_id
        partial = self.root / f".{image_id}{_PARTIAL_SUFFIX}"
        try:
            with _disk():
                out = await partial.open("xb")
            async with out:
                size = await _write_all(out.wrapped, chunks)  # the chunks' own errors pass
                with _disk():
                    await out.flush()
                    await to_thread.run_sync(
                        settle, out.wrapped.fileno(), Path(partial), Path(final)
                    )
        except BaseException:
            with CancelScope(shield=True):
                await partial.unlink(missing_ok=True)
            raise
        return Blob(location=Path(final).as_uri(), size=size)

    async def get(self, location: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        path = self._path(location)
        try:
            handle = await path.open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"image data is missing: {path.name}") from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read image data: {exc.strerror}") from exc
        async with handle:
            # One thread hop per _READ_SIZE (or chunk), read as chunks of `chunk_size`:
            # each read into its own bytes, never sliced (copied) out of a bigger block.
            per_hop = max(_READ_SIZE // chunk_size, 1)
            while pieces := await to_thread.run_sync(
                _read_pieces, handle.wrapped, chunk_size, per_hop
            ):
                for piece in pieces:
                    yield piece

    async def size(self, location: str) -> int:
        path = self._path(location)
        try:
            return (await path.stat()).st_size
        except FileNotFoundError:
            raise BlobNotFound(f"image data is missing: {path.name}") from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read image data: {exc.strerror}") from exc

    async def delete(self, location: str) -> None:
        with suppress(BlobNotFound), _disk():  # another store's location is nothing to remove
            await self._path(location).unlink(missing_ok=True)

    async def sweep(self) -> list[str]:
        removed: list[str] = []
        async for entry in self.root.iterdir():
            name = entry.name
            if name.startswith(".") and name.endswith(_PARTIAL_SUFFIX):
                await entry.unlink(missing_ok=True)
                removed.append(name)
        return removed

    async def aclose(self) -> None:
        return None
