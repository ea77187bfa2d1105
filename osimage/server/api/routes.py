"""Path -> handler for everything below /v1 (§3): 404 for unknown paths, 501 for odd methods."""

from __future__ import annotations

from osimage.server.api import cache, images, members
from osimage.server.api.call import Call
from osimage.server.errors import NotFound, NotImplementedMethod

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})


async def dispatch(call: Call, rest: str) -> None:
    """Route `rest`, the path after the version segment (e.g. ``/images/detail``)."""
    parts = rest.split("/")[1:]  # as Glance's routes: no trailing slash but on /v1/ itself
    match parts:
        case [""] | ["images"]:
            await images.collection(call)
        case ["images", "detail"]:
            await images.detail(call)
        case ["images", image_id] if image_id:
            await images.item(call, image_id)
        case ["images", image_id, "file"] if image_id:
            await images.data(call, image_id)
        case ["images", image_id, "members"] if image_id:
            await members.collection(call, image_id)
        case ["images", image_id, "members", member] if image_id and member:
            await members.item(call, image_id, member)
        case ["shared-images", member] if member:
            await members.shared(call, member)
        case ["cached_images"]:
            await cache.cached_images(call)
        case ["cached_images", image_id] if image_id:
            await cache.cached_image(call, image_id)
        case ["queued_images"]:
            await cache.queued_images(call)
        case ["queued_images", image_id] if image_id:
            await cache.queued_image(call, image_id)
        case _:
            if call.method not in _KNOWN_METHODS:
                raise NotImplementedMethod(f"The method {call.method} is not implemented.")
            raise NotFound("The resource could not be found.")
