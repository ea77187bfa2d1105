"""The image cache (issue 16) against real servers in front of real Swift and S3.

A counting proxy between the server and swift-aio shows how often the store was really
read: the server's store URL points through it, and each test watches the request line
of its image's object (a GET of `<container or bucket>/<image id>`).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.api_client import OCTETS, Api, meta
from tests.support.backends import require_service, store_space, swift_aio_env
from tests.support.server import Server, start_server
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.e2e
MIB = 1024 * 1024


@dataclass
class Node:
    """A server with a cache, its store behind a counting proxy."""

    server: Server
    api: Api
    proxy: TcpProxy
    kind: str
    space: str  # container or bucket
    cache_dir: Path
    database: Path
    store: str

    def cli(self, *args: str) -> str:
        """Run `osimage cache <args>` on this node (its settings as flags); its stdout."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "osimage",
                "cache",
                *args,
                "--cache-dir",
                str(self.cache_dir),
                "--database",
                f"sqlite+aiosqlite:///{self.database}",
                "--store",
                self.store,
            ],
            env={**os.environ, **self.server.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def upload(self, data: bytes) -> str:
        image_id = str(uuid.uuid4())
        headers = {
            **meta(id=image_id, name="cached", disk_format="raw", container_format="bare"),
            **OCTETS,
        }
        answer = self.api.request("POST", "/v1/images", headers, data)
        assert answer.status == 201, answer
        self.proxy.watch(self.get_line(image_id))
        return image_id

    def get_line(self, image_id: str) -> bytes:
        if self.kind == "swift":
            return f"GET /v1/AUTH_test/{self.space}/{image_id} ".encode()
        return f"GET /{self.space}/{image_id}".encode()

    def store_reads(self, image_id: str) -> int:
        return self.proxy.count(self.get_line(image_id))

    def download(self, image_id: str) -> tuple[int, str]:
        answer = self.api.request("GET", f"/v1/images/{image_id}")
        return answer.status, hashlib.md5(answer.body).hexdigest()

    def settled(self, expected: int, including: str = "") -> list[str]:
        """The cached ids once there are `expected` of them (with `including`), or as they
        are after 20 s: a client may have all the bytes a moment before the fill is
        verified and published."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ids = self.cached_ids()
            if len(ids) == expected and (not including or including in ids):
                break
            time.sleep(0.05)
        return ids

    def cached_ids(self) -> list[str]:
        answer = self.api.request("GET", "/v1/cached_images")
        assert answer.status == 200, answer
        return [entry["image_id"] for entry in answer.json()["cached_images"]]

    def entries(self) -> list[str]:
        return sorted(path.name for path in (self.cache_dir / "entries").iterdir())

    def partials(self) -> list[str]:
        return sorted(path.name for path in (self.cache_dir / "incomplete").iterdir())


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def start_node(tmp_path: Path, kind: str, *args: str) -> Node:
    env = swift_aio_env()
    require_service(bool(env), "no Swift/S3 on loopback (shared/services/swift-aio start)")
    target = urlsplit(env["ST_AUTH"])
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 80).start()
    throwaway = store_space(kind)  # removed again when the server is closed
    space = throwaway.url.split("://", 1)[1].split("?", 1)[0]
    server_env = dict(throwaway.env)
    if kind == "swift":
        auth = env["ST_AUTH"].replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{proxy.port}")
        store = throwaway.url
        server_env["OSIMAGE_SWIFT_AUTH_URL"] = auth
    else:
        store = throwaway.url.replace(env["S3_ENDPOINT_URL"], proxy.url)
    cache_dir = tmp_path / "cache"
    database = tmp_path / "catalogue.db"
    server = start_server(
        tmp_path / "node",
        "--store",
        store,
        "--database",
        f"sqlite+aiosqlite:///{database}",
        "--cache-dir",
        str(cache_dir),
        *args,
        environ=server_env,
    )
    server.cleanups.insert(0, throwaway.drop)
    return Node(server, Api(server.url), proxy, kind, space, cache_dir, database, store)


@pytest.fixture(
    params=[
        pytest.param("swift", marks=pytest.mark.swift),
        pytest.param("s3", marks=pytest.mark.s3),
    ]
)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def node(tmp_path: Path, kind: str) -> Iterator[Node]:
    started = start_node(tmp_path, kind)
    try:
        yield started
    finally:
        _close(started)


def _close(node: Node) -> None:
    node.server.close()
    node.proxy.close()
    log = node.server.log()
    assert "Traceback" not in log, log[-3000:]


def test_second_download_is_served_from_the_cache(node: Node) -> None:
    data = os.urandom(3 * MIB + 17)
    image_id = node.upload(data)
    assert node.store_reads(image_id) == 0
    assert node.download(image_id) == (200, _md5(data))
    assert node.store_reads(image_id) == 1
    assert node.settled(1) == [image_id]
    assert node.download(image_id) == (200, _md5(data))
    assert node.store_reads(image_id) == 1  # the store saw no second GET


def _open_download(node: Node, image_id: str) -> tuple[http.client.HTTPConnection, int]:
    """Send a GET and read only the status line and headers."""
    conn = http.client.HTTPConnection("127.0.0.1", node.server.port, timeout=60)
    conn.request("GET", f"/v1/images/{image_id}")
    response = conn.getresponse()
    status = response.status
    conn.response = response  # type: ignore[attr-defined]
    return conn, status


def _finish(conn: http.client.HTTPConnection) -> str:
    try:
        return _md5(conn.response.read())  # type: ignore[attr-defined]
    finally:
        conn.close()


def test_concurrent_first_downloads_read_the_store_once(node: Node) -> None:
    data = os.urandom(6 * MIB)
    image_id = node.upload(data)
    node.proxy.hold(after=2 * MIB)  # the store's answer stalls part way
    first, status = _open_download(node, image_id)
    assert status == 200
    with ThreadPoolExecutor(7) as pool:
        followers = list(pool.map(lambda _: _open_download(node, image_id), range(7)))
    # eight downloads under way, the store read once and not finished: nothing cached yet
    assert [status for _, status in followers] == [200] * 7
    assert node.store_reads(image_id) == 1
    assert node.cached_ids() == []
    node.proxy.release()
    # the followers finish while the first client has not read a byte: the fill is not
    # paced by its slowest client
    with ThreadPoolExecutor(7) as pool:
        digests = list(pool.map(_finish, [conn for conn, _ in followers]))
    assert digests == [_md5(data)] * 7
    assert node.settled(1) == [image_id]
    assert _finish(first) == _md5(data)
    assert node.store_reads(image_id) == 1


def test_least_recently_used_entries_are_evicted(tmp_path: Path, kind: str) -> None:
    node = start_node(tmp_path, kind, "--cache-size", f"{5 * MIB}")
    try:
        images = {name: os.urandom(2 * MIB) for name in "abc"}
        ids = {name: node.upload(data) for name, data in images.items()}
        for name in ("a", "b", "a"):  # b is now the least recently used
            assert node.download(ids[name]) == (200, _md5(images[name]))
            node.settled(1 if name == "a" else 2)
        assert sorted(node.cached_ids()) == sorted([ids["a"], ids["b"]])
        assert node.download(ids["c"]) == (200, _md5(images["c"]))
        assert sorted(node.settled(2, including=ids["c"])) == sorted([ids["a"], ids["c"]])
        assert node.download(ids["a"]) == (200, _md5(images["a"]))
        assert node.store_reads(ids["a"]) == 1
        assert node.download(ids["b"]) == (200, _md5(images["b"]))
        assert node.store_reads(ids["b"]) == 2  # evicted, so read from the store again
        assert sorted(node.settled(2, including=ids["b"])) == sorted([ids["a"], ids["b"]])
        held = [(node.cache_dir / "entries" / name).stat().st_size for name in node.entries()]
        assert held == [2 * MIB, 2 * MIB]  # within --cache-size
    finally:
        _close(node)


def test_deleted_image_is_never_served_from_the_cache(node: Node) -> None:
    data = os.urandom(MIB)
    image_id = node.upload(data)
    assert node.download(image_id) == (200, _md5(data))
    assert node.settled(1) == [image_id]
    assert node.api.request("DELETE", f"/v1/images/{image_id}").status == 200
    assert node.download(image_id)[0] == 404
    assert node.store_reads(image_id) == 1


def _sql(node: Node, statement: str, *params: object) -> None:
    with sqlite3.connect(node.database) as db:  # what another node's writes look like
        assert db.execute(statement, params).rowcount == 1


def test_replaced_or_deactivated_data_is_never_served_from_the_cache(node: Node) -> None:
    old, new = os.urandom(MIB), os.urandom(MIB + 5)
    old_id, new_id = node.upload(old), node.upload(new)
    assert node.download(old_id) == (200, _md5(old))
    assert node.settled(1) == [old_id]
    with sqlite3.connect(node.database) as db:
        location = db.execute("SELECT location FROM images WHERE id = ?", (new_id,)).fetchone()[0]
    # another node replaces the data of old_id in the shared database
    _sql(
        node,
        "UPDATE images SET location = ?, checksum = ?, size = ? WHERE id = ?",
        location,
        _md5(new),
        len(new),
        old_id,
    )
    assert node.download(old_id) == (200, _md5(new))
    assert node.store_reads(new_id) == 1
    node.settled(1)
    assert node.download(old_id) == (200, _md5(new))  # the new data is now the cached one
    assert node.store_reads(new_id) == 1
    _sql(node, "UPDATE images SET status = 'deactivated' WHERE id = ?", old_id)
    assert node.download(old_id)[0] == 403
    assert node.cached_ids() == [old_id]  # kept on disk, but not served
    assert old_id in node.cli("prune")
    assert node.cached_ids() == []


def test_prefetch_from_the_cli(node: Node) -> None:
    data = os.urandom(MIB + 1)
    image_id = node.upload(data)
    assert f"queued {image_id}" in node.cli("queue", image_id)
    assert image_id in node.cli("list", "--queued", "-f", "value")
    assert node.cached_ids() == []
    assert image_id in node.cli("prefetch")
    assert node.store_reads(image_id) == 1
    assert node.cached_ids() == [image_id]
    assert node.api.request("GET", "/v1/queued_images").json() == {"queued_images": []}
    assert node.download(image_id) == (200, _md5(data))
    assert node.store_reads(image_id) == 1
    assert "1 deleted" in node.cli("delete", image_id)
    assert node.cached_ids() == []


def test_serve_prefetches_queued_images(tmp_path: Path, kind: str) -> None:
    node = start_node(tmp_path, kind, "--cache-prefetch-interval", "0.2")
    try:
        data = os.urandom(MIB)
        image_id = node.upload(data)
        assert node.api.request("PUT", f"/v1/queued_images/{image_id}").status == 200
        assert node.settled(1) == [image_id]
        assert node.store_reads(image_id) == 1
        assert node.download(image_id) == (200, _md5(data))
        assert node.store_reads(image_id) == 1
    finally:
        _close(node)


def test_sigkill_while_filling_leaves_nothing_servable(node: Node) -> None:
    data = os.urandom(4 * MIB)
    image_id = node.upload(data)
    node.proxy.hold(after=2 * MIB)
    conn, status = _open_download(node, image_id)
    assert status == 200
    assert node.partials() != []  # a fill is under way
    node.server.kill()
    conn.close()
    node.proxy.release()
    assert node.entries() == []
    assert node.partials() != []  # a crash runs no cleanup
    node.server.start()
    assert node.partials() == []  # the startup sweep removed it
    assert node.cached_ids() == []
    assert node.download(image_id) == (200, _md5(data))
    assert node.store_reads(image_id) == 2
    assert node.settled(1) == [image_id]


def test_cache_management_is_for_admins_only(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--cache-dir", str(tmp_path / "cache"), auth="tokens")
    try:
        alice, admin = Api(server.url, "alice-token"), Api(server.url, "admin-token")
        image_id = str(uuid.uuid4())
        answer = admin.request(
            "POST",
            "/v1/images",
            {**meta(id=image_id, name="c", disk_format="raw", container_format="bare"), **OCTETS},
            b"x" * 1000,
        )
        assert answer.status == 201, answer
        calls = [
            ("GET", "/v1/cached_images"),
            ("DELETE", "/v1/cached_images"),
            ("DELETE", f"/v1/cached_images/{image_id}"),
            ("GET", "/v1/queued_images"),
            ("PUT", f"/v1/queued_images/{image_id}"),
            ("DELETE", "/v1/queued_images"),
            ("DELETE", f"/v1/queued_images/{image_id}"),
        ]
        for method, path in calls:
            assert alice.request(method, path).status == 403, (method, path)
        assert admin.request("PUT", f"/v1/queued_images/{image_id}").status == 200
        assert admin.request("GET", "/v1/queued_images").json() == {"queued_images": [image_id]}
        assert admin.request("DELETE", "/v1/queued_images").json() == {"num_deleted": 1}
        assert admin.request("GET", "/v1/queued_images").json() == {"queued_images": []}
        missing = admin.request("PUT", f"/v1/queued_images/{uuid.uuid4()}")
        assert missing.status == 404
        assert admin.request("GET", "/v1/cached_images").json() == {"cached_images": []}
    finally:
        server.close()
