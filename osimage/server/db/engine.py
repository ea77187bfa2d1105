"""Open the async engine (SQLite or PostgreSQL), apply migrations, run transactions.

SQLite is tuned for concurrent use by one host's processes; PostgreSQL (through asyncpg,
the `postgres` extra) is shared by any number of hosts.
"""

from __future__ import annotations

import importlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import Select

MIGRATIONS = Path(__file__).with_name("migrations")
_WRITE = "osimage_write"
_MIGRATION_LOCK = 0x05_1A_6E_00  # pg_advisory_xact_lock key: one migrating process at a time

# backend -> (the driver osimage speaks it through, the extra that installs that driver)
DRIVERS = {"sqlite": ("aiosqlite", "server"), "postgresql": ("asyncpg", "postgres")}
_ALIASES = {"postgres": "postgresql"}
_T = TypeVar("_T")
# SQLite: a synchronous engine on the same file, for reads done in one worker-thread call
# (with as many connections as threads may use them at once: reads are mostly CPU, and
# the process has one GIL)
_READERS = 4
# Compiled statements kept per engine (SQLAlchemy's LRU, its default size, stated here
# because the bound matters): list statements vary by shape, a choice among a fixed set
# of filters and sort keys (see catalog._page_statement), never by a count or value a
# client gives, so the cache holds at most this many of bounded size.
_STATEMENT_CACHE = 500

log = logging.getLogger("osimage.server.db")


class _Reader:
    """The synchronous read side of a SQLite engine: a pool for reads in worker threads,
    and one connection of its own for point reads on the event loop thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.limiter = anyio.CapacityLimiter(_READERS)
        self.point: Connection | None = None

    def dispose(self) -> None:
        if self.point is not None:
            self.point.close()
            self.point = None
        self.engine.dispose()


_SYNC_READERS: weakref.WeakKeyDictionary[AsyncEngine, _Reader] = weakref.WeakKeyDictionary()


class DatabaseConfigError(ValueError):
    """A --database that cannot work; the message says why, without the password."""


def database_url(url: str) -> URL:
    """Parse `url` and pick osimage's driver: postgres:// and postgresql:// mean asyncpg.

    Raises `DatabaseConfigError` for an unknown database or a driver osimage does not
    speak, and when the driver's extra is not installed.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseConfigError(  # the text is not echoed: it may hold a password
            "--database: not a URL (expected e.g. postgresql://user:password@host/db)"
        ) from None
    backend, _, given_driver = parsed.drivername.partition("+")
    backend = _ALIASES.get(backend, backend)
    if backend not in DRIVERS:
        known = ", ".join(f"{name}://" for name in DRIVERS)
        raise DatabaseConfigError(f"--database: unknown database {backend!r} (known: {known})")
    driver, extra = DRIVERS[backend]
    if given_driver and given_driver != driver:
        raise DatabaseConfigError(
            f"--database: osimage speaks {backend} through {driver}, not {given_driver}; "
            f"write {backend}://..."
        )
    try:
        importlib.import_module(driver)
    except ImportError:
        raise DatabaseConfigError(
            f"the {backend} database needs: pip install 'osimage[{extra}]'"
        ) from None
    return parsed.set(drivername=f"{backend}+{driver}")


def open_engine(url: str) -> AsyncEngine:
    """An engine for `url` (see `database_url`). SQLite gets WAL, a busy timeout, and
    BEGIN IMMEDIATE for writes; PostgreSQL runs at READ COMMITTED, its default."""
    parsed = database_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(parsed, pool_pre_ping=True, query_cache_size=_STATEMENT_CACHE)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(parsed, query_cache_size=_STATEMENT_CACHE)
    _tune_sqlite(engine.sync_engine)
    if parsed.database and parsed.database != ":memory:":
        reader = create_engine(
            parsed.set(drivername="sqlite+pysqlite"),
            connect_args={"check_same_thread": False},  # pooled; one thread at a time
            pool_size=_READERS + 1,  # and the point-read connection
            max_overflow=0,
            query_cache_size=_STATEMENT_CACHE,
        )
        _tune_sqlite(reader, read_only=True)
        _SYNC_READERS[engine] = state = _Reader(reader)
        weakref.finalize(engine, state.dispose)
    return engine


