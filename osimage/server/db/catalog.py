"""Queries on the image tables, the same SQL on SQLite and PostgreSQL.

Every status change is a conditional UPDATE (see `transition`); read-then-write changes
of an image's properties or members first lock its row (see `lock_image`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import Enum
from functools import lru_cache
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    insert,
    or_,
    select,
    true,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import BindParameter

from osimage.server.db.engine import rows
from osimage.server.db.tables import (
    image_members,
    image_properties,
    image_records,
    images,
    upload_leases,
)

HIDDEN_STATUSES = ("killed", "deleted", "pending_delete")
SORT_KEYS = (
    "name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at",
)  # fmt: skip


def now() -> datetime:
    """The current time as naive UTC, the form stored in every timestamp column."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass
class ImageRow:
    """One image record with its live properties."""

    id: str
    name: str | None
    status: str
    size: int | None
    virtual_size: int | None
    checksum: str | None
    sha256: str | None
    disk_format: str | None
    container_format: str | None
    min_disk: int
    min_ram: int
    owner: str | None
    is_public: bool
    protected: bool
    deleted: bool
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    location: str | None
    location_is_external: bool
    visibility: str = "shared"
    os_hidden: bool = False
    os_hash_algo: str | None = None
    os_hash_value: str | None = None
    properties: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class MemberRow:
    image_id: str
    member: str
    can_share: bool
    deleted: bool
    status: str = "pending"  # v2 member status
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Scope(Enum):
    """Which images a list may return before filters (§10.2)."""

    ALL = "all"
    NON_PUBLIC = "non_public"
    PUBLIC = "public"
    PROJECT = "project"  # public + owned by the project + shared with it


@dataclass
class ListQuery:
    scope: Scope
    project: str | None = None
    exact: dict[str, Any] = field(default_factory=dict)
    size_min: int | None = None
    size_max: int | None = None
    properties: dict[str, str] = field(default_factory=dict)
    changes_since: datetime | None = None
    sort_key: str = "created_at"
    sort_dir: str = "desc"
    limit: int = 25
    marker: ImageRow | None = None
    with_properties: bool = True


async def refresh_record(conn: AsyncConnection, image_id: str) -> None:
    """Rewrite the image's rendered record (see `osimage.server.db.records`)."""
    from osimage.server.db import records  # records renders with the API, which imports this

    await records.refresh(conn, image_id)


# The image and its properties in one statement: one row per property (or one with NULLs).
_IMAGE_WITH_PROPERTIES = (
    select(images, image_properties.c.key.label("_key"), image_properties.c.value.label("_value"))
    .outerjoin(image_properties, image_properties.c.image_id == images.c.id)
    .where(images.c.id == bindparam("image_id"))
    .order_by(image_properties.c.id)
)
_COLUMNS = tuple(column.name for column in images.c)
# Rows are built positionally (ImageRow(*row)): its fields follow the table's columns.
if tuple(f.name for f in fields(ImageRow) if f.name != "properties") != _COLUMNS:
    raise RuntimeError("ImageRow's fields must follow the images table's columns")


def fetch_image(conn: Connection, image_id: str) -> ImageRow | None:
    """The image with its properties, or None (synchronous: see `engine.read`)."""
    result = rows(conn, _IMAGE_WITH_PROPERTIES, {"image_id": image_id})
    return _image_of(result) if result else None


def _image_of(result: Sequence[Any]) -> ImageRow:
    """The image of a statement's rows that join its columns to its properties (key and
    value right after them, NULL when it has none), one row per property."""
    width = len(_COLUMNS)
    row = ImageRow(*result[0][:width])
    if result[0][width] is not None:
        row.properties = {values[width]: values[width + 1] for values in result}
    return row


# Whether an image's records carry its stamp (NULL: no records). Read as the database
# gives it (SQLite 0/1, PostgreSQL a bool): only its truth is used, and a Boolean type
# would convert it row by row.
FRESH = type_coerce(image_records.c.updated_at == images.c.updated_at, Integer)


# The image and its stored HEAD headers, without its properties (see `fetch_head`).
_IMAGE_WITH_HEAD = (
    select(images, image_records.c.v1_head, FRESH)
    .outerjoin(image_records, image_records.c.image_id == images.c.id)
    .where(images.c.id == bindparam("image_id"))
)
_PROPERTIES_OF = (
    select(image_properties.c.key, image_properties.c.value)
    .where(image_properties.c.image_id == bindparam("image_id"))
    .order_by(image_properties.c.id)
)


