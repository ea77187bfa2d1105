"""The pure v2 decisions: who may read or change an image, and the list query language."""

from __future__ import annotations

from datetime import datetime

import pytest

from osimage.server import rules, v2query
from osimage.server.auth import Context
from osimage.server.db.catalog import ImageRow, MemberRow
from osimage.server.db.listing import V2Query
from osimage.server.errors import BadRequest

WHEN = datetime(2024, 1, 1)


def ctx(project: str | None, admin: bool = False) -> Context:
    return Context(user_id="u", project_id=project, roles=frozenset(), is_admin=admin)


def row(visibility: str, owner: str | None = "p1", deleted: bool = False) -> ImageRow:
    return ImageRow(
        id="i", name=None, status="active", size=None, virtual_size=None, checksum=None,
        sha256=None, disk_format=None, container_format=None, min_disk=0, min_ram=0,
        owner=owner, is_public=visibility == "public", protected=False, deleted=deleted,
        created_at=WHEN, updated_at=WHEN, deleted_at=None, location=None,
        location_is_external=False, visibility=visibility,
    )  # fmt: skip


def member(name: str, status: str = "pending", deleted: bool = False) -> MemberRow:
    return MemberRow(image_id="i", member=name, can_share=False, deleted=deleted, status=status)


@pytest.mark.parametrize(
    ("visibility", "caller", "membership", "expected"),
    [
        ("public", ctx("p2"), None, True),
        ("community", ctx(None), None, True),
        ("private", ctx("p2"), None, False),
        ("private", ctx("p1"), None, True),
        ("private", ctx("p2"), member("p2", "accepted"), False),  # rows grant nothing
        ("shared", ctx("p2"), member("p2", "pending"), True),  # any status reads
        ("shared", ctx("p2"), member("p2", "rejected"), True),
        ("shared", ctx("p2"), member("p2", deleted=True), False),
        ("shared", ctx("p3"), member("p2"), False),
        ("shared", ctx(None, admin=True), None, True),
    ],
)
def test_readable(
    visibility: str, caller: Context, membership: MemberRow | None, expected: bool
) -> None:
    assert rules.readable(caller, row(visibility), membership) is expected


def test_deleted_and_ownerless() -> None:
    assert not rules.readable(ctx(None, admin=True), row("public", deleted=True), None)
    assert rules.readable(ctx("p9"), row("private", owner=None), None)
    assert not rules.writable(ctx("p9"), row("private", owner=None))


def test_write_and_policy_rules() -> None:
    assert rules.writable(ctx("p1"), row("public"))
    assert not rules.writable(ctx("p2"), row("public"))
    assert rules.may_set_visibility(ctx("p1"), "community")
    assert not rules.may_set_visibility(ctx("p1"), "public")
    assert rules.may_set_visibility(ctx(None, admin=True), "public")
    assert rules.may_change_member_status(ctx("p2"), "p2")
    assert not rules.may_change_member_status(ctx("p1"), "p2")
    assert rules.may_change_member_status(ctx(None, admin=True), "p2")
    assert (rules.visibility_of(True), rules.visibility_of(False)) == ("public", "shared")


def parse(query: str, caller: Context | None = None) -> V2Query:
    pairs = [tuple(p.split("=", 1)) for p in query.split("&")] if query else []
    parsed, _ = v2query.parse(caller or ctx("p1"), pairs, limit_default=25, limit_max=1000)  # type: ignore[arg-type]
    return parsed


def test_sorting_forms() -> None:
    assert parse("").sort == [("created_at", "desc"), ("id", "desc")]
    assert parse("sort=name:asc,size").sort == [
        ("name", "asc"), ("size", "desc"), ("created_at", "asc"), ("id", "asc"),
    ]  # fmt: skip
    assert parse("sort_key=name&sort_key=size&sort_dir=asc").sort[:2] == [
        ("name", "asc"), ("size", "asc"),
    ]  # fmt: skip


def test_operators_and_filters() -> None:
    query = parse('name=in:"a, b",c&status=eq:active&tag=x&tag=y&os_distro=u&limit=5000')
    assert query.one_of == {"name": ["a, b", "c"], "status": ["active"]}
    assert (query.tags, query.properties, query.limit) == (["x", "y"], {"os_distro": "u"}, 1000)
    assert parse("created_at=2024-01-01T00:00:00Z").times == [("created_at", "eq", WHEN)]
    assert parse("updated_at=gte:2024-01-01T02:00:00+02:00").times == [("updated_at", "gte", WHEN)]
    assert parse("os_hidden=True").os_hidden is True
    assert parse("size=5").exact == {"size": 5}


@pytest.mark.parametrize(
    "query",
    ["name=x:y", "limit=-1", "sort_key=owner", "protected=True", "member_status=x",
     "changes-since=2024-01-01", "created_at=lt:never", "marker=nope", "size_min=x"],
)  # fmt: skip
def test_bad_queries(query: str) -> None:
    with pytest.raises(BadRequest):
        parse(query)
