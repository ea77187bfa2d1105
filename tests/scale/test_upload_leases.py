"""Upload leases: a restart kills only the uploads stranded for the restarting host.

Two `osimage serve` instances (node ids `a` and `b`) share one PostgreSQL database and
one Swift container; a third group of tests checks `leases.stranded` on both databases.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import anyio
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from osimage.server.db import leases
from osimage.server.db.engine import close_engine, migrate, open_engine, writing
from osimage.server.db.tables import images
from tests.scale.conftest import SWIFT_SEGMENT, start_together
from tests.support.backends import (
    create_database,
    postgres_available,
    postgres_url,
    require_service,
    store_space,
    swift_aio_env,
)
from tests.support.http import request as _request
from tests.support.server import Server

LEASE = "2"  # seconds: renewed every 2/3 s, stale after 2 s
CHUNK = bytes(range(256)) * 256  # 64 KiB


def _reserve(server: Server) -> str:
    status, _, body = _request(
        server,
        "POST",
        "/v1/images",
        {
            "x-image-meta-name": "leased",
            "x-image-meta-disk_format": "raw",
            "x-image-meta-container_format": "bare",
        },
    )
    assert status == 201
    return str(json.loads(body)["image"]["id"])


def _status(server: Server, image_id: str) -> str | None:
    return _request(server, "HEAD", f"/v1/images/{image_id}")[1].get("x-image-meta-status")


def _wait_for(server: Server, image_id: str, status: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while _status(server, image_id) != status and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _status(server, image_id) == status


class SlowUpload(threading.Thread):
    """PUT `chunks` chunks of image data through `server`, sleeping between them."""

    def __init__(self, server: Server, image_id: str, chunks: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.server, self.image_id, self.chunks, self.pause = server, image_id, chunks, pause
        self.answer: int | None = None
        self.error: BaseException | None = None

    def body(self) -> Iterator[bytes]:
        for _ in range(self.chunks):
            yield CHUNK
            time.sleep(self.pause)

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        try:
            conn.request(
                "PUT",
                f"/v1/images/{self.image_id}",
                body=self.body(),
                headers={"Content-Type": "application/octet-stream"},
                encode_chunked=True,
            )
            response = conn.getresponse()
            response.read()
            self.answer = response.status
        except BaseException as error:  # a killed server: the test looks at the image
            self.error = error
        finally:
            conn.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[list[Server]]:
    """Servers `a` and `b` over one PostgreSQL database and one Swift container."""
    require_service(postgres_available(), "no PostgreSQL on 127.0.0.1:5432 (or no asyncpg)")
    require_service(bool(swift_aio_env()), "no Swift on loopback (shared/services/swift-aio)")
    database, drop_database = create_database()
    space = store_space("swift", segment_size=str(SWIFT_SEGMENT))
    servers = []
    for node in ("a", "b"):
        (tmp_path / node).mkdir()
        servers.append(
            Server(
                data_dir=tmp_path / node / "data",
                args=[
                    "--database",
                    postgres_url(database),
                    "--store",
                    space.url,
                    "--node-id",
                    node,
                    "--upload-lease",
                    LEASE,
                ],
                env=dict(space.env),
            )
        )
    try:
        start_together(servers)
        yield servers
    finally:
        for server in servers:
            server.stop()
        space.drop()
        drop_database()


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.swift
def test_restarting_one_host_leaves_the_other_hosts_upload_alone(pair: list[Server]) -> None:
    a, b = pair
    image_id = _reserve(a)
    upload = SlowUpload(a, image_id, chunks=40, pause=0.15)  # ~6 s: three leases long
    upload.start()
    _wait_for(b, image_id, "saving")
    b.restart()
    assert _status(b, image_id) == "saving"
    upload.join(timeout=60)
    assert upload.error is None
    assert upload.answer == 200
    status, headers, body = _request(b, "GET", f"/v1/images/{image_id}")
    assert status == 200
    expected = hashlib.md5(CHUNK * 40).hexdigest()
    assert headers["x-image-meta-status"] == "active"
    assert headers["x-image-meta-checksum"] == expected
    assert hashlib.md5(body).hexdigest() == expected


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.swift
def test_an_upload_on_a_dead_host_is_killed_once_its_lease_is_stale(pair: list[Server]) -> None:
    a, b = pair
    image_id = _reserve(a)
    upload = SlowUpload(a, image_id, chunks=1000, pause=0.05)
    upload.start()
    _wait_for(b, image_id, "saving")
    a.kill()
    upload.join(timeout=60)
    _wait_for(b, image_id, "killed", within=10 * float(LEASE))
    assert _request(b, "GET", f"/v1/images/{image_id}")[0] == 404
    # the renew loop logs after it has also removed the dead upload's data: wait for it
    deadline = time.monotonic() + 30
    while "stale upload(s) killed" not in b.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "stale upload(s) killed" in b.log()
    # killed stays killed: no data can be uploaded into it any more
    data = {"Content-Type": "application/octet-stream"}
    assert _request(b, "PUT", f"/v1/images/{image_id}", data, b"x")[0] == 409


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.swift
def test_a_host_restarted_after_a_crash_kills_its_own_upload_at_once(tmp_path: Path) -> None:
    require_service(postgres_available(), "no PostgreSQL on 127.0.0.1:5432 (or no asyncpg)")
    require_service(bool(swift_aio_env()), "no Swift on loopback (shared/services/swift-aio)")
    database, drop_database = create_database()
    space = store_space("swift", segment_size=str(SWIFT_SEGMENT))
    a = Server(
        data_dir=tmp_path / "data",
        args=["--database", postgres_url(database), "--store", space.url, "--node-id", "a"],
        env=dict(space.env),
    )
    try:
        a.start()
        image_id = _reserve(a)
        upload = SlowUpload(a, image_id, chunks=1000, pause=0.05)
        upload.start()
        _wait_for(a, image_id, "saving")
        a.kill()
        upload.join(timeout=60)
        a.start()  # the lease (300 s by default) is fresh, but it is a's own
        assert _status(a, image_id) == "killed"
        assert "crash sweep: 1 image(s) killed" in a.log()
    finally:
        a.stop()
        space.drop()
        drop_database()


# -- leases.stranded on both databases -----------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'leases.db'}"
        return
    require_service(postgres_available(), "no PostgreSQL on 127.0.0.1:5432 (or no asyncpg)")
    name, drop = create_database()
    try:
        yield postgres_url(name)
    finally:
        drop()


async def _image(engine: AsyncEngine, image_id: str, status: str = "saving") -> None:
    when = datetime(2026, 1, 1)
    async with writing(engine) as conn:
        await conn.execute(
            insert(images).values(
                id=image_id,
                status=status,
                min_disk=0,
                min_ram=0,
                is_public=False,
                protected=False,
                deleted=False,
                created_at=when,
                updated_at=when,
                location_is_external=False,
            )
        )


def test_stranded_picks_own_unleased_and_stale_uploads_only(database: str) -> None:
    now = datetime(2026, 11, 27, 9, 0, 0)
    stale_before = now - timedelta(seconds=300)

    async def main() -> tuple[set[str], set[str]]:
        engine = open_engine(database)
        try:
            await migrate(engine)
            leased = {
                "own": ("a", now),
                "own-old": ("a", now - timedelta(hours=1)),
                "other-fresh": ("b", now - timedelta(seconds=299)),
                "other-stale": ("b", now - timedelta(seconds=301)),
                "done": ("a", now),  # active: never stranded
            }
            for key in (*leased, "unleased"):
                await _image(engine, _id(key), "active" if key == "done" else "saving")
            async with writing(engine) as conn:
                for key, (node, seen) in leased.items():
                    await leases.claim(conn, _id(key), node, seen)
            async with writing(engine) as conn:
                stranded = {i for i, _ in await leases.stranded(conn, "a", stale_before)}
                stale = {i for i, _ in await leases.stale(conn, stale_before)}
            return stranded, stale
        finally:
            await close_engine(engine)

    stranded, stale = anyio.run(main)
    assert stranded == {_id("own"), _id("own-old"), _id("other-stale"), _id("unleased")}
    assert stale == {_id("own-old"), _id("other-stale")}


def test_kill_spares_a_lease_renewed_by_another_node(database: str) -> None:
    now = datetime(2026, 11, 27, 9, 0, 0)
    stale_before = now - timedelta(seconds=300)

    async def main() -> tuple[bool, bool, bool]:
        engine = open_engine(database)
        try:
            await migrate(engine)
            for key in ("mine", "theirs"):
                await _image(engine, _id(key))
            async with writing(engine) as conn:
                await leases.claim(conn, _id("mine"), "a", now)
                await leases.claim(conn, _id("theirs"), "b", now - timedelta(hours=1))
                await leases.renew(conn, [_id("theirs")], "b", now)  # b is alive after all
                killed_theirs = await leases.kill(
                    conn, _id("theirs"), now, stale_before=stale_before, node="a"
                )
                killed_mine = await leases.kill(
                    conn, _id("mine"), now, stale_before=stale_before, node="a"
                )
                again = await leases.kill(conn, _id("mine"), now, stale_before=stale_before)
            return killed_theirs, killed_mine, again
        finally:
            await close_engine(engine)

    assert anyio.run(main) == (False, True, False)


def _id(key: str) -> str:
    digest = hashlib.md5(key.encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