def fetch_head(
    conn: Connection, image_id: str, *, properties: bool
) -> tuple[ImageRow, str | None] | None:
    """The image and its stored v1 HEAD headers if fresh, else None (synchronous).

    The row has its properties when asked for them, and whenever the headers are not
    stored (the caller renders them); else its `properties` are left empty: a HEAD
    answered from stored headers reads one row, not one per property sorted (issue 14).
    """
    found = rows(conn, _IMAGE_WITH_HEAD, {"image_id": image_id})
    if not found:
        return None
    first = found[0]
    width = len(_COLUMNS)
    row = ImageRow(*first[:width])
    stored = first[width] if first[width + 1] else None
    if properties or stored is None:
        row.properties = dict(rows(conn, _PROPERTIES_OF, {"image_id": image_id}))
    return row, stored


# The image, its properties and its v2 record in one statement (see `fetch_record`).
_IMAGE_WITH_RECORD = (
    select(images, image_properties.c.key, image_properties.c.value, image_records.c.v2, FRESH)
    .outerjoin(image_properties, image_properties.c.image_id == images.c.id)
    .outerjoin(image_records, image_records.c.image_id == images.c.id)
    .where(images.c.id == bindparam("image_id"))
    .order_by(image_properties.c.id)
)


def fetch_record(conn: Connection, image_id: str) -> tuple[ImageRow, str | None] | None:
    """`fetch_image`, and the image's stored v2 record if fresh, else None (synchronous)."""
    result = rows(conn, _IMAGE_WITH_RECORD, {"image_id": image_id})
    if not result:
        return None
    record, fresh = result[0][-2:]
    return _image_of(result), record if fresh else None


async def get_image(conn: AsyncConnection, image_id: str) -> ImageRow | None:
    return await conn.run_sync(fetch_image, image_id)


async def image_exists(conn: AsyncConnection, image_id: str) -> bool:
    result = await conn.execute(select(images.c.id).where(images.c.id == image_id))
    return result.first() is not None


async def insert_image(
    conn: AsyncConnection, values: Mapping[str, Any], properties: Mapping[str, str | None]
) -> None:
    await conn.execute(insert(images).values(**values))
    if properties:
        await conn.execute(
            insert(image_properties),
            [{"image_id": values["id"], "key": k, "value": v} for k, v in properties.items()],
        )
    await refresh_record(conn, values["id"])


async def update_image(
    conn: AsyncConnection,
    image_id: str,
    values: Mapping[str, Any],
    *,
    status: str | None = None,
    deleted: bool | None = False,
    unchanged_since: datetime | None = None,
) -> bool:
    """Set `values` if the image is (still) in `status` / deletion state (and, with
    `unchanged_since`, was last updated before it); False if not."""
    statement = update(images).where(images.c.id == image_id)
    if status is not None:
        statement = statement.where(images.c.status == status)
    if deleted is not None:
        statement = statement.where(images.c.deleted == deleted)
    if unchanged_since is not None:
        statement = statement.where(images.c.updated_at < unchanged_since)
    result = await conn.execute(statement.values(**values, updated_at=now()))
    if result.rowcount != 1:
        return False
    await refresh_record(conn, image_id)
    return True


async def transition(
    conn: AsyncConnection, image_id: str, source: str, target: str, **values: Any
) -> bool:
    """Move an image from status `source` to `target`; only one concurrent caller wins."""
    return await update_image(conn, image_id, {"status": target, **values}, status=source)


async def lock_image(conn: AsyncConnection, image_id: str) -> None:
    """Hold the image's row until this transaction ends (PostgreSQL: SELECT ... FOR UPDATE).

    Writers of an image's properties or members take turns here, so under READ COMMITTED
    each sees what the one before committed: two merges keep both keys, two adds of one
    member make one row. SQLite needs no lock: its writers already run one at a time.
    """
    await conn.execute(select(images.c.id).where(images.c.id == image_id).with_for_update())


