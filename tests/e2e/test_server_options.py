"""Server options beyond the defaults, through a real `osimage serve`: delayed delete and
its scrubber, the per-project storage quota, and property protections (spec §11.3, §13.2).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from osimage import wire
from osimage.server.settings import Settings, SettingsError
from tests.e2e.raw_http import (
    FIVE_KIB,
    FORMATS,
    OCTETS,
    Reply,
    as_user,
    call,
    create,
    meta,
)
from tests.support.server import Server, start_server

pytestmark = pytest.mark.e2e


# -- delayed delete and the scrubber ---------------------------------------------------


def wait_for_status(srv: Server, path: str, wanted: set[str]) -> str:
    """Poll HEAD (as an admin) until the image reaches one of `wanted`; return its status."""
    status = ""
    for _ in range(600):
        status = call(srv, "HEAD", path).header("x-image-meta-status") or ""
        if status in wanted:
            break
        time.sleep(0.05)
    return status


def test_delayed_delete_waits_for_the_scrubber(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    blobs = data_dir / "images"
    # a scrubber that will not run during the first part: its first run is at startup
    srv = Server(data_dir=data_dir, args=["--delayed-delete", "--scrub-interval", "3600"]).start()
    try:
        made = create(srv, *meta(name="later"), *FORMATS, data=FIVE_KIB)
        path = f"/v1/images/{made.image['id']}"
        deleted = call(srv, "DELETE", path)
        assert (deleted.status, deleted.body) == (200, b"")
        head = call(srv, "HEAD", path)
        assert head.header("x-image-meta-status") == "pending_delete"
        assert head.header("x-image-meta-deleted") == "True"
        assert (blobs / made.image["id"]).exists()  # the data waits for the scrubber
        again = call(srv, "DELETE", path, [("Accept", "application/json")])
        assert again.status == 403
        assert again.json["message"] == "Forbidden to delete a pending_delete image."
        assert call(srv, "GET", path).status == 404
        assert call(srv, "GET", f"{path}/file").status == 404
        assert made.image["id"] not in call(srv, "GET", "/v1/images?is_public=none").body.decode()
        since = call(srv, "GET", "/v1/images/detail?is_public=none&changes-since=2000-01-01")
        [record] = [i for i in since.json["images"] if i["id"] == made.image["id"]]
        assert (record["status"], record["deleted"]) == ("pending_delete", True)
        renamed = call(srv, "PUT", path, meta(name="renamed while pending"))  # admin: allowed
        assert (renamed.status, renamed.image["status"]) == (200, "pending_delete")
        # an image without data has nothing to scrub: deleted at once
        queued = create(srv, *meta(name="no data"))
        assert call(srv, "DELETE", f"/v1/images/{queued.image['id']}").status == 200
        head = call(srv, "HEAD", f"/v1/images/{queued.image['id']}")
        assert head.header("x-image-meta-status") == "deleted"
    finally:
        srv.stop()
    # the next start scrubs at once, then every 0.1 s
    srv = Server(data_dir=data_dir, args=["--delayed-delete", "--scrub-interval", "0.1"]).start()
    try:
        assert wait_for_status(srv, path, {"deleted"}) == "deleted"
        assert not (blobs / made.image["id"]).exists()
        assert call(srv, "DELETE", path).status == 404
        second = create(srv, *meta(name="soon"), *FORMATS, data=FIVE_KIB)
        second_path = f"/v1/images/{second.image['id']}"
        assert call(srv, "DELETE", second_path).status == 200
        assert wait_for_status(srv, second_path, {"deleted"}) == "deleted"
        assert not (blobs / second.image["id"]).exists()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_pending_deletes_are_scrubbed_when_delayed_delete_is_turned_off(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    srv = Server(data_dir=data_dir, args=["--delayed-delete", "--scrub-interval", "3600"]).start()
    try:
        made = create(srv, *meta(name="pending"), *FORMATS, data=FIVE_KIB)
        path = f"/v1/images/{made.image['id']}"
        assert call(srv, "DELETE", path).status == 200
        assert call(srv, "HEAD", path).header("x-image-meta-status") == "pending_delete"
    finally:
        srv.stop()
    srv = Server(data_dir=data_dir).start()  # startup finishes what was pending
    try:
        assert call(srv, "HEAD", path).header("x-image-meta-status") == "deleted"
        assert not (data_dir / "images" / made.image["id"]).exists()
        other = create(srv, *meta(name="now"), *FORMATS, data=FIVE_KIB)
        assert call(srv, "DELETE", f"/v1/images/{other.image['id']}").status == 200
        head = call(srv, "HEAD", f"/v1/images/{other.image['id']}")
        assert head.header("x-image-meta-status") == "deleted"  # no delay without the option
    finally:
        srv.stop()


def test_pending_delete_is_invisible_to_its_owner(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--delayed-delete", "--scrub-interval", "3600", auth="tokens")
    try:
        made = create(srv, *as_user("alice-token", *meta(name="mine")), *FORMATS, data=FIVE_KIB)
        path = f"/v1/images/{made.image['id']}"
        assert call(srv, "DELETE", path, as_user("alice-token")).status == 200
        for method in ("HEAD", "GET", "DELETE"):
            assert call(srv, method, path, as_user("alice-token")).status == 404, method
        head = call(srv, "HEAD", path, as_user("admin-token"))
        assert head.header("x-image-meta-status") == "pending_delete"
        assert call(srv, "DELETE", path, as_user("admin-token")).status == 403
    finally:
        srv.stop()


# -- per-project storage quota ---------------------------------------------------------


def blob_names(srv: Server) -> set[str]:
    """Every file in the filesystem store, partial ones included."""
    return {p.name for p in (srv.data_dir / "images").iterdir()}


def test_storage_quota_kills_uploads_that_do_not_fit(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--user-storage-quota", "500B")
    try:
        over = b"x" * 501
        for extra, body in (
            ([], over),  # Content-Length
            ([], iter([over[:300], over[300:]])),  # chunked, size unknown
            (meta(size=501), iter([over])),  # chunked, declared size
        ):
            refused = create(srv, *meta(name="big"), *FORMATS, *extra, OCTETS, data=None)
            assert refused.status == 201
            path = f"/v1/images/{refused.image['id']}"
            put = call(srv, "PUT", path, [OCTETS, ("Accept", "application/json")], body)
            assert put.status == 413, put
            assert put.json["message"].startswith(
                "Denying attempt to upload image because it exceeds the quota"
            )
            assert call(srv, "HEAD", path).header("x-image-meta-status") == "killed"
        assert blob_names(srv) == set()  # killed uploads leave no data, partial or not
        refused = create(srv, *meta(name="big"), *FORMATS, data=over)  # POST with data
        assert refused.status == 413
        assert blob_names(srv) == set()
        # what fits is stored; the rest of the quota is what remains
        first = create(srv, *meta(name="300"), *FORMATS, data=b"a" * 300)
        assert (first.status, first.image["status"]) == (201, "active")
        assert create(srv, *meta(name="201"), *FORMATS, data=b"b" * 201).status == 413
        assert create(srv, *meta(name="200"), *FORMATS, data=b"c" * 200).status == 201
        assert create(srv, *meta(name="1"), *FORMATS, data=b"d").status == 413
        # deleting frees the quota; queued images and killed ones never count
        assert call(srv, "DELETE", f"/v1/images/{first.image['id']}").status == 200
        assert create(srv, *meta(name="300 again"), *FORMATS, data=b"e" * 300).status == 201
        assert len(blob_names(srv)) == 2
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_storage_quota_is_per_project_and_counts_pending_deletes(tmp_path: Path) -> None:
    args = ("--user-storage-quota", "1KB", "--delayed-delete", "--scrub-interval", "3600")
    srv = start_server(tmp_path, *args, auth="tokens")
    kib = b"k" * 1024
    try:
        alice = create(srv, *as_user("alice-token", *meta(name="a")), *FORMATS, data=kib)
        assert alice.status == 201
        one_more = create(srv, *as_user("alice-token", *meta(name="a2")), *FORMATS, data=b"1")
        assert one_more.status == 413
        bob = create(srv, *as_user("bob-token", *meta(name="b")), *FORMATS, data=kib)
        assert bob.status == 201  # bob's project has its own quota
        path = f"/v1/images/{alice.image['id']}"
        assert call(srv, "DELETE", path, as_user("alice-token")).status == 200
        # pending_delete: the data is still stored, so it still counts
        again = create(srv, *as_user("alice-token", *meta(name="a3")), *FORMATS, data=kib)
        assert again.status == 413
    finally:
        srv.stop()
    without_delay = [a for a in srv.args if a not in args[2:]]
    assert without_delay[:2] == ["--user-storage-quota", "1KB"]
    srv = Server(data_dir=srv.data_dir, args=without_delay).start()
    try:  # the restart scrubbed alice's image: her quota is free again
        again = create(srv, *as_user("alice-token", *meta(name="a4")), *FORMATS, data=kib)
        assert again.status == 201
    finally:
        srv.stop()


def test_storage_quota_applies_to_copies(tmp_path: Path) -> None:
    srv = start_server(
        tmp_path, "--user-storage-quota", "1000", "--allow-source-network", "127.0.0.1/32"
    )
    try:
        source = create(srv, *meta(name="600"), *FORMATS, data=b"s" * 600)
        url = f"{srv.url}/v1/images/{source.image['id']}"
        copy = create(srv, *meta(name="copy"), *FORMATS, (wire.COPY_FROM_HEADER, url))
        assert copy.status == 201
        path = f"/v1/images/{copy.image['id']}"
        assert wait_for_status(srv, path, {"active", "killed"}) == "killed"
        assert blob_names(srv) == {source.image["id"]}
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("given", "expected"),
    [("0", 0), ("500", 500), ("500B", 500), ("2KB", 2048), ("10MB", 10 << 20), ("1TB", 1 << 40)],
)
def test_storage_quota_sizes(given: str, expected: int) -> None:
    assert Settings.load({"user_storage_quota": given}, {}).user_storage_quota == expected


@pytest.mark.parametrize(
    ("flags", "env", "source"),
    [
        ({"user_storage_quota": "10XB"}, {}, "--user-storage-quota"),
        ({}, {"OSIMAGE_USER_STORAGE_QUOTA": "-1"}, "OSIMAGE_USER_STORAGE_QUOTA"),
        ({"scrub_interval": "0"}, {}, "--scrub-interval"),
    ],
)
def test_bad_quota_and_scrub_settings_name_their_source(
    flags: dict[str, str], env: dict[str, str], source: str
) -> None:
    with pytest.raises(SettingsError, match=source):
        Settings.load(flags, env)


# -- property protections ----------------------------------------------------------------

PROTECTIONS = """
[^x_owner_]
create = admin,member
read = admin,member
update = admin
delete = admin

