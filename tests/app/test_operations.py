"""The health check's probes against real databases and a real store directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from osimage.server.db.engine import close_engine, migrate, open_engine
from osimage.server.operations.healthcheck import HealthCheck
from osimage.server.stores.filesystem import FilesystemStore
from tests.support.server import free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_probes_pass_then_a_vanished_store_fails(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await migrate(engine)
    root = tmp_path / "images"
    store = FilesystemStore.from_url(root.as_uri())
    try:
        cached = HealthCheck(engine, store, disable_file=None, cache_seconds=3600, timeout=5)
        fresh = HealthCheck(engine, store, disable_file=None, cache_seconds=0, timeout=5)
        assert [(r.check, r.healthy) for r in await cached.reasons()] == [
            ("Database", True),
            ("Store", True),
        ]
        shutil.rmtree(root)
        # within its cache interval the first check answers from its last probe
        assert all(r.healthy for r in await cached.reasons())
        verdicts = {r.check: (r.healthy, r.reason) for r in await fresh.reasons()}
        assert verdicts == {"Database": (True, "OK"), "Store": (False, "STORE UNREACHABLE")}
    finally:
        await store.aclose()
        await close_engine(engine)


async def test_an_unreachable_database_is_unhealthy(tmp_path: Path) -> None:
    """A PostgreSQL URL to a loopback port nothing listens on."""
    engine = open_engine(f"postgresql://osimage@127.0.0.1:{free_port()}/nothing")
    store = FilesystemStore.from_url((tmp_path / "images").as_uri())
    try:
        check = HealthCheck(engine, store, disable_file=None, cache_seconds=0, timeout=5)
        verdicts = {r.check: (r.healthy, r.reason) for r in await check.reasons()}
        healthy, reason = verdicts["Database"]
        assert not healthy
        assert reason.startswith("DATABASE UNREACHABLE")
        assert verdicts["Store"] == (True, "OK")
    finally:
        await store.aclose()
        await close_engine(engine)


async def test_the_disable_file_wins(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    store = FilesystemStore.from_url((tmp_path / "images").as_uri())
    drain = tmp_path / "drain"
    try:
        check = HealthCheck(engine, store, disable_file=drain, cache_seconds=0, timeout=5)
        assert all(r.healthy for r in await check.reasons())
        drain.touch()
        reasons = await check.reasons()
        assert [(r.check, r.healthy, r.reason) for r in reasons] == [
            ("DisableByFile", False, "DISABLED BY FILE")
        ]
    finally:
        await store.aclose()
        await close_engine(engine)
