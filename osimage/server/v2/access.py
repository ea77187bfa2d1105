"""What every v2 operation starts from: the image as v2 shows it (record and tags), who may
read or change it, the policy rules, and the image events with v2's payload.

Knows no HTTP: it takes a `Context` and raises `ApiError`s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from sqlalchemy import Connection

from osimage.server import rules
from osimage.server.auth import Context
from osimage.server.db import catalog, listing
from osimage.server.db.catalog import ImageRow
from osimage.server.db.engine import read
from osimage.server.errors import Forbidden, NotFound
from osimage.server.operations import notifications as events
from osimage.server.operations.policy import image_target
from osimage.server.service import ImageService


@dataclass(frozen=True)
class ImageView:
    """An image as v2 shows it: the shared record plus its tags."""

    row: ImageRow
    tags: list[str]


def payload(view: ImageView, **extra: Any) -> dict[str, Any]:
    """Glance's image payload with what v2 shows: its visibility and its tags."""
    row = view.row
    fields: dict[str, Any] = {"visibility": row.visibility, "tags": list(view.tags)}
    fields.update(extra)
    return events.image_payload(row, **fields)


class Access:
    """v2's reading, policy and events over `ImageService`'s catalogue; the v2 operations
    (`images`, `data`, `members`) build on it."""

    def __init__(self, images: ImageService) -> None:
        self.images = images
        self.engine = images.engine
        self.limits = images.limits

    # -- operations: policy rules and notifications (issue 15) ------------------------------

    def _enforce(self, ctx: Context, rule: str, row: ImageRow | None = None, **extra: Any) -> None:
        """The oslo.policy rule `rule` (Glance's name) for `row`: 403 when it refuses."""
        if row is not None:
            extra.setdefault("visibility", row.visibility)
        self.images.policy.enforce(ctx, rule, partial(image_target, row, **extra))

    def _notify(self, ctx: Context | None, event: str, view: ImageView, **extra: Any) -> None:
        """An info-priority image event with v2's visibility and tags in the payload."""
        notifier = self.images.notifier
        if notifier.enabled:
            notifier.info(ctx, event, payload(view, **extra))

    async def _notify_id(self, ctx: Context | None, event: str, image_id: str) -> None:
        if self.images.notifier.enabled:
            self._notify(ctx, event, await self._view(image_id))

    async def _view(self, image_id: str) -> ImageView:
        def fetch(conn: Connection) -> ImageView:
            row = catalog.fetch_image(conn, image_id)
            if row is None:
                raise NotFound(f"No image found with ID {image_id}")
            return ImageView(row, listing.tags_of(conn, [image_id])[image_id])

        return await read(self.engine, fetch, point=True)

    async def _payload(self, image_id: str) -> dict[str, Any]:
        """The image's event payload as v2 shows it (the data pipeline's `Flow.payload`)."""
        return payload(await self._view(image_id))

    # -- reading ---------------------------------------------------------------------------

    @staticmethod
    def _readable(conn: Connection, ctx: Context, image_id: str) -> ImageView | None:
        if len(image_id) > rules.MAX_ID_LENGTH:
            return None
        row = catalog.fetch_image(conn, image_id)
        if row is None or not Access._may_read(conn, ctx, row):
            return None
        return ImageView(row, listing.tags_of(conn, [image_id])[image_id])

    @staticmethod
    def _may_read(conn: Connection, ctx: Context, row: ImageRow) -> bool:
        if row.deleted:
            return False
        membership = None
        if row.visibility == "shared" and ctx.owner_id is not None and not ctx.is_admin:
            membership = catalog.find_membership(conn, row.id, ctx.owner_id)
        return rules.readable(ctx, row, membership)

    def shown(self, ctx: Context, view: ImageView) -> ImageView:
        """Without the properties the caller may not read (property protections)."""
        protections = self.images.protections
        if protections is None:
            return view
        row = replace(view.row, properties=protections.readable(ctx.roles, view.row.properties))
        return ImageView(row, view.tags)

    async def get(self, ctx: Context, image_id: str, *, message: str | None = None) -> ImageView:
        """The image if the caller may read it; 404 otherwise (never 403)."""
        view = await read(
            self.engine, partial(self._readable, ctx=ctx, image_id=image_id), point=True
        )
        if view is None:
            raise NotFound(message or f"No image found with ID {image_id}")
        return view

    async def show(self, ctx: Context, image_id: str) -> ImageView:
        """`GET /v2/images/{id}`: `get`, then the policy rule get_image."""
        view = await self.get(ctx, image_id)
        self._enforce(ctx, "get_image", view.row)
        return view

    async def show_record(self, ctx: Context, image_id: str) -> str | None:
        """`show`'s answer as the image's stored v2 record (JSON text), the same checks
        made; None when the record cannot serve it (property protections, a stale
        record): then `show` (issue 12)."""
        if self.images.protections is not None:
            return None

        def fetch(conn: Connection) -> tuple[ImageRow, str | None] | None:
            if len(image_id) > rules.MAX_ID_LENGTH:
                return None
            found = catalog.fetch_record(conn, image_id)
            if found is None or not self._may_read(conn, ctx, found[0]):
                return None
            return found

        found = await read(self.engine, fetch, point=True)
        if found is None:
            raise NotFound(f"No image found with ID {image_id}")
        row, record = found
        self._enforce(ctx, "get_image", row)
        return record

    async def _writable(
        self, ctx: Context, image_id: str, message: str, *, rule: str = "modify_image"
    ) -> ImageView:
        view = await self.get(ctx, image_id)
        self._enforce(ctx, rule, view.row)
        if not rules.writable(ctx, view.row):
            raise Forbidden(message)
        return view
