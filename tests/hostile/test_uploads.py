"""Hostile uploads against a real server: stalled bodies, many of them, and a project's
concurrent uploads against its storage quota."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.support.http import request
from tests.support.mounts import read_only, small_tmpfs
from tests.support.polling import wait_until as wait_until  # the v2 hostile tests take it from here
from tests.support.server import Server, start_server
from tests.support.stored import store_kind, stored_for, stored_names

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def reserve(server: Server, token: str | None = None) -> str:
    headers = {
        "x-image-meta-name": "hostile",
        "x-image-meta-disk_format": "raw",
        "x-image-meta-container_format": "bare",
    }
    if token:
        headers["x-auth-token"] = token
    status, _, body = request(server, "POST", "/v1/images", headers)
    assert status == 201, body
    return str(json.loads(body)["image"]["id"])


def status_of(server: Server, image_id: str, token: str | None = None) -> str:
    headers = {"x-auth-token": token} if token else {}
    _, answer, _ = request(server, "HEAD", f"/v1/images/{image_id}", headers)
    return answer.get("x-image-meta-status", "")


def open_put(
    server: Server, image_id: str, *, length: int | None = None, token: str | None = None
) -> socket.socket:
    """Start a PUT of image data (chunked unless `length`); the caller sends the body."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    head = (
        f"PUT /v1/images/{image_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/octet-stream\r\n"
    )
    head += (
        f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    )
    if token:
        head += f"X-Auth-Token: {token}\r\n"
    sock.sendall((head + "\r\n").encode())
    return sock


def send_chunk(sock: socket.socket, data: bytes) -> None:
    sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def stored_bytes(server: Server, image_id: str) -> int:
    """Bytes the file store holds for `image_id`, partial file included."""
    root = server.data_dir / "images"
    return sum(p.stat().st_size for p in root.iterdir() if image_id in p.name)


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path, "--body-timeout", "2")
    yield server
    server.close()


def test_a_stalled_upload_is_killed_its_data_removed_and_its_connection_closed(
    impatient: Server,
) -> None:
    image_id = reserve(impatient)
    sock = open_put(impatient, image_id)
    try:
        send_chunk(sock, b"x" * 300_000)
        wait_until(lambda: status_of(impatient, image_id) == "saving", "the upload started")
        if store_kind(impatient) == "file":  # the data existed: handed on though the client stalls
            wait_until(lambda: stored_bytes(impatient, image_id) == 300_000, "data stored")
        answer = read_all(sock)  # the server answers and closes: the socket is not held
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body_timeout" in answer
    assert b"\r\nconnection: close\r\n" in answer.lower()  # closed with the answer, not idle later
    assert status_of(impatient, image_id) == "killed"
    wait_until(lambda: stored_for(impatient, image_id) == [], "partial data removed")


