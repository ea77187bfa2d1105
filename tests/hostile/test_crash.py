"""Crash and restart: SIGKILL at each stage of an upload and a delete, then a restart,
leaves no data for a `killed` or `deleted` image; one data dir serves one instance; a
failed scrubber delete is retried."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hostile.test_copies import SLOW, copy, image_id_of
from tests.hostile.test_uploads import (
    open_put,
    reserve,
    send_chunk,
    status_of,
    stored_bytes,
)
from tests.support.http import request
from tests.support.mounts import read_only
from tests.support.polling import wait_until
from tests.support.server import Server, free_port, start_server
from tests.support.source import serve_source
from tests.support.stored import store_kind, stored_for

pytestmark = pytest.mark.e2e


def upload(server: Server, data: bytes) -> str:
    image_id = reserve(server)
    status, _, body = request(
        server,
        "PUT",
        f"/v1/images/{image_id}",
        {"content-type": "application/octet-stream"},
        data,
    )
    assert status == 200, body
    return image_id


def embedded(server: Server) -> sqlite3.Connection:
    """The server's SQLite catalogue (the embedded default only)."""
    if any(arg == "--database" for arg in server.args):
        pytest.skip("edits the embedded SQLite catalogue")
    return sqlite3.connect(server.data_dir / "osimage.db")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path, "--upload-lease", "300")
    yield srv
    srv.close()


def test_a_restart_on_another_port_kills_its_interrupted_upload_at_once(server: Server) -> None:
    image_id = reserve(server)
    sock = open_put(server, image_id)
    try:
        send_chunk(sock, b"k" * 200_000)
        wait_until(lambda: status_of(server, image_id) == "saving", "the upload started")
        if store_kind(server) == "file":
            wait_until(lambda: stored_bytes(server, image_id) == 200_000, "data stored")
        server.kill()
    finally:
        sock.close()
    server.port = free_port()  # not the port it had: the node id must not depend on it
    server.start()
    # at once: the lease (300 s) is not waited for, as the upload was this instance's own
    assert status_of(server, image_id) == "killed"
    wait_until(lambda: stored_for(server, image_id) == [], "partial data removed")


def test_a_second_instance_on_data_in_use_is_refused(server: Server) -> None:
    if store_kind(server) != "file" and "--database" in server.args:
        pytest.skip("the lock guards the embedded SQLite database and the file store")
    command = [
        sys.executable, "-m", "osimage", "serve", "--port", str(free_port()),
        "--data-dir", str(server.data_dir), *server.args,
    ]  # fmt: skip
    second = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=server_env(server)
    )
    assert second.returncode != 0
    assert "another osimage serve is using this data" in second.stderr
    assert status_of(server, reserve(server)) == "queued"  # the first one is untouched
    server.kill()  # the kernel releases the lock of a killed instance
    server.start()


def server_env(server: Server) -> dict[str, str]:
    return {**os.environ, **server.env}


@pytest.mark.file_store
def test_a_delete_interrupted_before_its_data_went_is_finished_at_restart(
    server: Server,
) -> None:
    image_id = upload(server, b"d" * 100_000)
    assert stored_for(server, image_id) == [image_id]
    server.kill()
    with embedded(server) as db:  # what DELETE commits before it removes the data
        db.execute("UPDATE images SET status = 'deleted', deleted = 1 WHERE id = ?", (image_id,))
    server.start()
    assert stored_for(server, image_id) == []
    with embedded(server) as db:
        assert db.execute("SELECT location FROM images WHERE id = ?", (image_id,)).fetchone() == (
            None,
        )


@pytest.mark.file_store
def test_a_crash_after_the_blob_is_renamed_before_activation_leaves_nothing(
    server: Server,
) -> None:
    image_id = reserve(server)
    sock = open_put(server, image_id)
    try:
        send_chunk(sock, b"r" * 150_000)
        wait_until(lambda: stored_bytes(server, image_id) == 150_000, "data stored")
        server.kill()
    finally:
        sock.close()
    images = server.data_dir / "images"
    (images / f".{image_id}.partial").rename(images / image_id)  # the rename had happened
    assert stored_for(server, image_id) == [image_id]
    server.start()
    assert status_of(server, image_id) == "killed"
    assert stored_for(server, image_id) == []


@pytest.mark.file_store
def test_a_scrubber_delete_that_fails_is_retried(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--delayed-delete", "--scrub-interval", "0.5")
    try:
        image_id = upload(server, b"p" * 50_000)
        assert stored_for(server, image_id) == [image_id]
        with read_only(server.data_dir / "images") as frozen:
            status, _, _ = request(server, "DELETE", f"/v1/images/{image_id}")
            assert status == 200
            wait_until(
                lambda: "scrubber could not remove the data" in server.log(), "a failed scrub"
            )
            assert status_of(server, image_id) == "pending_delete"
            assert stored_for(server, image_id) == [image_id]
            frozen.release()
            wait_until(lambda: stored_for(server, image_id) == [], "the retry removed it")
        wait_until(lambda: status_of(server, image_id) == "deleted", "deleted at last")
    finally:
        server.close()


def test_a_copy_killed_mid_transfer_leaves_nothing_after_a_restart(tmp_path: Path) -> None:
    with serve_source() as source:
        source.scripts["/slow"] = SLOW
        server = start_server(tmp_path, "--allow-source-network", "127.0.0.1/32")
        try:
            status, body = copy(server, source.url("/slow"))
            assert status == 201, body
            image_id = image_id_of(body)
            wait_until(lambda: source.served > 300_000, "data copied")
            if store_kind(server) == "file":  # the data existed
                wait_until(lambda: stored_bytes(server, image_id) > 0, "partial data stored")
            server.kill()
            server.start()
            assert status_of(server, image_id) == "killed"
            wait_until(lambda: stored_for(server, image_id) == [], "partial data removed")
        finally:
            server.close()
