"""Moving image data on the client: chunks hashed and written in a helper thread, and
files written beside their target and renamed into place only when complete.

Imported when data flows, not by ``import osimage``; it imports its own heavier
dependencies (threads, hashlib) only when first used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import IO, TYPE_CHECKING, BinaryIO, Final, Self

if TYPE_CHECKING:
    import io
    from concurrent.futures import Future, ThreadPoolExecutor

CHUNK_SIZE: Final = 1024 * 1024
"""Bytes per read of a file that is uploaded or hashed."""


class Relay:
    """Hands each chunk to `action` in one helper thread, in order, while the caller
    gets on with the next (hashlib and file writes release the GIL); at most one chunk
    waits. The first chunk is handled in the caller's thread, so one-chunk data needs
    no thread. Leaving the `with` block waits for the last chunk and raises its error,
    unless the block is already raising one."""

    def __init__(self, action: Callable[[bytes], object], name: str) -> None:
        self._action = action
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[object] | None = None

    def put(self, chunk: bytes) -> None:
        """Queue `chunk` (which must not change afterwards) behind the ones before it."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # only once data flows

            self._pool = ThreadPoolExecutor(1, thread_name_prefix=self._name)
            self._action(chunk)
            return
        self.wait()
        self._pending = self._pool.submit(self._action, chunk)

    def wait(self) -> None:
        """Block until every chunk given so far is handled; raise the action's error."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if exc is None:
            self.wait()


class Digests(Relay):
    """md5 (and sha256) of a stream of chunks, hashed in a helper thread (see `Relay`);
    the digests are complete once the `with` block ends (or after `wait`)."""

    def __init__(self, *, sha256: bool = True) -> None:
        super().__init__(self._hash, "osimage-digest")
        import hashlib  # only once data flows

        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256() if sha256 else None

    def _hash(self, chunk: bytes) -> None:
        self.md5.update(chunk)
        if self.sha256 is not None:
            self.sha256.update(chunk)


class Hasher:
    """md5 and sha256 of the bytes passing through `chunks`, computed in one pass."""

    def __init__(self) -> None:
        self.digests = Digests()
        self.size = 0
        self.source_error: Exception | None = None

    def md5(self) -> str:
        self.digests.wait()
        return self.digests.md5.hexdigest()

    def sha256(self) -> str:
        self.digests.wait()
        assert self.digests.sha256 is not None
        return self.digests.sha256.hexdigest()

    def through(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Yield `chunks`, hashing each in a helper thread while the next is read and
        sent; an error of the source is kept in `source_error`."""
        with self.digests:
            try:
                for chunk in chunks:
                    self.digests.put(chunk)
                    self.size += len(chunk)
                    yield chunk
            except Exception as exc:
                self.source_error = exc  # requests wraps it into a connection error
                raise

    def hashes(self, chunks: Iterable[bytes]) -> tuple[str, str]:
        """The md5 and sha256 of all of `chunks`."""
        for _ in self.through(chunks):
            pass
        return self.md5(), self.sha256()


def read_chunks(handle: BinaryIO | io.RawIOBase, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The contents of the binary file `handle`, `chunk_size` bytes at a time."""
    while True:
        chunk = handle.read(chunk_size)
        if not chunk:
            return
        yield bytes(chunk)


def file_hashes(path: str | os.PathLike[str]) -> tuple[str, str]:
    """The md5 and sha256 hex digests of a file, read once in chunks."""
    with open(path, "rb") as handle:
        return Hasher().hashes(read_chunks(handle))


@contextlib.contextmanager
def replacing(target: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A new file beside `target` to write; renamed to `target` when the block ends
    cleanly, removed when it raises. A failed write never leaves a file under that
    name, and the file gets the usual permissions (the umask's), not a temp file's."""
    import uuid

    path = os.path.abspath(target)
    directory, name = os.path.split(path)
    partial = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def write_path(chunks: Iterable[bytes], target: str | os.PathLike[str]) -> None:
    """Write `chunks` to the file `target` (see `replacing`), writing in a helper thread."""
    with replacing(target) as out, Relay(out.write, "osimage-write") as writer:
        for chunk in chunks:
            writer.put(chunk)


def write_file(chunks: Iterable[bytes], out: IO[bytes]) -> None:
    """Write `chunks` to the binary file object `out`, writing in a helper thread; on an
    error a seekable `out` is truncated back to where it started."""
    start = out.tell() if out.seekable() else None
    try:
        with Relay(out.write, "osimage-write") as writer:
            for chunk in chunks:
                writer.put(chunk)
    except BaseException:
        if start is not None:
            out.seek(start)
            out.truncate()
        raise
