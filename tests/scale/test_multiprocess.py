"""Two `osimage serve` processes on two ports, one PostgreSQL database, one Swift container.

What one process writes, the other serves; racing writers sent to different processes
meet in the database, where status changes are conditional UPDATEs and property and
member changes lock the image row. Everything is checked through both servers and, at
the end, at the source: the database's rows and the container's objects.
"""

from __future__ import annotations

import hashlib
import http.client
import random
import select
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest

from tests.e2e.api_client import PURGE_PROPS_HEADER, Api, meta, props
from tests.scale.conftest import Cluster
from tests.support.backends import postgres_rows, swift_aio_env

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.swift]

THREADS = 16
OPERATIONS = 200
BLOCK = bytes(range(256)) * 64  # 16 KiB
MERGE = {PURGE_PROPS_HEADER: "false"}  # a PUT without it would replace all properties


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def apis(cluster: Cluster) -> list[Api]:
    return [Api(server.url) for server in cluster.servers]


# -- one queued image, two uploads, two processes --------------------------------------------


def _send_head_and_first_chunk(port: int, image_id: str, first: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        (
            f"PUT /v1/images/{image_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        + f"{len(first):x}\r\n".encode()
        + first
        + b"\r\n"
    )
    return sock


def _response(sock: socket.socket) -> tuple[int, bytes]:
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    return answer.status, answer.read()


def _race(cluster: Cluster, image_id: str, bodies: list[bytes]) -> int:
    """Upload bodies[i] to server i at the same moment; return the index of the winner."""
    barrier = threading.Barrier(2)
    socks: list[socket.socket | None] = [None, None]

    def begin(index: int) -> None:
        barrier.wait()
        port = cluster.servers[index].port
        socks[index] = _send_head_and_first_chunk(port, image_id, bodies[index][:1024])

    threads = [threading.Thread(target=begin, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    opened = [sock for sock in socks if sock is not None]
    assert len(opened) == 2
    try:
        # The loser answers at once (its body is never read); the winner is still
        # reading its body, so it cannot have answered yet.
        readable, _, _ = select.select(opened, [], [], 30)
        assert len(readable) == 1, "expected exactly one early answer"
        loser = opened.index(readable[0])
        winner = 1 - loser
        status, body = _response(opened[loser])
        assert status == 409, body
        assert Api(cluster.servers[loser].url).head(image_id).meta["status"] == "saving"
        rest = bodies[winner][1024:]
        opened[winner].sendall(f"{len(rest):x}\r\n".encode() + rest + b"\r\n0\r\n\r\n")
        status, body = _response(opened[winner])
        assert status == 200, body
    finally:
        for sock in opened:
            sock.close()
    return winner


def test_of_two_uploads_into_one_queued_image_on_two_processes_exactly_one_wins(
    cluster: Cluster,
) -> None:
    both = apis(cluster)
    for _round in range(8):
        image = both[0].reserve(name="race", disk_format="raw", container_format="bare")
        bodies = [BLOCK + b"A" * 1000, BLOCK + b"B" * 2000]
        winner = _race(cluster, image["id"], bodies)
        for api in both:  # both processes serve the winner's data
            head = api.head(image["id"])
            assert head.meta["status"] == "active"
            assert head.meta["checksum"] == md5(bodies[winner])
            got = api.get(image["id"])
            assert (got.status, md5(got.body)) == (200, md5(bodies[winner]))


# -- racing metadata writers on two processes ------------------------------------------------


def test_property_merges_from_two_processes_at_once_keep_every_key(cluster: Cluster) -> None:
    both = apis(cluster)
    image = both[0].upload(b"props", name="merge")

    def put(index: int) -> int:
        api = both[index % 2]
        merge = {**MERGE, **props(**{f"key_{index}": f"value {index}"})}
        return api.update(image["id"], merge).status

    with ThreadPoolExecutor(THREADS) as pool:
        statuses = list(pool.map(put, range(64)))
    assert statuses == [200] * 64
    for api in both:
        found = api.head(image["id"]).properties
        assert found == {f"key_{index}": f"value {index}" for index in range(64)}


def test_one_member_added_from_two_processes_at_once_is_one_membership(
    cluster: Cluster,
) -> None:
    both = apis(cluster)
    images = [both[0].upload(b"shared", name=f"share {n}")["id"] for n in range(24)]
    barriers = {image_id: threading.Barrier(2) for image_id in images}

    def add(job: tuple[str, int]) -> int:
        image_id, index = job
        barriers[image_id].wait()  # both processes get the same add at the same moment
        return both[index].add_member(image_id, "tenant-x").status

    jobs = [(image_id, index) for image_id in images for index in (0, 1)]
    with ThreadPoolExecutor(THREADS) as pool:
        statuses = list(pool.map(add, jobs))
    assert statuses == [204] * len(jobs)
    for image_id in images:
        for api in both:
            assert api.members(image_id).json() == {
                "members": [{"member_id": "tenant-x", "can_share": False}]
            }


# -- 200 mixed operations through both processes ---------------------------------------------


@dataclass
class Expected:
    """What the test knows to be true, recorded only after the server said so."""

    data: dict[str, bytes] = field(default_factory=dict)  # image id -> its bytes
    properties: dict[str, dict[str, str]] = field(default_factory=dict)
    members: dict[str, set[str]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    claimed: set[str] = field(default_factory=set)  # being deleted: no new operations
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pick(self, rng: random.Random) -> str | None:
        with self.lock:
            live = sorted(set(self.data) - self.deleted - self.claimed)
            return rng.choice(live) if live else None

    def gone(self, image_id: str) -> bool:
        with self.lock:
            return image_id in self.deleted or image_id in self.claimed


def _payload(rng: random.Random) -> bytes:
    size = rng.choice([1, 1000, 70_000, 300_000, 2 * 1024 * 1024 + 13])
    seed = rng.randbytes(64)
    whole, rest = divmod(size, len(seed))
    return seed * whole + seed[:rest]


def _operation(kind: str, api: Api, rng: random.Random, expected: Expected) -> None:
    def problem(text: str) -> None:
        with expected.lock:
            expected.problems.append(f"{kind}: {text}")

    if kind == "create":
        data = _payload(rng)
        key = f"k{rng.randrange(1000)}"
        answer = api.create(
            {
                **meta(
                    name=f"mixed {key}",
                    disk_format="raw",
                    container_format="bare",
                    size=len(data),  # declared, so that an empty body makes an empty image
                ),
                **props(origin=key),
            },
            data,
        )
        if answer.status != 201:
            problem(f"{answer.status} {answer.body[:200]!r}")
            return
        image = answer.image
        with expected.lock:
            expected.data[image["id"]] = data
            expected.properties[image["id"]] = {"origin": key}
            expected.members[image["id"]] = set()
        return
    image_id = expected.pick(rng)
    if image_id is None:
        return
    if kind == "delete":
        with expected.lock:
            if image_id in expected.claimed:
                return
            expected.claimed.add(image_id)
        answer = api.delete(image_id)
        if answer.status != 200:
            problem(f"{image_id}: {answer.status} {answer.body[:200]!r}")
            return
        with expected.lock:
            expected.deleted.add(image_id)
        return
    if kind in ("head", "get"):
        try:
            answer = api.head(image_id) if kind == "head" else api.get(image_id)
        except (http.client.HTTPException, OSError) as exc:  # a download cut by a delete
            if not expected.gone(image_id):
                problem(f"{image_id}: {exc!r}")
            return
        if answer.status == 404 and expected.gone(image_id):
            return
        data = expected.data[image_id]
        if answer.status != 200:
            problem(f"{image_id}: {answer.status}")
        elif answer.meta.get("status") != "active" and not expected.gone(image_id):
            problem(f"{image_id}: status {answer.meta.get('status')}")
        elif answer.meta.get("checksum") != md5(data):
            problem(f"{image_id}: checksum {answer.meta.get('checksum')} != {md5(data)}")
        elif kind == "get" and md5(answer.body) != md5(data) and not expected.gone(image_id):
            problem(f"{image_id}: body of {len(answer.body)} bytes is not the data")
        return
    if kind == "property":
        key, value = f"p{rng.randrange(10**6)}", f"v{rng.randrange(10**6)}"
        answer = api.update(image_id, {**MERGE, **props(**{key: value})})
        if answer.status == 200:
            with expected.lock:
                expected.properties[image_id][key] = value
        elif not expected.gone(image_id):
            problem(f"{image_id}: {answer.status} {answer.body[:200]!r}")
        return
    if kind == "member":
        member = f"tenant-{rng.randrange(5)}"
        answer = api.add_member(image_id, member)
        if answer.status == 204:
            with expected.lock:
                expected.members[image_id].add(member)
        elif not expected.gone(image_id):
            problem(f"{image_id}: {answer.status} {answer.body[:200]!r}")
        return
    raise AssertionError(kind)


def _swift_objects(container: str) -> set[str]:
    env = swift_aio_env()
    auth = httpx.get(
        env["ST_AUTH"], headers={"x-auth-user": env["ST_USER"], "x-auth-key": env["ST_KEY"]}
    )
    answer = httpx.get(
        f"{auth.headers['x-storage-url']}/{container}",
        headers={"x-auth-token": auth.headers["x-auth-token"]},
        params={"format": "json", "limit": "10000"},
    )
    return {entry["name"] for entry in answer.json()} if answer.status_code == 200 else set()


def test_200_mixed_operations_through_two_processes_lose_and_corrupt_nothing(
    cluster: Cluster,
) -> None:
    both = apis(cluster)
    plan = random.Random(20261127)
    kinds = ["create"] * 20  # something to work on from the start
    kinds += plan.choices(
        ["create", "head", "get", "property", "member", "delete"],
        weights=[20, 15, 15, 20, 15, 8],
        k=OPERATIONS - len(kinds),
    )
    expected = Expected()
    with ThreadPoolExecutor(THREADS) as pool:
        running = [
            pool.submit(_operation, kind, both[number % 2], random.Random(number), expected)
            for number, kind in enumerate(kinds)
        ]
        for done in running:
            done.result()
    assert expected.problems == []
    live = set(expected.data) - expected.deleted
    assert len(live) >= 20, "the plan exercised too little"
    assert expected.deleted, "the plan deleted nothing"

    for image_id in sorted(live):
        data = expected.data[image_id]
        for api in both:
            head = api.head(image_id)
            assert head.status == 200
            assert head.meta["status"] == "active"
            assert int(head.meta["size"]) == len(data)
            assert head.meta["checksum"] == md5(data)
            assert head.properties == expected.properties[image_id]
            listed = api.members(image_id).json()["members"]
            assert {entry["member_id"] for entry in listed} == expected.members[image_id]
        got = both[hash(image_id) % 2].get(image_id)
        assert (got.status, md5(got.body)) == (200, md5(data))
    for image_id in expected.deleted:
        for api in both:
            assert api.get(image_id).status == 404

    # At the source: no image stuck in `saving` (or any other in-between status), one row
    # per image, and the container holds exactly the live images' data.
    statuses = dict(
        postgres_rows(cluster.database, "SELECT status, count(*) FROM images GROUP BY status")
    )
    assert statuses == {"active": len(live), "deleted": len(expected.deleted)}
    container = cluster.space.url.removeprefix("swift://").partition("?")[0]
    assert _swift_objects(container) == live
