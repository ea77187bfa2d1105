"""v2 queries on the shared catalogue: the v2 list (visibility, member status, operators,
several sort keys), image tags, and member status. Same SQL on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    delete,
    exists,
    false,
    insert,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from osimage.server.db.catalog import (
    _COLUMNS,
    HIDDEN_STATUSES,
    ImageRow,
    _sort_expression,
    _sort_value,
    lock_image,
    now,
)
from osimage.server.db.tables import image_members, image_properties, image_tags, images

_COMPARE = {
    "eq": lambda c, v: c == v,
    "neq": lambda c, v: c != v,
    "gt": lambda c, v: c > v,
    "gte": lambda c, v: c >= v,
    "lt": lambda c, v: c < v,
    "lte": lambda c, v: c <= v,
}


@dataclass
class V2Query:
    """A validated v2 list request (see `osimage.server.v2query`)."""

    project: str | None
    is_admin: bool
    visibility: str | None = None  # None: the default pool
    member_status: str = "accepted"  # or "pending", "rejected", "all"
    one_of: dict[str, list[str]] = field(default_factory=dict)  # column -> allowed values
    exact: dict[str, Any] = field(default_factory=dict)  # column -> value
    times: list[tuple[str, str, datetime]] = field(default_factory=list)  # column, op, when
    size_min: int | None = None
    size_max: int | None = None
    tags: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    os_hidden: bool = False
    sort: list[tuple[str, str]] = field(default_factory=lambda: [("created_at", "desc")])
    limit: int = 25
    marker: ImageRow | None = None


def _member_of(project: str, member_status: str) -> ColumnElement[bool]:
    conditions = [
        image_members.c.image_id == images.c.id,
        image_members.c.member == project,
        image_members.c.deleted == false(),
    ]
    if member_status != "all":
        conditions.append(image_members.c.status == member_status)
    return and_(images.c.visibility == "shared", exists().where(*conditions))


def _pool(query: V2Query) -> ColumnElement[bool]:
    """Which images the caller's list starts from (v2 §6.5)."""
    visibility, project = query.visibility, query.project
    if query.is_admin:
        if visibility == "all":
            return true()
        if visibility is not None:
            return images.c.visibility == visibility
        if project is None:
            return images.c.visibility != "community"
        return or_(images.c.visibility != "community", images.c.owner == project)
    public = images.c.visibility == "public"
    community = images.c.visibility == "community"
    if project is None:
        return {
            None: public,
            "public": public,
            "community": community,
            "all": or_(public, community),
        }.get(visibility, false())
    own = images.c.owner == project
    shared = _member_of(project, query.member_status)
    if visibility is None:
        return or_(public, own, shared)
    if visibility == "all":
        return or_(public, community, own, shared)
    if visibility == "public":
        return public
    if visibility == "community":
        return community
    if visibility == "private":
        return and_(images.c.visibility == "private", own)
    return and_(images.c.visibility == "shared", or_(own, shared))


def _after(query: V2Query) -> ColumnElement[bool]:
    """Rows strictly after the marker in the (mixed-direction) sort order."""
    assert query.marker is not None
    alternatives: list[ColumnElement[bool]] = []
    for index, (key, direction) in enumerate(query.sort):
        equal = [_sort_expression(k) == _sort_value(query.marker, k) for k, _ in query.sort[:index]]
        value = _sort_value(query.marker, key)
        expression = _sort_expression(key)
        beyond = expression < value if direction == "desc" else expression > value
        alternatives.append(and_(*equal, beyond))
    return or_(*alternatives)


