"""/v2/cache and /v2/cache/{image_id}: Glance's v2 cache API (v2.14, v2.16), admin only.

A thin adapter over `osimage.server.cache.CacheManager`, as `api/cache.py` is for v1; a
node without --cache-dir answers 404 (Glance without `image_cache_dir` has no such route).
The policy rules are Glance's: cache_list, cache_delete, cache_image.
"""

from __future__ import annotations

from osimage.server.api.cache import node_cache
from osimage.server.api.call import Call
from osimage.server.api.http import reply, reply_json
from osimage.server.api.v2.handlers import no_body, not_allowed
from osimage.server.cache import CacheManager
from osimage.server.errors import BadRequest

CLEAR_TARGET = "x-image-cache-clear-target"
_TARGETS = ("", "cache", "queue")


def _manager(call: Call, rule: str) -> CacheManager:
    manager = node_cache(call)
    call.service.policy.enforce(call.context, rule)
    return manager


async def cache(call: Call) -> None:
    """GET: the cached and the queued images; DELETE: clear the cache, the queue or both
    (the `x-image-cache-clear-target` header: ``cache``, ``queue``, or none for both)."""
    if call.method == "GET":
        await no_body(call)
        manager = _manager(call, "cache_list")
        entries = manager.cached(call.context)
        document = {
            "cached_images": [entry.listed() for entry in entries],
            "queued_images": manager.queued(call.context),
        }
        await reply_json(call.send, 200, document)
    elif call.method == "DELETE":
        await no_body(call)
        target = (call.header(CLEAR_TARGET) or "").strip().lower()
        if target not in _TARGETS:
            raise BadRequest(
                f"If provided, {CLEAR_TARGET} must be one of 'cache' or 'queue', "
                f"not {target[:64]!r}."
            )
        manager = _manager(call, "cache_delete")
        if target in ("", "cache"):
            manager.clear(call.context)
        if target in ("", "queue"):
            manager.clear_queue(call.context)
        await reply(call.send, 204)
    else:
        not_allowed("GET, DELETE")


async def cache_image(call: Call, image_id: str) -> None:
    """PUT: queue an active image for prefetch on this node (202, as v2.16); DELETE: drop
    its entry and take it off the queue (204; none is no error)."""
    if call.method == "PUT":
        await no_body(call)
        await _manager(call, "cache_image").queue(call.context, image_id)
        await reply(call.send, 202)
    elif call.method == "DELETE":
        await no_body(call)
        manager = _manager(call, "cache_delete")
        manager.delete(call.context, image_id)
        manager.dequeue(call.context, image_id)
        await reply(call.send, 204)
    else:
        not_allowed("PUT, DELETE")
