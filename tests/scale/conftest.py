"""Fixtures for tests that run several `osimage serve` processes on one database and store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.backends import (
    StoreSpace,
    create_database,
    postgres_available,
    postgres_url,
    require_service,
    store_space,
    swift_aio_env,
)
from tests.support.server import Server

MiB = 1024 * 1024
SWIFT_SEGMENT = MiB + 7  # small segments, so that larger images become several


@dataclass
class Cluster:
    """Two API processes on two ports sharing `database` (name) and `space` (container)."""

    servers: list[Server]
    database: str
    space: StoreSpace


def start_together(servers: list[Server]) -> None:
    """Start the servers at once, so their migrations race (they must take turns)."""
    errors: list[BaseException] = []

    def start(server: Server) -> None:
        try:
            server.start()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(server,)) for server in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        for server in servers:
            server.stop()
        raise errors[0]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_service(postgres_available(), "no PostgreSQL on 127.0.0.1:5432 (or no asyncpg)")
    require_service(bool(swift_aio_env()), "no Swift on loopback (shared/services/swift-aio)")
    database, drop_database = create_database()
    space = store_space("swift", segment_size=str(SWIFT_SEGMENT))
    url = postgres_url(database)
    # one process names the database postgresql://, the other postgres://: both mean asyncpg
    urls = [url, url.replace("postgresql://", "postgres://", 1)]
    servers = [
        Server(
            data_dir=tmp_path / f"host-{index}" / "data",
            args=["--database", database_url, "--store", space.url],
            env=dict(space.env),
        )
        for index, database_url in enumerate(urls)
    ]
    for server in servers:
        server.data_dir.parent.mkdir(parents=True)
    try:
        start_together(servers)
        yield Cluster(servers, database, space)
    finally:
        for server in servers:
            server.stop()
        space.drop()
        drop_database()