async def set_properties(
    conn: AsyncConnection,
    image_id: str,
    properties: Mapping[str, str | None],
    *,
    purge: bool,
) -> None:
    """Create or overwrite `properties`; with `purge`, remove every other key."""
    await lock_image(conn, image_id)
    if purge:
        statement = delete(image_properties).where(image_properties.c.image_id == image_id)
        if properties:
            statement = statement.where(image_properties.c.key.not_in(list(properties)))
        await conn.execute(statement)
    if not properties:
        await refresh_record(conn, image_id)
        return
    existing = await conn.execute(
        select(image_properties.c.key).where(
            image_properties.c.image_id == image_id,
            image_properties.c.key.in_(list(properties)),
        )
    )
    present = {key for (key,) in existing}
    for key in present:
        await conn.execute(
            update(image_properties)
            .where(image_properties.c.image_id == image_id, image_properties.c.key == key)
            .values(value=properties[key])
        )
    new = [
        {"image_id": image_id, "key": key, "value": value}
        for key, value in properties.items()
        if key not in present
    ]
    if new:
        await conn.execute(insert(image_properties), new)
    await refresh_record(conn, image_id)


async def soft_delete(conn: AsyncConnection, image_id: str, *, from_status: str) -> bool:
    """Mark the image deleted (if still in `from_status`) and end its memberships."""
    when = now()
    done = await update_image(
        conn,
        image_id,
        {"status": "deleted", "deleted": True, "deleted_at": when},
        status=from_status,
    )
    if done:  # properties stay (list filters still match); records show them as {}
        await conn.execute(
            update(image_members)
            .where(image_members.c.image_id == image_id)
            .values(deleted=True, updated_at=when)
        )
    return done


async def image_ids_in_status(conn: AsyncConnection, status: str) -> list[tuple[str, str | None]]:
    rows = await conn.execute(
        select(images.c.id, images.c.location).where(images.c.status == status)
    )
    return [(image_id, location) for image_id, location in rows]


async def stale_stages(
    conn: AsyncConnection, staged_before: datetime
) -> list[tuple[str, str | None]]:
    """(id, location) of the images holding v2 staged data (`uploading`) unchanged since
    before `staged_before`."""
    rows = await conn.execute(
        select(images.c.id, images.c.location).where(
            images.c.status == "uploading",
            images.c.deleted == false(),
            images.c.updated_at < staged_before,
        )
    )
    return [(image_id, location) for image_id, location in rows]


async def take_stale_stage(conn: AsyncConnection, image_id: str, staged_before: datetime) -> bool:
    """`uploading` -> `saving`, if the image is still staged and unchanged since before
    `staged_before`: one conditional UPDATE, so one caller wins; no import can start then."""
    return await update_image(
        conn, image_id, {"status": "saving"}, status="uploading", unchanged_since=staged_before
    )


_DATA_VALUES: Final = (
    "size", "checksum", "sha256", "location", "os_hash_algo", "os_hash_value",
)  # fmt: skip


async def requeue_unstaged(conn: AsyncConnection, image_id: str) -> bool:
    """`saving` -> `queued` with no data recorded, once `take_stale_stage`'s caller removed
    the staged data; the upload lease goes too."""
    if not await transition(conn, image_id, "saving", "queued", **dict.fromkeys(_DATA_VALUES)):
        return False
    await _drop_lease(conn, image_id)
    return True


async def _drop_lease(conn: AsyncConnection, image_id: str) -> None:
    await conn.execute(delete(upload_leases).where(upload_leases.c.image_id == image_id))


_DEAD = ("killed", "deleted")


async def leftover_data(conn: AsyncConnection) -> list[tuple[str, str | None]]:
    """(id, location) of `killed` and `deleted` images that may still have stored data:
    a location not yet forgotten (a delete interrupted before its data went), or an upload
    lease not yet dropped (a blob stored just before its upload was killed or deleted)."""
    leased = exists().where(upload_leases.c.image_id == images.c.id)
    rows = await conn.execute(
        select(images.c.id, images.c.location).where(
            images.c.status.in_(_DEAD),
            images.c.location_is_external == false(),
            or_(images.c.location.is_not(None), leased),
        )
    )
    return [(image_id, location) for image_id, location in rows]


async def forget_data(conn: AsyncConnection, image_id: str) -> None:
    """Record that a `killed` or `deleted` image's stored data is gone: its location and
    its upload lease go (`updated_at` stays: nothing a client sees changed)."""
    await conn.execute(
        update(images)
        .where(
            images.c.id == image_id,
            images.c.status.in_(_DEAD),
            images.c.location_is_external == false(),
        )
        .values(location=None)
    )
    await _drop_lease(conn, image_id)


