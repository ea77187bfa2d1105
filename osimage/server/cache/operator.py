"""What `osimage cache ...` runs on an API node: one management action, outside the server.

It opens the node's cache directory, database and store as `osimage serve` would with
the same settings, does one thing and closes them. It works beside a running server:
the disk is the shared state (entries appear and go by rename and unlink).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import anyio

from osimage.server.cache.disk import ImageCache
from osimage.server.cache.manager import SYSTEM, CacheManager
from osimage.server.db.engine import close_engine, open_engine
from osimage.server.settings import Settings
from osimage.server.stores.registry import open_store

ACTIONS = (
    "list",
    "queued",
    "queue",
    "delete",
    "delete-all",
    "dequeue",
    "dequeue-all",
    "prefetch",
    "prune",
)


def run(settings: Settings, action: str, image_id: str | None = None) -> Any:
    """Do `action` (one of ACTIONS) and return what it found, for printing."""
    return anyio.run(_run, settings, action, image_id)


async def _run(settings: Settings, action: str, image_id: str | None) -> Any:
    options = settings.cache
    if options.directory is None:
        raise ValueError("no cache: give --cache-dir (OSIMAGE_CACHE_DIR)")
    engine = open_engine(settings.database)
    store = open_store(settings.store, settings.store_options)
    try:
        async with anyio.create_task_group() as tasks:
            cache = ImageCache(options.directory, options.size, tasks)
            manager = CacheManager(cache, engine, store)
            return await _act(manager, action, image_id or "")
    finally:
        await store.aclose()
        await close_engine(engine)


async def _act(manager: CacheManager, action: str, image_id: str) -> Any:
    if action == "list":
        return [asdict(entry) for entry in manager.cached(SYSTEM)]
    if action == "queued":
        return manager.queued(SYSTEM)
    if action == "queue":
        await manager.queue(SYSTEM, image_id)
        return [image_id]
    if action == "delete":
        return manager.delete(SYSTEM, image_id)
    if action == "delete-all":
        return manager.clear(SYSTEM)
    if action == "dequeue":
        return manager.dequeue(SYSTEM, image_id)
    if action == "dequeue-all":
        return manager.clear_queue(SYSTEM)
    if action == "prefetch":
        return await manager.prefetch(SYSTEM)
    if action == "prune":
        return await manager.prune(SYSTEM)
    raise ValueError(f"unknown cache action {action!r}; expected one of {', '.join(ACTIONS)}")
