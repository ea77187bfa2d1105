"""Upload leases: each `saving` image names the `osimage serve` instance receiving it.

That instance (its node id, shared by its workers) renews the lease while the upload
runs. An upload is *stranded* when nothing can be receiving it any more: its lease is
stale, or it belongs to the instance that is starting (so it crashed), or it has no
lease at all (from before leases existed). Only stranded uploads may be killed, so a
restart of one host leaves the uploads of the others alone.

Portable SQL (SQLite and PostgreSQL) on the `upload_leases` table.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import and_, delete, exists, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from osimage.server.db.catalog import refresh_record
from osimage.server.db.tables import images, upload_leases

_SAVING = "saving"
_IMPORTING = "importing"  # a v2 web-download connecting to its source (leased as well)


async def claim(conn: AsyncConnection, image_id: str, node: str, now: datetime) -> None:
    """Lease `image_id` to `node`; call in the transaction that moves it to `saving`."""
    await conn.execute(delete(upload_leases).where(upload_leases.c.image_id == image_id))
    await conn.execute(insert(upload_leases).values(image_id=image_id, node=node, seen_at=now))


async def renew(
    conn: AsyncConnection, image_ids: Collection[str], node: str, now: datetime
) -> None:
    """Mark `node`'s leases of `image_ids` as seen `now`."""
    if not image_ids:
        return
    await conn.execute(
        update(upload_leases)
        .where(upload_leases.c.image_id.in_(list(image_ids)), upload_leases.c.node == node)
        .values(seen_at=now)
    )


async def stranded(
    conn: AsyncConnection, node: str, stale_before: datetime
) -> list[tuple[str, str | None]]:
    """(id, location) of the `saving` images leased to `node`, with no lease, or with a
    lease last seen before `stale_before`: what a starting instance `node` may kill."""
    lease = upload_leases
    rows = await conn.execute(
        select(images.c.id, images.c.location)
        .select_from(images.outerjoin(lease, lease.c.image_id == images.c.id))
        .where(
            images.c.status == _SAVING,
            or_(lease.c.image_id.is_(None), lease.c.node == node, lease.c.seen_at < stale_before),
        )
    )
    return [(image_id, location) for image_id, location in rows]


async def stale(conn: AsyncConnection, stale_before: datetime) -> list[tuple[str, str | None]]:
    """(id, location) of the `saving` images whose lease was last seen before
    `stale_before`, on any node: their instance died and did not come back."""
    lease = upload_leases
    rows = await conn.execute(
        select(images.c.id, images.c.location)
        .select_from(images.join(lease, lease.c.image_id == images.c.id))
        .where(images.c.status == _SAVING, lease.c.seen_at < stale_before)
    )
    return [(image_id, location) for image_id, location in rows]


async def kill(
    conn: AsyncConnection,
    image_id: str,
    now: datetime,
    *,
    stale_before: datetime,
    node: str | None = None,
) -> bool:
    """`saving` -> `killed`, unless another node (any node, if `node` is None) renewed
    the image's lease since `stale_before`. One conditional UPDATE; True if it won."""
    won = await _move_unless_renewed(
        conn, image_id, _SAVING, stale_before, node, status="killed", updated_at=now
    )
    if not won:
        return False
    await refresh_record(conn, image_id)
    return True


async def drop_finished(conn: AsyncConnection) -> None:
    """Remove the leases of images no longer `saving` (or `importing`)."""
    saving = select(images.c.id).where(images.c.status.in_((_SAVING, _IMPORTING)))
    await conn.execute(delete(upload_leases).where(upload_leases.c.image_id.not_in(saving)))


async def reserve(conn: AsyncConnection, image_id: str, amount: int) -> None:
    """Set the bytes of storage quota the upload of `image_id` holds (see `storage_usage`)."""
    await conn.execute(
        update(upload_leases).where(upload_leases.c.image_id == image_id).values(reserved=amount)
    )


async def stranded_imports(
    conn: AsyncConnection, stale_before: datetime, node: str | None = None
) -> list[str]:
    """Ids of the `importing` images nothing is importing any more: with no lease or a
    lease last seen before `stale_before`, and (with a `node`) those leased to `node`."""
    lease = upload_leases
    orphaned = or_(lease.c.image_id.is_(None), lease.c.seen_at < stale_before)
    if node is not None:
        orphaned = or_(orphaned, lease.c.node == node)
    rows = await conn.execute(
        select(images.c.id)
        .select_from(images.outerjoin(lease, lease.c.image_id == images.c.id))
        .where(images.c.status == _IMPORTING, orphaned)
    )
    return [image_id for (image_id,) in rows]


async def requeue_import(
    conn: AsyncConnection,
    image_id: str,
    now: datetime,
    *,
    stale_before: datetime,
    node: str | None = None,
) -> bool:
    """`importing` -> `queued` (as a failed web-download), unless another node renewed the
    image's lease since `stale_before`. One conditional UPDATE; True if it won."""
    return await _move_unless_renewed(
        conn, image_id, _IMPORTING, stale_before, node, status="queued", size=None, updated_at=now
    )


async def _move_unless_renewed(
    conn: AsyncConnection,
    image_id: str,
    was: str,
    stale_before: datetime,
    node: str | None,
    **values: object,
) -> bool:
    """Set `values` on the image if its status `was` that and no node (other than `node`, if
    given) renewed its lease since `stale_before`. One conditional UPDATE; True if it won."""
    lease = upload_leases
    fresh = and_(lease.c.image_id == images.c.id, lease.c.seen_at >= stale_before)
    if node is not None:
        fresh = and_(fresh, lease.c.node != node)
    result = await conn.execute(
        update(images)
        .where(images.c.id == image_id, images.c.status == was, ~exists().where(fresh))
        .values(**values)
    )
    if result.rowcount != 1:
        return False
    await refresh_record(conn, image_id)
    return True
