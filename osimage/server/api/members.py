"""Handlers for image memberships (§9.7) and /v1/shared-images/{member}."""

from __future__ import annotations

from typing import Any

from osimage.server.api.call import Call
from osimage.server.api.http import reply, reply_json
from osimage.server.errors import BadRequest, MethodNotAllowed, NotFound


async def collection(call: Call, image_id: str) -> None:
    """/v1/images/{id}/members."""
    if call.method == "GET":
        found = await call.sharing.members(call.context, image_id)
        members = [{"member_id": m.member, "can_share": m.can_share} for m in found]
        await reply_json(call.send, 200, {"members": members})
    elif call.method == "PUT":
        entries = _memberships(await call.json())
        await call.sharing.replace_members(call.context, image_id, entries)
        await reply(call.send, 204)
    else:
        raise MethodNotAllowed(headers={"allow": "GET, PUT"})


async def item(call: Call, image_id: str, member: str) -> None:
    """/v1/images/{id}/members/{member}."""
    if call.method == "PUT":
        await call.sharing.add_member(call.context, image_id, member, _can_share(await call.json()))
        await reply(call.send, 204)
    elif call.method == "DELETE":
        await call.sharing.remove_member(call.context, image_id, member)
        await reply(call.send, 204)
    elif call.method == "GET":
        # An osimage extension: queens routed this read but answered 405, so
        # python-glanceclient's image_members.get / list(image=, member=) never worked.
        found = await call.sharing.members(call.context, image_id)
        for entry in found:
            if entry.member == member:
                body = {"member_id": entry.member, "can_share": entry.can_share}
                await reply_json(call.send, 200, {"member": body})
                return
        raise NotFound("Membership could not be found.")
    else:
        raise MethodNotAllowed(headers={"allow": "GET, PUT, DELETE"})


async def shared(call: Call, member: str) -> None:
    """/v1/shared-images/{member}: any method lists the member's memberships."""
    found = await call.sharing.shared_images(call.context, member)
    entries = [{"image_id": m.image_id, "can_share": m.can_share} for m in found]
    await reply_json(call.send, 200, {"shared_images": entries}, head=call.method == "HEAD")


def _can_share(body: Any) -> bool | None:
    """`{"member": {"can_share": v}}` -> truthiness of v; any other shape -> not given."""
    if body is None:
        return None
    if not isinstance(body, dict | list):
        raise BadRequest("The request body must be a JSON object.")
    if isinstance(body, dict):
        inner = body.get("member")
        if isinstance(inner, dict) and "can_share" in inner:
            return bool(inner["can_share"])
    return None


def _memberships(body: Any) -> list[tuple[str, bool | None]]:
    if not isinstance(body, dict) or not isinstance(body.get("memberships"), list):
        raise BadRequest(
            'Invalid membership association: expected {"memberships": [{"member_id": ...}]}'
        )
    entries: list[tuple[str, bool | None]] = []
    for entry in body["memberships"]:
        if not isinstance(entry, dict):
            raise BadRequest(f"Invalid membership association: {entry!r}")
        member = entry.get("member_id")
        if not isinstance(member, str) or not member.isprintable() or not 0 < len(member) <= 255:
            raise BadRequest(f"Invalid membership association: {entry!r}")
        entries.append((member, bool(entry["can_share"]) if "can_share" in entry else None))
    return entries
