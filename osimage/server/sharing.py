"""Image memberships (§9.7): who an image is shared with, and who may change that."""

from __future__ import annotations

from osimage.server.auth import Context
from osimage.server.db import catalog
from osimage.server.db.catalog import ImageRow, MemberRow
from osimage.server.db.engine import reading, writing
from osimage.server.errors import BadRequest, NotFound, TooLarge, Unauthorized
from osimage.server.operations.notifications import member_payload
from osimage.server.operations.policy import image_target
from osimage.server.rules import MAX_ID_TEXT, is_owner, over_quota
from osimage.server.service import ImageService


class Sharing:
    """Membership operations, checked against the caller's `Context`.

    Sharers (who may change members) are admins, the owner, and members whose own
    membership has `can_share`; anyone else gets 404, a project-less caller 401.
    """

    def __init__(self, images: ImageService) -> None:
        self.images = images

    async def _member_target(
        self, ctx: Context, image_id: str, *, share: bool, action: str, member: str | None = None
    ) -> ImageRow:
        if share and not ctx.is_admin and ctx.owner_id is None:
            raise Unauthorized("No authenticated user")
        row = await self.images.get(ctx, image_id, action=None)
        self.images.policy.enforce(ctx, action, image_target(row, member_id=member))
        if row.deleted:
            raise NotFound(f"Image with identifier {image_id} has been deleted.")
        if share and not await self._can_share(ctx, row):
            raise NotFound(f"You are not permitted to share image {image_id}.")
        return row

    async def _can_share(self, ctx: Context, row: ImageRow) -> bool:
        if ctx.is_admin or is_owner(ctx, row):
            return True
        if ctx.owner_id is None:
            return False
        async with reading(self.images.engine) as conn:
            own = await catalog.membership(conn, row.id, ctx.owner_id)
        return own is not None and not own.deleted and own.can_share

    async def members(self, ctx: Context, image_id: str) -> list[MemberRow]:
        row = await self._member_target(ctx, image_id, share=False, action="get_members")
        async with reading(self.images.engine) as conn:
            found = await catalog.members_of(conn, image_id)
        if ctx.is_admin or is_owner(ctx, row):
            return found
        return [item for item in found if item.member == ctx.owner_id]

    async def add_member(
        self, ctx: Context, image_id: str, member: str, can_share: bool | None
    ) -> None:
        if len(member) > MAX_ID_TEXT or not member.isprintable():
            raise BadRequest(f"Invalid member id {member[:64]!r}")
        await self._member_target(ctx, image_id, share=True, action="add_member", member=member)
        async with writing(self.images.engine) as conn:
            current = await catalog.members_of(conn, image_id)
            count = len(current)
            if over_quota(count + 1, self.images.limits.member_quota):
                raise TooLarge(self._member_quota_message(count + 1))
            await catalog.put_member(conn, image_id, member, can_share)
            saved = None
            if self.images.notifier.enabled:
                saved = await catalog.membership(conn, image_id, member)
        known = any(item.member == member for item in current)
        self._notify(ctx, "image.member.update" if known else "image.member.create", saved)

    async def replace_members(
        self, ctx: Context, image_id: str, entries: list[tuple[str, bool | None]]
    ) -> None:
        await self._member_target(ctx, image_id, share=True, action="modify_member")
        wanted = dict(entries)
        if over_quota(len(wanted), self.images.limits.member_quota):
            raise TooLarge(self._member_quota_message(len(wanted)))
        changes: list[tuple[str, MemberRow | None]] = []
        async with writing(self.images.engine) as conn:
            before = {item.member: item for item in await catalog.members_of(conn, image_id)}
            for current in before.values():
                if current.member not in wanted:
                    await catalog.remove_member(conn, image_id, current.member)
                    changes.append(("image.member.delete", current))
            for member, can_share in wanted.items():
                await catalog.put_member(conn, image_id, member, can_share)
                event = "image.member.update" if member in before else "image.member.create"
                if self.images.notifier.enabled:
                    changes.append((event, await catalog.membership(conn, image_id, member)))
        for event, row in changes:
            self._notify(ctx, event, row)

    async def remove_member(self, ctx: Context, image_id: str, member: str) -> None:
        await self._member_target(ctx, image_id, share=True, action="delete_member", member=member)
        if "\x00" in member:  # never added (see add_member); PostgreSQL cannot compare it
            raise NotFound("Membership could not be found.")
        async with writing(self.images.engine) as conn:
            if not await catalog.remove_member(conn, image_id, member):
                raise NotFound("Membership could not be found.")
            gone = None
            if self.images.notifier.enabled:
                gone = await catalog.membership(conn, image_id, member)
        self._notify(ctx, "image.member.delete", gone, deleted=True)

    def _notify(
        self, ctx: Context, event: str, row: MemberRow | None, *, deleted: bool = False
    ) -> None:
        """image.member.* with Glance's member payload (issue 15)."""
        if row is None:
            return
        payload = member_payload(row)
        if deleted:
            payload.update(deleted=True, deleted_at=payload["updated_at"])
        self.images.notifier.info(ctx, event, payload)

    def _member_quota_message(self, attempted: int) -> str:
        return (
            "The limit has been exceeded on the number of allowed image members for this "
            f"image. Attempted: {attempted}, Maximum: {self.images.limits.member_quota}"
        )

    async def shared_images(self, ctx: Context, member: str) -> list[MemberRow]:
        """Memberships of `member`: all for admins; else on the caller's images, or its own."""
        if "\x00" in member:  # no member id holds one (see add_member)
            return []
        async with reading(self.images.engine) as conn:
            if ctx.is_admin or member == ctx.owner_id:
                return await catalog.shared_with(conn, member, owner=None, everything=True)
            if ctx.owner_id is None:
                return []
            return await catalog.shared_with(conn, member, owner=ctx.owner_id, everything=False)
