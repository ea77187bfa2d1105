"""v1's server options act on v2 too: delayed delete and property protections."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.api_client import Api
from tests.e2e.conftest import assert_no_tracebacks
from tests.e2e.test_server_options import PROTECTIONS
from tests.e2e.v2_client import V2
from tests.support.server import Server, start_server

pytestmark = pytest.mark.e2e


def test_v2_delete_with_delayed_delete_leaves_data_for_the_scrubber(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    srv = Server(data_dir=data_dir, args=["--delayed-delete", "--scrub-interval", "3600"]).start()
    try:
        v2 = V2(Api(srv.url))
        image = v2.active(b"scrub me later")
        assert v2.call("DELETE", f"images/{image['id']}").status == 204
        assert v2.show(image["id"]).status == 404  # soft-deleted images are 404 in v2
        assert v2.call("DELETE", f"images/{image['id']}").status == 404
        head = v2.api.head(image["id"])  # v1 admins still see the record
        assert head.meta["status"] == "pending_delete"
        assert (data_dir / "images" / image["id"]).exists()
        assert image["id"] not in v2.ids("visibility=all&limit=1000")
        assert_no_tracebacks(srv)
    finally:
        srv.stop()


def test_property_protections_in_v2(tmp_path: Path) -> None:
    rules = tmp_path / "protections.conf"
    rules.write_text(PROTECTIONS)
    srv = start_server(tmp_path, "--property-protection-file", str(rules), auth="tokens")
    try:
        alice = V2(Api(srv.url, "alice-token"))
        admin = V2(Api(srv.url, "admin-token"))
        refused = alice.call("POST", "images", {"name": "sneaky", "x_secret_key": "s"})
        assert refused.status == 403
        made = admin.create(owner="p-alice", x_secret_key="s", x_owner_tag="t", x_frozen="f", a="1")
        seen = alice.show(made["id"]).json()
        assert "x_secret_key" not in seen  # unreadable keys are omitted
        assert (seen["x_owner_tag"], seen["x_frozen"], seen["a"]) == ("t", "f", "1")
        assert admin.show(made["id"]).json()["x_secret_key"] == "s"
        for ops in (
            [{"op": "replace", "path": "/x_owner_tag", "value": "u"}],  # update: admin only
            [{"op": "remove", "path": "/x_frozen"}],
            [{"op": "add", "path": "/x_secret_new", "value": "v"}],
        ):
            assert alice.patch(made["id"], ops).status == 403, ops
        ok = alice.patch(made["id"], [{"op": "replace", "path": "/a", "value": "2"}])
        assert ok.status == 200
        assert "x_secret_key" not in ok.json()
        assert admin.show(made["id"]).json()["x_secret_key"] == "s"  # kept, though unseen
        assert_no_tracebacks(srv)
    finally:
        srv.stop()


def test_v2_upload_honours_the_storage_quota(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--user-storage-quota", "100", auth="tokens")
    try:
        alice = V2(Api(srv.url, "alice-token"))
        image = alice.create()
        resp = alice.upload(image["id"], iter([b"x" * 80, b"x" * 80]))
        assert resp.status == 413, resp
        assert alice.show(image["id"]).json()["status"] == "queued"
        assert alice.upload(image["id"], b"x" * 60).status == 204
        second = alice.create()
        assert alice.upload(second["id"], b"x" * 60).status == 413
        assert_no_tracebacks(srv)
    finally:
        srv.stop()
