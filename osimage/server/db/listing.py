"""v2 queries on the shared catalogue: the v2 list (visibility, member status, operators,
several sort keys), image tags, and member status. Same SQL on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
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
from sqlalchemy.sql.expression import BindParameter

from osimage.server.db.catalog import (
    _COLUMNS,
    FRESH,
    HIDDEN_STATUSES,
    ImageRow,
    _sort_expression,
    _sort_value,
    lock_image,
    now,
    refresh_record,
    update_live_member,
)
from osimage.server.db.engine import rows
from osimage.server.db.tables import (
    image_members,
    image_properties,
    image_records,
    image_tags,
    images,
)

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


_PROJECT: BindParameter[str] = bindparam("project")


def _member_of(member_status: str) -> ColumnElement[bool]:
    conditions = [
        image_members.c.image_id == images.c.id,
        image_members.c.member == _PROJECT,
        image_members.c.deleted == false(),
    ]
    if member_status != "all":
        conditions.append(image_members.c.status == member_status)
    return and_(images.c.visibility == "shared", exists().where(*conditions))


def _pool(
    is_admin: bool, has_project: bool, visibility: str | None, member_status: str
) -> ColumnElement[bool]:
    """Which images the caller's list starts from (v2 §6.5)."""
    if is_admin:
        if visibility == "all":
            return true()
        if visibility is not None:
            return images.c.visibility == visibility
        if not has_project:
            return images.c.visibility != "community"
        return or_(images.c.visibility != "community", images.c.owner == _PROJECT)
    public = images.c.visibility == "public"
    community = images.c.visibility == "community"
    if not has_project:
        return {
            None: public,
            "public": public,
            "community": community,
            "all": or_(public, community),
        }.get(visibility, false())
    own = images.c.owner == _PROJECT
    shared = _member_of(member_status)
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


def _after(sort: tuple[tuple[str, str], ...]) -> ColumnElement[bool]:
    """Rows strictly after the marker (`mark_<i>` parameters) in the mixed-direction order."""
    alternatives: list[ColumnElement[bool]] = []
    for index, (key, direction) in enumerate(sort):
        equal = [
            _sort_expression(k) == bindparam(f"mark_{j}") for j, (k, _) in enumerate(sort[:index])
        ]
        expression = _sort_expression(key)
        mark: BindParameter[Any] = bindparam(f"mark_{index}")
        beyond = expression < mark if direction == "desc" else expression > mark
        alternatives.append(and_(*equal, beyond))
    return or_(*alternatives)


@lru_cache(maxsize=256)
def _page_statement(
    pool: tuple[bool, bool, str | None, str],
    one_of: tuple[str, ...],
    exact: tuple[str, ...],
    times: tuple[tuple[str, str], ...],
    sizes: tuple[bool, bool],
    tags: int,
    properties: int,
    os_hidden: bool,
    sort: tuple[tuple[str, str], ...],
    marker: bool,
) -> Select[Any]:
    """The page query of one shape, every value a bound parameter (built once per shape:
    building a statement costs more than running it)."""
    conditions: list[ColumnElement[bool]] = [
        _pool(*pool),
        images.c.deleted == false(),
        # one `!=` each, not NOT IN: an IN of literals is expanded at every execution
        *(images.c.status != status for status in HIDDEN_STATUSES),
        images.c.os_hidden == (true() if os_hidden else false()),
    ]
    for name in one_of:
        conditions.append(images.c[name].in_(bindparam(f"one_of_{name}", expanding=True)))
    for name in exact:
        conditions.append(images.c[name] == bindparam(f"exact_{name}"))
    for index, (name, op) in enumerate(times):
        conditions.append(_COMPARE[op](images.c[name], bindparam(f"time_{index}")))
    if sizes[0]:
        conditions.append(images.c.size >= bindparam("size_min"))
    if sizes[1]:
        conditions.append(images.c.size <= bindparam("size_max"))
    for index in range(tags):
        conditions.append(
            exists().where(
                image_tags.c.image_id == images.c.id,
                image_tags.c.value == bindparam(f"tag_{index}"),
            )
        )
    for index in range(properties):
        conditions.append(
            exists().where(
                image_properties.c.image_id == images.c.id,
                image_properties.c.key == bindparam(f"property_key_{index}"),
                image_properties.c.value == bindparam(f"property_value_{index}"),
            )
        )
    if marker:
        conditions.append(_after(sort))
    order = [
        _sort_expression(key).desc() if direction == "desc" else _sort_expression(key).asc()
        for key, direction in sort
    ]
    return select(images).where(*conditions).order_by(*order).limit(bindparam("limit"))


_PROPERTIES_OF = (
    select(image_properties.c.image_id, image_properties.c.key, image_properties.c.value)
    .where(image_properties.c.image_id.in_(bindparam("ids", expanding=True)))
    .order_by(image_properties.c.id)
)
_TAGS_OF = (
    select(image_tags.c.image_id, image_tags.c.value)
    .where(image_tags.c.image_id.in_(bindparam("ids", expanding=True)))
    .order_by(image_tags.c.id)
)


