"""Failure paths of the SDK and the CLI against a real server (issue 11, "Tests").

Faults come from the network, played by a loopback relay (tests.support.relay): bytes
altered on the way to the server, an answer that stalls or is cut off. Nothing of
osimage is mocked.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from osimage import exceptions
from osimage.connection import Connection
from osimage.image.v1._proxy import MD5_KEY, SHA256_KEY
from osimage.image.v1.image import Image
from tests.e2e.test_cli import OSIMAGE, clean_env, default_sigint
from tests.support.relay import Relay
from tests.support.server import Server

pytestmark = pytest.mark.e2e


def unique(prefix: str = "fail") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def conn(server: Server) -> Iterator[Connection]:
    with Connection(endpoint=server.url, environ={}) as connection:
        yield connection


def every_image_named(conn: Connection, name: str) -> list[Image]:
    """Admin view including deleted images (changes-since lifts the exclusions)."""
    return list(conn.image.images(name=name, changes_since="2000-01-01T00:00:00"))


# ---- create_image with a file object ----------------------------------------------------


def test_create_image_reads_a_file_object_from_where_it_stands(
    conn: Connection, tmp_path: Path
) -> None:
    path = tmp_path / "disk.raw"
    content = os.urandom(300_000)
    path.write_bytes(content)
    with path.open("rb") as handle:
        handle.seek(1000)  # e.g. past a header the caller has read
        image = conn.image.create_image(unique(), data=handle, disk_format="raw")
    rest = content[1000:]
    assert image.status == "active"
    assert image.size == len(rest)
    assert image.checksum == hashlib.md5(rest).hexdigest()
    assert image.properties is not None
    assert image.properties[SHA256_KEY] == hashlib.sha256(rest).hexdigest()
    assert conn.image.download_image(image) == rest


def test_a_seekable_file_object_is_hashed_then_rewound(conn: Connection, tmp_path: Path) -> None:
    path = tmp_path / "disk.raw"
    path.write_bytes(os.urandom(200_000))
    name = unique()
    first = conn.image.create_image(name, filename=path, disk_format="raw")
    with path.open("rb") as handle:
        # an active image of that name exists: the file object is hashed first ...
        again = conn.image.create_image(name, data=handle, disk_format="raw")
        assert again.id == first.id  # ... matches it, so nothing is uploaded
        assert handle.tell() == 0  # and is put back where it was
    other = tmp_path / "other.raw"
    other.write_bytes(os.urandom(100_000))
    with other.open("rb") as handle:
        # hashed (to compare with the twin), rewound, then uploaded whole
        different = conn.image.create_image(name, data=handle, disk_format="raw")
    assert different.id != first.id
    assert conn.image.download_image(different) == other.read_bytes()
    assert different.properties is not None
    assert different.properties[MD5_KEY] == hashlib.md5(other.read_bytes()).hexdigest()


def test_validate_checksum_needs_a_file_object_that_can_be_read_twice(conn: Connection) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b"pipe data")
    os.close(write_end)
    name = unique()
    with (
        os.fdopen(read_end, "rb") as pipe,
        pytest.raises(exceptions.InvalidRequest, match="read twice"),
    ):
        conn.image.create_image(name, data=pipe, disk_format="raw", validate_checksum=True)
    assert every_image_named(conn, name) == []  # refused before any request


def test_a_broken_file_object_deletes_the_reserved_image(conn: Connection) -> None:
    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            self.calls += 1
            if self.calls > 2:
                raise OSError("the disk under the file went away")
            buffer[:4096] = b"x" * 4096
            return 4096

    name = unique()
    with pytest.raises(OSError, match="went away"):
        conn.image.create_image(name, data=Failing(), disk_format="raw", allow_duplicates=True)
    assert [i.status for i in every_image_named(conn, name)] == ["deleted"]


# ---- a checksum the server recorded that differs from what was sent --------------------


def test_a_checksum_the_server_records_differently_is_an_invalid_response(
    server: Server, conn: Connection
) -> None:
    marker = b"<<these bytes reach the server altered>>"
    data = b"a" * 50_000 + marker + b"b" * 50_000
    name = unique()
    with (
        Relay(server.port, replace=(marker, marker.upper())) as relay,
        Connection(endpoint=relay.url, environ={}) as through_relay,
        pytest.raises(exceptions.InvalidResponse, match="server recorded checksum") as caught,
    ):
        through_relay.image.create_image(name, data=data, disk_format="raw")
    assert hashlib.md5(data).hexdigest() in str(caught.value)  # what was sent
    altered = data.replace(marker, marker.upper())
    assert hashlib.md5(altered).hexdigest() in str(caught.value)  # what the server got
    # the image was reserved and filled, and create_image deleted it again
    assert [i.status for i in every_image_named(conn, name)] == ["deleted"]


# ---- wait_for_delete ----------------------------------------------------------------------


def test_wait_for_delete_waits_until_another_client_deletes(conn: Connection) -> None:
    image = conn.image.create_image(unique(), data=b"soon gone", disk_format="raw")
    polls: list[int] = []
    deleter = threading.Timer(0.5, conn.image.delete_image, args=(image.id,))
    deleter.start()
    try:
        gone = conn.image.wait_for_delete(image, interval=0.05, wait=60, callback=polls.append)
    finally:
        deleter.join()
    assert gone.id == image.id
    assert polls  # it polled while the image was still there
    with pytest.raises(exceptions.NotFoundException):
        conn.image.delete_image(image, ignore_missing=False)


def test_wait_for_delete_times_out_on_an_image_that_stays(conn: Connection) -> None:
    image = conn.image.create_image(unique(), data=b"here to stay", disk_format="raw")
    conn.image.update_image(image, protected=True)
    with pytest.raises(exceptions.ForbiddenException):
        conn.image.delete_image(image)  # protected: the delete is refused ...
    polls: list[int] = []
    with pytest.raises(exceptions.ResourceTimeout, match="not deleted within"):
        conn.image.wait_for_delete(image, interval=0.05, wait=0.3, callback=polls.append)
    assert polls
    assert conn.image.get_image(image).status == "active"  # ... and it is still there
    conn.image.update_image(image, protected=False)
    conn.image.delete_image(image)


# ---- the CLI removes a partial download ----------------------------------------------------


@pytest.fixture
def big_image(conn: Connection) -> Iterator[tuple[str, bytes]]:
    data = os.urandom(6 * 1024 * 1024)
    image = conn.image.create_image(unique(), data=data, disk_format="raw")
    assert image.id is not None
    yield image.id, data
    conn.image.delete_image(image)


def _start_download(
    home: Path, relay: Relay, image_id: str, target: Path
) -> subprocess.Popen[bytes]:
    env = {**clean_env(home), "OS_IMAGE_URL": relay.url}
    return subprocess.Popen(
        [str(OSIMAGE), "image", "download", image_id, "--file", str(target), "--no-progress"],
        env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )  # fmt: skip


def _wait_for_partial(directory: Path, proc: subprocess.Popen[bytes]) -> Path:
    """The download's partial file, once some data is in it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        partials = [p for p in directory.iterdir() if p.name.endswith(".part")]
        if partials and partials[0].stat().st_size > 0:
            return partials[0]
        time.sleep(0.05)
    raise AssertionError("the CLI never wrote a partial file")


