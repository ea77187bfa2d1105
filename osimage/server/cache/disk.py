"""The image cache on one API node's local disk: verified entries, single-flight fills, LRU.

Layout under the cache directory: ``entries/<image id>.<md5>`` holds complete, verified
copies; ``incomplete/<image id>.<md5>`` the fill in progress (renamed into ``entries/``
only once its size and md5 match the record); ``queue/<image id>`` the images queued for
prefetch on this node. Knows no database and no HTTP: callers say which image, checksum
and size the record has, and give the store read to fill from.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio
from anyio import CancelScope, to_thread
from anyio.abc import TaskGroup

from osimage.server.durable import settle
from osimage.server.stores.base import StoreUnavailable, check_image_id

if TYPE_CHECKING:
    from hashlib import _Hash as Hash

log = logging.getLogger("osimage.cache")

WRITE_BATCH: Final = 1024 * 1024  # bytes per thread hop when filling (and per md5 update)
# Bytes per thread hop when serving, handed on whole: one send per MiB, not sixteen.
READ_SIZE: Final = 1024 * 1024
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ENTRY = re.compile(rf"(?P<id>{_ID.pattern})\.(?P<md5>[0-9a-f]{{32}})")
DISK_BACKOFF: Final = 60.0  # seconds without new fills after the cache disk failed one
ABANDONED_AFTER: Final = 10.0  # seconds an unlocked partial must be untouched to be stale
Opener = Callable[[], AsyncIterator[bytes]]


@dataclass(frozen=True)
class CachedImage:
    """One complete entry: what Glance's cache listing shows of it."""

    image_id: str
    checksum: str
    size: int
    last_accessed: float  # seconds since the epoch
    last_modified: float
    hits: int  # hits served by this process since it started

    def listed(self) -> dict[str, object]:
        """The entry as Glance's cache listings (v1 and v2) show it."""
        return {
            "image_id": self.image_id,
            "hits": self.hits,
            "last_accessed": self.last_accessed,
            "last_modified": self.last_modified,
            "size": self.size,
        }


@dataclass
class Counters:
    """Running totals of this process's cache, for metrics."""

    hits: int = 0
    misses: int = 0
    bytes_from_cache: int = 0  # served from complete entries
    bytes_filled: int = 0  # read from the store into the cache
    evictions: int = 0
    fills_failed: int = 0


@dataclass(eq=False)
class _Fill:
    """A fill in progress: readers follow `written` and wake on `changed`."""

    image_id: str
    checksum: str
    size: int
    partial: Path
    fd: int
    written: int = 0
    done: bool = False
    error: BaseException | None = None
    readers: int = 0
    changed: anyio.Event = field(default_factory=anyio.Event)
    scope: CancelScope = field(default_factory=CancelScope)

    def notify(self) -> None:
        event, self.changed = self.changed, anyio.Event()
        event.set()


