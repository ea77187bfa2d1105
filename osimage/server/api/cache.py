"""/v1/cached_images and /v1/queued_images: Glance's v1 cache management API (admin only).

A thin adapter over `osimage.server.cache.CacheManager`; a node without --cache-dir
answers 404, as a Glance without the cache middleware does.
"""

from __future__ import annotations

from collections.abc import Callable

from osimage.server.api.call import Call
from osimage.server.api.http import reply, reply_json
from osimage.server.cache import CacheManager
from osimage.server.errors import MethodNotAllowed, NotFound


def node_cache(call: Call) -> CacheManager:
    """This node's cache manager; 404 on a node without --cache-dir."""
    service = call.service
    if service.cache is None:
        raise NotFound("The image cache is not enabled on this node.")
    return CacheManager(service.cache, service.engine, service.store)


def _not_allowed(allow: str) -> None:
    raise MethodNotAllowed("The method is not allowed for this resource.", headers={"allow": allow})


async def _collection(
    call: Call, key: str, listed: Callable[[], object], cleared: Callable[[], int]
) -> None:
    """GET answers {key: listed()}; DELETE empties the collection ({"num_deleted": n})."""
    if call.method == "GET":
        await reply_json(call.send, 200, {key: listed()})
    elif call.method == "DELETE":
        await reply_json(call.send, 200, {"num_deleted": cleared()})
    else:
        _not_allowed("GET, DELETE")


async def cached_images(call: Call) -> None:
    """GET lists the entries; DELETE removes them all."""
    manager = node_cache(call)
    await _collection(
        call,
        "cached_images",
        lambda: [entry.listed() for entry in manager.cached(call.context)],
        lambda: manager.clear(call.context),
    )


async def cached_image(call: Call, image_id: str) -> None:
    """DELETE removes one image's entry (none is no error)."""
    manager = node_cache(call)
    if call.method != "DELETE":
        _not_allowed("DELETE")
    manager.delete(call.context, image_id)
    await reply(call.send, 200)


async def queued_images(call: Call) -> None:
    """GET lists the ids queued for prefetch; DELETE empties the queue."""
    manager = node_cache(call)
    await _collection(
        call,
        "queued_images",
        lambda: manager.queued(call.context),
        lambda: manager.clear_queue(call.context),
    )


async def queued_image(call: Call, image_id: str) -> None:
    """PUT queues an active image for prefetch on this node; DELETE takes it off the queue."""
    manager = node_cache(call)
    if call.method == "PUT":
        await manager.queue(call.context, image_id)
    elif call.method == "DELETE":
        manager.dequeue(call.context, image_id)
    else:
        _not_allowed("PUT, DELETE")
    await reply(call.send, 200)
