"""`osimage serve` on Swift and on S3: the stores behind the real API, over loopback.

Uploads, downloads and deletes go through a real server process; what the store holds
is then listed straight from Swift or S3, so "nothing left behind" is seen at the source.
"""

from __future__ import annotations

import hashlib
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from osimage.server.stores.swift import SEGMENTS_SUFFIX
from tests.e2e.api_client import Api, meta
from tests.support.backends import s3_client
from tests.support.server import Server, start_server

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
SWIFT_SEGMENT = MiB + 7
S3_PART = 5 * MiB
BLOCK = bytes(range(256)) * 256  # 64 KiB


@dataclass
class Served:
    server: Server
    api: Api
    contents: Callable[[], list[str]]  # everything the store holds, partial uploads included


def _swift_contents(env: dict[str, str], container: str) -> Callable[[], list[str]]:
    def contents() -> list[str]:
        auth = httpx.get(
            env["ST_AUTH"], headers={"x-auth-user": env["ST_USER"], "x-auth-key": env["ST_KEY"]}
        )
        names: list[str] = []
        for name in (container, container + SEGMENTS_SUFFIX):
            answer = httpx.get(
                f"{auth.headers['x-storage-url']}/{name}",
                headers={"x-auth-token": auth.headers["x-auth-token"]},
                params={"format": "json"},
            )
            if answer.status_code != 404:
                names += [f"{name}/{entry['name']}" for entry in answer.json()]
        return names

    return contents


def _s3_contents(env: dict[str, str], bucket: str) -> Callable[[], list[str]]:
    def contents() -> list[str]:
        client = s3_client(env)
        try:
            objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
            uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        except client.exceptions.NoSuchBucket:
            return []
        finally:
            client.close()
        return [entry["Key"] for entry in objects] + [f"upload {u['Key']}" for u in uploads]

    return contents


@pytest.fixture(
    params=[
        pytest.param("swift", marks=pytest.mark.swift),
        pytest.param("s3", marks=pytest.mark.s3),
    ]
)
def served(
    request: pytest.FixtureRequest, swift_aio: dict[str, str], tmp_path: Path
) -> Iterator[Served]:
    name = f"osimage-served-{uuid.uuid4().hex[:12]}"
    if request.param == "swift":
        store = f"swift://{name}?segment_size={SWIFT_SEGMENT}&sweep_after=0"
        env = {
            "OSIMAGE_SWIFT_AUTH_URL": swift_aio["ST_AUTH"],
            "OSIMAGE_SWIFT_USER": swift_aio["ST_USER"],
            "OSIMAGE_SWIFT_KEY": swift_aio["ST_KEY"],
        }
        contents = _swift_contents(swift_aio, name)
    else:
        store = (
            f"s3://{name}?endpoint={swift_aio['S3_ENDPOINT_URL']}&region=us-east-1"
            f"&part_size={S3_PART}&sweep_after=0"
        )
        env = {
            "AWS_ACCESS_KEY_ID": swift_aio["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": swift_aio["AWS_SECRET_ACCESS_KEY"],
        }
        contents = _s3_contents(swift_aio, name)
    server = start_server(tmp_path, "--store", store, environ=env)
    try:
        yield Served(server, Api(server.url), contents)
    finally:
        server.stop()
        _drop(request.param, swift_aio, name)


def _drop(kind: str, env: dict[str, str], name: str) -> None:
    if kind == "s3":
        client = s3_client(env)
        try:
            for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
                client.abort_multipart_upload(
                    Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            for entry in client.list_objects_v2(Bucket=name).get("Contents", []):
                client.delete_object(Bucket=name, Key=entry["Key"])
            client.delete_bucket(Bucket=name)
        except client.exceptions.NoSuchBucket:
            pass
        finally:
            client.close()
        return
    auth = httpx.get(
        env["ST_AUTH"], headers={"x-auth-user": env["ST_USER"], "x-auth-key": env["ST_KEY"]}
    )
    url, token = auth.headers["x-storage-url"], auth.headers["x-auth-token"]
    for container in (name, name + SEGMENTS_SUFFIX):
        listing = httpx.get(
            f"{url}/{container}", headers={"x-auth-token": token}, params={"format": "json"}
        )
        if listing.status_code == 404:
            continue
        for entry in listing.json():
            httpx.delete(f"{url}/{container}/{entry['name']}", headers={"x-auth-token": token})
        httpx.delete(f"{url}/{container}", headers={"x-auth-token": token})


def blocks(count: int) -> Iterator[bytes]:
    for _ in range(count):
        yield BLOCK


def md5_of_blocks(count: int) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    for block in blocks(count):
        digest.update(block)
    return digest.hexdigest()


def _open_chunked_put(server: Server, image_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(
        (
            f"PUT /v1/images/{image_id} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    return sock


def _send(sock: socket.socket, count: int) -> None:
    for block in blocks(count):
        sock.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")


def _status(api: Api, image_id: str) -> str | None:
    return api.head(image_id).meta.get("status")


def _wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.05)


def test_upload_download_delete_round_trip(served: Served) -> None:
    count = 200  # 12.5 MiB: several segments or parts
    image = served.api.upload(b"".join(blocks(count)), name="round trip")
    assert image["checksum"] == md5_of_blocks(count)
    assert image["size"] == count * len(BLOCK)
    answer = served.api.get(image["id"])
    assert answer.status == 200
    assert hashlib.md5(answer.body, usedforsecurity=False).hexdigest() == md5_of_blocks(count)
    assert served.contents() != []
    assert served.api.delete(image["id"]).status == 200
    assert served.contents() == []


def test_a_size_mismatch_kills_the_image_and_leaves_no_data(served: Served) -> None:
    count = 100
    fields = {"disk_format": "raw", "container_format": "bare", "size": count * len(BLOCK) + 1}
    answer = served.api.create(meta(name="liar", **fields), b"".join(blocks(count)))
    assert answer.status == 400
    assert served.contents() == []


def test_a_client_that_drops_mid_upload_leaves_no_data(served: Served) -> None:
    image_id = served.api.reserve(name="dropped", disk_format="raw", container_format="bare")["id"]
    sock = _open_chunked_put(served.server, image_id)
    try:
        _send(sock, 100)  # 6.25 MiB: at least one whole segment or part is stored
        _wait_for(lambda: served.contents() != [], "the store received part of the upload")
    finally:
        sock.close()
    _wait_for(lambda: _status(served.api, image_id) == "killed", "the image is killed")
    _wait_for(lambda: served.contents() == [], "the partial data is removed")


def test_a_crash_mid_upload_is_swept_at_restart(served: Served) -> None:
    image_id = served.api.reserve(name="crashed", disk_format="raw", container_format="bare")["id"]
    sock = _open_chunked_put(served.server, image_id)
    try:
        _send(sock, 100)
        _wait_for(lambda: served.contents() != [], "the store received part of the upload")
        served.server.kill()  # a crash runs no cleanup
    finally:
        sock.close()
    assert served.contents() != []
    served.server.start()
    assert _status(served.api, image_id) == "killed"
    assert served.contents() == []
