"""The pure v1 decisions of `rules`: who may see, change, delete or download an image, which
values and status changes are allowed, and the quota arithmetic. No HTTP, no database.

The wire-level cases (headers, status codes through a real server) stay in tests/e2e."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

import pytest

from osimage.server import rules
from osimage.server.auth import Context
from osimage.server.db.catalog import ImageRow, MemberRow, Scope
from osimage.server.errors import ApiError, BadRequest, Conflict, Forbidden, NotFound, TooLarge

WHEN = datetime(2024, 1, 1)
ADMIN = Context(user_id="u0", project_id=None, roles=frozenset({"admin"}), is_admin=True)
OWNER = Context(user_id="u1", project_id="p1", roles=frozenset(), is_admin=False)
OTHER = Context(user_id="u2", project_id="p2", roles=frozenset(), is_admin=False)
NOBODY = Context(user_id="u3", project_id=None, roles=frozenset(), is_admin=False)


def image(**changes: Any) -> ImageRow:
    values: dict[str, Any] = dict(
        id="i1", name=None, status="active", size=5, virtual_size=None, checksum="c" * 32,
        sha256=None, disk_format="raw", container_format="bare", min_disk=0, min_ram=0,
        owner="p1", is_public=False, protected=False, deleted=False, created_at=WHEN,
        updated_at=WHEN, deleted_at=None, location=None, location_is_external=False,
        visibility="shared",
    )  # fmt: skip
    values.update(changes)
    if "is_public" in changes and "visibility" not in changes:
        values["visibility"] = rules.visibility_of(changes["is_public"])
    return ImageRow(**values)


def member(name: str = "p2", *, deleted: bool = False) -> MemberRow:
    return MemberRow(image_id="i1", member=name, can_share=False, deleted=deleted)


# -- ids, formats, bounds ----------------------------------------------------------------


def test_plausible_ids() -> None:
    assert rules.plausible_id(str(uuid.uuid4()))
    assert not rules.plausible_id("x" * 37)  # longer than the column: a miss, not a query
    assert not rules.plausible_id("abc\x00")  # PostgreSQL text cannot hold a NUL


def test_new_image_ids() -> None:
    given = uuid.uuid4()
    assert rules.new_image_id(given.hex.upper()) == str(given)  # canonical form
    assert uuid.UUID(rules.new_image_id(None)).version == 4
    with pytest.raises(BadRequest, match="x-image-meta-id: 'nope'"):
        rules.new_image_id("nope")


def test_empty_headers_mean_not_given() -> None:
    fields = {"size": None, "min_ram": None, "is_public": None, "name": None}
    assert rules.v1_fields(fields, {}) == {"name": None}  # a name may be cleared


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"disk_format": "floppy"}, "Invalid disk format 'floppy' for image."),
        ({"container_format": "zip"}, "Invalid container format 'zip' for image."),
        ({"disk_format": "aki", "container_format": "ari"}, "Invalid mix of disk and container"),
        ({"disk_format": "ami", "container_format": "bare"}, "Invalid mix of disk and container"),
        ({"size": 2**63}, f"x-image-meta-size: value out of range, got {2**63}"),
        ({"virtual_size": 2**63}, "x-image-meta-virtual_size: value out of range"),
        ({"owner": "o" * 256}, "x-image-meta-owner: longer than 255 characters"),
    ],
)
def test_bad_fields_name_the_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(message)):
        rules.v1_fields(fields, {})


def test_amazon_formats_fill_in_their_pair() -> None:
    assert rules.v1_fields({"disk_format": "aki"}, {})["container_format"] == "aki"
    assert rules.v1_fields({"container_format": "ami"}, {})["disk_format"] == "ami"
    both = {"disk_format": "ari", "container_format": "ari"}
    assert rules.v1_fields(both, {}) == both


def test_bounds_at_the_limit_pass_and_long_property_keys_fail() -> None:
    fields = {"size": 2**63 - 1, "owner": "o" * 255}
    assert rules.v1_fields(fields, {"k" * 255: "v"}) == fields
    with pytest.raises(BadRequest, match=r"Property key longer than 255 characters: k{32}\.\.\.$"):
        rules.v1_fields({}, {"k" * 256: "v"})


def test_data_needs_both_formats_now_or_on_the_image() -> None:
    with pytest.raises(BadRequest, match="Disk format is not specified"):
        rules.require_formats({"container_format": "bare"})
    with pytest.raises(BadRequest, match="Container format is not specified"):
        rules.require_formats({"disk_format": "raw"})
    rules.require_formats({}, image())  # the queued image has them already
    with pytest.raises(BadRequest, match="Container format"):
        rules.require_formats({}, image(container_format=None))


@pytest.mark.parametrize(
    ("fields", "copy_from", "data", "message"),
    [
        ({"location": None}, None, False, "External source should not be empty"),
        ({}, "", False, "External source should not be empty"),
        ({"location": "http://a/x"}, "http://b/y", False, "multiple image sources"),
        ({"location": "http://a/x"}, None, True, "multiple image sources"),
        ({}, "http://b/y", True, "multiple image sources"),
    ],
)
def test_one_source_at_most(
    fields: dict[str, Any], copy_from: str | None, data: bool, message: str
) -> None:
    with pytest.raises(BadRequest, match=message):
        rules.check_sources(fields, copy_from, data=data)


def test_a_single_source_passes() -> None:
    rules.check_sources({"location": "http://a/x"}, None, data=False)
    rules.check_sources({}, "http://b/y", data=False)
    rules.check_sources({}, None, data=True)


def test_size_cap() -> None:
    rules.check_size_cap(None, 10)
    rules.check_size_cap(10, 10)
    with pytest.raises(rules.OverCap) as over:
        rules.check_size_cap(11, 10)
    assert (over.value.size, over.value.cap) == (11, 10)


def test_missing_formats_are_named_in_order() -> None:
    assert rules.missing_formats({}) == ["disk_format", "container_format"]
    assert rules.missing_formats({"disk_format": "raw"}) == ["container_format"]
    assert rules.missing_formats({}, image()) == []
    assert rules.missing_formats({"container_format": "bare"}, image(disk_format=None)) == [
        "disk_format"
    ]


def test_the_data_must_be_as_long_as_declared() -> None:
    rules.check_declared_size(None, 7)  # nothing declared (chunked)
    rules.check_declared_size(7, 7)
    with pytest.raises(BadRequest, match=r"declared in the request \(10\) .* received \(5\)"):
        rules.check_declared_size(10, 5)


def test_uploaded_data_must_match_what_was_declared() -> None:
    rules.check_upload_matches(image(size=0, checksum=None), 7, "d" * 32)  # nothing declared
    rules.check_upload_matches(image(size=7, checksum="d" * 32), 7, "d" * 32)
    with pytest.raises(BadRequest, match=r"Supplied size \(5\) and size generated .* \(7\)"):
        rules.check_upload_matches(image(size=5), 7, "c" * 32)
    with pytest.raises(BadRequest, match="Supplied checksum"):
        rules.check_upload_matches(image(size=5), 5, "d" * 32)


# -- who may see an image through v1 ----------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "row", "membership", "expected"),
    [
        (ADMIN, image(deleted=True), None, True),  # admins see even deleted images
        (OWNER, image(deleted=True), None, False),
        (OTHER, image(owner=None), None, True),  # ownerless: everyone's
        (OTHER, image(is_public=True), None, True),
        (NOBODY, image(visibility="community"), None, True),
        (NOBODY, image(), None, False),  # a caller without a project sees only the above
        (OWNER, image(), None, True),
        (OWNER, image(visibility="private"), None, True),
        (OTHER, image(visibility="private"), member(), False),  # rows of a private one: nothing
        (OTHER, image(), None, False),
        (OTHER, image(), member(), True),
        (OTHER, image(), member(deleted=True), False),
        (OTHER, image(), member("p3"), False),  # someone else's membership
    ],
)
def test_v1_visibility(
    caller: Context, row: ImageRow, membership: MemberRow | None, expected: bool
) -> None:
    assert rules.visible(caller, row, membership) is expected


def test_the_membership_is_needed_only_for_shared_images_of_others() -> None:
    assert rules.visible_by_row(OTHER, image()) is None
    assert rules.visible_by_row(OWNER, image()) is True
    assert rules.visible_by_row(OTHER, image(visibility="private")) is False
    assert rules.visible_by_row(NOBODY, image()) is False


# -- who may change, delete, download ----------------------------------------------------


def test_only_admins_and_owners_modify() -> None:
    rules.check_modify(OWNER, image())
    rules.check_modify(ADMIN, image())
    with pytest.raises(Forbidden, match="not permitted to modify image i1"):
        rules.check_modify(OTHER, image(is_public=True))  # seen, so told: 403
    with pytest.raises(NotFound, match="Image i1 not found"):
        rules.check_modify(OTHER, image())  # not visible for modification: 404


def test_a_caller_without_a_project_creates_nothing() -> None:
    with pytest.raises(Forbidden, match="without a project cannot create images"):
        rules.check_may_create(NOBODY)
    rules.check_may_create(ADMIN)  # an admin's image is ownerless by choice
    rules.check_may_create(OWNER)


@pytest.mark.parametrize(
    ("caller", "row", "fields", "data", "source", "error", "message"),
    [
        (OWNER, image(deleted=True, status="deleted"), {}, False, False, Forbidden, "deleted"),
        (OTHER, image(), {"name": "x"}, False, False, NotFound, "not found"),
        (OWNER, image(), {"size": 6}, False, False, Forbidden, "'size' of active image"),
        (OWNER, image(status="deactivated"), {"checksum": "x"}, False, False, Forbidden,
         "'checksum' of deactivated image"),
        (ADMIN, image(), {"status": "queued"}, False, False, Forbidden, "'status' of image"),
        (OWNER, image(), {"id": "i2"}, False, False, Forbidden, "'id' of image"),
        (OWNER, image(), {}, True, False, Conflict, "Cannot upload to an unqueued image"),
        (OWNER, image(status="saving"), {}, False, True, BadRequest,
         "Location field for an image not in queued status"),
    ],
)  # fmt: skip
def test_v1_update_refusals(
    caller: Context,
    row: ImageRow,
    fields: dict[str, Any],
    data: bool,
    source: bool,
    error: type[ApiError],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        rules.check_update(caller, row, fields, data=data, source=source)


def test_v1_updates_allowed() -> None:
    rules.check_update(
        OWNER, image(), {"size": 5, "id": "i1", "name": "x"}, data=False, source=False
    )
    rules.check_update(ADMIN, image(), {"size": 6, "checksum": "x"}, data=False, source=False)
    queued = image(status="queued", size=0, checksum=None)
    rules.check_update(OWNER, queued, {"size": 9}, data=True, source=False)
    rules.check_update(OWNER, queued, {}, data=False, source=True)
    pending = image(status="pending_delete", deleted=True)
    rules.check_update(ADMIN, pending, {"name": "x"}, data=False, source=False)


@pytest.mark.parametrize(
    ("caller", "row", "error", "message"),
    [
        (OWNER, image(status="deleted", deleted=True), NotFound, "Image i1 not found"),
        (ADMIN, image(status="killed", deleted=True), NotFound, "Image i1 not found"),
        (OTHER, image(), NotFound, "Image i1 not found"),
        (OTHER, image(is_public=True), Forbidden, "not permitted to modify"),
        (OWNER, image(protected=True), Forbidden, "Image is protected"),
        (ADMIN, image(status="pending_delete", deleted=True), Forbidden, "pending_delete"),
    ],
)
def test_delete_refusals(
    caller: Context, row: ImageRow, error: type[ApiError], message: str
) -> None:
    with pytest.raises(error, match=message):
        rules.check_delete(caller, row)


def test_delete_allowed() -> None:
    rules.check_delete(OWNER, image())
    rules.check_delete(ADMIN, image(status="killed"))


def test_download_by_status() -> None:
    rules.check_download(image())
    with pytest.raises(Forbidden, match="Image i1 is deactivated"):
        rules.check_download(image(status="deactivated"))
    for status in ("queued", "saving", "killed"):
        with pytest.raises(NotFound, match="Image i1 is not active"):
            rules.check_download(image(status=status))
    with pytest.raises(NotFound):
        rules.check_download(image(deleted=True))


@pytest.mark.parametrize(
    ("caller", "is_public", "scope"),
    [
        (ADMIN, "none", Scope.ALL),
        (ADMIN, "false", Scope.NON_PUBLIC),
        (ADMIN, "0", Scope.NON_PUBLIC),
        (ADMIN, None, Scope.PUBLIC),  # an admin without a project, asking nothing
        (OWNER, "none", Scope.PROJECT),  # only admins choose
        (OWNER, None, Scope.PROJECT),
        (NOBODY, "false", Scope.PUBLIC),
    ],
)
def test_list_scope(caller: Context, is_public: str | None, scope: Scope) -> None:
    assert rules.list_scope(caller, is_public) is scope


# -- quotas ------------------------------------------------------------------------------


def test_counted_quotas() -> None:
    assert not rules.over_quota(3, 3)
    assert rules.over_quota(4, 3)
    assert not rules.over_quota(10**6, -1)  # negative: unlimited
    assert rules.over_quota(1, 0)
    rules.check_property_quota(2, 2)
    with pytest.raises(TooLarge, match="Attempted: 3, Maximum: 2"):
        rules.check_property_quota(3, 2)


@pytest.mark.parametrize(
    ("used", "needed", "wanted", "held"),
    [
        (0, 10, 10, 10),
        (0, 10, 40, 40),  # room for more than needed: take what is wanted
        (60, 10, 80, 40),  # never past the quota
        (60, 40, 8, 40),  # at least what is needed
        (0, 0, 8, 8),  # unknown size: a first step
    ],
)
def test_storage_reservations(used: int, needed: int, wanted: int, held: int) -> None:
    assert rules.storage_reservation(100, used, needed=needed, wanted=wanted) == held


def test_storage_reservations_refused() -> None:
    with pytest.raises(TooLarge, match=r"The size of the data 50 will exceed the limit\. 40 bytes"):
        rules.storage_reservation(100, 60, needed=50, wanted=50)
    with pytest.raises(TooLarge, match=r"The size of the data will exceed the limit\. 0 bytes"):
        rules.storage_reservation(100, 100, needed=0, wanted=8)  # full: not even a first step
    with pytest.raises(TooLarge, match="0 bytes remaining"):
        rules.storage_reservation(100, 130, needed=1, wanted=1)  # over already: never negative


def test_storage_quota_on_activation() -> None:
    rules.check_storage_quota(0, 10**12, 10**12)  # 0: unlimited
    rules.check_storage_quota(100, 60, 40)
    with pytest.raises(TooLarge, match=r"The size of the data 41 will exceed the limit\. 40 bytes"):
        rules.check_storage_quota(100, 60, 41)
