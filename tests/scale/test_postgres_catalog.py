"""The catalog on a real PostgreSQL at READ COMMITTED, with two writers held mid-transaction.

Each test opens one writer's transaction, lets a second writer start the same change and
waits until PostgreSQL reports it blocked, then commits the first: the second must go on
and see the first's row. Without the row lock, both would find no row and the second
INSERT would end in a unique violation (a 500 for the client).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from osimage.server.db import catalog
from osimage.server.db.engine import migrate, open_engine, writing
from tests.support.backends import (
    create_database,
    postgres_available,
    postgres_url,
    require_service,
)

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

Change = Callable[[AsyncConnection], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    require_service(postgres_available(), "no PostgreSQL on 127.0.0.1:5432 (or no asyncpg)")
    name, drop = create_database()
    engine = open_engine(postgres_url(name).replace("postgresql://", "postgres://", 1))
    try:
        await migrate(engine)
        await migrate(engine)  # a second run finds nothing to do
        async with writing(engine) as conn:
            await catalog.insert_image(conn, _image("img-1"), {"base": "1"})
        yield engine
    finally:
        await engine.dispose()
        drop()


def _image(image_id: str) -> dict[str, object]:
    when = datetime(2026, 1, 1)
    return {
        "id": image_id, "name": image_id, "status": "active", "min_disk": 0, "min_ram": 0,
        "is_public": False, "protected": False, "deleted": False, "created_at": when,
        "updated_at": when, "location_is_external": False,
    }  # fmt: skip


async def _blocked_backends(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return int(result.scalar_one())


async def _race(engine: AsyncEngine, first: Change, second: Change) -> None:
    """Run `first` in an open transaction, start `second`, wait until it blocks, commit."""
    second_done = anyio.Event()

    async def run_second() -> None:
        async with writing(engine) as conn:
            await second(conn)
        second_done.set()

    async with anyio.create_task_group() as tasks, writing(engine) as conn:
        await first(conn)
        tasks.start_soon(run_second)
        for _ in range(3000):  # PostgreSQL, not this process, knows when it blocks: poll
            if await _blocked_backends(engine):
                break
            await anyio.sleep(0.01)
        else:
            pytest.fail("the second writer never blocked")
        assert not second_done.is_set()  # it waits for our transaction
    # leaving the block committed `first` (the transaction closes before the task group
    # waits), and only then could `second` go on
    assert second_done.is_set()


async def test_two_merges_of_one_new_key_make_one_row(engine: AsyncEngine) -> None:
    def merge(value: str) -> Change:
        async def change(conn: AsyncConnection) -> None:
            await catalog.set_properties(conn, "img-1", {"new": value}, purge=False)

        return change

    await _race(engine, merge("first"), merge("second"))
    async with engine.connect() as conn:
        row = await catalog.get_image(conn, "img-1")
    assert row is not None
    assert row.properties == {"base": "1", "new": "second"}


async def test_two_merges_of_different_keys_keep_both(engine: AsyncEngine) -> None:
    async def first(conn: AsyncConnection) -> None:
        await catalog.set_properties(conn, "img-1", {"a": "1"}, purge=False)

    async def second(conn: AsyncConnection) -> None:
        await catalog.set_properties(conn, "img-1", {"b": "2"}, purge=False)

    await _race(engine, first, second)
    async with engine.connect() as conn:
        row = await catalog.get_image(conn, "img-1")
    assert row is not None
    assert row.properties == {"base": "1", "a": "1", "b": "2"}


async def test_one_member_added_twice_at_once_is_one_membership(engine: AsyncEngine) -> None:
    async def add(conn: AsyncConnection) -> None:
        await catalog.put_member(conn, "img-1", "tenant-x", None)

    async def add_sharing(conn: AsyncConnection) -> None:
        await catalog.put_member(conn, "img-1", "tenant-x", True)

    await _race(engine, add, add_sharing)
    async with engine.connect() as conn:
        members = await catalog.members_of(conn, "img-1")
    assert [(m.member, m.can_share) for m in members] == [("tenant-x", True)]


async def test_of_two_transitions_from_queued_one_wins(engine: AsyncEngine) -> None:
    async with writing(engine) as conn:
        await catalog.insert_image(conn, {**_image("img-2"), "status": "queued"}, {})
    outcomes: list[bool] = []

    async def upload(conn: AsyncConnection) -> None:
        outcomes.append(await catalog.transition(conn, "img-2", "queued", "saving"))

    await _race(engine, upload, upload)
    assert outcomes == [True, False]
