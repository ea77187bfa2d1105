"""The image lifecycle and authorization (§8-§11): create, update, read, list and delete.

Orchestrates the rules (`rules`), the data pipeline (`ingest`, `downloads`) and the
catalogue for v1, and gives v2 (`osimage.server.v2`) the same parts. Knows no HTTP
framework: it takes decoded requests and a `Context`, raises `ApiError`s, and changes
status only through conditional UPDATEs, so two writers cannot both win.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from osimage.server import rules
from osimage.server.auth import Context
from osimage.server.copies import Slot
from osimage.server.db import catalog
from osimage.server.db.catalog import ImageRow, ListQuery
from osimage.server.db.engine import read, writing
from osimage.server.downloads import Downloads
from osimage.server.errors import BadRequest, Conflict, NotFound
from osimage.server.ingest import Ingest, Upload, reloaded
from osimage.server.operations import notifications as events
from osimage.server.operations.policy import Policy, image_target
from osimage.server.protections import Protections
from osimage.server.queries import parse_list_query

_UPDATABLE = (
    "name", "disk_format", "container_format", "min_disk", "min_ram", "virtual_size",
    "protected", "is_public", "size", "checksum",
)  # fmt: skip


@dataclass
class Change:
    """A decoded POST/PUT: metadata, properties, and where the data comes from."""

    fields: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, str | None] = field(default_factory=dict)
    copy_from: str | None = None  # "" when the header is present but empty
    purge: bool = True
    data: Upload | None = None


class ImageService:
    """Every image operation, each checked against the caller's `Context`."""

    def __init__(
        self,
        ingest: Ingest,
        downloads: Downloads,
        *,
        delayed_delete: bool = False,
        protections: Protections | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.ingest, self.downloads = ingest, downloads  # the data pipeline, in and out
        self.engine, self.store, self.limits = ingest.engine, ingest.blobs, ingest.limits
        self.notifier, self.metrics, self.cache = ingest.notifier, ingest.metrics, downloads.cache
        self.delayed_delete = delayed_delete
        self.protections = protections
        # operations (issue 15): one policy check and one event per action, for both APIs
        self.policy = policy if policy is not None else Policy()
        # whether a HEAD must read the image's properties: a rule or protections read them
        self._head_properties = protections is not None or not self.policy.is_open("get_image")

    # -- visibility ------------------------------------------------------------------------

    @staticmethod
    def _visible_row(conn: Connection, ctx: Context, image_id: str) -> ImageRow | None:
        """The image if it exists and `ctx` may see it (synchronous: see `engine.read`)."""
        if not rules.plausible_id(image_id):
            return None
        row = catalog.fetch_image(conn, image_id)
        return row if row is not None and ImageService._may_see(conn, ctx, row) else None

    @staticmethod
    def _visible_head(
        conn: Connection, ctx: Context, image_id: str, properties: bool
    ) -> tuple[ImageRow, str | None] | None:
        """`_visible_row` with the image's stored HEAD headers (`catalog.fetch_head`)."""
        if not rules.plausible_id(image_id):
            return None
        found = catalog.fetch_head(conn, image_id, properties=properties)
        return found if found is not None and ImageService._may_see(conn, ctx, found[0]) else None

    @staticmethod
    def _may_see(conn: Connection, ctx: Context, row: ImageRow) -> bool:
        membership = None
        if rules.visible_by_row(ctx, row) is None and ctx.owner_id is not None:
            membership = catalog.find_membership(conn, row.id, ctx.owner_id)
        return rules.visible(ctx, row, membership)

    def shown(self, ctx: Context, row: ImageRow) -> ImageRow:
        """`row` as the caller may see it: without properties it may not read (§13.2)."""
        if self.protections is None:
            return row
        return replace(row, properties=self.protections.readable(ctx.roles, row.properties))

    async def get(
        self, ctx: Context, image_id: str, *, action: str | None = "get_image"
    ) -> ImageRow:
        """The image if the caller may see it; NotFound otherwise. Then the policy rule
        `action` (None: none, for a lookup on the way to another action) may refuse: 403."""
        row = await read(
            self.engine, partial(self._visible_row, ctx=ctx, image_id=image_id), point=True
        )
        if row is None:
            raise NotFound(f"Image {image_id} not found.")
        if action is not None:
            self.policy.enforce(ctx, action, partial(image_target, row))
        return row

    async def head(self, ctx: Context, image_id: str) -> tuple[ImageRow, str | None]:
        """`get`, and the image's stored HEAD headers (`render.head_text`) when they may
        answer: fresh, and no property protections to apply (else None: render them)."""
        properties = self._head_properties
        work = partial(self._visible_head, ctx=ctx, image_id=image_id, properties=properties)
        found = await read(self.engine, work, point=True)
        if found is None:
            raise NotFound(f"Image {image_id} not found.")
        row, stored = found
        self.policy.enforce(ctx, "get_image", partial(image_target, row))
        if self.protections is not None:
            return self.shown(ctx, row), None
        return row, stored

    # -- create / update -------------------------------------------------------------------

    def _normalise(self, ctx: Context, change: Change) -> dict[str, Any]:
        fields = rules.v1_fields(change.fields, change.properties)
        if fields.get("is_public"):
            self.policy.enforce(
                ctx,
                "publicize_image",
                image_target(**fields),
                message="Only an admin may make an image public.",
            )
        return fields

    def _enforce_sources(self, ctx: Context, change: Change, target: dict[str, Any]) -> None:
        """The policy rules for where the data comes from (issue 15)."""
        if change.fields.get("location") is not None:
            self.policy.enforce(ctx, "set_image_location", target)
        if change.copy_from:
            self.policy.enforce(ctx, "copy_from", target)
        if change.data is not None:
            self.policy.enforce(ctx, "upload_image", target)

    def _check_sources(self, fields: Mapping[str, Any], change: Change) -> None:
        rules.check_sources(fields, change.copy_from, data=change.data is not None)
        for url in (fields.get("location"), change.copy_from):
            if url is not None:
                self.ingest.check_source(url)

    def _check_cap(self, fields: Mapping[str, Any], change: Change) -> None:
        declared = change.data.length if change.data and change.data.length is not None else None
        if declared is None:
            declared = fields.get("size")
        self._within_cap(declared)

    def _within_cap(self, size: int | None) -> None:
        """v1's answer to a size over `image_size_cap`: 400."""
        try:
            rules.check_size_cap(size, self.limits.image_size_cap)
        except rules.OverCap as over:
            raise BadRequest(
                f"Denying attempt to upload image larger than {over.cap} bytes."
            ) from None

    async def _copy_size(self, url: str, declared: int | None) -> int:
        """The size a copy will have (`Ingest.copy_size`), within the cap."""
        size = await self.ingest.copy_size(url, declared)
        self._within_cap(size)
        return size

    async def create(self, ctx: Context, change: Change) -> ImageRow:
        """POST /images: reserve, upload, register a location, or start a copy."""
        rules.check_may_create(ctx)
        self.policy.enforce(ctx, "add_image", image_target(owner=ctx.owner_id))
        slot = self.ingest.copy_slot(ctx.owner_id, change.copy_from)  # before the probe
        try:
            return await self._create(ctx, change, slot)
        except BaseException:
            if slot is not None:
                slot.release()
            raise

    async def _create(self, ctx: Context, change: Change, slot: Slot | None) -> ImageRow:
        fields = self._normalise(ctx, change)
        self._enforce_sources(ctx, change, image_target(**{"owner": ctx.owner_id, **fields}))
        self._check_cap(fields, change)
        rules.check_property_quota(len(change.properties), self.limits.property_quota)
        if self.protections is not None:
            self.protections.check_create(ctx.roles, change.properties)
        self._check_sources(fields, change)
        if "store" in fields and fields["store"] != self.store.scheme:
            raise BadRequest(f"Required store {fields['store']} is invalid")
        location = fields.get("location")
        if change.data is not None or location is not None:
            rules.require_formats(fields)
        image_id = rules.new_image_id(fields.get("id"))
        size: int | None = fields.get("size")
        status = "queued"
        if location is not None:
            size = await self.ingest.located_size(location, size)
            status = "active"
        elif change.copy_from is not None:
            size = await self._copy_size(change.copy_from, size)
        elif size == 0 and change.data is None:
            status = "active"
        when = catalog.now()
        values: dict[str, Any] = {
            "id": image_id,
            "name": fields.get("name"),
            "status": status,
            "size": size if size is not None else 0,
            "virtual_size": fields.get("virtual_size"),
            "checksum": fields.get("checksum"),
            "disk_format": fields.get("disk_format"),
            "container_format": fields.get("container_format"),
            "min_disk": fields.get("min_disk") or 0,
            "min_ram": fields.get("min_ram") or 0,
            "owner": fields.get("owner") if ctx.is_admin and "owner" in fields else ctx.owner_id,
            "is_public": bool(fields.get("is_public")),
            "visibility": rules.visibility_of(fields.get("is_public")),
            "protected": bool(fields.get("protected")),
            "deleted": False,
            "created_at": when,
            "updated_at": when,
            "location": location,
            "location_is_external": location is not None,
        }
        try:
            async with writing(self.engine) as conn:
                if await catalog.image_exists(conn, image_id):
                    raise Conflict(f"An image with identifier {image_id} already exists")
                await catalog.insert_image(conn, values, change.properties)
        except IntegrityError:
            raise Conflict(f"An image with identifier {image_id} already exists") from None
        if self.notifier.enabled:
            row = await reloaded(self.engine, image_id)
            self.notifier.info(ctx, "image.create", events.image_payload(row))
        await self._receive(ctx, image_id, change, slot)
        return await reloaded(self.engine, image_id)

    async def update(self, ctx: Context, image_id: str, change: Change) -> ImageRow:
        """PUT /images/{id}: change metadata, then upload/locate/copy if the image is queued."""
        slot = self.ingest.copy_slot(ctx.owner_id, change.copy_from)
        try:
            return await self._update(ctx, image_id, change, slot)
        except BaseException:
            if slot is not None:
                slot.release()
            raise

    async def _update(
        self, ctx: Context, image_id: str, change: Change, slot: Slot | None
    ) -> ImageRow:
        fields = self._normalise(ctx, change)
        self._check_cap(fields, change)
        if "store" in fields and fields["store"] != self.store.scheme:
            raise BadRequest(f"Store for scheme {fields['store']} not found")
        self._check_sources(fields, change)
        row = await self.get(ctx, image_id, action="modify_image")
        self._enforce_sources(ctx, change, image_target(row))
        location = fields.get("location")
        rules.check_update(
            ctx,
            row,
            fields,
            data=change.data is not None,
            source=location is not None or change.copy_from is not None,
        )
        purge = change.purge and change.data is None
        properties = change.properties
        if self.protections is not None:  # may add unreadable keys a purge must keep
            properties = self.protections.check_update(
                ctx.roles, row.properties, properties, purge=purge
            )
        keys = set(properties) if purge else set(row.properties) | set(properties)
        rules.check_property_quota(len(keys), self.limits.property_quota)
        if change.data is not None or location is not None:
            rules.require_formats(fields, row)
        values = {name: fields[name] for name in _UPDATABLE if name in fields}
        if "owner" in fields and ctx.is_admin:
            values["owner"] = fields["owner"]
        if location is not None:
            values["size"] = await self.ingest.located_size(location, fields.get("size"))
            values.update(location=location, location_is_external=True)
        elif change.copy_from is not None:
            values["size"] = await self._copy_size(change.copy_from, fields.get("size"))
        for name in ("is_public", "protected"):
            if name in values:
                values[name] = bool(values[name])
        if "is_public" in values:
            values["visibility"] = rules.visibility_of(values["is_public"])
        async with writing(self.engine) as conn:
            if location is not None:
                saved = await catalog.transition(conn, image_id, "queued", "active", **values)
            elif row.status == "pending_delete":  # admins only: others cannot see it
                saved = await catalog.update_image(
                    conn, image_id, values, status="pending_delete", deleted=True
                )
            else:
                saved = await catalog.update_image(conn, image_id, values)
            if not saved:
                raise Conflict("Image operation conflicts")
            await catalog.set_properties(conn, image_id, properties, purge=purge)
        await self._receive(ctx, image_id, change, slot)
        updated = await reloaded(self.engine, image_id)
        self.notifier.info(ctx, "image.update", events.image_payload(updated))
        return updated

    # -- data ------------------------------------------------------------------------------

    async def _receive(
        self, ctx: Context, image_id: str, change: Change, slot: Slot | None
    ) -> None:
        """The data of a create or update: an upload now, or a copy in the background."""
        if change.data is not None:
            await self.ingest.upload(image_id, change.data, ctx.owner_id, ctx=ctx)
        elif change.copy_from is not None and slot is not None:
            self.ingest.start_copy(image_id, change.copy_from, ctx.owner_id, slot, ctx=ctx)

    async def download(self, ctx: Context, image_id: str) -> tuple[ImageRow, AsyncIterator[bytes]]:
        """The image and its bytes; errors surface on the first chunk (before any is sent)."""
        row = await self.get(ctx, image_id)
        rules.check_download(row)
        self.policy.enforce(ctx, "download_image", partial(image_target, row))
        return row, self.downloads.stream(ctx, row)

    # -- delete ----------------------------------------------------------------------------

    async def delete(self, ctx: Context, image_id: str) -> None:
        """Soft-delete the image and remove its stored data, at once or (with delayed
        delete) by the scrubber, the image waiting in `pending_delete` until then."""
        for _ in range(5):  # a concurrent status change makes the conditional delete retry
            row = await self.get(ctx, image_id, action="delete_image")
            rules.check_delete(ctx, row)
            stored = bool(row.location) and not row.location_is_external
            delay = self.delayed_delete and stored
            async with writing(self.engine) as conn:
                done = await catalog.soft_delete(conn, image_id, from_status=row.status)
                if done and delay:  # the same transaction: never seen as `deleted`
                    await catalog.update_image(
                        conn, image_id, {"status": "pending_delete"}, status="deleted", deleted=True
                    )
            if done:
                if row.status == "saving":
                    self.ingest.cancel_copy(image_id)  # another process's copy sees it later
                # a crash (or a store failure) before `forget_data`: the sweep ends it
                if stored and not delay and await self.ingest.discard(row.location or ""):
                    async with writing(self.engine) as conn:
                        await catalog.forget_data(conn, image_id)
                if self.notifier.enabled:
                    gone = await reloaded(self.engine, image_id)
                    payload = events.image_payload(gone, deleted=True, deleted_at=events.isotime())
                    self.notifier.info(ctx, "image.delete", payload)
                return
        raise Conflict("Image operation conflicts")

    # -- lists -----------------------------------------------------------------------------

    async def list_images(
        self, ctx: Context, params: Mapping[str, str], *, detail: bool
    ) -> list[ImageRow]:
        """One page of the images the caller may list (§9.2, §10.2)."""
        query, marker = self._list_query(ctx, params)
        query.with_properties = detail
        if self.protections is not None and not all(
            self.protections.allows(ctx.roles, key, "read") for key in query.properties
        ):
            return []  # a filter on a property the caller may not read matches nothing (§13.2)

        def page(conn: Connection) -> list[ImageRow]:
            self._place_marker(conn, ctx, query, marker)
            return catalog.list_images(conn, query)

        return await read(self.engine, page)

    async def list_records(self, ctx: Context, params: Mapping[str, str]) -> list[str] | None:
        """A detail page as the images' stored v1 records (JSON text), or None when they
        cannot serve it (property protections, a stale record): then `list_images`."""
        if self.protections is not None:
            return None
        query, marker = self._list_query(ctx, params)

        def page(conn: Connection) -> list[str] | None:
            self._place_marker(conn, ctx, query, marker)
            return catalog.list_records(conn, query)

        return await read(self.engine, page, point=catalog.is_bounded_page(query))

    def _list_query(self, ctx: Context, params: Mapping[str, str]) -> tuple[ListQuery, str | None]:
        """The caller's list query (policy checked) and the marker it names, if any."""
        self.policy.enforce(ctx, "get_images", partial(image_target, owner=ctx.owner_id))
        query, is_public, marker = parse_list_query(
            params,
            limit_default=self.limits.limit_param_default,
            limit_max=self.limits.api_limit_max,
            filters_max=self.limits.list_filters_max,
        )
        query.scope, query.project = rules.list_scope(ctx, is_public), ctx.owner_id
        return query, marker

    @classmethod
    def _place_marker(
        cls, conn: Connection, ctx: Context, query: ListQuery, marker: str | None
    ) -> None:
        if marker is not None:
            row = cls._visible_row(conn, ctx, marker)
            if row is None:
                raise BadRequest("Invalid marker. Image could not be found.")
            query.marker = row