def list_images(conn: Connection, query: V2Query) -> list[ImageRow]:
    """One page of the v2 list, with properties (synchronous: run it through `engine.read`)."""
    if query.limit <= 0:
        return []
    conditions: list[ColumnElement[bool]] = [
        _pool(query),
        images.c.deleted == false(),
        images.c.status.not_in(HIDDEN_STATUSES),
        images.c.os_hidden == (true() if query.os_hidden else false()),
    ]
    for name, values in query.one_of.items():
        conditions.append(images.c[name].in_(values))
    for name, value in query.exact.items():
        conditions.append(images.c[name] == value)
    for name, op, when in query.times:
        conditions.append(_COMPARE[op](images.c[name], when))
    if query.size_min is not None:
        conditions.append(images.c.size >= query.size_min)
    if query.size_max is not None:
        conditions.append(images.c.size <= query.size_max)
    for tag in query.tags:
        conditions.append(
            exists().where(image_tags.c.image_id == images.c.id, image_tags.c.value == tag)
        )
    for key, value in query.properties.items():
        conditions.append(
            exists().where(
                image_properties.c.image_id == images.c.id,
                image_properties.c.key == key,
                image_properties.c.value == value,
            )
        )
    if query.marker is not None:
        conditions.append(_after(query))
    order = [
        _sort_expression(key).desc() if direction == "desc" else _sort_expression(key).asc()
        for key, direction in query.sort
    ]
    page = conn.execute(select(images).where(*conditions).order_by(*order).limit(query.limit)).all()
    rows = [ImageRow(*values[: len(_COLUMNS)]) for values in page]
    if rows:
        by_id = {row.id: row for row in rows}
        found = conn.execute(
            select(image_properties.c.image_id, image_properties.c.key, image_properties.c.value)
            .where(image_properties.c.image_id.in_(list(by_id)))
            .order_by(image_properties.c.id)
        )
        for image_id, key, value in found:
            by_id[image_id].properties[key] = value
    return rows


# -- tags ----------------------------------------------------------------------------------


def tags_of(conn: Connection, image_ids: list[str]) -> dict[str, list[str]]:
    """Each image's tags, in the order they were added."""
    out: dict[str, list[str]] = {image_id: [] for image_id in image_ids}
    if not image_ids:
        return out
    rows = conn.execute(
        select(image_tags.c.image_id, image_tags.c.value)
        .where(image_tags.c.image_id.in_(image_ids))
        .order_by(image_tags.c.id)
    )
    for image_id, value in rows:
        out[image_id].append(value)
    return out


async def set_tags(conn: AsyncConnection, image_id: str, tags: list[str]) -> None:
    """Make the image's tags exactly `tags` (kept rows keep their order)."""
    await lock_image(conn, image_id)
    current = {
        value
        for (value,) in await conn.execute(
            select(image_tags.c.value).where(image_tags.c.image_id == image_id)
        )
    }
    gone = current - set(tags)
    if gone:
        await conn.execute(
            delete(image_tags).where(
                image_tags.c.image_id == image_id, image_tags.c.value.in_(list(gone))
            )
        )
    new = [{"image_id": image_id, "value": tag} for tag in tags if tag not in current]
    if new:
        await conn.execute(insert(image_tags), new)


async def add_tag(conn: AsyncConnection, image_id: str, tag: str) -> int:
    """Add one tag (no-op if present); returns how many tags the image then has."""
    await lock_image(conn, image_id)
    present = await conn.execute(
        select(image_tags.c.value).where(image_tags.c.image_id == image_id)
    )
    values = [value for (value,) in present]
    if tag not in values:
        await conn.execute(insert(image_tags).values(image_id=image_id, value=tag))
        values.append(tag)
    return len(values)


async def remove_tag(conn: AsyncConnection, image_id: str, tag: str) -> bool:
    await lock_image(conn, image_id)
    result = await conn.execute(
        delete(image_tags).where(image_tags.c.image_id == image_id, image_tags.c.value == tag)
    )
    return bool(result.rowcount == 1)


async def touch(conn: AsyncConnection, image_id: str) -> None:
    """Refresh `updated_at` (tag changes rewrite the image row, v2 §21)."""
    await conn.execute(update(images).where(images.c.id == image_id).values(updated_at=now()))


# -- member status -------------------------------------------------------------------------


async def set_member_status(conn: AsyncConnection, image_id: str, member: str, status: str) -> bool:
    result = await conn.execute(
        update(image_members)
        .where(
            image_members.c.image_id == image_id,
            image_members.c.member == member,
            image_members.c.deleted == false(),
        )
        .values(status=status, updated_at=now())
    )
    return bool(result.rowcount == 1)


async def restart_membership(conn: AsyncConnection, image_id: str, member: str) -> None:
    """A removed member added again starts over as pending."""
    await conn.execute(
        update(image_members)
        .where(
            image_members.c.image_id == image_id,
            image_members.c.member == member,
            not_(image_members.c.status == "pending"),
        )
        .values(status="pending")
    )
