"""v2 image members (spec v2 §10): who shares a `shared` image, and each member's status
(`pending`, `accepted`, `rejected`), which only the member itself or an admin sets.

Knows no HTTP: it takes decoded requests and a `Context` and raises `ApiError`s.
"""

from __future__ import annotations

from typing import Any

from osimage.server import rules
from osimage.server.auth import Context
from osimage.server.db import catalog, listing
from osimage.server.db.catalog import MemberRow
from osimage.server.db.engine import reading, writing
from osimage.server.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge
from osimage.server.operations import notifications as events
from osimage.server.rules import over_quota
from osimage.server.v2.access import Access, ImageView


class Members(Access):
    """The members of v2 images."""

    def _notify_member(
        self, ctx: Context, event: str, entry: MemberRow, *, deleted: bool = False
    ) -> None:
        notifier = self.images.notifier
        if notifier.enabled:
            extra: dict[str, Any] = {}
            if deleted:
                extra = {"deleted": True, "deleted_at": events.isotime()}
            notifier.info(ctx, event, events.member_payload(entry, **extra))

    async def _shared(self, ctx: Context, image_id: str) -> ImageView:
        view = await self.get(ctx, image_id)
        if view.row.visibility != "shared":
            raise Forbidden(f"Image {image_id} is not shared: Only shared images have members.")
        return view

    async def members(self, ctx: Context, image_id: str) -> list[MemberRow]:
        view = await self._shared(ctx, image_id)
        self._enforce(ctx, "get_members", view.row)
        async with reading(self.engine) as conn:
            found = await catalog.members_of(conn, image_id)
        if rules.writable(ctx, view.row):
            return found
        own = [m for m in found if m.member == ctx.owner_id]
        if not own:
            raise Forbidden(f"Not allowed to list members for image {image_id}.")
        return own

    async def member(
        self, ctx: Context, image_id: str, member: str, *, rule: str | None = "get_member"
    ) -> MemberRow:
        """One membership; `rule` is the policy rule to check (None: checked already)."""
        missing = NotFound(f"{member} not found in the member list of the image {image_id}.")
        view = await self.get(ctx, image_id)
        if rule is not None:
            self._enforce(ctx, rule, view.row, member_id=member)
        if view.row.visibility != "shared":
            raise missing
        if not rules.writable(ctx, view.row) and member != ctx.owner_id:
            raise missing
        async with reading(self.engine) as conn:
            found = await catalog.membership(conn, image_id, member)
        if found is None or found.deleted:
            raise missing
        return found

    async def add_member(self, ctx: Context, image_id: str, body: Any) -> MemberRow:
        if not isinstance(body, dict):
            raise BadRequest('Expected a member in the form: {"member": "image_id"}')
        if "member" not in body:
            raise BadRequest("Member to be added not specified")
        member = body["member"]
        if not member:
            raise BadRequest("Member can't be empty")
        if not isinstance(member, str) or len(member) > 255 or not member.isprintable():
            raise BadRequest(f"Invalid member id {str(member)[:64]!r}")
        if not ctx.is_admin and ctx.owner_id is None:
            raise Forbidden(
                "A caller without a project cannot add members: sharing needs an owner project."
            )
        view = await self._shared(ctx, image_id)
        self._enforce(ctx, "add_member", view.row, member_id=member)
        if not rules.writable(ctx, view.row):
            raise Forbidden(f"Not allowed to add members for image {image_id}.")
        async with writing(self.engine) as conn:
            current = await catalog.members_of(conn, image_id)
            if any(m.member == member for m in current):
                raise Conflict(f"Member {member} is duplicated for image {image_id}")
            if over_quota(len(current) + 1, self.limits.member_quota):
                raise TooLarge(
                    f"Image member limit exceeded for image {image_id}: attempted "
                    f"{len(current) + 1}, maximum {self.limits.member_quota}"
                )
            await catalog.put_member(conn, image_id, member, False)
            await listing.restart_membership(conn, image_id, member)
        entry = await self.member(ctx, image_id, member, rule=None)
        self._notify_member(ctx, "image.member.create", entry)
        return entry

    async def set_member_status(
        self, ctx: Context, image_id: str, member: str, body: Any
    ) -> MemberRow:
        if not isinstance(body, dict):
            raise BadRequest('Expected a status in the form: {"status": "status"}')
        if "status" not in body:
            raise BadRequest("Status not specified")
        status = body["status"]
        if status not in rules.MEMBER_STATUSES:
            raise BadRequest(
                'Incorrect request: Status must be "pending", "accepted" or "rejected".'
            )
        await self._shared(ctx, image_id)
        found = await self.member(ctx, image_id, member, rule="modify_member")
        if not rules.may_change_member_status(ctx, found.member):
            raise Forbidden(f"Not allowed to change the member status of {member}.")
        async with writing(self.engine) as conn:
            if not await listing.set_member_status(conn, image_id, member, status):
                raise NotFound(f"{member} not found in the member list of the image {image_id}.")
        entry = await self.member(ctx, image_id, member, rule=None)
        self._notify_member(ctx, "image.member.update", entry)
        return entry

    async def remove_member(self, ctx: Context, image_id: str, member: str) -> None:
        view = await self._shared(ctx, image_id)
        self._enforce(ctx, "delete_member", view.row, member_id=member)
        if not rules.writable(ctx, view.row):
            raise Forbidden(f"Not allowed to delete members for image {image_id}.")
        async with writing(self.engine) as conn:
            found = await catalog.membership(conn, image_id, member)
            if not await catalog.remove_member(conn, image_id, member):
                raise NotFound(f"{member} not found in the member list of the image {image_id}.")
        if found is not None:
            self._notify_member(ctx, "image.member.delete", found, deleted=True)
