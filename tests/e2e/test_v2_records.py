"""Issues 12 and 14: v2 lists and `GET /v2/images/{id}` are served from each image's
stored v2 record, and a v1 HEAD from its stored headers, which every write through
either API must rewrite with the v1 record.
A record whose stamp is not its image's (or missing) is never served: the answer is
rendered from the row instead. These tests read and plant records in the server's own
database (SQLite or PostgreSQL, whichever the backend gives it).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from tests.e2e.api_client import PURGE_PROPS_HEADER, Api, meta, props, unique
from tests.e2e.v2_client import V2
from tests.support.backends import postgres_rows
from tests.support.server import Server

pytestmark = pytest.mark.e2e


def sql(server: Server, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement in the server's database; its rows."""
    if "--database" in server.args:
        url = server.args[server.args.index("--database") + 1]
        return postgres_rows(url.rpartition("/")[2], statement)
    with sqlite3.connect(server.data_dir / "osimage.db") as conn:
        return conn.execute(statement).fetchall()


def stored(server: Server, image_id: str) -> tuple[bool, Any, Any]:
    """(whether the records carry the image's stamp, the v1 record, the v2 record)."""
    ((fresh, v1, v2),) = sql(
        server,
        "SELECT r.updated_at = i.updated_at, r.v1, r.v2 FROM image_records r "
        f"JOIN images i ON i.id = r.image_id WHERE r.image_id = '{image_id}'",
    )
    return bool(fresh), json.loads(v1), None if v2 is None else json.loads(v2)


def listed_v2(v2: V2, image_id: str) -> dict[str, Any]:
    resp = v2.list("limit=1000")
    assert resp.status == 200, resp
    entries: list[dict[str, Any]] = resp.json()["images"]
    (entry,) = [image for image in entries if image["id"] == image_id]
    return entry


def current(api: Api, v2: V2, server: Server, image_id: str) -> dict[str, Any]:
    """The image through v2 (show and list agree), after checking that its stored records
    were rewritten by the last write: fresh, and each equal to what its API shows."""
    fresh, v1, record = stored(server, image_id)
    assert fresh
    shown = v2.show(image_id)
    assert shown.status == 200, shown
    assert record == shown.json() == listed_v2(v2, image_id)
    (entry,) = [
        e
        for e in api.detail(is_public="none", changes_since="2000-01-01T00:00:00").images
        if e["id"] == image_id
    ]
    assert v1 == entry
    return record  # type: ignore[no-any-return]


@pytest.fixture
def v2(fresh: Api) -> V2:
    return V2(fresh)


def test_writes_through_either_api_rewrite_both_records(
    fresh: Api, v2: V2, fresh_server: Server
) -> None:
    made = v2.create(name=unique("rec"), tags=["one", "two"], colour="red")
    image = current(fresh, v2, fresh_server, made["id"])  # a create's tags are in its record
    assert (image["tags"], image["colour"]) == (["one", "two"], "red")

    # v1 writes: properties, core fields, data; the v2 record follows
    assert fresh.update(made["id"], props(colour="blue", flavour="x")).status == 200
    image = current(fresh, v2, fresh_server, made["id"])
    assert (image["colour"], image["flavour"], image["tags"]) == ("blue", "x", ["one", "two"])
    keep = {PURGE_PROPS_HEADER: "false"}
    assert fresh.update(made["id"], {**meta(name="renamed", min_ram=64), **keep}).status == 200
    image = current(fresh, v2, fresh_server, made["id"])
    assert (image["name"], image["min_ram"], image["colour"]) == ("renamed", 64, "blue")
    assert fresh.update(made["id"], {**meta(is_public=True), **keep}).status == 200
    assert current(fresh, v2, fresh_server, made["id"])["visibility"] == "public"
    assert fresh.update(made["id"], keep, data=b"record data").status == 200
    image = current(fresh, v2, fresh_server, made["id"])
    assert (image["status"], image["size"]) == ("active", 11)
    assert image["os_hash_value"] is not None

    # v2 writes: tags and patches; the v1 record follows (updated_at, properties)
    before = stored(fresh_server, made["id"])[1]["updated_at"]
    assert v2.call("PUT", f"images/{made['id']}/tags/three").status == 204
    assert current(fresh, v2, fresh_server, made["id"])["tags"] == ["one", "two", "three"]
    assert v2.call("DELETE", f"images/{made['id']}/tags/one").status == 204
    assert current(fresh, v2, fresh_server, made["id"])["tags"] == ["two", "three"]
    ops = [
        {"op": "replace", "path": "/tags", "value": ["four"]},
        {"op": "add", "path": "/os_distro", "value": "debian"},
        {"op": "remove", "path": "/flavour"},
    ]
    assert v2.patch(made["id"], ops).status == 200
    image = current(fresh, v2, fresh_server, made["id"])
    assert (image["tags"], image["os_distro"], "flavour" in image) == (["four"], "debian", False)
    v1 = stored(fresh_server, made["id"])[1]
    assert v1["properties"] == {"colour": "blue", "os_distro": "debian"}
    assert v1["updated_at"] >= before
    assert v2.call("POST", f"images/{made['id']}/actions/deactivate").status == 204
    assert current(fresh, v2, fresh_server, made["id"])["status"] == "deactivated"


