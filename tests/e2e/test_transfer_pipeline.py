"""Transfers whose hashing and writing run in helper threads: results, errors, cleanup."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from osimage.connection import Connection
from osimage.image.v1._proxy import MD5_KEY, SHA256_KEY
from osimage.transfer import Digests, Relay, replacing
from tests.support.server import Server

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


@pytest.fixture
def conn(server: Server) -> Iterator[Connection]:
    with Connection(endpoint=server.url, environ={}) as connection:
        yield connection


def blocks(count: int) -> list[bytes]:
    """`count` MiB in which no two MiB are alike."""
    return [hashlib.sha512(bytes([n])).digest() * (MIB // 64) for n in range(count)]


class FailingWriter(io.BytesIO):
    """A seekable file object whose write fails once `limit` bytes were written."""

    def __init__(self, prefix: bytes, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.write(prefix)

    def write(self, data: object) -> int:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("bytes expected")
        if self.tell() + len(data) > self.limit:
            raise OSError(28, "No space left on device")
        return super().write(data)


def test_relay_keeps_order_and_raises_the_actions_error() -> None:
    seen: list[bytes] = []
    with Relay(seen.append, "test-relay") as relay:
        for n in range(5):
            relay.put(bytes([n]))
    assert seen == [bytes([n]) for n in range(5)]

    def refuse_third(chunk: bytes) -> None:
        if chunk == b"3":
            raise ValueError("refused")

    def feed() -> None:
        with Relay(refuse_third, "test-relay") as relay:
            for n in range(1, 4):
                relay.put(str(n).encode())

    with pytest.raises(ValueError, match="refused"):
        feed()


def test_relay_leaves_the_blocks_own_error_in_place() -> None:
    def refuse(chunk: bytes) -> None:
        if chunk != b"first":
            raise ValueError("from the action")

    def feed() -> None:
        with Relay(refuse, "test-relay") as relay:
            relay.put(b"first")
            relay.put(b"second")  # fails in the thread; the block's own error surfaces
            raise KeyError("from the block")

    with pytest.raises(KeyError):
        feed()


def test_replacing_renames_a_complete_file_and_leaves_nothing_of_a_failed_one(
    tmp_path: Path,
) -> None:
    target = tmp_path / "image.raw"
    target.write_bytes(b"old")
    partials: list[str] = []

    def write_half() -> None:
        with replacing(target) as out:
            out.write(b"half")
            partials.extend(p.name for p in tmp_path.iterdir() if p.name.endswith(".part"))
            raise ValueError("broke")

    with pytest.raises(ValueError, match="broke"):
        write_half()
    assert len(partials) == 1  # it was there while writing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.raw"]
    assert target.read_bytes() == b"old"

    with replacing(target) as out:
        out.write(b"new")
        assert target.read_bytes() == b"old"  # renamed only once complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.raw"]
    assert target.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_digests_of_many_chunks_match_hashlib() -> None:
    data = blocks(3)
    with Digests() as digests:
        for chunk in data:
            digests.put(chunk)
    joined = b"".join(data)
    assert digests.md5.hexdigest() == hashlib.md5(joined).hexdigest()
    assert digests.sha256 is not None
    assert digests.sha256.hexdigest() == hashlib.sha256(joined).hexdigest()


def test_multi_mib_round_trip_through_file_and_path(conn: Connection, tmp_path: Path) -> None:
    data = blocks(5)
    source = tmp_path / "source.raw"
    source.write_bytes(b"".join(data) + b"tail")
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()

    created = conn.image.create_image(f"pipe-{uuid.uuid4().hex[:8]}", filename=source,
                                      disk_format="raw")  # fmt: skip
    assert (created.status, created.size, created.checksum) == ("active", 5 * MIB + 4, md5)
    assert created.properties is not None
    assert created.properties[MD5_KEY] == md5
    assert created.properties[SHA256_KEY] == sha256

    with source.open("rb") as handle:
        uploaded = conn.image.upload_image(
            container_format="bare", disk_format="raw", data=handle, name="pipe"
        )
    assert uploaded.checksum == md5

    target = tmp_path / "back.raw"
    conn.image.download_image(uploaded, output=target)
    assert hashlib.md5(target.read_bytes()).hexdigest() == md5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failing_output_file_is_truncated_back(conn: Connection) -> None:
    image = conn.image.upload_image(
        container_format="bare", disk_format="raw", data=b"".join(blocks(4)), name="pipe"
    )
    out = FailingWriter(b"kept", limit=2 * MIB + 100)
    with pytest.raises(OSError, match="No space"):
        conn.image.download_image(image, output=out)
    assert out.getvalue() == b"kept"
