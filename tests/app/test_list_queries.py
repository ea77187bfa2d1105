"""List pages on real SQLite: the keyset query after a marker is an index range scan, and
pages walk the whole catalogue in order for every sort key, NULLs included."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import Connection, create_engine, event, insert
from sqlalchemy.engine import Engine

from osimage.server.db import catalog
from osimage.server.db.catalog import ListQuery, Scope
from osimage.server.db.engine import close_engine, migrate, open_engine, read
from osimage.server.db.tables import image_properties, images, metadata

START = datetime(2025, 1, 1)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'osimage.db'}")
    metadata.create_all(engine)
    rows = []
    for n in range(60):
        rows.append(
            {
                "id": str(uuid.UUID(int=n * 7919 + 1, version=4)),
                "name": None if n % 7 == 0 else f"image-{n % 5}",  # ties and NULLs
                "status": "active",
                "size": None if n % 11 == 0 else n % 4,
                "disk_format": "raw",
                "container_format": "bare",
                "min_disk": 0,
                "min_ram": 0,
                "is_public": True,
                "protected": False,
                "deleted": False,
                "created_at": START + timedelta(seconds=n // 3),  # ties: id breaks them
                "updated_at": START,
                "location_is_external": False,
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(images), rows)
        conn.execute(
            insert(image_properties),
            [{"image_id": r["id"], "key": f"k{i}", "value": "v"} for r in rows for i in range(2)],
        )
    yield engine
    engine.dispose()


def _plans(conn: Connection, query: ListQuery) -> tuple[list[catalog.ImageRow], list[str]]:
    """Run the page, and explain every statement it ran."""
    statements: list[tuple[str, Any]] = []

    def capture(_c: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        statements.append((sql, params))

    event.listen(conn, "before_cursor_execute", capture)
    try:
        rows = catalog.list_images(conn, query)
    finally:
        event.remove(conn, "before_cursor_execute", capture)
    plans = []
    for sql, params in statements:
        found = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params).all()
        plans.append(" | ".join(str(row[-1]) for row in found))
    return rows, plans


@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_the_page_after_a_marker_is_an_index_range(engine: Engine, direction: str) -> None:
    with engine.connect() as conn:
        everything = catalog.list_images(
            conn, ListQuery(scope=Scope.PUBLIC, limit=100, sort_dir=direction)
        )
        query = ListQuery(scope=Scope.PUBLIC, limit=5, sort_dir=direction)
        query.marker = everything[30]
        rows, plans = _plans(conn, query)
    assert [r.id for r in rows] == [r.id for r in everything[31:36]]
    assert [r.properties for r in rows] == [{"k0": "v", "k1": "v"}] * 5
    bound = "created_at<?" if direction == "desc" else "created_at>?"
    assert len(plans) == 1, plans  # the page and its properties in one statement
    ranges = (  # either index reads from the marker on (ix_images_live: migration 0005)
        f"USING INDEX ix_images_public (is_public=? AND {bound})",
        f"USING INDEX ix_images_live (deleted=? AND {bound})",
    )
    assert any(text in plans[0] for text in ranges), plans[0]


@pytest.mark.parametrize("sort_key", catalog.SORT_KEYS)
@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_pages_walk_the_catalogue_in_keyset_order(
    engine: Engine, sort_key: str, direction: str
) -> None:
    with engine.connect() as conn:
        walked: list[catalog.ImageRow] = []
        marker = None
        while True:
            query = ListQuery(
                scope=Scope.PUBLIC, limit=7, sort_key=sort_key, sort_dir=direction, marker=marker
            )
            page = catalog.list_images(conn, query)
            if not page:
                break
            walked += page
            marker = page[-1]

    def key(row: catalog.ImageRow) -> tuple[Any, ...]:
        value = getattr(row, sort_key)
        if value is None:
            value = 0 if sort_key == "size" else ""
        return (value, row.created_at, row.id)

    assert len(walked) == 60
    assert len({r.id for r in walked}) == 60
    assert [key(r) for r in walked] == sorted(map(key, walked), reverse=direction == "desc")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_concurrent_reads_share_the_reader_pool(tmp_path: Path, anyio_backend: str) -> None:
    """More reads at once than the SQLite reader has connections: all of them finish with
    the right answer, point reads on the loop among them, and no read stays open."""
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'osimage.db'}")
    await migrate(engine)
    try:
        sync = create_engine(f"sqlite:///{tmp_path / 'osimage.db'}")
        with sync.begin() as conn:
            conn.execute(
                insert(images),
                [
                    {
                        "id": f"00000000-0000-4000-8000-{n:012d}",
                        "status": "active",
                        "is_public": True,
                        "created_at": START + timedelta(seconds=n),
                        "updated_at": START,
                    }
                    for n in range(40)
                ],
            )
        sync.dispose()
        pages: list[list[str]] = []
        points: list[str | None] = []

        def page(conn: Connection) -> list[str]:
            return [r.id for r in catalog.list_images(conn, ListQuery(Scope.PUBLIC, limit=10))]

        async def one_page() -> None:
            pages.append(await read(engine, page))

        async def one_point(n: int) -> None:
            image_id = f"00000000-0000-4000-8000-{n:012d}"
            row = await read(engine, lambda c: catalog.fetch_image(c, image_id), point=True)
            points.append(None if row is None else row.id)

        async with anyio.create_task_group() as tasks:
            for n in range(24):
                tasks.start_soon(one_page)
                tasks.start_soon(one_point, n)
        newest = [f"00000000-0000-4000-8000-{n:012d}" for n in range(39, 29, -1)]
        assert pages == [newest] * 24
        assert sorted(p or "" for p in points) == [
            f"00000000-0000-4000-8000-{n:012d}" for n in range(24)
        ]
    finally:
        await close_engine(engine)
