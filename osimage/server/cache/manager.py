"""Cache management for both APIs and the CLI: list, delete, queue, prefetch, prune.

Only admins manage the cache (any API answers 403 to others). Every decision that needs
the record (is the image active, does its data still match an entry) reads the shared
database here, so each API node keeps its own disk consistent with the catalogue.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
from anyio.abc import TaskGroup
from sqlalchemy.ext.asyncio import AsyncEngine

from osimage.server.auth import Context
from osimage.server.cache.disk import CachedImage, ImageCache
from osimage.server.db import catalog
from osimage.server.db.catalog import ImageRow
from osimage.server.db.engine import read
from osimage.server.errors import Forbidden, NotFound
from osimage.server.settings import CacheOptions
from osimage.server.stores.base import BlobStore

log = logging.getLogger("osimage.cache")
_MAX_ID_LENGTH = 36


def cacheable(row: ImageRow, store: BlobStore) -> bool:
    """Whether the record's data may be served from (and kept in) a cache right now."""
    return (
        row.status == "active"
        and not row.deleted
        and bool(row.size)
        and bool(row.checksum)
        and row.location is not None
        and not row.location_is_external
        and store.owns(row.location)
    )


class CacheManager:
    """This node's cache seen through the catalogue; each call checks the caller is admin."""

    def __init__(self, cache: ImageCache, engine: AsyncEngine, store: BlobStore) -> None:
        self.cache = cache
        self.engine = engine
        self.store = store

    @staticmethod
    def _check(ctx: Context) -> None:
        if not ctx.is_admin:
            raise Forbidden("Only an admin may manage the image cache.")

    async def _row(self, image_id: str) -> ImageRow | None:
        if len(image_id) > _MAX_ID_LENGTH:
            return None
        return await read(self.engine, partial(catalog.fetch_image, image_id=image_id), point=True)

    def cached(self, ctx: Context) -> list[CachedImage]:
        """The complete entries, least recently used first."""
        self._check(ctx)
        return self.cache.cached()

    def delete(self, ctx: Context, image_id: str) -> int:
        """Drop the image's entries (none is no error, as in Glance); how many went."""
        self._check(ctx)
        return self.cache.delete(image_id.lower())

    def clear(self, ctx: Context) -> int:
        self._check(ctx)
        return self.cache.clear()

    def queued(self, ctx: Context) -> list[str]:
        self._check(ctx)
        return self.cache.queued()

    async def queue(self, ctx: Context, image_id: str) -> None:
        """Queue an active, stored image for prefetch on this node; 404 for anything else."""
        self._check(ctx)
        row = await self._row(image_id)
        if row is None or not cacheable(row, self.store):
            raise NotFound(f"Image {image_id} not found or not an active image with stored data.")
        self.cache.queue(row.id)

    def dequeue(self, ctx: Context, image_id: str) -> int:
        self._check(ctx)
        try:
            return int(self.cache.dequeue(image_id.lower()))
        except ValueError:
            return 0  # not an image id: nothing of that name is queued

    def clear_queue(self, ctx: Context) -> int:
        self._check(ctx)
        return self.cache.clear_queue()

    async def prefetch(self, ctx: Context) -> list[str]:
        """Cache every queued image (one at a time); returns the ids now cached.

        An image that is gone or not active leaves the queue; one whose fill fails (store
        error, no room) stays queued for the next run.
        """
        self._check(ctx)
        done = []
        for image_id in self.cache.queued():
            row = await self._row(image_id)
            if row is None or not cacheable(row, self.store):
                self.cache.dequeue(image_id)
                continue
            assert row.checksum is not None
            assert row.size is not None
            assert row.location is not None
            try:
                cached = await self.cache.drain(
                    row.id, row.checksum, row.size, partial(self.store.get, row.location)
                )
            except Exception as error:
                log.warning("cache prefetch of %s failed: %s", image_id, error)
                continue
            if cached:
                self.cache.dequeue(image_id)
                done.append(image_id)
        return done

    async def prune(self, ctx: Context) -> list[str]:
        """Drop entries the catalogue no longer backs (deleted, deactivated, data replaced),
        then evict least recently used entries down to the size limit; returns the ids."""
        self._check(ctx)
        dropped = []
        for entry in self.cache.cached():
            row = await self._row(entry.image_id)
            if (
                row is None
                or not cacheable(row, self.store)
                or (row.checksum or "").lower() != entry.checksum
                or row.size != entry.size
            ):
                self.cache.delete(entry.image_id)
                dropped.append(entry.image_id)
        before = {entry.image_id for entry in self.cache.cached()}
        self.cache.evict()
        after = {entry.image_id for entry in self.cache.cached()}
        return dropped + sorted(before - after)


async def _every(interval: float, run: Callable[[], Awaitable[object]], what: str) -> None:
    """Run `run` every `interval` seconds until cancelled (at shutdown); a failed run is
    logged and the next one follows."""
    while True:
        await anyio.sleep(interval)
        try:
            await run()
        except Exception:
            log.exception("cache %s run failed", what)


SYSTEM: Context = Context(user_id=None, project_id=None, roles=frozenset({"admin"}), is_admin=True)


def start_cache(
    options: CacheOptions, engine: AsyncEngine, store: BlobStore, tasks: TaskGroup
) -> ImageCache | None:
    """The node's cache per the settings' cache group (None without --cache-dir), with its
    prefetcher and pruner started in `tasks` when their intervals are not 0."""
    if options.directory is None:
        return None
    if store.scheme == "file":
        log.warning(
            "--cache-dir with the file store copies local files to local disk; "
            "a cache pays off only in front of a remote store (swift, s3)"
        )
    cache = ImageCache(options.directory, options.size, tasks)
    manager = CacheManager(cache, engine, store)
    if options.prefetch_interval > 0:
        tasks.start_soon(
            _every, options.prefetch_interval, partial(manager.prefetch, SYSTEM), "prefetch"
        )
    if options.prune_interval > 0:
        tasks.start_soon(_every, options.prune_interval, partial(manager.prune, SYSTEM), "prune")
    return cache