@pytest.mark.parametrize("how", ["connection cut", "ctrl-c"])
def test_the_cli_removes_its_partial_download(
    server: Server, big_image: tuple[str, bytes], tmp_path: Path, how: str
) -> None:
    image_id, _data = big_image
    home = tmp_path / "home"
    home.mkdir()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    target = downloads / "disk.img"
    with Relay(server.port, hold_after=3 * 1024 * 1024) as relay:
        proc = _start_download(home, relay, image_id, target)
        try:
            partial = _wait_for_partial(downloads, proc)  # the data was there ...
            assert partial.name.startswith(".disk.img.")
            if how == "ctrl-c":
                proc.send_signal(signal.SIGINT)
            else:
                relay.cut()
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = err.decode(errors="replace")
    assert "Traceback" not in text
    if how == "ctrl-c":
        assert proc.returncode == 130, text
    else:
        assert proc.returncode == 1, text
        assert text.startswith("osimage: error: "), text
    assert list(downloads.iterdir()) == []  # ... and is gone, with no file under the name


def test_a_completed_cli_download_through_the_relay_is_whole(
    server: Server, big_image: tuple[str, bytes], tmp_path: Path
) -> None:
    """The relay itself passes data intact once released: the failures above are its faults."""
    image_id, data = big_image
    home = tmp_path / "home"
    home.mkdir()
    target = tmp_path / "disk.img"
    with Relay(server.port, hold_after=3 * 1024 * 1024) as relay:
        proc = _start_download(home, relay, image_id, target)
        _wait_for_partial(tmp_path, proc)
        relay.release()
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert target.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
