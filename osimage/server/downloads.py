"""Honest downloads: an image's bytes exactly as recorded, for both APIs.

The bytes come from an external location, or from the store through this node's cache;
they are counted, announced (`image.send`), and never more or fewer than the record's
size: a mismatch found before the first byte is a 503, one found after it aborts the
connection (`DownloadBroken`). Knows no HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from functools import partial

from osimage.server import sources
from osimage.server.auth import Context
from osimage.server.cache import ImageCache, cacheable
from osimage.server.db.catalog import ImageRow
from osimage.server.errors import NotFound, ServiceUnavailable
from osimage.server.ingest import source_error
from osimage.server.operations import notifications as events
from osimage.server.operations.metrics import Metrics
from osimage.server.operations.notifications import Notifier
from osimage.server.stores.base import BlobNotFound, BlobStore, StoreError, StoreUnavailable

log = logging.getLogger("osimage.service")

SEND_CHUNK = 1024 * 1024
"""The largest chunk asked of the store for a download: the HTTP layer sends each chunk
as one message, and fewer, bigger ones cost the server about a third less CPU per GiB
than the store's default 64 KiB (docs/benchmarks.md). Stores may keep to smaller ones."""


class DownloadBroken(Exception):
    """Image data stopped matching its recorded size after the headers went out (logged
    once, here): the only honest answer left is to abort the connection."""


async def _exactly(chunks: AsyncIterator[bytes], row: ImageRow, where: str) -> AsyncIterator[bytes]:
    """`chunks` while they add up to `row.size`; an error before the first chunk passes
    through, any failure after it becomes `DownloadBroken`."""
    expected, sent = row.size or 0, 0
    try:
        async for chunk in chunks:
            if sent + len(chunk) > expected:
                raise DownloadBroken(f"{where} sent more than the recorded {expected} bytes")
            sent += len(chunk)
            yield chunk
        if sent != expected:
            raise DownloadBroken(f"{where} ended after {sent} of the recorded {expected} bytes")
    except (StoreError, sources.SourceError, DownloadBroken) as error:
        if not sent and isinstance(error, DownloadBroken):  # nothing sent: answer instead
            log.warning("download of image %s refused: %s", row.id, error)
            raise ServiceUnavailable(
                f"The data of image {row.id} does not match its recorded size: {error}."
            ) from None
        if not sent:
            raise
        reason = error.message if isinstance(error, sources.SourceError) else str(error)
        log.warning("download of image %s aborted: %s", row.id, reason)
        raise DownloadBroken(reason) from None


def _mismatch(row: ImageRow, held: int, where: str) -> ServiceUnavailable:
    log.warning(
        "download of image %s refused: %s holds %d bytes, the record says %d",
        row.id, where, held, row.size,
    )  # fmt: skip
    return ServiceUnavailable(
        f"The data of image {row.id} does not match its recorded size "
        f"({held} bytes held, {row.size} recorded)."
    )


async def _window(chunks: AsyncIterator[bytes], first: int, last: int) -> AsyncIterator[bytes]:
    """The bytes first..last (inclusive) of a stream, still streamed."""
    offset = 0
    async for chunk in chunks:
        end = offset + len(chunk)
        if end > first and offset <= last:
            yield chunk[max(first - offset, 0) : last - offset + 1]
        offset = end
        if offset > last:
            return


class Downloads:
    """Image data out of its location or the store; one per service process."""

    def __init__(
        self,
        store: BlobStore,
        *,
        source_policy: sources.SourcePolicy,
        notifier: Notifier,
        metrics: Metrics | None = None,
        cache: ImageCache | None = None,
    ) -> None:
        self.store = store
        self.source_policy = source_policy
        self.notifier = notifier
        self.metrics = metrics
        self.cache = cache  # this node's image cache (issue 16), if enabled

    def stream(
        self, ctx: Context, row: ImageRow, span: tuple[int, int] | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes of `row` (which the caller may download) as `ctx` receives them, or
        those of the inclusive range `span`: errors surface on the first chunk, before any
        is sent. image.send follows: info when every byte asked for was sent, error when
        the stream was cut short."""
        if span is None:
            return self._sent(ctx, row, self.chunks(row), row.size or 0)
        first, last = span
        return self._sent(ctx, row, _window(self.chunks(row), first, last), last - first + 1)

    async def _sent(
        self, ctx: Context, row: ImageRow, chunks: AsyncIterator[bytes], expected: int
    ) -> AsyncIterator[bytes]:
        """Pass `chunks` through, counting them; then image.send (error if cut short)."""
        sent = 0
        try:
            async for chunk in chunks:
                sent += len(chunk)
                if self.metrics is not None:
                    self.metrics.downloaded.inc(len(chunk))
                yield chunk
        finally:
            payload = events.send_payload(row, ctx, sent)
            if sent == expected:
                self.notifier.info(ctx, "image.send", payload)
            else:
                self.notifier.error(ctx, "image.send", payload)

    async def chunks(self, row: ImageRow) -> AsyncIterator[bytes]:
        """The image's bytes, exactly `row.size` of them: a source or store that holds
        another size is refused before the first chunk (503), and one that breaks off or
        runs long after it raises `DownloadBroken` (the connection must be aborted)."""
        if not row.size or row.location is None:
            return
        if row.location_is_external:
            try:
                async with sources.open_source(row.location, self.source_policy) as source:
                    if source.size is not None and source.size != row.size:
                        raise _mismatch(row, source.size, "its location")
                    async for chunk in _exactly(source.chunks(), row, "its location"):
                        yield chunk
            except sources.SourceError as error:
                raise source_error(error) from None
            return
        try:
            if self.cache is None or not cacheable(row, self.store):
                # the cache checks size and md5 itself, and spares the store a request
                held = await self.store.size(row.location)
                if held != row.size:
                    raise _mismatch(row, held, "the store")
            async for chunk in _exactly(self._stored(row, row.location), row, "the store"):
                yield chunk
        except BlobNotFound:
            raise NotFound(f"Data of image {row.id} is missing from the store.") from None
        except StoreUnavailable as error:
            if self.metrics is not None:
                self.metrics.store_error("get")
            raise ServiceUnavailable(str(error)) from None

    def _stored(self, row: ImageRow, location: str) -> AsyncIterator[bytes]:
        """The stored bytes, through this node's cache when it has one and `row` (just
        read from the database) is active with a checksum."""
        if self.cache is None or not cacheable(row, self.store):
            return self.store.get(location, chunk_size=SEND_CHUNK)
        assert row.checksum is not None
        assert row.size is not None
        return self.cache.read(row.id, row.checksum, row.size, partial(self.store.get, location))