[^x_secret]
create = admin
read = admin
update = admin
delete = admin

[^x_frozen$]
create = @
read = @
update = !
delete = !

[.*]
create = @
read = @
update = @
delete = @
"""


def props(reply: Reply) -> dict[str, str]:
    """The properties a HEAD answer shows."""
    prefix = wire.PROPERTY_PREFIX
    return {k.lower()[len(prefix) :]: v for k, v in reply.headers if k.lower().startswith(prefix)}


def test_property_protections(tmp_path: Path) -> None:
    rules = tmp_path / "protections.conf"
    rules.write_text(PROTECTIONS)
    srv = start_server(tmp_path, "--property-protection-file", str(rules), auth="tokens")
    alice, admin = "alice-token", "admin-token"
    try:
        refused = create(
            srv,
            *as_user(alice, *meta(name="sneaky")),
            ("x-image-meta-property-x_secret_key", "s"),
            ("Accept", "application/json"),
        )
        assert refused.status == 403
        assert refused.json["message"] == "Property 'x_secret_key' is protected"
        listed = call(srv, "GET", "/v1/images/detail", as_user(alice)).json["images"]
        assert "sneaky" not in {i["name"] for i in listed}

        made = create(
            srv,
            *as_user(admin, *meta(name="guarded", owner="p-alice")),
            *FORMATS,
            *wire.encode({}, {"x_secret_key": "s", "x_owner_tag": "t", "x_frozen": "f", "a": "1"}),
            data=FIVE_KIB,
        )
        assert made.status == 201
        assert set(made.image["properties"]) == {"x_secret_key", "x_owner_tag", "x_frozen", "a"}
        path = f"/v1/images/{made.image['id']}"
        seen = {"x_owner_tag": "t", "x_frozen": "f", "a": "1"}
        # read: what alice may not read is in no answer she gets
        assert props(call(srv, "HEAD", path, as_user(alice))) == seen
        assert props(call(srv, "GET", path, as_user(alice))) == seen
        assert props(call(srv, "GET", f"{path}/file", as_user(alice))) == seen
        [record] = [
            i
            for i in call(srv, "GET", "/v1/images/detail", as_user(alice)).json["images"]
            if i["id"] == made.image["id"]
        ]
        assert record["properties"] == seen
        assert props(call(srv, "HEAD", path, as_user(admin)))["x_secret_key"] == "s"

        def put(*headers: tuple[str, str]) -> Reply:
            return call(srv, "PUT", path, as_user(alice, *headers, ("Accept", "application/json")))

        keep = wire.encode({}, seen)
        no_purge = (wire.PURGE_PROPS_HEADER, "false")
        # update: needs read, and update unless the value stays the same
        assert put(*keep).status == 200
        changed = put(*wire.encode({}, {**seen, "x_owner_tag": "new"}))
        assert (changed.status, changed.json["message"]) == (
            403,
            "Property 'x_owner_tag' is protected",
        )
        assert put(*wire.encode({}, {**seen, "x_frozen": "thawed"})).status == 403
        assert put(no_purge, ("x-image-meta-property-x_secret_key", "s")).status == 403
        # create: a new key needs create
        assert put(no_purge, ("x-image-meta-property-x_secret_2", "v")).status == 403
        assert put(no_purge, ("x-image-meta-property-b", "2")).status == 200
        # delete (a purge): readable keys need delete; unreadable ones are kept silently
        assert put(*wire.encode({}, {"x_owner_tag": "t", "a": "1"})).status == 403  # x_frozen
        purged = put(*wire.encode({}, {"x_owner_tag": "t", "x_frozen": "f"}))
        assert purged.status == 200
        assert purged.image["properties"] == {"x_owner_tag": "t", "x_frozen": "f"}
        assert props(call(srv, "HEAD", path, as_user(admin))) == {
            "x_owner_tag": "t",
            "x_frozen": "f",
            "x_secret_key": "s",
        }
        # the rules bind admins too: x_frozen cannot change, whoever asks
        frozen = call(
            srv, "PUT", path, as_user(admin, no_purge, *wire.encode({}, {"x_frozen": "x"}))
        )
        assert frozen.status == 403
        admin_put = call(
            srv, "PUT", path, as_user(admin, no_purge, *wire.encode({}, {"x_owner_tag": "n"}))
        )
        assert admin_put.status == 200
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_a_key_no_rule_matches_is_protected(tmp_path: Path) -> None:
    rules = tmp_path / "protections.conf"
    rules.write_text("[^public_]\ncreate = @\nread = @\nupdate = @\ndelete = @\n")
    srv = start_server(tmp_path, "--property-protection-file", str(rules))
    try:
        assert create(srv, *wire.encode({}, {"public_a": "1"})).status == 201
        assert create(srv, *wire.encode({}, {"other": "1"})).status == 403
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[(unclosed]\ncreate = @\nread = @\nupdate = @\ndelete = @\n", "regular expression"),
        ("[.*]\ncreate = @\nread = @\nupdate = @\n", "needs delete"),
        ("[.*]\ncreate = @,!\nread = @\nupdate = @\ndelete = @\n", "cannot both"),
        ("[.*]\ncreate = @\nread = @\nupdate = @\ndelete = @\nlist = @\n", "unknown keys: list"),
    ],
)
def test_a_bad_property_protection_file_stops_startup(
    tmp_path: Path, text: str, complaint: str
) -> None:
    rules = tmp_path / "protections.conf"
    rules.write_text(text)
    with pytest.raises(RuntimeError, match="exited early") as failed:
        start_server(tmp_path, "--property-protection-file", str(rules))
    assert complaint in str(failed.value)
    assert "Traceback" not in str(failed.value)