def list_images(conn: Connection, query: V2Query) -> list[ImageRow]:
    """One page of the v2 list, with properties (synchronous: run it through `engine.read`)."""
    if query.limit <= 0:
        return []
    rows = [
        ImageRow(*values[: len(_COLUMNS)])
        for values in conn.execute(_page_statement(*_shape(query)), _page_params(query))
    ]
    if rows:
        by_id = {row.id: row for row in rows}
        for image_id, key, value in conn.execute(_PROPERTIES_OF, {"ids": list(by_id)}):
            by_id[image_id].properties[key] = value
    return rows


def list_records(conn: Connection, query: V2Query) -> list[tuple[str, str]] | None:
    """The same page as `list_images`, as (id, stored v2 record) pairs (JSON text, see
    `osimage.server.db.records`); None if one record is missing or stale, and the caller
    renders the page from `list_images` instead. Synchronous."""
    if query.limit <= 0:
        return []
    found = rows(conn, _records_statement(*_shape(query)), _page_params(query))
    page = [(image_id, record) for image_id, record, fresh in found if fresh and record is not None]
    return page if len(page) == len(found) else None  # a missing or stale record: None


# The most records a page read on the event loop may join (see `is_bounded_page`).
BOUNDED_PAGE = 100
_DEFAULT_SORT = [("created_at", "desc"), ("id", "desc")]


def is_bounded_page(query: V2Query) -> bool:
    """Whether the page's read does work bounded by its limit, as `catalog.is_bounded_page`
    says for v1: no filter, the default order, not the hidden images, at most
    `BOUNDED_PAGE` records, and a pool an index serves in that order with few rows passed
    over (an admin's: every image but community ones, or one visibility; anyone's public
    images), so the range read from the newest image or the marker on stops after `limit`
    matches. Such a read may run on the event loop (`engine.read(point=True)`)."""
    return (
        (query.is_admin or query.visibility == "public")
        and query.limit <= BOUNDED_PAGE
        and query.sort == _DEFAULT_SORT
        and not query.os_hidden
        and not query.one_of
        and not query.exact
        and not query.times
        and query.size_min is None
        and query.size_max is None
        and not query.tags
        and not query.properties
    )


def _shape(query: V2Query) -> tuple[Any, ...]:
    return (
        (query.is_admin, query.project is not None, query.visibility, query.member_status),
        tuple(query.one_of),
        tuple(query.exact),
        tuple((name, op) for name, op, _ in query.times),
        (query.size_min is not None, query.size_max is not None),
        len(query.tags),
        len(query.properties),
        query.os_hidden,
        tuple(query.sort),
        query.marker is not None,
    )


def _page_params(query: V2Query) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": query.limit, "project": query.project}
    for name, values in query.one_of.items():
        params[f"one_of_{name}"] = values
    for name, value in query.exact.items():
        params[f"exact_{name}"] = value
    for index, (_, _, when) in enumerate(query.times):
        params[f"time_{index}"] = when
    params["size_min"], params["size_max"] = query.size_min, query.size_max
    for index, tag in enumerate(query.tags):
        params[f"tag_{index}"] = tag
    for index, (key, value) in enumerate(query.properties.items()):
        params[f"property_key_{index}"], params[f"property_value_{index}"] = key, value
    if query.marker is not None:
        for index, (key, _) in enumerate(query.sort):
            params[f"mark_{index}"] = _sort_value(query.marker, key)
    return params


@lru_cache(maxsize=256)
def _records_statement(*shape: Any) -> Select[Any]:
    """The page query of one shape (`_page_statement`) joined to the images' records:
    ids, records and whether each is fresh, in page order. A flat join, as
    `catalog._records_statement` explains."""
    return (
        _page_statement(*shape)
        .with_only_columns(images.c.id, image_records.c.v2, FRESH)  # NULL v2: `list_records`
        .outerjoin_from(images, image_records, image_records.c.image_id == images.c.id)
    )


# -- tags ----------------------------------------------------------------------------------


def tags_of(conn: Connection, image_ids: list[str]) -> dict[str, list[str]]:
    """Each image's tags, in the order they were added."""
    out: dict[str, list[str]] = {image_id: [] for image_id in image_ids}
    if not image_ids:
        return out
    for image_id, value in conn.execute(_TAGS_OF, {"ids": image_ids}):
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
    await refresh_record(conn, image_id)  # v2 records show tags; creates set them last


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
    await refresh_record(conn, image_id)


# -- member status -------------------------------------------------------------------------


async def set_member_status(conn: AsyncConnection, image_id: str, member: str, status: str) -> bool:
    return await update_live_member(conn, image_id, member, status=status)


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
