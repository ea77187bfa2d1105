"""Glance's notifications through oslo.messaging to the real RabbitMQ on 127.0.0.1:5672.

Each test sends to a topic of its own and reads the queues oslo.messaging declares for
it (``<topic>.info``, ``<topic>.error``) with kombu, then deletes them.
"""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest

from tests.e2e.api_client import Api, meta, unique
from tests.support.broker import consume
from tests.support.server import Server, free_port, start_server

pytestmark = pytest.mark.e2e

IMAGE_FIELDS = {
    "id", "name", "status", "created_at", "updated_at", "min_disk", "min_ram", "protected",
    "checksum", "owner", "disk_format", "container_format", "size", "virtual_size",
    "is_public", "visibility", "properties", "tags", "deleted", "deleted_at",
}  # fmt: skip
MEMBER_FIELDS = {
    "image_id", "member_id", "status", "created_at", "updated_at", "deleted", "deleted_at"
}  # fmt: skip


def test_upload_download_update_share_delete_in_order(notifying: Server, topic: str) -> None:
    alice = Api(notifying.url, "alice-token")
    bob = Api(notifying.url, "bob-token")
    data = b"notified image data" * 100
    name = unique("notified")
    image_id = alice.upload(data, name=name)["id"]
    assert alice.get(image_id).body == data
    assert alice.update(image_id, meta(name=name + "-renamed")).status == 200
    share = alice.request("PUT", f"/v1/images/{image_id}/members/p-bob", body=b"")
    assert share.status == 204
    assert bob.head(image_id).status == 200
    unshare = alice.request("DELETE", f"/v1/images/{image_id}/members/p-bob")
    assert unshare.status == 204
    assert alice.delete(image_id).status == 200

    events = consume(topic, "info", 9)
    kinds = [event["event_type"] for event in events]
    assert kinds == [
        "image.create",
        "image.prepare",
        "image.upload",
        "image.activate",
        "image.send",
        "image.update",
        "image.member.create",
        "image.member.delete",
        "image.delete",
    ], kinds
    by_kind = {event["event_type"]: event for event in events}
    assert all(event["priority"] == "INFO" for event in events)
    assert all(event["publisher_id"].startswith("image.") for event in events)

    created = by_kind["image.create"]["payload"]
    assert set(created) == IMAGE_FIELDS
    assert (created["id"], created["name"], created["status"]) == (image_id, name, "queued")
    assert (created["owner"], created["visibility"], created["is_public"]) == (
        "p-alice", "private", False,
    )  # fmt: skip
    assert by_kind["image.prepare"]["payload"]["status"] == "saving"
    uploaded = by_kind["image.upload"]["payload"]
    assert (uploaded["status"], uploaded["size"]) == ("active", len(data))
    assert uploaded["checksum"] == hashlib.md5(data).hexdigest()
    assert by_kind["image.activate"]["payload"]["status"] == "active"
    assert by_kind["image.send"]["payload"] == {
        "bytes_sent": len(data),
        "image_id": image_id,
        "owner_id": "p-alice",
        "receiver_tenant_id": "p-alice",
        "receiver_user_id": "u-alice",
    }
    assert by_kind["image.update"]["payload"]["name"] == name + "-renamed"
    member = by_kind["image.member.create"]["payload"]
    assert set(member) == MEMBER_FIELDS
    assert (member["image_id"], member["member_id"], member["deleted"]) == (
        image_id, "p-bob", False,
    )  # fmt: skip
    unshared = by_kind["image.member.delete"]["payload"]
    assert (unshared["member_id"], unshared["deleted"]) == ("p-bob", True)
    assert unshared["deleted_at"]
    deleted = by_kind["image.delete"]["payload"]
    assert (deleted["id"], deleted["status"], deleted["deleted"]) == (image_id, "deleted", True)
    assert deleted["deleted_at"]


def test_failures_go_out_at_error_priority(notifying: Server, topic: str) -> None:
    alice = Api(notifying.url, "alice-token")
    data = b"short"
    image = alice.reserve(name=unique("failing"), disk_format="raw", container_format="bare")
    wrong = alice.update(image["id"], meta(checksum="0" * 32), data)
    assert wrong.status == 400
    failure = consume(topic, "error", 1)[0]
    assert (failure["event_type"], failure["priority"]) == ("image.upload", "ERROR")
    assert image["id"] in failure["payload"]
    kinds = [event["event_type"] for event in consume(topic, "info", 2)]
    assert kinds == ["image.create", "image.prepare"]


def test_a_dead_broker_never_fails_a_request(tmp_path: Path) -> None:
    """Events to a closed port are queued, then dropped and counted; requests go on."""
    closed = free_port()
    srv = start_server(
        tmp_path / "srv",
        "--notification-transport-url",
        f"rabbit://guest:guest@127.0.0.1:{closed}/",
        "--notification-queue-size",
        "2",
    )
    try:
        api = Api(srv.url)
        made = [api.create(meta(name=unique("unheard"))) for _ in range(12)]
        assert [resp.status for resp in made] == [201] * 12
        image_id = made[0].image["id"]
        assert api.delete(image_id).status == 200
        metrics = api.request("GET", "/metrics").text
        dropped = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("osimage_notifications_dropped_total ")
        )
        assert dropped >= 13 - 2 - 1  # at most the queue and the one being sent are kept
        assert "osimage_notifications_sent_total 0.0" in metrics
    finally:
        srv.close()
    log = srv.log()
    assert "dropped" in log
    assert "Traceback" not in log


def test_an_upload_cut_off_by_its_client_is_an_error_event(notifying: Server, topic: str) -> None:
    alice = Api(notifying.url, "alice-token")
    image = alice.reserve(name=unique("cut"), disk_format="raw", container_format="bare")
    with socket.create_connection(("127.0.0.1", notifying.port), timeout=30) as sock:
        head = (
            f"PUT /v1/images/{image['id']} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "X-Auth-Token: alice-token\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: 1000000\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * 1000)
    failure = consume(topic, "error", 1)[0]
    assert (failure["event_type"], failure["priority"]) == ("image.upload", "ERROR")
    assert image["id"] in failure["payload"]
    deadline = time.monotonic() + 30
    while alice.head(image["id"]).header("x-image-meta-status") != "killed":
        assert time.monotonic() < deadline, "the cut upload never ended killed"
        time.sleep(0.2)