class ImageCache:
    """A bounded local-disk cache of image data (see the module docstring for its layout).

    `read()` serves an entry that matches the record, or fills one from the store while
    serving it; every concurrent reader of one image in this process follows the same
    fill, which runs at the store's pace in the background task group, not a client's.
    """

    def __init__(self, root: Path, max_size: int, tasks: TaskGroup | None = None) -> None:
        self.root = root
        self.max_size = max_size
        self.tasks = tasks
        self.entries = root / "entries"
        self.incomplete = root / "incomplete"
        self.queue_dir = root / "queue"
        self.counters = Counters()
        self._fills: dict[tuple[str, str], _Fill] = {}
        self._hits: dict[str, int] = {}
        self._no_fills_until = 0.0  # monotonic time; set when the cache disk fails a fill
        for directory in (self.entries, self.incomplete, self.queue_dir):
            directory.mkdir(parents=True, exist_ok=True)

    # -- entries ---------------------------------------------------------------------------

    def _entry(self, image_id: str, checksum: str) -> Path:
        return self.entries / f"{check_image_id(image_id)}.{checksum.lower()}"

    def lookup(self, image_id: str, checksum: str, size: int) -> Path | None:
        """The complete entry for this record, or None (an entry of another size is stale)."""
        path = self._entry(image_id, checksum)
        try:
            found = path.stat().st_size
        except FileNotFoundError:
            return None
        if found != size:
            path.unlink(missing_ok=True)
            return None
        return path

    def cached(self) -> list[CachedImage]:
        """Every complete entry, least recently used first."""
        found = []
        for path in self.entries.iterdir():
            match = _ENTRY.fullmatch(path.name)
            if match is None:
                continue
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            image_id = match["id"]
            found.append(
                CachedImage(
                    image_id,
                    match["md5"],
                    info.st_size,
                    info.st_atime,
                    info.st_mtime,
                    self._hits.get(image_id, 0),
                )
            )
        found.sort(key=lambda entry: entry.last_accessed)
        return found

    def is_cached(self, image_id: str) -> bool:
        return any(entry.image_id == image_id for entry in self.cached())

    def delete(self, image_id: str, *, except_checksum: str | None = None) -> int:
        """Remove the entries of `image_id` (all, or all but one checksum); how many went."""
        removed = 0
        for entry in self.cached():
            if entry.image_id == image_id and entry.checksum != except_checksum:
                (self.entries / f"{image_id}.{entry.checksum}").unlink(missing_ok=True)
                self._hits.pop(image_id, None)
                removed += 1
        return removed

    def clear(self) -> int:
        """Remove every complete entry; how many went (fills in progress go on)."""
        entries = self.cached()
        for entry in entries:
            (self.entries / f"{entry.image_id}.{entry.checksum}").unlink(missing_ok=True)
        self._hits.clear()
        return len(entries)

    def used(self) -> int:
        """Bytes held by complete entries plus those reserved by this process's fills."""
        return sum(entry.size for entry in self.cached()) + sum(
            fill.size for fill in self._fills.values()
        )

    def evict(self, room: int = 0) -> int:
        """Remove least recently used entries until `room` more bytes fit; how many went."""
        entries = self.cached()
        used = sum(entry.size for entry in entries) + sum(f.size for f in self._fills.values())
        evicted = 0
        for entry in entries:
            if used + room <= self.max_size:
                break
            (self.entries / f"{entry.image_id}.{entry.checksum}").unlink(missing_ok=True)
            self._hits.pop(entry.image_id, None)
            used -= entry.size
            evicted += 1
            log.info("cache: evicted %s (%d bytes)", entry.image_id, entry.size)
        self.counters.evictions += evicted
        return evicted

    # -- queue -----------------------------------------------------------------------------

    def queue(self, image_id: str) -> None:
        (self.queue_dir / check_image_id(image_id)).touch()

    def queued(self) -> list[str]:
        """The ids queued for prefetch on this node, oldest first."""
        paths = [path for path in self.queue_dir.iterdir() if _ID.fullmatch(path.name)]
        return [path.name for path in sorted(paths, key=lambda path: path.stat().st_mtime)]

    def dequeue(self, image_id: str) -> bool:
        path = self.queue_dir / check_image_id(image_id)
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed

    def clear_queue(self) -> int:
        names = self.queued()
        for name in names:
            (self.queue_dir / name).unlink(missing_ok=True)
        return len(names)

    # -- serving ---------------------------------------------------------------------------

    async def read(
        self, image_id: str, checksum: str, size: int, open_store: Opener
    ) -> AsyncGenerator[bytes, None]:
        """The image's bytes: from the entry if there is one, else from a (shared) fill.

        The caller has checked the record (active, with this checksum and size) just
        before. Store errors surface as the store raised them; a failing cache disk as
        `StoreUnavailable`. Without room for the image, it streams from the store uncached.
        """
        entry = self.lookup(image_id, checksum, size)
        if entry is not None:
            try:
                fd = os.open(entry, os.O_RDONLY)
            except FileNotFoundError:
                entry = None  # evicted between lookup and open
            else:
                self.counters.hits += 1
                self._hits[image_id] = self._hits.get(image_id, 0) + 1
                with contextlib.suppress(OSError):
                    os.utime(fd, (time.time(), entry.stat().st_mtime))
                async for chunk in self._serve_entry(fd):
                    yield chunk
                return
        self.counters.misses += 1
        fill = self._fills.get((image_id, checksum)) or self._start_fill(
            image_id, checksum, size, open_store
        )
        if fill is None:  # no room, or another process fills it: straight from the store
            async for chunk in open_store():
                yield chunk
            return
        async for chunk in self._follow(fill):
            yield chunk

    async def _serve_entry(self, fd: int) -> AsyncIterator[bytes]:
        try:
            offset = 0
            while block := await to_thread.run_sync(os.pread, fd, READ_SIZE, offset):
                offset += len(block)
                self.counters.bytes_from_cache += len(block)
                yield block
        finally:
            os.close(fd)

    def _start_fill(
        self, image_id: str, checksum: str, size: int, open_store: Opener
    ) -> _Fill | None:
        if self.tasks is None or size > self.max_size:
            return None
        if time.monotonic() < self._no_fills_until:
            return None  # the cache disk failed lately (full?): serve uncached for a while
        self.delete(image_id, except_checksum=checksum)  # the record's data changed
        self.evict(size)
        if self.used() + size > self.max_size:
            log.info("cache: no room for %s (%d bytes) beside the fills", image_id, size)
            return None
        partial = self.incomplete / f"{check_image_id(image_id)}.{checksum.lower()}"
        try:
            fd = _create_partial(partial)
        except OSError as error:  # a broken cache disk must not break downloads
            log.warning("cache: cannot start a fill of %s: %s", image_id, error)
            return None
        if fd is None:  # another process of this node is filling it
            return None
        fill = _Fill(image_id, checksum.lower(), size, partial, fd)
        self._fills[(image_id, checksum)] = fill
        self.tasks.start_soon(self._fill, fill, open_store)
        return fill

    async def _fill(self, fill: _Fill, open_store: Opener) -> None:
        md5 = hashlib.md5(usedforsecurity=False)
        try:
            with fill.scope:
                async with aclosing(_batches(open_store(), WRITE_BATCH)) as batches:
                    async for batch in batches:
                        await to_thread.run_sync(_write, fill.fd, batch, fill.written, md5)
                        fill.written += len(batch)
                        self.counters.bytes_filled += len(batch)
                        fill.notify()
            if fill.scope.cancelled_caught:
                raise StoreUnavailable("the image cache fill was abandoned by all its readers")
            if fill.written != fill.size or md5.hexdigest() != fill.checksum:
                raise StoreUnavailable(
                    f"image {fill.image_id}: the store gave {fill.written} bytes with md5 "
                    f"{md5.hexdigest()}, the record says {fill.size} bytes with md5 "
                    f"{fill.checksum}; not cached"
                )
            self.evict(0)
            final = self._entry(fill.image_id, fill.checksum)
            await to_thread.run_sync(settle, fill.fd, fill.partial, final)
            os.utime(final)  # accessed and modified now: the newest entry in LRU order
            fill.done = True
            log.info("cache: cached %s (%d bytes)", fill.image_id, fill.size)
        except BaseException as error:
            fill.error = error
            self.counters.fills_failed += 1
            with contextlib.suppress(OSError):
                fill.partial.unlink(missing_ok=True)
            if not isinstance(error, Exception):
                raise
            log.warning("cache: fill of %s failed: %s", fill.image_id, error)
            if isinstance(error, OSError):  # our disk, not the store (stores translate theirs)
                self._no_fills_until = time.monotonic() + DISK_BACKOFF
                log.warning("cache: no new fills for %.0f s after a disk error", DISK_BACKOFF)
        finally:
            self._fills.pop((fill.image_id, fill.checksum), None)
            fill.notify()
            self._release(fill)

    def _release(self, fill: _Fill) -> None:
        if (fill.done or fill.error is not None) and fill.readers == 0 and fill.fd >= 0:
            os.close(fill.fd)
            fill.fd = -1

    async def _follow(self, fill: _Fill) -> AsyncIterator[bytes]:
        """Read the growing partial file up to what was written; wait for more or the end."""
        fill.readers += 1
        try:
            offset = 0
            while True:
                changed = fill.changed
                if offset < fill.written:
                    want = min(READ_SIZE, fill.written - offset)
                    block = await to_thread.run_sync(os.pread, fill.fd, want, offset)
                    offset += len(block)
                    yield block
                    continue
                if fill.error is not None:
                    raise _reader_error(fill.error)
                if fill.done:
                    return
                await changed.wait()
        finally:
            fill.readers -= 1
            if fill.readers == 0 and fill.written < fill.size and fill.error is None:
                fill.scope.cancel()  # nobody wants the rest: stop reading the store
            self._release(fill)

    async def drain(self, image_id: str, checksum: str, size: int, open_store: Opener) -> bool:
        """Make sure the image is cached (prefetch); True if it is afterwards."""
        async for _ in self.read(image_id, checksum, size, open_store):
            pass
        return self.lookup(image_id, checksum, size) is not None


