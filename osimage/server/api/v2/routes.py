"""Path -> handler for everything below /v2 (v2 §3): 404 for unknown paths, 501 for odd
methods, and no root route (`GET /v2/` is a 404)."""

from __future__ import annotations

from osimage.server.api.call import Call
from osimage.server.api.v2 import cache, handlers
from osimage.server.errors import NotFound, NotImplementedMethod
from osimage.server.v2 import ImagesV2

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})


async def dispatch(call: Call, v2: ImagesV2, rest: str) -> None:
    """Route `rest`, the path after the version segment (e.g. ``/images/<id>/file``)."""
    parts = rest.split("/")[1:]
    match parts:
        case ["images"]:
            await handlers.images(call, v2)
        case ["images", image_id] if image_id:
            await handlers.image(call, v2, image_id)
        case ["images", image_id, "file"] if image_id:
            await handlers.file(call, v2, image_id)
        case ["images", image_id, "stage"] if image_id:
            await handlers.stage(call, v2, image_id)
        case ["images", image_id, "import"] if image_id:
            await handlers.import_(call, v2, image_id)
        case ["images", image_id, "actions", name] if image_id:
            await handlers.action(call, v2, image_id, name)
        case ["images", image_id, "tags", tag] if image_id and tag:
            await handlers.tag(call, v2, image_id, tag)
        case ["images", image_id, "members"] if image_id:
            await handlers.members(call, v2, image_id)
        case ["images", image_id, "members", member] if image_id and member:
            await handlers.member(call, v2, image_id, member)
        case ["cache"]:
            await cache.cache(call)
        case ["cache", image_id] if image_id:
            await cache.cache_image(call, image_id)
        case ["schemas", name]:
            await handlers.schema(call, name)
        case ["info", name]:
            await handlers.info(call, name)
        case _:
            if call.method not in _KNOWN_METHODS:
                raise NotImplementedMethod(f"The method {call.method} is not implemented.")
            raise NotFound("The resource could not be found.")
