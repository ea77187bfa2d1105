"""Image members (sharing), which v1 carries as small JSON documents (spec §9.7).

The functions take the same keystoneauth1 Adapter that resources use as ``session``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from osimage.exceptions import InvalidResponse, raise_from_response

if TYPE_CHECKING:
    import requests
    from keystoneauth1.adapter import Adapter

_JSON = {"Content-Type": "application/json", "Accept": "application/json"}


class _Record:
    """Dict-style read access for the dataclasses below, as openstacksdk resources offer."""

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)


@dataclass(frozen=True)
class Member(_Record):
    """One project an image is shared with; `can_share` lets it share the image further."""

    member_id: str
    can_share: bool = False
    image_id: str | None = None

    @property
    def id(self) -> str:
        return self.member_id


@dataclass(frozen=True)
class SharedImage(_Record):
    """An image shared with `member_id`, as ``GET /v1/shared-images/{member}`` lists it."""

    image_id: str
    can_share: bool = False
    member_id: str | None = None

    @property
    def id(self) -> str:
        return self.image_id


def _path(image_id: str, member_id: str | None = None) -> str:
    path = f"/images/{quote(image_id, safe='')}/members"
    return path if member_id is None else f"{path}/{quote(member_id, safe='')}"


def _entries(response: requests.Response, key: str) -> list[dict[str, Any]]:
    raise_from_response(response)
    try:
        body = response.json()
    except ValueError:
        raise InvalidResponse(f"expected a JSON body with {key!r}") from None
    entries = body.get(key) if isinstance(body, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidResponse(f"expected {{{key!r}: [...]}}, got {body!r}")
    return entries


def _text(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise InvalidResponse(f"{key}: expected a string, got {value!r}")
    return value


def _flag(entry: Mapping[str, Any]) -> bool:
    value = entry.get("can_share", False)
    if not isinstance(value, bool):
        raise InvalidResponse(f"can_share: expected a boolean, got {value!r}")
    return value


def list_members(session: Adapter, image_id: str) -> list[Member]:
    """The members of an image (a non-owner sees only their own entry)."""
    response = session.get(_path(image_id), headers=_JSON, raise_exc=False)
    return [
        Member(_text(e, "member_id"), _flag(e), image_id) for e in _entries(response, "members")
    ]


def add_member(session: Adapter, image_id: str, member_id: str, can_share: bool = False) -> Member:
    """Share an image with `member_id`, or change an existing member's `can_share`."""
    body = json.dumps({"member": {"can_share": can_share}})
    response = session.put(_path(image_id, member_id), data=body, headers=_JSON, raise_exc=False)
    raise_from_response(response)
    return Member(member_id, can_share, image_id)


def remove_member(session: Adapter, image_id: str, member_id: str) -> None:
    """Stop sharing an image with `member_id`; raises NotFoundException if it was not a member."""
    response = session.delete(_path(image_id, member_id), headers=_JSON, raise_exc=False)
    raise_from_response(response)


def replace_members(
    session: Adapter, image_id: str, members: Iterable[Member | str | Mapping[str, Any]]
) -> None:
    """Make `members` exactly the image's member set.

    Items are member ids, `Member`s or ``{"member_id": ..., "can_share": ...}`` mappings;
    a plain id keeps an existing member's `can_share` (new ones get false).
    """
    memberships: list[dict[str, Any]] = []
    for item in members:
        if isinstance(item, str):
            memberships.append({"member_id": item})
        elif isinstance(item, Member):
            memberships.append({"member_id": item.member_id, "can_share": item.can_share})
        else:
            entry: dict[str, Any] = {"member_id": str(item["member_id"])}
            if "can_share" in item:
                entry["can_share"] = bool(item["can_share"])
            memberships.append(entry)
    body = json.dumps({"memberships": memberships})
    response = session.put(_path(image_id), data=body, headers=_JSON, raise_exc=False)
    raise_from_response(response)


def shared_images(session: Adapter, member_id: str) -> list[SharedImage]:
    """The images shared with `member_id` (an unknown member has none)."""
    response = session.get(
        f"/shared-images/{quote(member_id, safe='')}", headers=_JSON, raise_exc=False
    )
    return [
        SharedImage(_text(e, "image_id"), _flag(e), member_id)
        for e in _entries(response, "shared_images")
    ]