async def storage_usage(conn: AsyncConnection, owner: str | None, *, exclude: str) -> int:
    """Bytes of stored data held by `owner`'s images (None: ownerless ones), but `exclude`.

    Counts data this service stores (not external locations) of images not `killed` or
    `deleted`: a `pending_delete` image's data counts until the scrubber removes it. Also
    counts what the owner's uploads in progress reserved (`upload_leases.reserved`), so
    bytes in flight count against the quota too.
    """
    owned = images.c.owner.is_(None) if owner is None else images.c.owner == owner
    result = await conn.execute(
        select(func.coalesce(func.sum(images.c.size), 0)).where(
            owned,
            images.c.id != exclude,
            images.c.status.not_in(("killed", "deleted")),
            images.c.location.is_not(None),
            images.c.location_is_external == false(),
        )
    )
    reserved = await conn.execute(
        select(func.coalesce(func.sum(upload_leases.c.reserved), 0))
        .select_from(upload_leases.join(images, images.c.id == upload_leases.c.image_id))
        .where(owned, images.c.id != exclude, images.c.status == "saving")
    )
    return int(result.scalar_one()) + int(reserved.scalar_one())


async def lock_owner(conn: AsyncConnection, owner: str | None) -> None:
    """Make quota decisions for `owner` take turns until this transaction ends.

    PostgreSQL: a transaction-scoped advisory lock keyed by the owner (READ COMMITTED would
    let two reservations both see the room). SQLite writers already run one at a time.
    """
    if conn.dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"osimage-quota:{owner}".encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    await conn.execute(select(func.pg_advisory_xact_lock(key)))


def _sort_expression(key: str, columns: Any = images.c) -> ColumnElement[Any]:
    column: ColumnElement[Any] = columns[key]
    if key in ("name", "container_format", "disk_format"):
        return func.coalesce(column, "")
    if key == "size":
        return func.coalesce(column, 0)
    return column


def _sort_value(row: ImageRow, key: str) -> Any:
    value = getattr(row, key)
    if value is None:
        return 0 if key == "size" else ""
    return value


def _visible_in_list(scope: Scope) -> ColumnElement[bool]:
    if scope is Scope.ALL:
        return true()
    if scope is Scope.NON_PUBLIC:
        return images.c.is_public == false()
    if scope is Scope.PUBLIC:
        return images.c.is_public == true()
    project: BindParameter[str] = bindparam("project")
    shared = exists().where(
        images.c.owner.is_not(None),  # ownerless private images are never listed (§10.2)
        images.c.visibility == "shared",  # members grant nothing on other visibilities (v2 §18.3)
        image_members.c.image_id == images.c.id,
        image_members.c.member == project,
        image_members.c.deleted == false(),
    )
    return or_(images.c.is_public == true(), images.c.owner == project, shared)


def list_images(conn: Connection, query: ListQuery) -> list[ImageRow]:
    """One page of images, in keyset order (sort key, created_at, id), after `query.marker`.

    Synchronous: run it through `engine.read`."""
    if query.limit <= 0:
        return []
    statement = _page_statement(*_shape(query), query.with_properties)
    result = conn.execute(statement, _page_params(query))
    if not query.with_properties:
        return [ImageRow(*values) for values in result]
    rows: list[ImageRow] = []
    width = len(_COLUMNS)
    for values in result:
        if not rows or rows[-1].id != values[0]:
            rows.append(ImageRow(*values[:width]))
        if values[width] is not None:
            rows[-1].properties[values[width]] = values[width + 1]
    return rows


def list_records(conn: Connection, query: ListQuery) -> list[str] | None:
    """The same page as `list_images` with properties, as the images' v1 detail records
    (JSON text, see `osimage.server.db.records`); None if one of them is missing or stale,
    and the caller renders the page from `list_images` instead. Synchronous."""
    if query.limit <= 0:
        return []
    found = rows(conn, _records_statement(*_shape(query)), _page_params(query))
    page = [record for record, fresh in found if fresh]  # NULL too: no record
    return page if len(page) == len(found) else None


# The most records a page read on the event loop may join (see `is_bounded_page`).
BOUNDED_PAGE = 100


def is_bounded_page(query: ListQuery) -> bool:
    """Whether the page's read does work bounded by its limit, whatever the catalogue:
    no filter, the default order, a scope an index serves in that order (so the range
    read from the newest image or the marker on stops after `limit` matches, passing
    only hidden images: deleted, killed or pending delete ones among them), and at most
    `BOUNDED_PAGE` records. Such a read may run on the event loop (`engine.read(point=
    True)`), as a lookup by id does, which saves the worker-thread hop that was the
    largest part of a small page (issue 14)."""
    return (
        query.scope in (Scope.PUBLIC, Scope.NON_PUBLIC, Scope.ALL)
        and query.limit <= BOUNDED_PAGE
        and query.sort_key == "created_at"
        and query.changes_since is None
        and not query.exact
        and query.size_min is None
        and query.size_max is None
        and not query.properties
    )