def _tune_sqlite(engine: Engine, *, read_only: bool = False) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    if read_only:
        return  # `_read_in_thread` begins its transactions itself

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A writer takes the write lock up front, so it waits (busy timeout) instead of
        # failing when a read transaction would have to be upgraded.
        immediate = connection.get_execution_options().get(_WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


async def close_engine(engine: AsyncEngine) -> None:
    """Dispose of `engine` and of the SQLite reader opened with it."""
    reader = _SYNC_READERS.pop(engine, None)
    if reader is not None:
        reader.dispose()
    await engine.dispose()


@asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A write transaction, committed when the block ends without an exception."""
    async with engine.connect() as conn:
        await conn.execution_options(**{_WRITE: True})
        async with conn.begin():
            yield conn


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read transaction (one consistent snapshot)."""
    async with engine.connect() as conn, conn.begin():
        yield conn


async def read(engine: AsyncEngine, work: Callable[[Connection], _T], *, point: bool = False) -> _T:
    """`work(conn)` in one read transaction (one consistent snapshot).

    On a SQLite file it runs over a synchronous, query-only connection: in one
    worker-thread call (instead of a hand-off to the driver's thread for every
    statement), or with `point` right here on the event loop. `point` is for work whose
    cost does not grow with the catalogue (lookups by key through unique indexes, tens of
    microseconds), where the hop to a thread would cost more than the work; WAL readers
    do not wait for writers.
    """
    reader = _SYNC_READERS.get(engine)
    if reader is not None:
        if point:
            return _point_read(reader, work)
        return await anyio.to_thread.run_sync(
            _read_in_thread, reader.engine, work, limiter=reader.limiter
        )
    async with reading(engine) as conn:
        return await conn.run_sync(work)


def _read_in_thread(reader: Engine, work: Callable[[Connection], _T]) -> _T:
    with reader.connect() as conn:
        # BEGIN straight on the driver's connection: one snapshot for all of `work`'s
        # statements; closing `conn` rolls it back (the connection is query-only).
        conn.connection.driver_connection.execute("BEGIN")  # type: ignore[union-attr]
        return work(conn)


def _point_read(reader: _Reader, work: Callable[[Connection], _T]) -> _T:
    if reader.point is None:
        reader.point = reader.engine.connect()
    conn = reader.point
    driver: Any = conn.connection.driver_connection
    driver.execute("BEGIN")
    try:
        return work(conn)
    finally:
        if conn.in_transaction():  # `work` ran a statement through SQLAlchemy
            conn.rollback()
        driver.rollback()  # the snapshot (the connection is query-only)


def rows(conn: Connection, statement: Select[Any], params: Mapping[str, Any]) -> Sequence[Any]:
    """All rows of `statement` (positional, as tuples or `Row`s) with `params`.

    Over a synchronous SQLite connection (the reads of `read`), a statement that is built
    once and kept (a module constant or a cached shape: plans live with their statement)
    runs straight through the driver with its SQL compiled once: SQLAlchemy's execution
    context, compiled-cache lookup and result objects cost several times the lookup
    itself, a point read's largest share (issue 14). Values go through the column types'
    processors as SQLAlchemy would (datetimes and booleans on SQLite). Anything else,
    PostgreSQL and the async writers included, goes through `conn.execute`.
    """
    dialect = conn.dialect
    if dialect.driver == "pysqlite":
        plans = _PLANS.get(statement)
        if plans is None:
            plans = _PLANS[statement] = {}
        kind = (type(dialect), dialect.paramstyle)
        if kind in plans:
            plan = plans[kind]
        else:
            plan = plans[kind] = _plan(statement, dialect)
        if plan is not None:
            driver: Any = conn.connection.driver_connection
            values = [params.get(name, default) for name, default in plan.binds]
            for index, convert in plan.converts:
                values[index] = convert(values[index])
            found = driver.execute(plan.sql, values).fetchall()
            if plan.results:
                found = [_processed(row, plan.results) for row in found]
            return found  # type: ignore[no-any-return]
    return conn.execute(statement, params).all()


@dataclass(frozen=True)
class _Plan:
    sql: str
    # (parameter name, its value when not given) in SQL order
    binds: tuple[tuple[str, Any], ...]
    # (parameter index, the type's bind processor) for the parameters that have one
    converts: tuple[tuple[int, Callable[[Any], Any]], ...]
    # (column index, the type's result processor) for the columns that have one
    results: tuple[tuple[int, Callable[[Any], Any]], ...]


# Each statement's plans (by dialect), kept as long as the statement is: module constants
# and the shapes `catalog` and `listing` cache (`lru_cache`, bounded), so the plans are
# bounded by those caches (tests/hostile/test_lists.py).
_PLANS: weakref.WeakKeyDictionary[Select[Any], dict[tuple[type, str], _Plan | None]] = (
    weakref.WeakKeyDictionary()
)


def _plan(statement: Select[Any], dialect: Dialect) -> _Plan | None:
    """The SQL and processors of `statement`, or None when its SQL depends on its values
    (expanding IN lists, literal-execute parameters) and it must go through SQLAlchemy
    each time."""
    compiled = statement.compile(dialect=dialect)
    if (
        compiled.positiontup is None
        or "__[POSTCOMPILE_" in compiled.string  # values rendered into the SQL
        or any(bind.expanding for bind in compiled.binds.values())
    ):
        return None
    binds, converts = [], []
    for index, name in enumerate(compiled.positiontup):
        bind = compiled.binds[name]
        binds.append((name, bind.effective_value))
        convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if convert is not None:
            converts.append((index, convert))
    results = []
    for index, column in enumerate(statement.selected_columns):
        process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if process is not None:
            results.append((index, process))
    return _Plan(compiled.string, tuple(binds), tuple(converts), tuple(results))


def _processed(
    row: tuple[Any, ...], results: tuple[tuple[int, Callable[[Any], Any]], ...]
) -> list[Any]:
    out = list(row)
    for index, process in results:
        out[index] = process(out[index])
    return out


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Apply every Alembic migration the database lacks.

    Processes starting together on one PostgreSQL take turns (an advisory lock held
    until commit), so each finds the schema either untouched or complete.
    """
    where = engine.url.render_as_string(hide_password=True)
    try:
        async with engine.connect():
            pass
    except (DBAPIError, OSError) as exc:  # say which database and why, in one line
        reason = getattr(exc, "orig", None) or exc
        raise DatabaseConfigError(f"cannot open the database {where}: {reason}") from None
    async with engine.connect() as conn:
        await conn.execution_options(**{_WRITE: True})
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        await conn.run_sync(_upgrade)
        await conn.run_sync(_backfill_records)
        await conn.commit()


def _backfill_records(conn: Connection) -> None:
    from osimage.server.db.records import backfill  # records imports the API's rendering

    done = backfill(conn)
    if done:
        log.info("rendered the records of %d image(s)", done)
