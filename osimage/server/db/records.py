"""Each image's rendered v1 detail record, v1 HEAD headers and v2 record, kept with its
row (issues 12, 14).

A v1 detail page or a v2 list page is then a keyset range read joined to ready JSON
fragments (`catalog.list_records`, `listing.list_records`), `GET /v2/images/{id}` a point
read of one, and a v1 HEAD sends stored headers: not rows of ~27 columns plus properties
and tags turned into objects, dicts, JSON and headers. Every writer in `catalog` (and
`listing.touch`, `listing.set_tags`, `leases.kill`, `leases.requeue_import`) calls
`refresh` in its transaction after changing an image, its properties or its tags, when it
holds the image's row (an UPDATE or a lock), so two writers of one image refresh one after
the other; all three are rewritten together, whichever API wrote. A record is used only
while its `updated_at` equals its image's (and the v2 record and the headers only when
present: a process that predates them writes NULL), so a writer that forgot to refresh
makes reads slower, not wrong.
"""

from __future__ import annotations

import json

from sqlalchemy import Connection, delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from osimage.server.api import render
from osimage.server.api.v2 import render as render_v2
from osimage.server.db.catalog import ImageRow, fetch_image
from osimage.server.db.listing import tags_of
from osimage.server.db.tables import image_properties, image_records, images

BACKFILL_BATCH = 500


def v1_record(row: ImageRow) -> str:
    """The v1 detail record as `json.dumps` writes it inside a list (default separators)."""
    return json.dumps(render.detail(row))


def v2_record(row: ImageRow, tags: list[str]) -> str:
    """The v2 image record as `json.dumps` writes it inside a list or alone."""
    return json.dumps(render_v2.record(row, tags))


def refresh_now(conn: Connection, image_id: str) -> None:
    """Rewrite the records of `image_id` from its row, properties and tags (synchronous)."""
    row = fetch_image(conn, image_id)
    conn.execute(delete(image_records).where(image_records.c.image_id == image_id))
    if row is not None:
        tags = tags_of(conn, [image_id])[image_id]
        conn.execute(
            insert(image_records).values(
                image_id=image_id,
                updated_at=row.updated_at,
                v1=v1_record(row),
                v2=v2_record(row, tags),
                v1_head=render.head_text(row),
            )
        )


async def refresh(conn: AsyncConnection, image_id: str) -> None:
    """Rewrite the record of `image_id` in the caller's transaction."""
    await conn.run_sync(refresh_now, image_id)


def backfill(conn: Connection) -> int:
    """Render the records of every image that has none or a stale one; the count done.

    `engine.migrate` runs it at every start: after migration 0005, and for images
    written straight into the tables (the benchmarks' seeded catalogues), and after 0006
    for the v2 records. In batches: one read of the images and their properties, one of
    their tags, one delete and one insert per batch.
    """
    stale = (
        select(images.c.id)
        .outerjoin(image_records, image_records.c.image_id == images.c.id)
        .where(
            or_(
                image_records.c.image_id.is_(None),
                image_records.c.updated_at != images.c.updated_at,
                image_records.c.v2.is_(None),
                image_records.c.v1_head.is_(None),
            )
        )
    )
    ids = [image_id for (image_id,) in conn.execute(stale)]
    width = len(images.c)
    for first in range(0, len(ids), BACKFILL_BATCH):
        batch = ids[first : first + BACKFILL_BATCH]
        # a running process may be writing one of them: take their rows as writers do
        conn.execute(select(images.c.id).where(images.c.id.in_(batch)).with_for_update())
        rows: dict[str, ImageRow] = {}
        for values in conn.execute(
            select(images, image_properties.c.key, image_properties.c.value)
            .outerjoin(image_properties, image_properties.c.image_id == images.c.id)
            .where(images.c.id.in_(batch))
            .order_by(images.c.id, image_properties.c.id)
        ):
            row = rows.get(values[0])
            if row is None:
                row = rows[values[0]] = ImageRow(*values[:width])
            if values[width] is not None:
                row.properties[values[width]] = values[width + 1]
        tags = tags_of(conn, list(rows))
        conn.execute(delete(image_records).where(image_records.c.image_id.in_(batch)))
        if rows:
            conn.execute(
                insert(image_records),
                [
                    {
                        "image_id": row.id,
                        "updated_at": row.updated_at,
                        "v1": v1_record(row),
                        "v2": v2_record(row, tags[row.id]),
                        "v1_head": render.head_text(row),
                    }
                    for row in rows.values()
                ],
            )
    return len(ids)