def _shape(query: ListQuery) -> tuple[Any, ...]:
    scope = query.scope
    if scope is Scope.PROJECT and query.project is None:
        scope = Scope.PUBLIC
    return (
        scope,
        query.changes_since is not None,
        tuple(sorted(query.exact)),  # one shape whatever order the client gave them in
        query.size_min is not None,
        query.size_max is not None,
        bool(query.properties),
        query.sort_key,
        query.sort_dir == "desc",
        query.marker is not None,
    )


@lru_cache(maxsize=256)  # one per `_page_statement`: `engine.rows` plans per statement
def _records_statement(*shape: Any) -> Select[Any]:
    """The page query of one shape (`_page_statement`) joined to the images' records.

    One flat join (an image has at most one record), not the page as a subquery: the
    database then walks the index in page order and stops after `limit`, instead of
    sorting the joined records again (a temporary b-tree carrying 1,000 records of a
    big page: half its time)."""
    return (
        _page_statement(*shape, False)
        .with_only_columns(image_records.c.v1, FRESH)
        .outerjoin_from(images, image_records, image_records.c.image_id == images.c.id)
    )


def _page_params(query: ListQuery) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": query.limit, "project": query.project}
    if query.changes_since is not None:
        params["changes_since"] = query.changes_since
    for name, value in query.exact.items():
        params[f"exact_{name}"] = value
    params["size_min"], params["size_max"] = query.size_min, query.size_max
    if query.properties:
        pairs = list(query.properties.items())
        # The expanded IN list is padded to a power of two with repeats of a pair (which
        # match nothing more): the SQL text, which drivers cache prepared statements by,
        # then takes a handful of forms instead of one per filter count.
        pairs += [pairs[-1]] * ((1 << (len(pairs) - 1).bit_length()) - len(pairs))
        params["properties"] = pairs
        params["property_count"] = len(query.properties)
    if query.marker is not None:
        for index, key in enumerate(_sort_keys(query.sort_key)):
            params[f"mark_{index}"] = _sort_value(query.marker, key)
    return params


def _sort_keys(sort_key: str) -> list[str]:
    return [sort_key] + [k for k in ("created_at", "id") if k != sort_key]


# Bounded: a shape is a choice among a fixed set of filters and sort keys, never a count
# or a value the client gives, so clients can make only so many (see `_page_statement`).
@lru_cache(maxsize=256)
def _page_statement(
    scope: Scope,
    changes_since: bool,
    exact: tuple[str, ...],
    size_min: bool,
    size_max: bool,
    properties: bool,
    sort_key: str,
    descending: bool,
    marker: bool,
    with_properties: bool,
) -> Select[Any]:
    """The page query of one shape, every value a bound parameter (see `list_images`).

    Built once per shape: building a statement costs more than running it, and the
    same statement object reuses its compiled form. Property filters do not change the
    shape: however many there are, they are one condition of constant depth (a count of
    matching rows, over an expanding IN of (key, value) pairs), so no client can fill the
    statement caches with shapes nor reach the database's limit on expression depth.
    """
    conditions: list[ColumnElement[bool]] = [_visible_in_list(scope)]
    if not changes_since:
        conditions.append(images.c.deleted == false())
        conditions.extend(images.c.status != status for status in HIDDEN_STATUSES)
    else:
        conditions.append(images.c.updated_at > bindparam("changes_since"))
    for name in exact:
        conditions.append(images.c[name] == bindparam(f"exact_{name}"))
    if size_min:
        conditions.append(images.c.size >= bindparam("size_min"))
    if size_max:
        conditions.append(images.c.size <= bindparam("size_max"))
    if properties:
        # (image_id, key) is unique: the image matches every filter iff as many of its
        # property rows match a (key, value) pair as there are filters
        pairs = tuple_(image_properties.c.key, image_properties.c.value)
        matching = (
            select(func.count())
            .where(
                image_properties.c.image_id == images.c.id,
                pairs.in_(bindparam("properties", expanding=True)),
            )
            .scalar_subquery()
        )
        conditions.append(matching == bindparam("property_count"))
    keys = _sort_keys(sort_key)
    expressions = [_sort_expression(key) for key in keys]
    if marker:
        marks: list[BindParameter[Any]] = [bindparam(f"mark_{i}") for i in range(len(keys))]
        after: list[ColumnElement[bool]] = []
        for index, expression in enumerate(expressions):
            equal = [expressions[j] == marks[j] for j in range(index)]
            beyond = expression < marks[index] if descending else expression > marks[index]
            after.append(and_(*equal, beyond))
        conditions.append(or_(*after))
        # Redundant with the OR above, but lets the database range-scan an index on the
        # first sort key instead of walking every row before the marker.
        first = expressions[0]
        conditions.append(first <= marks[0] if descending else first >= marks[0])
    order = [e.desc() if descending else e.asc() for e in expressions]
    statement = select(images).where(*conditions).order_by(*order).limit(bindparam("limit"))
    if not with_properties:
        return statement
    # The page and its properties in one statement: one row per property (or one with
    # NULLs), in page order, then property order.
    page = statement.subquery()
    outer = [_sort_expression(key, page.c) for key in keys]
    return (
        select(page, image_properties.c.key, image_properties.c.value)
        .outerjoin(image_properties, image_properties.c.image_id == page.c.id)
        .order_by(*(e.desc() if descending else e.asc() for e in outer), image_properties.c.id)
    )


