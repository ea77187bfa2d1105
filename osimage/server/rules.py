"""Pure decisions: who may see, change or delete an image, which values and status
changes are allowed, and the quota arithmetic; for both APIs.

No I/O: each function takes the caller's `Context` and the facts it needs (an image row,
the caller's membership, a quota and a usage) and answers, with a bool or by raising the
`ApiError` the client gets. The v1 and v2 services ask these; so do the unit tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

from osimage import wire
from osimage.server.auth import Context
from osimage.server.db.catalog import ImageRow, MemberRow, Scope
from osimage.server.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge

HASH_ALGO: Final = "sha512"  # os_hash_algo of every upload, through either API
MAX_ID_LENGTH: Final = 36  # image ids: a UUID's text
MAX_BIGINT: Final = 2**63 - 1
MAX_ID_TEXT: Final = 255  # owner, property keys, member ids: String(255) columns
VISIBILITIES: Final = ("public", "private", "shared", "community")
MEMBER_STATUSES: Final = ("pending", "accepted", "rejected")
DEFAULT_VISIBILITY: Final = "shared"


def visibility_of(is_public: object) -> str:
    """The visibility a v1 write of `is_public` gives (v2 §18.2): true -> public, else
    shared, whatever it was before (queens' `ensure_image_dict_v2_compliant`)."""
    return "public" if is_public else DEFAULT_VISIBILITY


def is_owner(ctx: Context, row: ImageRow) -> bool:
    return row.owner is not None and ctx.owner_id is not None and row.owner == ctx.owner_id


def readable(ctx: Context, row: ImageRow, membership: MemberRow | None) -> bool:
    """Whether `ctx` may read `row` by id (v2 §5.3): deleted images never; admins,
    ownerless, public and community images always; shared ones for members in any status."""
    if row.deleted:
        return False
    if ctx.is_admin or row.owner is None or row.visibility in ("public", "community"):
        return True
    if is_owner(ctx, row):
        return True
    return (
        row.visibility == "shared"
        and membership is not None
        and not membership.deleted
        and membership.member == ctx.owner_id
    )


def writable(ctx: Context, row: ImageRow) -> bool:
    """Only admins and the owner change an image (v2 §5.3, §16)."""
    return ctx.is_admin or is_owner(ctx, row)


def may_set_visibility(ctx: Context, visibility: str) -> bool:
    """`public` needs `publicize_image` (admins); `community` anyone who may write."""
    return visibility != "public" or ctx.is_admin


def may_change_member_status(ctx: Context, member: str) -> bool:
    """The member itself sets its status, and admins (v2 §10.1); never the owner."""
    return ctx.is_admin or (ctx.owner_id is not None and ctx.owner_id == member)


# -- ids, formats and bounds ------------------------------------------------------------

_ABSENT_WHEN_EMPTY: Final = ("size", "min_disk", "min_ram", "is_public", "protected", "checksum")
_AMAZON_MIX: Final = (
    "Invalid mix of disk and container formats. When setting a disk or container format to "
    "one of 'aki', 'ari', or 'ami', the container and disk formats must match."
)


def plausible_id(image_id: str) -> bool:
    """Whether an image could have this id: not too long for the column, and no NUL
    (PostgreSQL text cannot hold one: looking it up would be an error, not a miss)."""
    return len(image_id) <= MAX_ID_LENGTH and "\x00" not in image_id


def new_image_id(given: str | None) -> str:
    """The id of a new image: a fresh UUID, or the one the caller gave in canonical form."""
    if given is None:
        return str(uuid.uuid4())
    try:
        return str(uuid.UUID(given))
    except ValueError:
        raise BadRequest(f"Invalid value for {wire.PREFIX}id: {given!r}") from None


def v1_fields(fields: Mapping[str, Any], properties: Mapping[str, str | None]) -> dict[str, Any]:
    """The fields of a v1 create or update, checked: an empty header means "not given",
    formats must be known (an Amazon format fills in its pair), and every value must fit
    its column. Raises BadRequest naming the field."""
    checked = {k: v for k, v in fields.items() if not (k in _ABSENT_WHEN_EMPTY and v is None)}
    check_formats(checked)
    check_bounds(checked, properties)
    return checked


def check_formats(fields: dict[str, Any]) -> None:
    """Known disk and container formats; `aki`/`ari`/`ami` on one side sets the other
    (in `fields`), and on both sides they must match."""
    checks = (
        ("disk_format", wire.DISK_FORMATS, "disk"),
        ("container_format", wire.CONTAINER_FORMATS, "container"),
    )
    for name, allowed, label in checks:
        if name in fields and fields[name] not in allowed:
            raise BadRequest(f"Invalid {label} format '{fields[name]}' for image.")
    disk, container = fields.get("disk_format"), fields.get("container_format")
    if disk in wire.AMAZON_FORMATS or container in wire.AMAZON_FORMATS:
        if "disk_format" not in fields:
            fields["disk_format"] = container
        elif "container_format" not in fields:
            fields["container_format"] = disk
        elif disk != container:
            raise BadRequest(_AMAZON_MIX)


def check_bounds(fields: Mapping[str, Any], properties: Mapping[str, str | None]) -> None:
    """What the database columns cannot hold is a 400, on every database."""
    for name in ("size", "virtual_size"):
        value = fields.get(name)
        if value is not None and value > MAX_BIGINT:
            raise BadRequest(f"{wire.PREFIX}{name}: value out of range, got {value}")
    owner = fields.get("owner")
    if owner is not None and len(owner) > MAX_ID_TEXT:
        raise BadRequest(f"{wire.PREFIX}owner: longer than {MAX_ID_TEXT} characters")
    for key in properties:
        if len(key) > MAX_ID_TEXT:
            raise BadRequest(f"Property key longer than {MAX_ID_TEXT} characters: {key[:32]}...")


FORMATS: Final = ("disk_format", "container_format")


def missing_formats(fields: Mapping[str, Any], row: ImageRow | None = None) -> list[str]:
    """The formats data needs that are neither given now nor already on `row`."""
    return [
        n for n in FORMATS if fields.get(n) is None and (row is None or getattr(row, n) is None)
    ]


def require_formats(fields: Mapping[str, Any], row: ImageRow | None = None) -> None:
    """Data needs both formats, given now or already on `row` (v1's words)."""
    missing = missing_formats(fields, row)
    if missing:
        label = missing[0].split("_")[0].capitalize()
        raise BadRequest(f"{label} format is not specified.")


def check_sources(fields: Mapping[str, Any], copy_from: str | None, *, data: bool) -> None:
    """At most one of a location, a copy-from URL and request data; none of them empty."""
    if "location" in fields and fields["location"] is None:
        raise BadRequest("External source should not be empty")
    if copy_from == "":
        raise BadRequest("External source should not be empty")
    given = [fields.get("location") is not None, copy_from is not None, data]
    if sum(given) > 1:
        raise BadRequest("It's invalid to provide multiple image sources.")


class OverCap(Exception):
    """A declared or probed size above `image_size_cap`; each API answers it in its own
    words and status (v1 400, v2 413)."""

    def __init__(self, size: int, cap: int) -> None:
        super().__init__(f"{size} > {cap} bytes")
        self.size, self.cap = size, cap


def check_size_cap(size: int | None, cap: int) -> None:
    """A declared or probed size above `image_size_cap` is refused before any data moves:
    raises OverCap."""
    if size is not None and size > cap:
        raise OverCap(size, cap)


def check_declared_size(declared: int | None, size: int) -> None:
    """The data received must be as long as the request said it would be, if it said."""
    if declared is not None and declared != size:
        raise BadRequest(
            f"The image size declared in the request ({declared}) does not match "
            f"the data received ({size})."
        )


def check_upload_matches(row: ImageRow, size: int, checksum: str) -> None:
    """Data must match the size and checksum the client declared, if it declared them."""
    for name, expected, actual in (("size", row.size, size), ("checksum", row.checksum, checksum)):
        if expected and expected != actual:
            raise BadRequest(
                f"Supplied {name} ({expected}) and {name} generated from uploaded "
                f"image ({actual}) did not match. Setting image status to 'killed'."
            )


# -- who may do what (v1) --------------------------------------------------------------


def visible_by_row(ctx: Context, row: ImageRow) -> bool | None:
    """Whether `ctx` may see `row` through v1 (§8) as far as the row decides: admins see
    everything, deleted images no one else, ownerless, public and community images
    everyone, private ones their owner. None: only the caller's membership can decide."""
    if ctx.is_admin:
        return True
    if row.deleted:
        return False
    if row.owner is None or row.is_public or row.visibility == "community":
        return True
    if ctx.owner_id is None:
        return False
    if row.owner == ctx.owner_id:
        return True
    if row.visibility != "shared":  # v2 §18.3: member rows of a private image grant nothing
        return False
    return None


def visible(ctx: Context, row: ImageRow, membership: MemberRow | None) -> bool:
    """Whether `ctx` may see `row` through v1; `membership` is the caller's on `row`, needed
    only when `visible_by_row` is None."""
    decided = visible_by_row(ctx, row)
    if decided is not None:
        return decided
    return membership is not None and not membership.deleted and membership.member == ctx.owner_id


def check_modify(ctx: Context, row: ImageRow) -> None:
    """Only admins and the owner change an image. Others who can see it get 403 for a
    public image (as queens), 404 otherwise: it is not visible *for modification*."""
    if writable(ctx, row):
        return
    if row.is_public:
        raise Forbidden(f"You are not permitted to modify image {row.id}.")
    raise NotFound(f"Image {row.id} not found.")


def check_may_create(ctx: Context) -> None:
    """A caller without a project creates nothing: its image would be ownerless, visible
    to everyone and changeable by admins only."""
    if not ctx.is_admin and ctx.owner_id is None:
        raise Forbidden(
            "A caller without a project cannot create images: the image would have no "
            "owner and be visible to everyone."
        )


def check_update(
    ctx: Context, row: ImageRow, fields: Mapping[str, Any], *, data: bool, source: bool
) -> None:
    """A v1 update of `row` with `fields`, new `data` or a new `source` (a location or a
    copy-from URL): who may, and which changes its status allows."""
    if row.deleted and row.status != "pending_delete":
        raise Forbidden("Forbidden to update deleted image.")
    check_modify(ctx, row)
    if not ctx.is_admin and row.status in ("active", "deactivated"):
        for name in ("size", "checksum"):
            if name in fields and fields[name] != getattr(row, name):
                raise Forbidden(f"Forbidden to modify '{name}' of {row.status} image.")
    for name in ("status", "id"):
        if name in fields and fields[name] != getattr(row, name):
            raise Forbidden(f"Forbidden to modify '{name}' of image.")
    if data and row.status != "queued":
        raise Conflict("Cannot upload to an unqueued image")
    if source and row.status != "queued":
        raise BadRequest("Attempted to update Location field for an image not in queued status.")


def check_delete(ctx: Context, row: ImageRow) -> None:
    """A v1 or v2 delete of `row` (which `ctx` can see): not twice, not by others, not
    while protected, not while waiting for the scrubber."""
    pending = row.status == "pending_delete"
    if row.status == "deleted" or (row.deleted and not pending):
        raise NotFound(f"Image {row.id} not found.")
    check_modify(ctx, row)
    if row.protected:
        raise Forbidden("Image is protected")
    if pending:
        raise Forbidden("Forbidden to delete a pending_delete image.")


def check_download(row: ImageRow) -> None:
    """v1 serves the data of active images only; a deactivated one is a 403."""
    if row.status == "deactivated":
        raise Forbidden(f"Image {row.id} is deactivated")
    if row.status != "active" or row.deleted:
        raise NotFound(f"Image {row.id} is not active")


def list_scope(ctx: Context, is_public: str | None) -> Scope:
    """Which images a v1 list may show `ctx`: admins choose with `is_public` (`none`: all,
    false: the non-public), others see what they may see."""
    if ctx.is_admin and is_public == "none":
        return Scope.ALL
    if ctx.is_admin and is_public in ("false", "0"):
        return Scope.NON_PUBLIC
    return Scope.PROJECT if ctx.owner_id is not None else Scope.PUBLIC


# -- quotas ------------------------------------------------------------------------------


def over_quota(count: int, quota: int) -> bool:
    """Whether `count` exceeds `quota` (a negative quota is unlimited)."""
    return quota >= 0 and count > quota


def check_property_quota(count: int, quota: int) -> None:
    """An image may hold at most `quota` properties (413)."""
    if over_quota(count, quota):
        raise TooLarge(
            "The limit has been exceeded on the number of allowed image properties. "
            f"Attempted: {count}, Maximum: {quota}"
        )


def _over_storage_quota(size: int | None, room: int) -> TooLarge:
    data = "The size of the data" if size is None else f"The size of the data {size}"
    return TooLarge(
        "Denying attempt to upload image because it exceeds the quota: "
        f"{data} will exceed the limit. {max(room, 0)} bytes remaining."
    )


def storage_reservation(quota: int, used: int, *, needed: int, wanted: int) -> int:
    """How much of a project's storage `quota` an upload may hold when the project uses
    `used` bytes: at least `needed`, at most `wanted`, never past the quota. Raises
    TooLarge if `needed` does not fit (or nothing does)."""
    room = quota - used
    if needed > room or room <= 0:
        raise _over_storage_quota(needed or None, room)
    return min(max(wanted, needed), room)


def check_storage_quota(quota: int, used: int, size: int) -> None:
    """`size` more bytes must fit in the project's storage `quota` (0: unlimited)."""
    if quota > 0 and used + size > quota:
        raise _over_storage_quota(size, quota - used)
