"""The image operations Image API v2 adds over the one catalogue (spec v2 §5-§11).

Reuses `ImageService` (deletion, hashing and storing data, quotas, leases) and asks
`osimage.server.rules` for every decision both APIs share. Knows no HTTP: it takes
decoded requests and a `Context` and raises `ApiError`s.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from typing import Any, Final

import anyio
from anyio import CancelScope
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from osimage import wire
from osimage.server import copies, rules, sources, v2query
from osimage.server.auth import Context
from osimage.server.copies import Slot
from osimage.server.db import catalog, leases, listing
from osimage.server.db.catalog import ImageRow, MemberRow
from osimage.server.db.engine import read, reading, writing
from osimage.server.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    TooLarge,
)
from osimage.server.ingest import Upload, store_error
from osimage.server.operations import notifications as events
from osimage.server.operations.policy import image_target
from osimage.server.rules import over_quota
from osimage.server.service import ImageService

MAX_INT = 2147483647
UUID_PATTERN: Final = (
    "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
)
_UUID = re.compile(UUID_PATTERN)
READ_ONLY: Final = frozenset(
    {
        "created_at", "updated_at", "status", "checksum", "size", "virtual_size", "id",
        "direct_url", "self", "file", "schema", "os_hash_algo", "os_hash_value", "stores",
    }
)  # fmt: skip
_LINKS: Final = ("direct_url", "self", "file", "schema", "stores")
RESERVED: Final = frozenset({"location", "deleted", "deleted_at", "locations"})
BASE: Final = (
    "name", "visibility", "protected", "os_hidden", "owner", "min_ram", "min_disk",
    "disk_format", "container_format", "tags",
)  # fmt: skip
_UUID_PROPERTIES: Final = ("kernel_id", "ramdisk_id")  # schema-image.json: UUID or null
IMPORT_METHODS: Final = ("glance-direct", "web-download")
_MAX_ID_LENGTH = 36
_NO_PROJECT: Final = (
    "A caller without a project cannot {what}: the image would have no owner and be "
    "visible to everyone."
)
log = logging.getLogger("osimage.service")


def _schema_error(detail: str) -> BadRequest:
    return BadRequest(f"Provided object does not match schema 'image': {detail}")


def _is_reserved(key: str) -> bool:
    return key in RESERVED or key.startswith("os_glance")


def check_value(key: str, value: Any) -> None:
    """Validate one attribute value as the image schema does (400 on failure)."""
    if key in ("name", "owner"):
        if value is not None and not isinstance(value, str):
            raise _schema_error(f"{value!r} is not of type 'null', 'string' ({key})")
        if isinstance(value, str) and len(value) > 255:
            raise _schema_error(f"{key} is longer than 255 characters")
    elif key == "visibility":
        if value not in rules.VISIBILITIES:
            raise _schema_error(f"{value!r} is not one of {list(rules.VISIBILITIES)} (visibility)")
    elif key in ("protected", "os_hidden"):
        if not isinstance(value, bool):
            raise _schema_error(f"{value!r} is not of type 'boolean' ({key})")
    elif key in ("min_ram", "min_disk"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _schema_error(f"{value!r} is not of type 'integer' ({key})")
        if value < 0:
            raise BadRequest(
                f"Invalid value '{value}' for parameter '{key}': Cannot be a negative value"
            )
        if value > MAX_INT:
            raise BadRequest(f"'{key}' value out of range, must not exceed {MAX_INT}.")
    elif key in ("disk_format", "container_format"):
        allowed = wire.DISK_FORMATS if key == "disk_format" else wire.CONTAINER_FORMATS
        if value is not None and value not in allowed:
            raise _schema_error(f"{value!r} is not one of {[None, *allowed]} ({key})")
    elif key == "tags":
        if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
            raise _schema_error(f"{value!r} is not an array of strings (tags)")
        for tag in value:
            if len(tag) > 255:
                raise _schema_error(f"tag {tag[:32]!r}... is longer than 255 characters")
    elif key in _UUID_PROPERTIES:
        if value is not None and not (isinstance(value, str) and _UUID.match(value)):
            raise _schema_error(f"{value!r} does not match the UUID pattern ({key})")
    else:
        if not isinstance(value, str):
            raise _schema_error(f"{value!r} is not of type 'string' ({key})")
        if len(key) > 255:
            raise BadRequest("Custom property should not be greater than 255 characters.")


def _unique(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def _payload(view: ImageView, **extra: Any) -> dict[str, Any]:
    """Glance's image payload with what v2 shows: its visibility and its tags."""
    row = view.row
    fields: dict[str, Any] = {"visibility": row.visibility, "tags": list(view.tags)}
    fields.update(extra)
    return events.image_payload(row, **fields)