# -- memberships ---------------------------------------------------------------------------


async def members_of(conn: AsyncConnection, image_id: str) -> list[MemberRow]:
    """The live memberships of an image, in insertion order."""
    rows = await conn.execute(
        select(image_members)
        .where(image_members.c.image_id == image_id, image_members.c.deleted == false())
        .order_by(image_members.c.id)
    )
    return [_member(values) for values in rows.mappings()]


def _member(values: RowMapping) -> MemberRow:
    return MemberRow(
        image_id=values["image_id"],
        member=values["member"],
        can_share=bool(values["can_share"]),
        deleted=bool(values["deleted"]),
        status=values["status"],
        created_at=values["created_at"],
        updated_at=values["updated_at"],
    )


def find_membership(conn: Connection, image_id: str, member: str) -> MemberRow | None:
    """The membership row of `member` on the image, removed ones included."""
    result = conn.execute(
        select(image_members).where(
            image_members.c.image_id == image_id, image_members.c.member == member
        )
    )
    values = result.mappings().first()
    return None if values is None else _member(values)


async def membership(conn: AsyncConnection, image_id: str, member: str) -> MemberRow | None:
    """The membership row of `member` on the image, removed ones included."""
    return await conn.run_sync(find_membership, image_id, member)


async def put_member(
    conn: AsyncConnection, image_id: str, member: str, can_share: bool | None
) -> None:
    """Add or restore a membership; `can_share` None keeps a previous value (new: False)."""
    await lock_image(conn, image_id)
    previous = await membership(conn, image_id, member)
    when = now()
    if previous is None:
        await conn.execute(
            insert(image_members).values(
                image_id=image_id,
                member=member,
                can_share=bool(can_share),
                deleted=False,
                created_at=when,
                updated_at=when,
            )
        )
        return
    values: dict[str, Any] = {"deleted": False, "updated_at": when}
    if can_share is not None:
        values["can_share"] = can_share
    await conn.execute(
        update(image_members)
        .where(image_members.c.image_id == image_id, image_members.c.member == member)
        .values(**values)
    )


async def remove_member(conn: AsyncConnection, image_id: str, member: str) -> bool:
    await lock_image(conn, image_id)  # image row before member rows, as everywhere
    return await update_live_member(conn, image_id, member, deleted=True)


async def update_live_member(
    conn: AsyncConnection, image_id: str, member: str, **values: Any
) -> bool:
    """Set `values` (and `updated_at`) on a live membership; False when there is none."""
    result = await conn.execute(
        update(image_members)
        .where(
            image_members.c.image_id == image_id,
            image_members.c.member == member,
            image_members.c.deleted == false(),
        )
        .values(**values, updated_at=now())
    )
    return bool(result.rowcount == 1)


async def shared_with(
    conn: AsyncConnection, member: str, *, owner: str | None, everything: bool
) -> list[MemberRow]:
    """Live memberships of `member` on live images; limited to images of `owner` unless
    `everything` (the caller's own memberships are added by the caller)."""
    statement = (
        select(image_members)
        .join(images, images.c.id == image_members.c.image_id)
        .where(
            image_members.c.member == member,
            image_members.c.deleted == false(),
            images.c.deleted == false(),
        )
        .order_by(image_members.c.id)
    )
    if not everything:
        statement = statement.where(images.c.owner == owner)
    rows = await conn.execute(statement)
    return [_member(values) for values in rows.mappings()]