@pytest.mark.file_store  # reads the file store; S3 buffers a whole part per upload by protocol
def test_stalled_uploads_pin_no_batch_and_keep_the_server_small(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    assert server.proc is not None
    process = psutil.Process(server.proc.pid)
    count, sent = 60, 900 * 1024  # just under the 1 MiB batch: the worst case before
    sockets = []
    try:
        ids = [reserve(server) for _ in range(count)]
        before = process.memory_info().rss
        for image_id in ids:
            sock = open_put(server, image_id)
            send_chunk(sock, b"s" * sent)
            sockets.append(sock)
        # every byte reached the store while its client stalls: no batch holds it
        wait_until(
            lambda: all(stored_bytes(server, image_id) == sent for image_id in ids),
            "all stalled data stored",
            timeout=60,
        )
        grown = process.memory_info().rss - before
        print(f"RSS growth with {count} uploads stalled at {sent} bytes: {grown / MiB:.1f} MiB")
        # holding the batches grows it by all that was sent (57 MiB measured); sockets,
        # tasks and the allocator's leftovers by 10-25 MiB
        assert grown < 0.75 * count * sent, f"{grown / MiB:.1f} MiB"
    finally:
        for sock in sockets:
            sock.close()
        server.close()


@pytest.fixture
def quota_server(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path, "--user-storage-quota", "10MB", auth="tokens")
    yield server
    server.close()


def test_concurrent_uploads_of_a_project_never_hold_more_than_its_quota(
    quota_server: Server,
) -> None:
    token = "alice-token"
    size = 4 * MiB
    ids = [reserve(quota_server, token) for _ in range(4)]
    sockets = [open_put(quota_server, image_id, length=size, token=token) for image_id in ids]
    try:
        refused, running = [], []
        for image_id, sock in zip(ids, sockets, strict=True):
            try:
                sock.sendall(b"q" * (3 * MiB))  # all four in flight at once
                running.append((image_id, sock))
            except OSError:  # refused before its data: the server closed the socket
                refused.append(image_id)
        for image_id, sock in running[:]:
            sock.settimeout(0.5)
            try:
                if sock.recv(65536).startswith(b"HTTP/1.1 413"):
                    refused.append(image_id)
                    running.remove((image_id, sock))
            except TimeoutError:
                pass
            sock.settimeout(60)
        assert len(refused) == 2, refused
        # two uploads hold 3 MiB each and their reservations: the quota is never passed
        held = sum(len(stored_for(quota_server, image_id)) for image_id in ids)
        assert held <= 2
        for _, sock in running:
            sock.sendall(b"q" * MiB)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        for sock in sockets:
            sock.close()
    statuses = sorted(status_of(quota_server, image_id, token) for image_id in ids)
    assert statuses == ["active", "active", "killed", "killed"]
    for image_id in refused:
        assert stored_for(quota_server, image_id) == []


def test_chunked_uploads_over_the_quota_fail_without_passing_it(quota_server: Server) -> None:
    """Uploads of unknown size reserve as they go: the third finds no room left."""
    token = "alice-token"
    ids = [reserve(quota_server, token) for _ in range(3)]
    sockets = [open_put(quota_server, image_id, token=token) for image_id in ids]
    answers: dict[str, bytes] = {}
    try:
        for _ in range(4):  # 4 MiB each, interleaved: all three in flight at once
            for image_id, sock in zip(ids, sockets, strict=True):
                if image_id in answers:
                    continue
                try:
                    send_chunk(sock, b"c" * MiB)
                except OSError:
                    answers[image_id] = read_all(sock)
        for image_id, sock in zip(ids, sockets, strict=True):
            if image_id not in answers:
                with contextlib.suppress(OSError):
                    sock.sendall(b"0\r\n\r\n")
                answers[image_id] = sock.recv(65536)
    finally:
        for sock in sockets:
            sock.close()
    codes = sorted(answer[9:12].decode() for answer in answers.values())
    assert "413" in codes, codes
    assert "200" in codes, codes
    active = [i for i in ids if status_of(quota_server, i, token) == "active"]
    assert len(active) * 4 * MiB <= 10 * MiB
    names = stored_names(quota_server)
    assert all(not any(i in name for name in names) for i in ids if i not in active)


def put_data(server: Server, image_id: str, data: bytes) -> tuple[int, bytes]:
    status, _, body = request(
        server,
        "PUT",
        f"/v1/images/{image_id}",
        {"content-type": "application/octet-stream"},
        data,
    )
    return status, body


@pytest.mark.file_store
def test_a_full_disk_during_an_upload_is_413_and_leaves_nothing(tmp_path: Path) -> None:
    images = tmp_path / "data" / "images"
    with small_tmpfs(images, "2m"):
        server = start_server(tmp_path)
        try:
            kept = reserve(server)
            assert put_data(server, kept, b"k" * MiB)[0] == 200
            free_before = os.statvfs(images).f_bavail
            image_id = reserve(server)
            status, body = put_data(server, image_id, b"f" * (4 * MiB))
            assert status == 413, body
            assert b"storage media is full" in body  # the partial filled the disk
            assert status_of(server, image_id) == "killed"
            assert stored_names(server) == [kept]
            assert os.statvfs(images).f_bavail == free_before  # its bytes were given back
            assert put_data(server, reserve(server), b"s" * 1000)[0] == 200  # still works
        finally:
            server.close()


@pytest.mark.file_store
def test_an_unwritable_store_during_an_upload_is_503_and_kills_the_image(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path)
    try:
        kept = reserve(server)
        assert put_data(server, kept, b"k" * 1000)[0] == 200
        image_id = reserve(server)
        with read_only(server.data_dir / "images"):
            status, body = put_data(server, image_id, b"u" * 100_000)
        assert status == 503, body
        assert b"image store" in body
        assert status_of(server, image_id) == "killed"
        assert stored_names(server) == [kept]
        assert "Traceback" not in server.log()
    finally:
        server.close()