def test_a_fresh_record_is_served_as_stored_and_a_stale_one_never(
    fresh: Api, v2: V2, fresh_server: Server
) -> None:
    made = v2.create(name=unique("stale"), tags=["t"])
    planted = '{"planted": true}'
    where = f"WHERE image_id = '{made['id']}'"

    # with the image's stamp, the stored text is the answer: the records are what is served
    sql(fresh_server, f"UPDATE image_records SET v2 = '{planted}' {where}")
    assert v2.show(made["id"]).json() == {"planted": True}
    assert v2.list().json()["images"] == [{"planted": True}]

    # another stamp (a writer that did not refresh): rendered from the row instead
    sql(fresh_server, f"UPDATE image_records SET updated_at = '2000-01-01 00:00:00' {where}")
    for answer in (v2.show(made["id"]).json(), v2.list().json()["images"][0]):
        assert (answer["id"], answer["tags"], answer["name"]) == (made["id"], ["t"], made["name"])
    assert fresh.detail(is_public="none").images[0]["id"] == made["id"]  # v1 falls back too

    # no v2 record (written by a process that predates them): rendered as well
    sql(
        fresh_server,
        f"UPDATE image_records SET v2 = NULL, updated_at = "
        f"(SELECT updated_at FROM images WHERE id = '{made['id']}') {where}",
    )
    assert v2.show(made["id"]).json()["tags"] == ["t"]
    assert v2.list().json()["images"][0]["id"] == made["id"]

    # a restart renders missing and stale records (migration 0006's backfill)
    fresh_server.restart()
    fresh_flag, _, record = stored(fresh_server, made["id"])
    assert fresh_flag
    assert record == v2.show(made["id"]).json()
    assert record["tags"] == ["t"]


def test_list_pages_from_records_match_rendered_pages(
    fresh: Api, v2: V2, fresh_server: Server
) -> None:
    """The same walk (filters, sort keys, markers, links) with every record fresh and then
    with every record stale gives the same bytes."""
    for n in range(7):
        v2.create(name=f"walk-{n % 3}", tags=["even" if n % 2 == 0 else "odd"], n=str(n))
    queries = [
        "limit=3",
        "limit=2&sort=name:asc,created_at:desc",
        "tag=even&limit=2",
        "name=in:walk-0,walk-2&sort_key=name&sort_dir=asc",
        "visibility=all&member_status=all&limit=100",
        "n=3",
    ]

    def walk() -> list[bytes]:
        bodies = []
        for query in queries:
            path: str | None = f"/v2/images?{query}"
            while path:
                resp = fresh.request("GET", path)
                assert resp.status == 200, resp
                bodies.append(resp.body)
                path = resp.json().get("next")
        return bodies

    served = walk()
    sql(fresh_server, "UPDATE image_records SET updated_at = '2000-01-01 00:00:00'")
    assert walk() == served


def head_lines(api: Api, image_id: str) -> list[tuple[str, str]]:
    """A v1 HEAD's headers in order, without those that differ between two answers."""
    resp = api.head(image_id)
    assert resp.status == 200, resp
    varying = {"date", "x-openstack-request-id"}
    return [(name, value) for name, value in resp.raw_headers if name.lower() not in varying]


def test_v1_head_is_served_from_stored_headers_equal_to_rendered_ones(
    fresh: Api, v2: V2, fresh_server: Server
) -> None:
    made = v2.create(name=unique("héad"), tags=["t"], colour="red", Mixed_Case="ÿes")
    assert fresh.update(made["id"], {PURGE_PROPS_HEADER: "false"}, data=b"head data").status == 200
    where = f"WHERE image_id = '{made['id']}'"
    served = head_lines(fresh, made["id"])
    assert ("x-image-meta-property-colour", "red") in served
    assert ("content-length", "9") in served

    # with the image's stamp, the stored text is what HEAD sends (the length its own)
    sql(fresh_server, f"UPDATE image_records SET v1_head = 'x-planted\nyes' {where}")
    assert head_lines(fresh, made["id"]) == [("x-planted", "yes"), ("content-length", "9")]

    # stale or missing: rendered from the row, the same headers in the same order
    sql(fresh_server, f"UPDATE image_records SET updated_at = '2000-01-01 00:00:00' {where}")
    assert head_lines(fresh, made["id"]) == served
    sql(
        fresh_server,
        f"UPDATE image_records SET v1_head = NULL, updated_at = "
        f"(SELECT updated_at FROM images WHERE id = '{made['id']}') {where}",
    )
    assert head_lines(fresh, made["id"]) == served

    # a restart renders the missing headers (migration 0007's backfill); writes through
    # either API rewrite them
    fresh_server.restart()
    ((kept,),) = sql(fresh_server, f"SELECT v1_head FROM image_records {where}")
    assert kept is not None
    assert "x-image-meta-property-colour\nred" in kept
    assert head_lines(fresh, made["id"]) == served
    assert (
        v2.patch(made["id"], [{"op": "replace", "path": "/colour", "value": "blue"}]).status == 200
    )
    assert fresh.head(made["id"]).properties["colour"] == "blue"
    assert (
        fresh.update(made["id"], {**props(colour="green"), PURGE_PROPS_HEADER: "false"}).status
        == 200
    )
    assert fresh.head(made["id"]).properties["colour"] == "green"
    assert stored(fresh_server, made["id"])[0]
