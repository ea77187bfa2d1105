"""Pure decisions both APIs share: visibility, member status, who may see or change an image.

No I/O: each function takes the caller's `Context` and the facts it needs (an image row,
the caller's membership) and answers. The v1 and v2 services ask these; so do the tests.
"""

from __future__ import annotations

from typing import Final

from osimage.server.auth import Context
from osimage.server.db.catalog import ImageRow, MemberRow

HASH_ALGO: Final = "sha512"  # os_hash_algo of every upload, through either API
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
