"""Operations through Image API v2 (issues 12 and 15): an operator's Glance-style policy
file refuses v2 requests by Glance's rule names, v2 actions send Glance's notifications to
the real RabbitMQ, and /metrics labels v2 requests by route template."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.api_client import Api, unique
from tests.e2e.v2_client import OCTETS, V2
from tests.operations.test_health_metrics import samples, value
from tests.operations.test_notifications import IMAGE_FIELDS, MEMBER_FIELDS
from tests.support.broker import TRANSPORT, consume
from tests.support.polling import wait_until
from tests.support.server import TOKENS, Server, start_server
from tests.support.source import Script, serve_source

pytestmark = pytest.mark.e2e

IDENTITIES = {
    **TOKENS,
    "dave-token": {"user_id": "u-dave", "project_id": "p-alice", "roles": ["member", "no-dl"]},
}
GLANCE_STYLE = """\
"context_is_admin": "role:admin"
"delete_image": "role:admin"
"publicize_image": "role:admin"
"communitize_image": "role:admin"
"deactivate": "role:admin"
"download_image": "not role:no-dl"
"add_member": "role:admin"
"get_images": "not role:no-dl"
"""


@pytest.fixture(scope="module")
def policed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("v2-policed")
    (base / "policy.yaml").write_text(GLANCE_STYLE)
    (base / "identities.json").write_text(json.dumps(IDENTITIES))
    srv = start_server(
        base,
        "--auth",
        "tokens",
        "--tokens-file",
        str(base / "identities.json"),
        "--policy-file",
        str(base / "policy.yaml"),
    )
    yield srv
    log = srv.log()
    srv.close()
    assert "Traceback" not in log, log[-3000:]


def _v2(srv: Server, name: str) -> V2:
    return V2(Api(srv.url, f"{name}-token"))


def _refused(resp: Any, rule: str) -> None:
    assert resp.status == 403, resp
    assert rule in resp.text, resp.text


def test_a_glance_style_policy_refuses_v2_actions_by_rule_name(policed: Server) -> None:
    alice, admin, dave = (_v2(policed, name) for name in ("alice", "admin", "dave"))
    image = alice.active(b"policed v2 data", name=unique("v2-policed"))
    image_id = image["id"]

    # publicize_image and communitize_image: at create and by PATCH
    body = {"disk_format": "raw", "container_format": "bare"}
    _refused(alice.call("POST", "images", {**body, "visibility": "community"}), "communitize")
    for visibility, rule in (("public", "publicize_image"), ("community", "communitize_image")):
        patch = [{"op": "replace", "path": "/visibility", "value": visibility}]
        _refused(alice.patch(image_id, patch), rule)
    assert alice.show(image_id).json()["visibility"] == "shared"  # nothing changed
    patch = [{"op": "replace", "path": "/visibility", "value": "community"}]
    assert admin.patch(image_id, patch).status == 200
    assert admin.patch(image_id, [{**patch[0], "value": "shared"}]).status == 200

    # deactivate: admins only; reactivate is not named, so the owner may
    _refused(alice.call("POST", f"images/{image_id}/actions/deactivate"), "deactivate")
    assert alice.show(image_id).json()["status"] == "active"
    assert admin.call("POST", f"images/{image_id}/actions/deactivate").status == 204
    assert alice.call("POST", f"images/{image_id}/actions/reactivate").status == 204

    # download_image and get_images: the no-dl role, same project as alice
    assert alice.download(image_id).body == b"policed v2 data"
    _refused(dave.download(image_id), "download_image")
    assert dave.show(image_id).status == 200  # get_image is not named
    _refused(dave.list(), "get_images")
    assert image_id in alice.ids()

    # add_member: admins only
    _refused(alice.call("POST", f"images/{image_id}/members", {"member": "p-bob"}), "add_member")
    assert admin.call("POST", f"images/{image_id}/members", {"member": "p-bob"}).status == 200

    # delete_image: admins only
    _refused(alice.call("DELETE", f"images/{image_id}"), "delete_image")
    assert alice.show(image_id).status == 200
    assert admin.call("DELETE", f"images/{image_id}").status == 204
    assert alice.show(image_id).status == 404


def test_every_v2_action_is_gated_by_its_rule(tmp_path: Path) -> None:
    """Each rule, set to refuse alice alone, turns exactly its v2 request into a 403."""
    rules = [
        "get_image", "modify_image", "upload_image", "get_members", "get_member",
        "modify_member", "delete_member", "reactivate", "add_image",
    ]  # fmt: skip
    policy = tmp_path / "policy.yaml"
    policy.write_text("".join(f'"{rule}": "not user_id:u-alice"\n' for rule in rules))
    tokens = tmp_path / "identities.json"
    tokens.write_text(json.dumps(TOKENS))
    srv = start_server(
        tmp_path / "srv", "--auth", "tokens", "--tokens-file", str(tokens),
        "--policy-file", str(policy),
    )  # fmt: skip
    try:
        alice, bob, admin = (_v2(srv, name) for name in ("alice", "bob", "admin"))
        body = {"disk_format": "raw", "container_format": "bare"}
        _refused(alice.call("POST", "images", body), "add_image")
        image = admin.create(owner="p-alice", name=unique("gated"))
        image_id = image["id"]
        assert admin.call("POST", f"images/{image_id}/members", {"member": "p-alice"}).status == 200
        _refused(alice.show(image_id), "get_image")
        _refused(alice.patch(image_id, [{"op": "add", "path": "/x", "value": "y"}]), "modify")
        _refused(alice.call("PUT", f"images/{image_id}/tags/t"), "modify_image")
        _refused(alice.upload(image_id, b"data"), "upload_image")
        _refused(alice.call("PUT", f"images/{image_id}/stage", headers=OCTETS, data=b"x"), "upload")
        _refused(alice.call("GET", f"images/{image_id}/members"), "get_members")
        _refused(alice.call("GET", f"images/{image_id}/members/p-alice"), "get_member")
        status = {"status": "accepted"}
        _refused(alice.call("PUT", f"images/{image_id}/members/p-alice", status), "modify_member")
        _refused(alice.call("DELETE", f"images/{image_id}/members/p-alice"), "delete_member")
        assert admin.upload(image_id, b"data").status == 204
        assert admin.call("POST", f"images/{image_id}/actions/deactivate").status == 204
        _refused(alice.call("POST", f"images/{image_id}/actions/reactivate"), "reactivate")
        # bob is not named by any rule: the same requests reach the service's own checks
        assert bob.show(image_id).status == 404
        assert admin.show(image_id).json()["status"] == "deactivated"
    finally:
        log = srv.log()
        srv.close()
    assert "Traceback" not in log, log[-3000:]


# -- notifications ----------------------------------------------------------------------------


def test_v2_actions_send_glances_notifications(notifying: Server, topic: str) -> None:
    alice, bob = _v2(notifying, "alice"), _v2(notifying, "bob")
    data = b"notified v2 data" * 100
    image = alice.create(name=unique("v2-notified"), tags=["one"])
    image_id = image["id"]
    assert alice.upload(image_id, data).status == 204
    assert alice.download(image_id).body == data
    ranged = alice.download(image_id, Range="bytes=0-99")
    assert (ranged.status, ranged.body) == (206, data[:100])
    assert alice.patch(image_id, [{"op": "add", "path": "/colour", "value": "red"}]).status == 200
    assert alice.call("PUT", f"images/{image_id}/tags/two").status == 204
    assert alice.call("POST", f"images/{image_id}/members", {"member": "p-bob"}).status == 200
    accepted = bob.call("PUT", f"images/{image_id}/members/p-bob", {"status": "accepted"})
    assert accepted.status == 200
    assert alice.call("DELETE", f"images/{image_id}/members/p-bob").status == 204
    assert alice.call("DELETE", f"images/{image_id}").status == 204

    events = consume(topic, "info", 12)
    kinds = [event["event_type"] for event in events]
    assert kinds == [
        "image.create",
        "image.prepare",
        "image.upload",
        "image.activate",
        "image.send",
        "image.send",  # a whole range sent is a complete send, as in Glance
        "image.update",
        "image.update",
        "image.member.create",
        "image.member.update",
        "image.member.delete",
        "image.delete",
    ], kinds
    by_kind = {event["event_type"]: event["payload"] for event in events}
    created = events[0]["payload"]
    assert set(created) >= IMAGE_FIELDS
    assert (created["id"], created["status"], created["visibility"]) == (
        image_id,
        "queued",
        "shared",
    )
    assert created["tags"] == ["one"]
    assert by_kind["image.activate"]["checksum"] is not None
    assert events[4]["payload"]["bytes_sent"] == len(data)
    assert events[5]["payload"]["bytes_sent"] == 100
    assert events[6]["payload"]["properties"]["colour"] == "red"
    assert sorted(events[7]["payload"]["tags"]) == ["one", "two"]
    assert set(by_kind["image.member.create"]) >= MEMBER_FIELDS
    assert by_kind["image.member.update"]["status"] == "accepted"
    assert by_kind["image.member.delete"]["deleted"] is True
    assert by_kind["image.delete"]["deleted"] is True
    for event in events:
        assert event["publisher_id"].startswith("image."), event


def test_a_failed_v2_upload_is_an_error_notification(notifying: Server, topic: str) -> None:
    alice = _v2(notifying, "alice")
    image = alice.create(name=unique("v2-short"))
    resp = alice.upload(image["id"], b"short", **{"X-OpenStack-Image-Size": "100"})
    assert resp.status == 400, resp
    assert alice.show(image["id"]).json()["status"] == "queued"
    errors = consume(topic, "error", 1)
    assert errors[0]["event_type"] == "image.upload"
    assert image["id"] in errors[0]["payload"]


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_label_v2_requests_by_route_template(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "srv")
    try:
        v2 = V2(Api(srv.url))
        image = v2.active(b"m" * 1000, name=unique("v2-metrics"))
        image_id = image["id"]
        assert v2.show(image_id).status == 200
        assert v2.download(image_id).status == 200
        assert v2.call("PUT", f"images/{image_id}/tags/images").status == 204
        assert v2.call("POST", f"images/{image_id}/actions/deactivate").status == 204
        assert v2.list().status == 200
        found = samples(Api(srv.url).request("GET", "/metrics"))
    finally:
        srv.close()
    requests = "osimage_http_requests_total"
    one = {"api": "v2", "route": "/v2/images/{id}"}
    assert value(found, requests, **one, method="GET", status="200") == 2  # active(), show
    assert value(found, requests, api="v2", route="/v2/images", method="POST", status="201") == 1
    assert value(found, requests, api="v2", route="/v2/images", method="GET", status="200") == 1
    data = {"api": "v2", "route": "/v2/images/{id}/file"}
    assert value(found, requests, **data, method="PUT", status="204") == 1
    assert value(found, requests, **data, method="GET", status="200") == 1
    tag = {"api": "v2", "route": "/v2/images/{id}/tags/{id}", "method": "PUT", "status": "204"}
    assert value(found, requests, **tag) == 1
    action = "/v2/images/{id}/actions/deactivate"
    assert value(found, requests, api="v2", route=action, method="POST", status="204") == 1
    routes = {dict(labels).get("route") for (name, labels) in found if name == requests}
    assert not any(image_id in route for route in routes if route), routes
    assert value(found, "osimage_image_bytes_downloaded_total") == 1000
    assert value(found, "osimage_image_bytes_uploaded_total") == 1000
    assert ("osimage_transfers_in_progress", (("kind", "upload"),)) in found


def test_imports_send_prepare_upload_activate(topic: str, tmp_path: Path) -> None:
    data = b"imported data " * 500
    with serve_source() as source:
        source.scripts["/image"] = Script(str(len(data)), str(len(data)), data)
        srv = start_server(
            tmp_path / "srv",
            "--allow-source-network", "127.0.0.1/32",
            "--notification-transport-url", TRANSPORT,
            "--notification-topic", topic,
            auth="tokens",
        )  # fmt: skip
        try:
            alice = _v2(srv, "alice")
            fetched = alice.create(name=unique("v2-web"))["id"]
            body = {"method": {"name": "web-download", "uri": source.url("/image")}}
            assert alice.call("POST", f"images/{fetched}/import", body).status == 202
            wait_until(lambda: alice.show(fetched).json()["status"] == "active", "imported")
            staged = alice.create(name=unique("v2-direct"))["id"]
            resp = alice.call("PUT", f"images/{staged}/stage", headers=OCTETS, data=data)
            assert resp.status == 204, resp
            body = {"method": {"name": "glance-direct"}}
            assert alice.call("POST", f"images/{staged}/import", body).status == 202
            failed = alice.create(name=unique("v2-missing"))["id"]
            body = {"method": {"name": "web-download", "uri": source.url("/missing")}}
            assert alice.call("POST", f"images/{failed}/import", body).status == 202
            errors = consume(topic, "error", 1)
        finally:
            srv.close()
    events = consume(topic, "info", 10)
    seen = [(event["event_type"], event["payload"]["id"]) for event in events]
    assert seen == [
        ("image.create", fetched),
        ("image.prepare", fetched),
        ("image.upload", fetched),
        ("image.activate", fetched),
        ("image.create", staged),
        ("image.prepare", staged),
        ("image.upload", staged),
        ("image.activate", staged),
        ("image.create", failed),
        ("image.prepare", failed),
    ], seen
    assert events[3]["payload"]["size"] == len(data)
    assert errors[0]["event_type"] == "image.upload"
    assert failed in errors[0]["payload"]
