"""Two `osimage serve` instances on one PostgreSQL database and one Swift container: a
copy is cancelled by a DELETE sent to the other instance, and the storage quota holds
for uploads of one project spread over both."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.hostile.test_copies import SLOW, copy, image_id_of
from tests.hostile.test_uploads import MiB, open_put, reserve, status_of
from tests.support.backends import (
    create_database,
    postgres_available,
    postgres_url,
    require_service,
    store_space,
    swift_aio_env,
)
from tests.support.http import request
from tests.support.polling import wait_until
from tests.support.server import Server, tokens_file
from tests.support.source import Source, serve_source
from tests.support.stored import stored_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.swift]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[list[Server]]:
    require_service(postgres_available(), "no PostgreSQL on 127.0.0.1:5432 (or no asyncpg)")
    require_service(bool(swift_aio_env()), "no Swift on loopback (shared/services/swift-aio)")
    database, drop_database = create_database()
    space = store_space("swift")
    tokens = tokens_file(tmp_path)
    servers = []
    for node in ("a", "b"):
        (tmp_path / node).mkdir()
        servers.append(
            Server(
                data_dir=tmp_path / node / "data",
                args=[
                    "--database", postgres_url(database), "--store", space.url,
                    "--auth", "tokens", "--tokens-file", str(tokens),
                    "--allow-source-network", "127.0.0.1/32",
                    "--user-storage-quota", "10MB",
                ],
                env=dict(space.env),
            )
        )  # fmt: skip
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()
        space.drop()
        drop_database()


@pytest.fixture
def source() -> Iterator[Source]:
    with serve_source() as src:
        # within the 10 MB quota: the copy reserves what the source declares
        src.scripts["/slow"] = replace(SLOW, head_length=str(8 * MiB), get_length=str(8 * MiB))
        yield src


def test_a_delete_through_another_instance_cancels_the_copy(
    pair: list[Server], source: Source
) -> None:
    copier, other = pair
    status, body = copy(copier, source.url("/slow"), "alice-token")
    assert status == 201, body
    image_id = image_id_of(body)
    wait_until(lambda: source.served > 500_000, "data copied")
    assert status_of(other, image_id, "alice-token") == "saving"
    status, _, _ = request(
        other, "DELETE", f"/v1/images/{image_id}", {"x-auth-token": "alice-token"}
    )
    assert status == 200
    # the copier reads the status every 5 s of transfer, then stops and cleans up
    wait_until(lambda: source.active == 0, "the copier stopped", timeout=30)
    wait_until(lambda: stored_for(copier, image_id) == [], "partial data removed")
    assert f"copy of image {image_id} cancelled" in copier.log()


def test_the_quota_holds_for_uploads_spread_over_two_instances(pair: list[Server]) -> None:
    token = "alice-token"
    size = 4 * MiB
    targets = [pair[0], pair[1], pair[0], pair[1]]
    ids = [reserve(server, token) for server in targets]
    sockets = [
        open_put(server, image_id, length=size, token=token)
        for server, image_id in zip(targets, ids, strict=True)
    ]
    answers: list[bytes] = []
    try:
        for sock in sockets:  # four declared 4 MiB uploads, 10 MiB of quota, two hosts
            with contextlib.suppress(OSError):
                sock.sendall(b"q" * MiB)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.sendall(b"q" * (3 * MiB))
            answers.append(sock.recv(65536)[:12])
    finally:
        for sock in sockets:
            sock.close()
    assert sorted(answer[9:12] for answer in answers) == [b"200", b"200", b"413", b"413"]
    statuses = sorted(status_of(pair[0], image_id, token) for image_id in ids)
    assert statuses == ["active", "active", "killed", "killed"]
