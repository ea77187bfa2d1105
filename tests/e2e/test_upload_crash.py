"""All or nothing across failures: a killed server or a vanished client leaves no partial data.

A crash runs no cleanup code, so the restarted server's startup sweep must find the
image left in `saving`, mark it `killed`, and remove the partial file.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import signal
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.support.http import request as _request
from tests.support.server import Server, start_server

pytestmark = pytest.mark.e2e

CHUNK = b"\x00\x01" * 32768


def _reserve(server: Server, name: str) -> str:
    status, _, body = _request(
        server,
        "POST",
        "/v1/images",
        {
            "x-image-meta-name": name,
            "x-image-meta-disk_format": "raw",
            "x-image-meta-container_format": "bare",
        },
    )
    assert status == 201
    return str(json.loads(body)["image"]["id"])


def _upload(server: Server, name: str, data: bytes) -> str:
    status, _, body = _request(
        server,
        "POST",
        "/v1/images",
        {
            "x-image-meta-name": name,
            "x-image-meta-disk_format": "raw",
            "x-image-meta-container_format": "bare",
            "Content-Type": "application/octet-stream",
        },
        data,
    )
    assert status == 201
    return str(json.loads(body)["image"]["id"])


def _start_streaming(server: Server, image_id: str) -> socket.socket:
    """Open a chunked PUT of image data and send the first chunks; the body never ends."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(
        (
            f"PUT /v1/images/{image_id} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/octet-stream\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    return sock


def _send_chunk(sock: socket.socket) -> None:
    sock.sendall(f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n")


def _partials(images_dir: Path) -> list[str]:
    return sorted(p.name for p in images_dir.iterdir() if p.name.endswith(".partial"))


def _stream_until_partial_grows(sock: socket.socket, images_dir: Path, image_id: str) -> None:
    """Keep sending until the server has written part of the body to the image's partial file."""
    partial = images_dir / f".{image_id}.partial"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _send_chunk(sock)
        if partial.exists() and partial.stat().st_size > len(CHUNK):
            return
        time.sleep(0.01)
    raise AssertionError("the server never started writing the upload")


def _status(server: Server, image_id: str) -> str | None:
    _, headers, _ = _request(server, "HEAD", f"/v1/images/{image_id}")
    return headers.get("x-image-meta-status")


@pytest.mark.file_store  # reads the partial files of the file store
def test_sigkill_mid_upload_then_restart_kills_the_image_and_removes_partial_data(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path)
    images_dir = server.data_dir / "images"
    try:
        keep_data = bytes(range(256)) * 400
        keep = _upload(server, "survivor", keep_data)
        doomed = _reserve(server, "doomed")
        sock = _start_streaming(server, doomed)
        try:
            _stream_until_partial_grows(sock, images_dir, doomed)
            assert _status(server, doomed) == "saving"
            server.kill()
        finally:
            sock.close()
        assert _partials(images_dir), "the crash left a partial file for the sweep to find"

        server.start()
        assert _status(server, doomed) == "killed"
        assert _partials(images_dir) == []
        assert not (images_dir / doomed).exists()
        status, headers, body = _request(server, "GET", f"/v1/images/{keep}")
        assert status == 200
        assert hashlib.md5(body).hexdigest() == hashlib.md5(keep_data).hexdigest()
        assert headers["x-image-meta-checksum"] == hashlib.md5(keep_data).hexdigest()
        # a killed image takes no data again
        assert (
            _request(
                server,
                "PUT",
                f"/v1/images/{doomed}",
                {"Content-Type": "application/octet-stream"},
                b"x",
            )[0]
            == 409
        )
    finally:
        server.stop()


@pytest.mark.file_store  # reads the partial files of the file store
def test_client_vanishing_mid_upload_kills_the_image_and_leaves_nothing(server: Server) -> None:
    images_dir = server.data_dir / "images"
    image_id = _reserve(server, "abandoned")
    sock = _start_streaming(server, image_id)
    try:
        _stream_until_partial_grows(sock, images_dir, image_id)
    finally:
        sock.close()
    deadline = time.monotonic() + 30
    while _status(server, image_id) == "saving" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _status(server, image_id) == "killed"
    assert not (images_dir / image_id).exists()
    assert f".{image_id}.partial" not in _partials(images_dir)


def test_sigterm_lets_an_upload_in_flight_finish(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        image_id = _reserve(server, "graceful")
        sock = _start_streaming(server, image_id)
        with sock:
            for _ in range(8):
                _send_chunk(sock)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            for _ in range(8):
                _send_chunk(sock)
            sock.sendall(b"0\r\n\r\n")
            answer = sock.makefile("rb").readline()
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        # uvicorn re-raises the signal after its clean shutdown
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.log()
        server.start()
        status, headers, body = _request(server, "GET", f"/v1/images/{image_id}")
        assert status == 200
        assert headers["x-image-meta-status"] == "active"
        assert body == CHUNK * 16
    finally:
        server.stop()


def test_upload_and_download_stream_without_holding_the_image(tmp_path: Path) -> None:
    """Invariant 1: a server holding the whole image would grow by its size; this one does not."""
    size = 96 * 2**20
    server = start_server(tmp_path)
    try:
        assert server.proc is not None
        proc = psutil.Process(server.proc.pid)
        baseline = proc.memory_info().rss
        peak = baseline
        done = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, proc.memory_info().rss)
                done.wait(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            image_id = _reserve(server, "big")
            sock = _start_streaming(server, image_id)
            with sock:
                block = b"m" * 2**20
                for _ in range(size // len(block)):
                    sock.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                sock.sendall(b"0\r\n\r\n")
                assert sock.makefile("rb").readline().startswith(b"HTTP/1.1 200 ")
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            conn.request("GET", f"/v1/images/{image_id}")
            resp = conn.getresponse()
            received = 0
            while chunk := resp.read(2**20):
                received += len(chunk)
            conn.close()
        finally:
            done.set()
            watcher.join()
        assert received == size
        assert peak - baseline < size // 3, f"server grew by {(peak - baseline) >> 20} MiB"
    finally:
        server.stop()