async def _window(chunks: AsyncIterator[bytes], first: int, last: int) -> AsyncIterator[bytes]:
    """The bytes first..last (inclusive) of a stream, still streamed."""
    offset = 0
    async for chunk in chunks:
        end = offset + len(chunk)
        if end > first and offset <= last:
            yield chunk[max(first - offset, 0) : last - offset + 1]
        offset = end
        if offset > last:
            return


@dataclass(frozen=True)
class ImageView:
    """An image as v2 shows it: the shared record plus its tags."""

    row: ImageRow
    tags: list[str]


@dataclass(frozen=True)
class Patch:
    """One decoded JSON-patch operation on a top-level key."""

    op: str  # add | replace | remove
    key: str
    value: Any = None
    legacy: bool = False  # the v2.0 media type: `add` of an existing key is a 409


class ImagesV2:
    """v2 image, tag, data and member operations over `ImageService`'s catalogue."""

    def __init__(self, images: ImageService) -> None:
        self.images = images
        self.engine = images.engine
        self.limits = images.limits

    # -- operations: policy rules and notifications (issue 15) ------------------------------

    def _enforce(self, ctx: Context, rule: str, row: ImageRow | None = None, **extra: Any) -> None:
        """The oslo.policy rule `rule` (Glance's name) for `row`: 403 when it refuses."""
        if row is not None:
            extra.setdefault("visibility", row.visibility)
        self.images.policy.enforce(ctx, rule, image_target(row, **extra))

    def _notify(self, ctx: Context | None, event: str, view: ImageView, **extra: Any) -> None:
        """An info-priority image event with v2's visibility and tags in the payload."""
        notifier = self.images.notifier
        if notifier.enabled:
            notifier.info(ctx, event, _payload(view, **extra))

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

    def _notify_failed(
        self,
        ctx: Context | None,
        image_id: str,
        error: BaseException,
        *,
        reason: object = None,
    ) -> None:
        """Glance's error-priority image.upload: a message, not an image."""
        notifier = self.images.notifier
        if not notifier.enabled:
            return
        if reason is None:
            reason = error
            if isinstance(error, ApiError | sources.SourceError):
                reason = error.message
            elif not isinstance(error, Exception):  # cancelled: the client went away
                reason = "the upload was interrupted"
        notifier.error(
            ctx, "image.upload", f"Failed to upload image data for image {image_id}: {reason}"
        )

    async def _notify_activated(self, ctx: Context | None, image_id: str) -> None:
        if not self.images.notifier.enabled:
            return
        view = await self._view(image_id)
        self._notify(ctx, "image.upload", view)
        if view.row.status == "active":
            self._notify(ctx, "image.activate", view)

    def _notify_member(
        self, ctx: Context, event: str, entry: MemberRow, *, deleted: bool = False
    ) -> None:
        notifier = self.images.notifier
        if notifier.enabled:
            extra: dict[str, Any] = {}
            if deleted:
                extra = {"deleted": True, "deleted_at": events.isotime()}
            notifier.info(ctx, event, events.member_payload(entry, **extra))

    # -- reading ---------------------------------------------------------------------------

    @staticmethod
    def _readable(conn: Connection, ctx: Context, image_id: str) -> ImageView | None:
        if len(image_id) > _MAX_ID_LENGTH:
            return None
        row = catalog.fetch_image(conn, image_id)
        if row is None or not ImagesV2._may_read(conn, ctx, row):
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
            if len(image_id) > _MAX_ID_LENGTH:
                return None
            found = listing.fetch_record(conn, image_id)
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
        for key in _LINKS:
            if key in body:
                raise Forbidden(f"Attribute '{key}' is read-only.")
        for key, value in body.items():
            if key not in READ_ONLY and not _is_reserved(key):
                check_value(key, value)
        image_id = body.get("id")
        if image_id is not None and not (isinstance(image_id, str) and _UUID.match(image_id)):
            raise _schema_error(f"{image_id!r} does not match the UUID pattern (id)")
        if "owner" in body and not ctx.is_admin and body["owner"] != ctx.owner_id:
            raise Forbidden(f"You are not permitted to create images owned by '{body['owner']}'.")
        visibility = body.get("visibility", rules.DEFAULT_VISIBILITY)
        # public needs publicize_image (admins by default), community communitize_image
        self._enforce_visibility(ctx, visibility, owner=body.get("owner", ctx.owner_id))
        tags = _unique(body.get("tags") or [])
        if over_quota(len(tags), self.limits.tag_quota):
            raise TooLarge(
                f"Attempted to add {len(tags)} tags; the limit is {self.limits.tag_quota}."
            )
        for key in body:
            if key in READ_ONLY and key != "id":
                raise Forbidden(f"Attribute '{key}' is read-only.")
            if _is_reserved(key):
                raise Forbidden(f"Attribute '{key}' is reserved.")
        properties = {k: v for k, v in body.items() if k not in BASE and k != "id"}
        if over_quota(len(properties), self.limits.property_quota):
            raise TooLarge(
                "The limit has been exceeded on the number of allowed image properties. "
                f"Attempted: {len(properties)}, Maximum: {self.limits.property_quota}"
            )
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
            if _is_reserved(key):
                raise Forbidden(f"Attribute '{key}' is reserved.")
            if key in BASE:
                if patch.op == "remove":
                    raise Forbidden(f"Property {key} may not be removed.")
                if patch.legacy and patch.op == "add":
                    raise Conflict(f"Property {key} already present.")
                check_value(key, patch.value)
                self._check_base_change(ctx, row, key, patch.value)
                if key == "tags":
                    tags = _unique(patch.value)
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
        if added and over_quota(len(properties), self.limits.property_quota):
            raise TooLarge(
                "The limit has been exceeded on the number of allowed image properties. "
                f"Attempted: {len(properties)}, Maximum: {self.limits.property_quota}"
            )
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

    # -- data ------------------------------------------------------------------------------

    async def upload(self, ctx: Context, image_id: str, data: Upload) -> None:
        """`PUT /v2/images/{id}/file` (v2 §9.1): queued -> saving -> active; a failure puts
        the image back to `queued` with no data left behind."""
        view = await self._writable(
            ctx,
            image_id,
            f"Not allowed to upload image data for image {image_id}",
            rule="upload_image",
        )
        row = view.row
        if row.status != "queued":
            raise Conflict(f"Image status transition from {row.status} to saving is not allowed")
        self._require_formats(row)
        cap = self.limits.image_size_cap
        if data.length is not None and data.length > cap:
            raise TooLarge(f"The incoming image is too large: {data.length} > {cap} bytes.")
        with self.images.ingest.transfer("upload"):  # osimage_transfers_in_progress
            await self._receive(image_id, row.owner, data, source="queued", ctx=ctx)

    @staticmethod
    def _require_formats(row: ImageRow) -> None:
        missing = [n for n in ("disk_format", "container_format") if getattr(row, n) is None]
        if len(missing) == 2:
            raise BadRequest(
                "Properties disk_format, container_format must be set prior to saving data."
            )
        if missing:
            raise BadRequest(f"Property {missing[0]} must be set prior to saving data.")

    async def _receive(
        self,
        image_id: str,
        owner: str | None,
        data: Upload | AsyncIterator[bytes],
        *,
        source: str,
        target: str = "active",
        ctx: Context | None = None,
    ) -> None:
        """Store data for an image in `source` status, through `saving`, to `target`;
        with a `ctx`, the upload's notifications (image.prepare, .upload, .activate)."""
        images = self.images
        async with writing(self.engine) as conn:
            if not await catalog.transition(conn, image_id, source, "saving"):
                raise Conflict(f"Image status transition from {source} to saving is not allowed")
            await leases.claim(conn, image_id, images.ingest.node, catalog.now())
        images.ingest.uploading.add(image_id)
        notify = ctx is not None and target == "active"
        if notify and source == "queued":
            await self._notify_id(ctx, "image.prepare", image_id)
        chunks = data.chunks if isinstance(data, Upload) else data
        declared = data.length if isinstance(data, Upload) else None
        try:
            reservation = await images.ingest.reserve(owner, image_id, declared)
            blob, checksum, sha256, multihash = await images.ingest.store(
                image_id, chunks, reservation
            )
        except BaseException as error:
            await self._requeue(image_id)
            if notify:
                self._notify_failed(ctx, image_id, error)
            mapped = store_error(error)
            if mapped is error:
                raise
            raise mapped from error
        finally:
            images.ingest.uploading.discard(image_id)
        try:
            if declared is not None and declared != blob.size:
                raise BadRequest(
                    f"The image size declared in the request ({declared}) does not match "
                    f"the data received ({blob.size})."
                )
            async with writing(self.engine) as conn:
                quota = self.limits.user_storage_quota
                if quota > 0:
                    used = await catalog.storage_usage(conn, owner, exclude=image_id)
                    if used + blob.size > quota:
                        raise TooLarge(
                            f"Image exceeds the storage quota: {blob.size} bytes with "
                            f"{max(quota - used, 0)} bytes remaining."
                        )
                done = await catalog.transition(
                    conn,
                    image_id,
                    "saving",
                    target,
                    size=blob.size,
                    checksum=checksum,
                    sha256=sha256,
                    os_hash_algo=rules.HASH_ALGO,
                    os_hash_value=multihash,
                    location=blob.location,
                    location_is_external=False,
                )
            if not done:
                raise Gone(
                    f"Image {image_id} could not be found after upload. The image may have "
                    "been deleted during the upload, cleaning up the chunks uploaded."
                )
        except BaseException as error:
            await images.ingest.discard(blob.location)
            await self._requeue(image_id)
            if notify:
                self._notify_failed(ctx, image_id, error)
            raise
        if notify:
            await self._notify_activated(ctx, image_id)

    async def _requeue(self, image_id: str) -> None:
        with CancelScope(shield=True):
            async with writing(self.engine) as conn:
                await catalog.transition(conn, image_id, "saving", "queued", size=None)

    async def download(
        self,
        ctx: Context,
        image_id: str,
        *,
        span: Callable[[int], tuple[int, int] | None] | None = None,
    ) -> tuple[ImageRow, AsyncIterator[bytes] | None, tuple[int, int] | None]:
        """`GET /v2/images/{id}/file` (v2 §9.2): the image, its bytes (None for no data),
        and the inclusive byte range `span(size)` asked for (None: all of it).

        image.send follows when the stream ends: info when every byte asked for was
        sent (a whole range counts as complete, as in Glance), error when it was cut short.
        """
        view = await self.get(ctx, image_id)
        row = view.row
        if row.status == "deactivated" and not ctx.is_admin:
            raise Forbidden(
                "The requested image has been deactivated. Image data download is forbidden."
            )
        if row.location is None or row.status not in ("active", "deactivated"):
            return row, None, None
        self._enforce(ctx, "download_image", row)
        bounds = span(row.size or 0) if span is not None else None
        chunks = self.images.downloads.chunks(row)
        expected = row.size or 0
        if bounds is not None:
            first, last = bounds
            chunks, expected = _window(chunks, first, last), last - first + 1
        return row, self._sent(ctx, row, chunks, expected), bounds

    async def _sent(
        self, ctx: Context, row: ImageRow, chunks: AsyncIterator[bytes], expected: int
    ) -> AsyncIterator[bytes]:
        """Pass `chunks` through, counting them; then image.send (error if cut short)."""
        sent = 0
        metrics = self.images.metrics
        try:
            async for chunk in chunks:
                sent += len(chunk)
                if metrics is not None:
                    metrics.downloaded.inc(len(chunk))
                yield chunk
        finally:
            notifier = self.images.notifier
            payload = events.send_payload(row, ctx, sent)
            if sent == expected:
                notifier.info(ctx, "image.send", payload)
            else:
                notifier.error(ctx, "image.send", payload)

    # -- import ----------------------------------------------------------------------------

    async def stage(self, ctx: Context, image_id: str, data: Upload) -> None:
        """`PUT /v2/images/{id}/stage` (v2 §9.3): queued -> uploading, data kept in the store
        but not served until `glance-direct` imports it."""
        view = await self._writable(
            ctx, image_id, f"Not allowed to stage data for image {image_id}", rule="upload_image"
        )
        row = view.row
        if row.status != "queued":
            raise Conflict(f"Image status transition from {row.status} to uploading is not allowed")
        cap = self.limits.image_size_cap
        if data.length is not None and data.length > cap:
            raise TooLarge(f"The incoming image is too large: {data.length} > {cap} bytes.")
        with self.images.ingest.transfer("upload"):
            await self._receive(image_id, row.owner, data, source="queued", target="uploading")

    async def start_import(self, ctx: Context, image_id: str, body: Any) -> None:
        """`POST /v2/images/{id}/import` (v2 §9.4); the data moves in the background."""
        if not isinstance(body, dict):
            raise BadRequest("Body expected in request.")
        method = body.get("method")
        if not isinstance(method, dict):
            raise BadRequest("Import request requires a 'method' field.")
        name = method.get("name")
        if not name:
            raise BadRequest("Import request requires a 'name' field.")
        if name not in IMPORT_METHODS:
            raise BadRequest(f"Unknown import method name '{name}'.")
        uri = method.get("uri")
        if name == "web-download":
            if not isinstance(uri, str) or not uri:
                raise BadRequest("URI for web-download does not pass filtering: None")
            try:
                sources.check_url(uri, self.images.source_policy)
            except sources.SourceError:
                raise BadRequest(f"URI for web-download does not pass filtering: {uri}") from None
        view = await self._writable(ctx, image_id, f"Not allowed to import image {image_id}")
        row = view.row
        if row.status == "active":
            raise Conflict("Image with status active cannot be target for import")
        if name == "web-download" and row.status != "queued":
            raise Conflict(f"Image needs to be in 'queued' state to use '{name}' method")
        if name == "glance-direct" and row.status != "uploading":
            raise Conflict("Image needs to be staged before 'glance-direct' method can be used")
        if row.container_format is None or row.disk_format is None:
            raise Conflict("'container_format' needs to be set before import")
        if name == "glance-direct":
            async with writing(self.engine) as conn:
                if not await catalog.transition(conn, image_id, "uploading", "importing"):
                    raise Conflict(
                        "Image needs to be staged before 'glance-direct' method can be used"
                    )
                await catalog.transition(conn, image_id, "importing", "active")
            await self._notify_id(ctx, "image.prepare", image_id)
            await self._notify_activated(ctx, image_id)
            return
        assert isinstance(uri, str)
        slot = self.images.ingest.copies.acquire(ctx.owner_id)  # the copy caps: 429 / 503 when full
        try:
            async with writing(self.engine) as conn:
                if not await catalog.transition(conn, image_id, "queued", "importing"):
                    raise Conflict(f"Image needs to be in 'queued' state to use '{name}' method")
                # leased like an upload: a crash leaves it for `sweep_imports`
                await leases.claim(conn, image_id, self.images.ingest.node, catalog.now())
            self.images.ingest.uploading.add(image_id)  # renewed while it connects to the source
            await self._notify_id(ctx, "image.prepare", image_id)
            self.images.tasks.start_soon(
                partial(self._web_download, image_id, uri, row.owner, slot, ctx=ctx)
            )
        except BaseException:
            slot.release()
            raise

    async def _web_download(
        self, image_id: str, uri: str, owner: str | None, slot: Slot, *, ctx: Context
    ) -> None:
        """Background web-download, as a v1 copy: it holds a copy slot, ends within
        `copy_timeout` and `copy_min_rate`, and a delete of the image cancels it."""
        try:
            with CancelScope() as deleted:
                self.images.ingest.copies.watch(image_id, deleted)
                try:
                    await self._fetch(image_id, uri, owner, ctx)
                finally:
                    self.images.ingest.copies.forget(image_id)
                    self.images.ingest.uploading.discard(image_id)
            if deleted.cancelled_caught:
                log.info("web-download of image %s cancelled: the image was deleted", image_id)
        finally:
            slot.release()

    async def _fetch(self, image_id: str, uri: str, owner: str | None, ctx: Context) -> None:
        limits = self.limits
        try:
            with self.images.ingest.transfer("copy"), anyio.fail_after(limits.copy_timeout):
                async with sources.open_source(uri, self.images.source_policy) as source:
                    chunks = copies.paced(
                        source.chunks(),
                        min_rate=limits.copy_min_rate,
                        still_wanted=partial(self._still_saving, image_id),
                    )
                    # no ctx: this method tells of the import's end, once, with its reason
                    await self._receive(image_id, owner, chunks, source="importing")
            await self._notify_activated(ctx, image_id)
        except copies.CopyCancelled:
            log.info("web-download of image %s cancelled: the image was deleted", image_id)
        except Exception as error:
            if isinstance(error, ApiError | sources.SourceError):
                reason: object = error.message
            elif isinstance(error, TimeoutError):
                reason = f"it took longer than copy_timeout ({limits.copy_timeout:g} s)"
            elif isinstance(error, copies.CopyTooSlow):
                reason = f"{error} (copy_min_rate)"
            else:
                reason = error
            self._import_failed(image_id, reason)
            self._notify_failed(ctx, image_id, error, reason=reason)
            async with writing(self.engine) as conn:  # importing -> queued (current Glance)
                await catalog.transition(conn, image_id, "importing", "queued", size=None)

    async def _still_saving(self, image_id: str) -> bool:
        row = await read(self.engine, partial(catalog.fetch_image, image_id=image_id), point=True)
        return row is not None and row.status == "saving" and not row.deleted

    @staticmethod
    def _import_failed(image_id: str, reason: object) -> None:
        log.warning("web-download import of image %s failed: %s", image_id, reason)

    # -- members ---------------------------------------------------------------------------

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


async def sweep_imports(engine: AsyncEngine, *, lease: float, node: str | None = None) -> list[str]:
    """Web-downloads a crash stranded in `importing` go back to `queued` (as a failed one).

    `importing` holds no data (the data moves under `saving`, which `service.sweep`
    kills). With a `node` (at its start), its own too; else only unleased or stale ones.
    """
    now = catalog.now()
    stale_before = now - timedelta(seconds=lease)
    requeued: list[str] = []
    async with writing(engine) as conn:
        for image_id in await leases.stranded_imports(conn, stale_before, node):
            if await leases.requeue_import(
                conn, image_id, now, stale_before=stale_before, node=node
            ):
                requeued.append(image_id)
    if requeued:
        log.warning(
            "import sweep: %d stranded web-download(s) back to queued: %s",
            len(requeued),
            ", ".join(requeued),
        )
    return requeued


async def sweep_imports_forever(engine: AsyncEngine, *, lease: float, interval: float) -> None:
    """`sweep_imports` of stale leases every `interval` seconds until cancelled."""
    while True:
        await anyio.sleep(interval)
        try:
            await sweep_imports(engine, lease=lease)
        except Exception:
            log.exception("import sweep failed")
