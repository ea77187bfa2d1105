"""The v2 image record: create, JSON-patch update, delete, deactivate and reactivate,
visibility, tags, and one page of the list (spec v2 §5-§8).

The v2 rules of what a body may hold are `v2.schema`'s; the rules both APIs share are
`rules`'. Knows no HTTP: it takes decoded requests and a `Context` and raises `ApiError`s.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from osimage.server import rules, v2query
from osimage.server.auth import Context
from osimage.server.db import catalog, listing
from osimage.server.db.catalog import ImageRow
from osimage.server.db.engine import read, writing
from osimage.server.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge
from osimage.server.rules import over_quota
from osimage.server.v2.access import Access, ImageView
from osimage.server.v2.schema import (
    BASE,
    LINKS,
    READ_ONLY,
    UUID,
    check_value,
    is_reserved,
    schema_error,
    unique,
)

_NO_PROJECT: Final = (
    "A caller without a project cannot {what}: the image would have no owner and be "
    "visible to everyone."
)


@dataclass(frozen=True)
class Patch:
    """One decoded JSON-patch operation on a top-level key."""

    op: str  # add | replace | remove
    key: str
    value: Any = None
    legacy: bool = False  # the v2.0 media type: `add` of an existing key is a 409


class Images(Access):
    """v2 image records and their tags."""

    def _enforce_visibility(self, ctx: Context, visibility: Any, **target: Any) -> None:
        """publicize_image for `public`, communitize_image for `community` (Glance's rules)."""
        if visibility == "public":
            self._enforce(ctx, "publicize_image", **target, visibility=visibility)
        elif visibility == "community":
            self._enforce(ctx, "communitize_image", **target, visibility=visibility)

    async def list_images(self, ctx: Context, pairs: Sequence[tuple[str, str]]) -> list[ImageView]:
        """One page of `GET /v2/images` (v2 §6)."""
        query, marker = self._list_query(ctx, pairs)
        protections = self.images.protections
        if protections is not None and not all(
            protections.allows(ctx.roles, key, "read") for key in query.properties
        ):
            return []  # a filter on a property the caller may not read matches nothing

        def page(conn: Connection) -> list[ImageView]:
            self._place_marker(conn, ctx, query, marker)
            rows = listing.list_images(conn, query)
            tags = listing.tags_of(conn, [row.id for row in rows])
            return [ImageView(row, tags[row.id]) for row in rows]

        return await read(self.engine, page)

    async def list_records(
        self, ctx: Context, pairs: Sequence[tuple[str, str]]
    ) -> list[tuple[str, str]] | None:
        """`list_images`' page as (id, stored v2 record) pairs, or None when the records
        cannot serve it (property protections, a stale record): then `list_images`."""
        if self.images.protections is not None:
            return None
        query, marker = self._list_query(ctx, pairs)

        def page(conn: Connection) -> list[tuple[str, str]] | None:
            self._place_marker(conn, ctx, query, marker)
            return listing.list_records(conn, query)

        return await read(self.engine, page, point=listing.is_bounded_page(query))

    def _list_query(
        self, ctx: Context, pairs: Sequence[tuple[str, str]]
    ) -> tuple[listing.V2Query, str | None]:
        """The caller's list query (policy checked) and the marker it names, if any."""
        self._enforce(ctx, "get_images", owner=ctx.owner_id)
        return v2query.parse(
            ctx,
            pairs,
            limit_default=self.limits.limit_param_default,
            limit_max=self.limits.api_limit_max,
            filters_max=self.limits.list_filters_max,
        )

    def _place_marker(
        self, conn: Connection, ctx: Context, query: listing.V2Query, marker: str | None
    ) -> None:
        if marker is not None:
            row = catalog.fetch_image(conn, marker)  # a UUID: `v2query.parse_marker`
            if row is None or not self._may_read(conn, ctx, row):
                raise BadRequest(f"Invalid marker {marker}: no such image.")
            query.marker = row

    # -- create / update -------------------------------------------------------------------

    async def create(self, ctx: Context, body: Any) -> ImageView:
        """`POST /v2/images`: a `queued` record (v2 §5), checks in queens' order."""
        if not isinstance(body, dict):
            raise BadRequest("Unexpected body type. Expected list/dict.")
        if not ctx.is_admin and ctx.owner_id is None:
            raise Forbidden(_NO_PROJECT.format(what="create images"))
        self._enforce(ctx, "add_image", owner=body.get("owner", ctx.owner_id))
        for key in LINKS:
            if key in body:
                raise Forbidden(f"Attribute '{key}' is read-only.")
        for key, value in body.items():
            if key not in READ_ONLY and not is_reserved(key):
                check_value(key, value)
        image_id = body.get("id")
        if image_id is not None and not (isinstance(image_id, str) and UUID.match(image_id)):
            raise schema_error(f"{image_id!r} does not match the UUID pattern (id)")
        if "owner" in body and not ctx.is_admin and body["owner"] != ctx.owner_id:
            raise Forbidden(f"You are not permitted to create images owned by '{body['owner']}'.")
        visibility = body.get("visibility", rules.DEFAULT_VISIBILITY)
        # public needs publicize_image (admins by default), community communitize_image
        self._enforce_visibility(ctx, visibility, owner=body.get("owner", ctx.owner_id))
        tags = unique(body.get("tags") or [])
        if over_quota(len(tags), self.limits.tag_quota):
            raise TooLarge(
                f"Attempted to add {len(tags)} tags; the limit is {self.limits.tag_quota}."
            )
        for key in body:
            if key in READ_ONLY and key != "id":
                raise Forbidden(f"Attribute '{key}' is read-only.")
            if is_reserved(key):
                raise Forbidden(f"Attribute '{key}' is reserved.")
        properties = {k: v for k, v in body.items() if k not in BASE and k != "id"}
        rules.check_property_quota(len(properties), self.limits.property_quota)
        if self.images.protections is not None:
            self.images.protections.check_create(ctx.roles, properties)
        image_id = str(uuid.UUID(image_id)) if image_id else str(uuid.uuid4())
        when = catalog.now()
        values: dict[str, Any] = {
            "id": image_id,
            "name": body.get("name"),
            "status": "queued",
            "size": None,
            "virtual_size": None,
            "checksum": None,
            "disk_format": body.get("disk_format"),
            "container_format": body.get("container_format"),
            "min_disk": body.get("min_disk", 0),
            "min_ram": body.get("min_ram", 0),
            "owner": body.get("owner", ctx.owner_id),
            "is_public": visibility == "public",
            "visibility": visibility,
            "os_hidden": bool(body.get("os_hidden", False)),
            "protected": bool(body.get("protected", False)),
            "deleted": False,
            "created_at": when,
            "updated_at": when,
            "location": None,
            "location_is_external": False,
        }
        try:
            async with writing(self.engine) as conn:
                if await catalog.image_exists(conn, image_id):
                    raise Conflict(f"Image ID {image_id} already exists!")
                await catalog.insert_image(conn, values, properties)
                if tags:
                    await listing.set_tags(conn, image_id, tags)
        except IntegrityError:
            raise Conflict(f"Image ID {image_id} already exists!") from None
        view = await self.get(ctx, image_id)
        self._notify(ctx, "image.create", view)
        return view

    async def update(self, ctx: Context, image_id: str, patches: Sequence[Patch]) -> ImageView:
        """`PATCH /v2/images/{id}`: validate every operation, apply them in order to a copy,
        write once (v2 §7). Nothing is stored when any operation fails."""
        view = await self.get(ctx, image_id)
        row = view.row
        self._enforce(ctx, "modify_image", row)
        if not rules.writable(ctx, row):
            raise Forbidden("You are not permitted to modify this image.")
        if not patches:
            return view
        fields: dict[str, Any] = {}
        properties: dict[str, str | None] = dict(row.properties)
        tags: list[str] | None = None
        for patch in patches:
            key = patch.key
            if key in READ_ONLY:
                raise Forbidden(f"Attribute '{key}' is read-only.")
            if is_reserved(key):
                raise Forbidden(f"Attribute '{key}' is reserved.")
            if key in BASE:
                if patch.op == "remove":
                    raise Forbidden(f"Property {key} may not be removed.")
                if patch.legacy and patch.op == "add":
                    raise Conflict(f"Property {key} already present.")
                check_value(key, patch.value)
                self._check_base_change(ctx, row, key, patch.value)
                if key == "tags":
                    tags = unique(patch.value)
                    if over_quota(len(tags), self.limits.tag_quota):
                        raise TooLarge(
                            f"Attempted to set {len(tags)} tags; the limit is "
                            f"{self.limits.tag_quota}."
                        )
                else:
                    fields[key] = patch.value
                continue
            present = key in properties
            if patch.op == "remove":
                if not present:
                    raise Conflict(f"Property {key} does not exist.")
                del properties[key]
                continue
            if patch.op == "replace" and not present:
                raise Conflict(f"Property {key} does not exist.")
            if patch.op == "add" and present and patch.legacy:
                raise Conflict(f"Property {key} already present.")
            check_value(key, patch.value)
            properties[key] = patch.value
        added = set(properties) - set(row.properties)
        if added:
            rules.check_property_quota(len(properties), self.limits.property_quota)
        self._check_protections(ctx, row.properties, properties)
        if "visibility" in fields:
            fields["is_public"] = fields["visibility"] == "public"
        async with writing(self.engine) as conn:
            if not await catalog.update_image(conn, image_id, fields):  # refreshes updated_at
                raise NotFound(f"No image found with ID {image_id}")
            if properties != row.properties:
                await catalog.set_properties(conn, image_id, properties, purge=True)
            if tags is not None:
                await listing.set_tags(conn, image_id, tags)
        updated = await self.get(ctx, image_id)
        self._notify(ctx, "image.update", updated)
        return updated

    def _check_base_change(self, ctx: Context, row: ImageRow, key: str, value: Any) -> None:
        if key == "owner" and not ctx.is_admin and value != row.owner:
            raise Forbidden("Owner can't be updated by non admin.")  # add as replace (§21)
        if key == "visibility" and value != row.visibility:
            self._enforce_visibility(ctx, value, owner=row.owner, id=row.id)
        formats = ("disk_format", "container_format")
        if key in formats and row.status != "queued" and value != getattr(row, key):
            raise Forbidden(f"Attribute {key} can be only replaced for a queued image.")

    def _check_protections(
        self, ctx: Context, before: Mapping[str, str | None], after: Mapping[str, str | None]
    ) -> None:
        protections = self.images.protections
        if protections is None:
            return
        changed = {k: v for k, v in after.items() if k not in before or before[k] != v}
        protections.check_update(ctx.roles, before, changed, purge=False)
        for key in set(before) - set(after):
            if not protections.allows(ctx.roles, key, "delete"):
                raise Forbidden(f"Property '{key}' is protected")

    # -- delete, deactivate ----------------------------------------------------------------

    async def delete(self, ctx: Context, image_id: str) -> None:
        """`DELETE /v2/images/{id}` (v2 §8.1): the same deletion as v1 (delayed delete too)."""
        view = await self.get(ctx, image_id, message=f"Failed to find image {image_id} to delete")
        if not rules.writable(ctx, view.row):
            raise Forbidden(f"You are not permitted to delete image {image_id}.")
        if view.row.protected:
            raise Forbidden(f"Image {image_id} is protected and cannot be deleted.")
        await self.images.delete(ctx, image_id)

    async def set_active(self, ctx: Context, image_id: str, *, active: bool) -> None:
        """deactivate (`active` False) or reactivate (v2 §8.2); the other end is a no-op."""
        verb = "reactivate" if active else "deactivate"
        view = await self._writable(
            ctx, image_id, f"You are not permitted to {verb} this image.", rule=verb
        )
        source, target = ("deactivated", "active") if active else ("active", "deactivated")
        status = view.row.status
        if status == target:
            return
        if status != source:
            raise Forbidden(f"Not allowed to {verb} image in status '{status}'")
        async with writing(self.engine) as conn:
            if not await catalog.transition(conn, image_id, source, target):
                raise Conflict(f"Image {image_id} changed status meanwhile; try again.")
        await self._notify_id(ctx, "image.update", image_id)

    # -- tags ------------------------------------------------------------------------------

    async def add_tag(self, ctx: Context, image_id: str, tag: str) -> None:
        await self._writable(ctx, image_id, f"Not allowed to update tags for image {image_id}.")
        check_value("tags", [tag])
        async with writing(self.engine) as conn:
            count = await listing.add_tag(conn, image_id, tag)
            if over_quota(count, self.limits.tag_quota):
                raise TooLarge(f"Image tag limit exceeded for image {image_id}: {count} tags")
            await listing.touch(conn, image_id)
        await self._notify_id(ctx, "image.update", image_id)

    async def remove_tag(self, ctx: Context, image_id: str, tag: str) -> None:
        await self._writable(ctx, image_id, f"Not allowed to delete tags for image {image_id}.")
        async with writing(self.engine) as conn:
            if not await listing.remove_tag(conn, image_id, tag):
                raise NotFound(f"Tag {tag} not found on image {image_id}.")
            await listing.touch(conn, image_id)
        await self._notify_id(ctx, "image.update", image_id)