def sweep(root: Path) -> list[str]:
    """Remove the partial fills a crash left (call before any process of the node serves)."""
    incomplete = root / "incomplete"
    if not incomplete.is_dir():
        return []
    removed = []
    for path in incomplete.iterdir():
        path.unlink(missing_ok=True)
        removed.append(path.name)
    if removed:
        log.warning("cache sweep: %d partial entr(ies) removed", len(removed))
    return removed


def _create_partial(path: Path) -> int | None:
    """A new partial file, locked (flock) for as long as its descriptor is open; None if
    another live process of this node has one. A partial whose process died (its lock
    went with it) is replaced, so a worker killed mid-fill blocks nothing until restart."""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if not _abandoned(path):
                return None
            continue
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    return None


def _abandoned(path: Path) -> bool:
    """Whether the partial at `path` has no live filler (and was removed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        # unlocked: its filler died, unless it was created a moment ago and is not yet locked
        if time.time() - os.fstat(fd).st_mtime < ABANDONED_AFTER:
            return False
        path.unlink(missing_ok=True)
        log.warning("cache: removed the abandoned partial %s", path.name)
        return True
    finally:
        os.close(fd)


def _reader_error(error: BaseException) -> BaseException:
    if isinstance(error, Exception) and not isinstance(error, OSError):
        return error  # the store's own error (BlobNotFound, StoreUnavailable)
    return StoreUnavailable(f"the image cache fill failed: {error}")


def _write(fd: int, data: bytes, offset: int, md5: Hash) -> None:
    md5.update(data)
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done


async def _batches(chunks: AsyncIterator[bytes], size: int) -> AsyncGenerator[bytes, None]:
    """Join chunks into batches of at least `size` bytes; closes `chunks` when done."""
    parts: list[bytes] = []
    held = 0
    try:
        async for chunk in chunks:
            parts.append(chunk)
            held += len(chunk)
            if held >= size:
                yield b"".join(parts)
                parts, held = [], 0
        if held:
            yield b"".join(parts)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
