"""The image lifecycle and authorization (§8-§11): queued -> saving -> active | killed.

Also the storage quota (§11.3) and delayed delete: `pending_delete`, then the scrubber.

Knows no HTTP framework: it takes decoded requests and a `Context`, raises `ApiError`s,
and changes status only through conditional UPDATEs, so two writers cannot both win.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from typing import Any

import anyio
from anyio import CancelScope
from anyio.abc import TaskGroup
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from osimage import wire
from osimage.server import copies, sources
from osimage.server.auth import Context
from osimage.server.cache import ImageCache, cacheable
from osimage.server.copies import Slot
from osimage.server.db import catalog, leases
from osimage.server.db.catalog import ImageRow, ListQuery, Scope
from osimage.server.db.engine import read, reading, writing
from osimage.server.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    ServiceUnavailable,
    TooLarge,
)
from osimage.server.operations import notifications as events
from osimage.server.operations.metrics import Metrics
from osimage.server.operations.notifications import NoNotifier, Notifier
from osimage.server.operations.policy import Policy, image_target
from osimage.server.protections import Protections
from osimage.server.queries import parse_list_query
from osimage.server.rules import HASH_ALGO, visibility_of
from osimage.server.settings import Limits
from osimage.server.stores.base import (
    BlobNotFound,
    BlobStore,
    StoreError,
    StoreFull,
    StoreUnavailable,
)

log = logging.getLogger("osimage.service")

_MAX_ID_LENGTH = 36
MAX_BIGINT = 2**63 - 1
_BATCH_SIZE = 1024 * 1024  # upload bytes per hash job and per store write
IDLE_FLUSH = 0.1  # seconds without upload data after which a partial batch is handed on
MAX_ID_TEXT = 255  # owner, property keys, member ids: String(255) columns
_UPDATABLE = (
    "name", "disk_format", "container_format", "min_disk", "min_ram", "virtual_size",
    "protected", "is_public", "size", "checksum",
)  # fmt: skip
_ABSENT_WHEN_EMPTY = ("size", "min_disk", "min_ram", "is_public", "protected", "checksum")
_AMAZON_MIX = (
    "Invalid mix of disk and container formats. When setting a disk or container format to "
    "one of 'aki', 'ari', or 'ami', the container and disk formats must match."
)


@dataclass
class Upload:
    """Image data arriving with a request; `length` is its Content-Length, if declared."""

    chunks: AsyncIterator[bytes]
    length: int | None = None


@dataclass
class Change:
    """A decoded POST/PUT: metadata, properties, and where the data comes from."""

    fields: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, str | None] = field(default_factory=dict)
    copy_from: str | None = None  # "" when the header is present but empty
    purge: bool = True
    data: Upload | None = None


async def _batches(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """Join chunks into batches of at least `size` bytes (the last may be shorter).

    A batch is handed on when it is full, when it has been gathering for `IDLE_FLUSH`
    seconds, or at an empty chunk (the body's idle tick: the client paused). So a stalled
    upload pins no batch, and a slow one at most what it sends in `IDLE_FLUSH` seconds;
    only a client sending at `size / IDLE_FLUSH` bytes per second fills one.
    """
    parts: list[bytes] = []
    held = 0
    since = 0.0
    async for chunk in chunks:
        if not chunk and not held:
            continue
        if not held:
            since = anyio.current_time()
        parts.append(chunk)
        held += len(chunk)
        if held >= size or not chunk or anyio.current_time() - since >= IDLE_FLUSH:
            yield parts[0] if len(parts) == 1 else b"".join(parts)
            parts, held = [], 0
    if held:
        yield b"".join(parts)


def _plausible_id(image_id: str) -> bool:
    """Whether an image could have this id: not too long for the column, and no NUL
    (PostgreSQL text cannot hold one: looking it up would be an error, not a miss)."""
    return len(image_id) <= _MAX_ID_LENGTH and "\x00" not in image_id


class DownloadBroken(Exception):
    """Image data stopped matching its recorded size after the headers went out (logged
    once, here): the only honest answer left is to abort the connection."""


async def _exactly(chunks: AsyncIterator[bytes], row: ImageRow, where: str) -> AsyncIterator[bytes]:
    """`chunks` while they add up to `row.size`; an error before the first chunk passes
    through, any failure after it becomes `DownloadBroken`."""
    expected, sent = row.size or 0, 0
    try:
        async for chunk in chunks:
            if sent + len(chunk) > expected:
                raise DownloadBroken(f"{where} sent more than the recorded {expected} bytes")
            sent += len(chunk)
            yield chunk
        if sent != expected:
            raise DownloadBroken(f"{where} ended after {sent} of the recorded {expected} bytes")
    except (StoreError, sources.SourceError, DownloadBroken) as error:
        if not sent and isinstance(error, DownloadBroken):  # nothing sent: answer instead
            log.warning("download of image %s refused: %s", row.id, error)
            raise ServiceUnavailable(
                f"The data of image {row.id} does not match its recorded size: {error}."
            ) from None
        if not sent:
            raise
        reason = error.message if isinstance(error, sources.SourceError) else str(error)
        log.warning("download of image %s aborted: %s", row.id, reason)
        raise DownloadBroken(reason) from None


def over_quota(count: int, quota: int) -> bool:
    """Whether `count` exceeds `quota` (a negative quota is unlimited)."""
    return quota >= 0 and count > quota


def _check_formats(fields: dict[str, Any]) -> None:
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


def _check_bounds(fields: Mapping[str, Any], properties: Mapping[str, str | None]) -> None:
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


def _require_formats(fields: Mapping[str, Any], row: ImageRow | None = None) -> None:
    for name, label in (("disk_format", "Disk"), ("container_format", "Container")):
        if fields.get(name) is None and (row is None or getattr(row, name) is None):
            raise BadRequest(f"{label} format is not specified.")


def _source_error(error: sources.SourceError) -> ApiError:
    if isinstance(error, sources.SourceNotFound):
        return NotFound(error.message)
    if isinstance(error, sources.SourceUnavailable):
        return ServiceUnavailable(error.message)
    return BadRequest(error.message)


def _store_error(error: BaseException) -> BaseException:
    if isinstance(error, StoreFull):
        return TooLarge(str(error))
    if isinstance(error, StoreUnavailable | OSError):
        return ServiceUnavailable(f"The image store failed: {error}")
    return error


def _over_storage_quota(size: int | None, room: int) -> TooLarge:
    data = "The size of the data" if size is None else f"The size of the data {size}"
    return TooLarge(
        "Denying attempt to upload image because it exceeds the quota: "
        f"{data} will exceed the limit. {max(room, 0)} bytes remaining."
    )


_RESERVE_STEP = 8 * 1024 * 1024  # quota an upload of unknown size reserves at a time


class _Reservation:
    """The storage quota one upload holds (its lease's `reserved`); grows as data arrives.

    Released by the upload's end: only `saving` images' reservations count."""

    def __init__(self, service: ImageService, owner: str | None, image_id: str) -> None:
        self._service, self._owner, self._image_id = service, owner, image_id
        self.held = 0

    async def cover(self, needed: int, *, wanted: int) -> None:
        """Hold at least `needed` bytes (TooLarge if the quota has no room for them)."""
        self.held = await self._service._reserve(self._owner, self._image_id, needed, wanted)


class ImageService:
    """Every image operation, each checked against the caller's `Context`."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: BlobStore,
        *,
        limits: Limits,
        source_policy: sources.SourcePolicy,
        tasks: TaskGroup,
        delayed_delete: bool = False,
        protections: Protections | None = None,
        node: str = "",
        upload_lease: float = 300.0,
        policy: Policy | None = None,
        notifier: Notifier | None = None,
        metrics: Metrics | None = None,
        cache: ImageCache | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.limits = limits
        self.source_policy = source_policy
        self.tasks = tasks
        self.delayed_delete = delayed_delete
        self.protections = protections
        self.node = node  # this instance's name in upload leases
        self.upload_lease = upload_lease
        self.uploading: set[str] = set()  # ids of the uploads this process receives
        self.multihashes: dict[str, str] = {}  # image id -> os_hash_value of its stored data
        # operations (issue 15): one policy check and one event per action, for both APIs
        self.policy = policy if policy is not None else Policy()
        self.notifier: Notifier = notifier if notifier is not None else NoNotifier()
        self.metrics = metrics
        self.cache = cache  # this node's image cache (issue 16), if enabled
        self.copies = copies.Copies(limits.copy_max, limits.copy_max_per_project)

    # -- visibility ------------------------------------------------------------------------

    @staticmethod
    def _visible(conn: Connection, ctx: Context, row: ImageRow) -> bool:
        """Whether `ctx` may see `row`; reads its membership through `conn` if needed."""
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
        member = catalog.find_membership(conn, row.id, ctx.owner_id)
        return member is not None and not member.deleted

    @classmethod
    def _visible_row(cls, conn: Connection, ctx: Context, image_id: str) -> ImageRow | None:
        """The image if it exists and `ctx` may see it (synchronous: see `engine.read`)."""
        if not _plausible_id(image_id):
            return None
        row = catalog.fetch_image(conn, image_id)
        if row is None or not cls._visible(conn, ctx, row):
            return None
        return row

    def is_owner(self, ctx: Context, row: ImageRow) -> bool:
        return row.owner is not None and ctx.owner_id is not None and row.owner == ctx.owner_id

    def _check_modify(self, ctx: Context, row: ImageRow) -> None:
        """Only admins and the owner change an image. Others who can see it get 403 for a
        public image (as queens), 404 otherwise: it is not visible *for modification*."""
        if ctx.is_admin or self.is_owner(ctx, row):
            return
        if row.is_public:
            raise Forbidden(f"You are not permitted to modify image {row.id}.")
        raise NotFound(f"Image {row.id} not found.")

    async def _row(self, image_id: str) -> ImageRow | None:
        if not _plausible_id(image_id):
            return None
        return await read(self.engine, partial(catalog.fetch_image, image_id=image_id), point=True)

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
            self.policy.enforce(ctx, action, image_target(row))
        return row

    # -- create / update -------------------------------------------------------------------

    def _normalise(self, ctx: Context, change: Change) -> dict[str, Any]:
        fields = dict(change.fields)
        for name in _ABSENT_WHEN_EMPTY:
            if name in fields and fields[name] is None:
                del fields[name]  # an empty header means "not given"
        _check_formats(fields)
        _check_bounds(fields, change.properties)
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
        if "location" in fields and fields["location"] is None:
            raise BadRequest("External source should not be empty")
        if change.copy_from == "":
            raise BadRequest("External source should not be empty")
        given = [fields.get("location"), change.copy_from, change.data]
        if sum(item is not None for item in given) > 1:
            raise BadRequest("It's invalid to provide multiple image sources.")
        for url in (fields.get("location"), change.copy_from):
            if url is not None:
                try:
                    sources.check_url(url, self.source_policy)
                except sources.SourceError as error:
                    raise _source_error(error) from None

    def _check_cap(self, fields: Mapping[str, Any], change: Change) -> None:
        cap = self.limits.image_size_cap
        declared = change.data.length if change.data and change.data.length is not None else None
        if declared is None:
            declared = fields.get("size")
        if declared is not None and declared > cap:
            raise BadRequest(f"Denying attempt to upload image larger than {cap} bytes.")

    async def _probe(self, url: str) -> int | None:
        try:
            return await sources.probe_size(url, self.source_policy)
        except sources.SourceError as error:
            raise _source_error(error) from None

    async def _located_size(self, url: str, declared: int | None) -> int:
        probed = await self._probe(url) if declared is None or declared else None
        if declared is not None and probed and declared != probed:
            raise Conflict(
                "Provided image size must match the stored image size. "
                f"(provided size: {declared}, stored size: {probed})"
            )
        return declared if declared is not None else (probed or 0)

    async def _copy_size(self, url: str, declared: int | None) -> int:
        """The size a copy will have: the source's, if it says (§12), else the declared one."""
        size = await self._probe(url) or declared or 0
        if size > self.limits.image_size_cap:
            cap = self.limits.image_size_cap
            raise BadRequest(f"Denying attempt to upload image larger than {cap} bytes.")
        return size

    async def create(self, ctx: Context, change: Change) -> ImageRow:
        """POST /images: reserve, upload, register a location, or start a copy."""
        if not ctx.is_admin and ctx.owner_id is None:
            # its image would be ownerless: visible to everyone, changeable by admins only
            raise Forbidden(
                "A caller without a project cannot create images: the image would have no "
                "owner and be visible to everyone."
            )
        self.policy.enforce(ctx, "add_image", image_target(owner=ctx.owner_id))
        slot = self._copy_slot(ctx, change)  # before the source is probed
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
        if over_quota(len(change.properties), self.limits.property_quota):
            raise TooLarge(self._quota_message(len(change.properties)))
        if self.protections is not None:
            self.protections.check_create(ctx.roles, change.properties)
        self._check_sources(fields, change)
        if "store" in fields and fields["store"] != self.store.scheme:
            raise BadRequest(f"Required store {fields['store']} is invalid")
        location = fields.get("location")
        if change.data is not None or location is not None:
            _require_formats(fields)
        image_id = self._new_id(fields.get("id"))
        size: int | None = fields.get("size")
        status = "queued"
        if location is not None:
            size = await self._located_size(location, size)
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
            "visibility": visibility_of(fields.get("is_public")),
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
            row = await self._reload(image_id)
            self.notifier.info(ctx, "image.create", events.image_payload(row))
        if change.data is not None:
            await self._upload(image_id, change.data, ctx.owner_id, ctx=ctx)
        elif change.copy_from is not None and slot is not None:
            self.tasks.start_soon(
                partial(self._copy, image_id, change.copy_from, ctx.owner_id, slot, ctx=ctx)
            )
        return await self._reload(image_id)

    def _new_id(self, given: str | None) -> str:
        if given is None:
            return str(uuid.uuid4())
        try:
            return str(uuid.UUID(given))
        except ValueError:
            raise BadRequest(f"Invalid value for {wire.PREFIX}id: {given!r}") from None

    def _quota_message(self, attempted: int) -> str:
        return (
            "The limit has been exceeded on the number of allowed image properties. "
            f"Attempted: {attempted}, Maximum: {self.limits.property_quota}"
        )

    async def update(self, ctx: Context, image_id: str, change: Change) -> ImageRow:
        """PUT /images/{id}: change metadata, then upload/locate/copy if the image is queued."""
        slot = self._copy_slot(ctx, change)
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
        if row.deleted and row.status != "pending_delete":
            raise Forbidden("Forbidden to update deleted image.")
        self._check_modify(ctx, row)
        if not ctx.is_admin and row.status in ("active", "deactivated"):
            for name in ("size", "checksum"):
                if name in fields and fields[name] != getattr(row, name):
                    raise Forbidden(f"Forbidden to modify '{name}' of {row.status} image.")
        for name in ("status", "id"):
            if name in fields and fields[name] != getattr(row, name):
                raise Forbidden(f"Forbidden to modify '{name}' of image.")
        if change.data is not None and row.status != "queued":
            raise Conflict("Cannot upload to an unqueued image")
        location = fields.get("location")
        if (location is not None or change.copy_from is not None) and row.status != "queued":
            raise BadRequest(
                "Attempted to update Location field for an image not in queued status."
            )
        purge = change.purge and change.data is None
        properties = change.properties
        if self.protections is not None:  # may add unreadable keys a purge must keep
            properties = self.protections.check_update(
                ctx.roles, row.properties, properties, purge=purge
            )
        keys = set(properties) if purge else set(row.properties) | set(properties)
        if over_quota(len(keys), self.limits.property_quota):
            raise TooLarge(self._quota_message(len(keys)))
        if change.data is not None or location is not None:
            _require_formats(fields, row)
        values = {name: fields[name] for name in _UPDATABLE if name in fields}
        if "owner" in fields and ctx.is_admin:
            values["owner"] = fields["owner"]
        if location is not None:
            values["size"] = await self._located_size(location, fields.get("size"))
            values.update(location=location, location_is_external=True)
        elif change.copy_from is not None:
            values["size"] = await self._copy_size(change.copy_from, fields.get("size"))
        for name in ("is_public", "protected"):
            if name in values:
                values[name] = bool(values[name])
        if "is_public" in values:
            values["visibility"] = visibility_of(values["is_public"])
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
        if change.data is not None:
            await self._upload(image_id, change.data, ctx.owner_id, ctx=ctx)
        elif change.copy_from is not None and slot is not None:
            self.tasks.start_soon(
                partial(self._copy, image_id, change.copy_from, ctx.owner_id, slot, ctx=ctx)
            )
        updated = await self._reload(image_id)
        self.notifier.info(ctx, "image.update", events.image_payload(updated))
        return updated

    async def _reload(self, image_id: str) -> ImageRow:
        row = await self._row(image_id)
        if row is None:  # pragma: no cover - rows are never removed
            raise NotFound(f"Image {image_id} not found.")
        return row

    # -- data ------------------------------------------------------------------------------

    async def _kill(self, image_id: str) -> None:
        with CancelScope(shield=True):
            async with writing(self.engine) as conn:
                await catalog.transition(conn, image_id, "saving", "killed")

    async def _discard(self, location: str) -> bool:
        """Remove a blob, even while being cancelled; False (logged) if the store failed."""
        with CancelScope(shield=True):
            try:
                await self.store.delete(location)
            except Exception as error:
                self._count_store_error("delete")
                log.warning("could not remove blob %s: %s", location, error)
                return False
        return True

    def _count_store_error(self, operation: str) -> None:
        if self.metrics is not None:
            self.metrics.store_error(operation)

    async def _store(
        self,
        image_id: str,
        chunks: AsyncIterator[bytes],
        reservation: _Reservation | None = None,
    ) -> tuple[Any, str, str]:
        """Store `chunks`, counting size and digests as they pass; enforce the size cap and
        the uploader's storage quota: no byte reaches the store before `reservation` (None:
        no quota) holds it."""
        cap = self.limits.image_size_cap
        md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        multihash = hashlib.new(HASH_ALGO)

        async def checked() -> AsyncIterator[bytes]:
            seen = 0
            async for chunk in chunks:
                seen += len(chunk)
                if seen > cap:
                    raise TooLarge(f"Denying attempt to upload image larger than {cap} bytes.")
                if reservation is not None and seen > reservation.held:
                    await reservation.cover(seen, wanted=seen + _RESERVE_STEP)
                if self.metrics is not None:
                    self.metrics.uploaded.inc(len(chunk))
                yield chunk

        async def digested() -> AsyncIterator[bytes]:
            # md5 and sha256 of batch N run in two worker threads (hashlib releases the
            # GIL) while the store writes it and the next batch is received.
            loop = asyncio.get_running_loop()
            hashing: list[asyncio.Future[None]] = []
            async for batch in _batches(checked(), _BATCH_SIZE):
                for job in hashing:
                    await job
                hashing = [
                    loop.run_in_executor(None, md5.update, batch),
                    loop.run_in_executor(None, sha256.update, batch),
                    loop.run_in_executor(None, multihash.update, batch),
                ]
                yield batch
                del batch  # not pinned while the next one is awaited (a stalled client)
            for job in hashing:
                await job

        blob = await self.store.put(image_id, digested())
        self.multihashes[image_id] = multihash.hexdigest()  # read by _activate
        return blob, md5.hexdigest(), sha256.hexdigest()

    async def _reservation(
        self, owner: str | None, image_id: str, declared: int | None
    ) -> _Reservation | None:
        """A storage-quota reservation for an upload of `declared` bytes (None: unknown),
        already holding them if declared; None when there is no storage quota. Raises
        TooLarge if it cannot fit."""
        if self.limits.user_storage_quota <= 0:
            return None
        reservation = _Reservation(self, owner, image_id)
        await reservation.cover(declared or 0, wanted=declared or _RESERVE_STEP)
        return reservation

    async def _reserve(self, owner: str | None, image_id: str, needed: int, wanted: int) -> int:
        """Hold at least `needed`, at most `wanted` bytes of `owner`'s quota for the upload
        of `image_id`, in one transaction that owner's other reservations wait for;
        returns what is held. Raises TooLarge if `needed` does not fit."""
        quota = self.limits.user_storage_quota
        async with writing(self.engine) as conn:
            await catalog.lock_owner(conn, owner)
            room = quota - await catalog.storage_usage(conn, owner, exclude=image_id)
            if needed > room or room <= 0:
                raise _over_storage_quota(needed or None, room)
            held = min(max(wanted, needed), room)
            await leases.reserve(conn, image_id, held)
        return held

    async def _upload(
        self, image_id: str, data: Upload, owner: str | None, *, ctx: Context | None = None
    ) -> None:
        """queued -> saving -> active, or killed with no data left behind."""
        if not await self._start_saving(image_id):
            raise Conflict("Cannot upload to an unqueued image")
        with self._transfer("upload"):
            await self._receive(image_id, data, owner, ctx)

    @contextmanager
    def _transfer(self, kind: str) -> Iterator[None]:
        """Count an upload or copy in progress (osimage_transfers_in_progress)."""
        gauge = self.metrics.transfers.labels(kind) if self.metrics is not None else None
        if gauge is not None:
            gauge.inc()
        try:
            yield
        finally:
            if gauge is not None:
                gauge.dec()

    async def _receive(
        self, image_id: str, data: Upload, owner: str | None, ctx: Context | None
    ) -> None:
        if self.notifier.enabled:
            row = await self._reload(image_id)
            self.notifier.info(ctx, "image.prepare", events.image_payload(row))
        try:
            declared = data.length
            if declared is None and self.limits.user_storage_quota > 0:
                declared = (await self._reload(image_id)).size or None
            reservation = await self._reservation(owner, image_id, declared)
            blob, checksum, sha256 = await self._store(image_id, data.chunks, reservation)
        except BaseException as error:
            await self._kill(image_id)
            if isinstance(error, StoreFull | StoreUnavailable | OSError):
                self._count_store_error("put")
            self._notify_failed(ctx, image_id, error)
            mapped = _store_error(error)
            if mapped is error:
                raise
            raise mapped from error
        finally:
            self.uploading.discard(image_id)
        try:
            await self._activate(image_id, blob, checksum, sha256, owner)
        except Exception as error:
            self._notify_failed(ctx, image_id, error)
            raise
        if self.notifier.enabled:
            self._notify_activated(ctx, await self._reload(image_id))

    def _notify_failed(self, ctx: Context | None, image_id: str, error: BaseException) -> None:
        """Glance's error-priority image.upload: a message, not an image."""
        reason: object = error
        if isinstance(error, ApiError | sources.SourceError):
            reason = error.message
        elif not isinstance(error, Exception):  # cancelled: the client went away
            reason = "the upload was interrupted"
        self.notifier.error(
            ctx, "image.upload", f"Failed to upload image data for image {image_id}: {reason}"
        )

    def _notify_activated(self, ctx: Context | None, row: ImageRow) -> None:
        self.notifier.info(ctx, "image.upload", events.image_payload(row))
        if row.status == "active":
            self.notifier.info(ctx, "image.activate", events.image_payload(row))

    async def _activate(
        self, image_id: str, blob: Any, checksum: str, sha256: str, owner: str | None
    ) -> None:
        quota = self.limits.user_storage_quota
        try:
            row = await self._reload(image_id)
            async with writing(self.engine) as conn:
                if quota > 0:  # again, now the size is known, in the activating transaction
                    await catalog.lock_owner(conn, owner)
                    used = await catalog.storage_usage(conn, owner, exclude=image_id)
                    if used + blob.size > quota:
                        raise _over_storage_quota(blob.size, quota - used)
                for name, expected, actual in (
                    ("size", row.size, blob.size),
                    ("checksum", row.checksum, checksum),
                ):
                    if expected and expected != actual:
                        raise BadRequest(
                            f"Supplied {name} ({expected}) and {name} generated from uploaded "
                            f"image ({actual}) did not match. Setting image status to 'killed'."
                        )
                activated = await catalog.transition(
                    conn,
                    image_id,
                    "saving",
                    "active",
                    size=blob.size,
                    checksum=checksum,
                    sha256=sha256,
                    location=blob.location,
                    location_is_external=False,
                    os_hash_algo=HASH_ALGO,
                    os_hash_value=self.multihashes.pop(image_id, None),
                )
            if not activated:
                current = await self._reload(image_id)
                if current.deleted:
                    raise PreconditionFailed(f"Image {image_id} was deleted during its upload.")
                raise Conflict("Image operation conflicts")
        except BaseException:
            self.multihashes.pop(image_id, None)
            await self._discard(blob.location)
            await self._kill(image_id)
            raise

    async def _copy(
        self, image_id: str, url: str, owner: str | None, slot: Slot, *, ctx: Context | None = None
    ) -> None:
        """Background copy-from: queued -> saving -> active, or killed; within
        `copy_timeout` and `copy_min_rate`, cancelled by a delete of the image."""
        try:
            with CancelScope() as deleted:
                self.copies.watch(image_id, deleted)
                try:
                    with self._transfer("copy"):
                        await self._copy_data(image_id, url, owner, ctx)
                finally:
                    self.copies.forget(image_id)
            if deleted.cancelled_caught:
                log.info("copy of image %s cancelled: the image was deleted", image_id)
        finally:
            slot.release()

    async def _copy_data(
        self, image_id: str, url: str, owner: str | None, ctx: Context | None
    ) -> None:
        if not await self._start_saving(image_id):
            return
        limits = self.limits
        try:
            with anyio.fail_after(limits.copy_timeout):
                if self.notifier.enabled:
                    row = await self._reload(image_id)
                    self.notifier.info(ctx, "image.prepare", events.image_payload(row))
                declared = (await self._reload(image_id)).size or None
                reservation = await self._reservation(owner, image_id, declared)
                async with sources.open_source(url, self.source_policy) as source:
                    chunks = copies.paced(
                        source.chunks(),
                        min_rate=limits.copy_min_rate,
                        still_wanted=partial(self._still_saving, image_id),
                    )
                    blob, checksum, sha256 = await self._store(image_id, chunks, reservation)
            # the copy's own size wins over a declared one (§12)
            async with writing(self.engine) as conn:
                await catalog.update_image(conn, image_id, {"size": blob.size}, status="saving")
            await self._activate(image_id, blob, checksum, sha256, owner)
            if self.notifier.enabled:
                self._notify_activated(ctx, await self._reload(image_id))
        except copies.CopyCancelled:
            log.info("copy of image %s cancelled: the image was deleted", image_id)
        except Exception as error:
            await self._kill(image_id)
            if isinstance(error, StoreFull | StoreUnavailable | OSError):
                self._count_store_error("put")
            self._notify_failed(ctx, image_id, error)
            if isinstance(error, ApiError | sources.SourceError):
                reason: object = error.message
            elif isinstance(error, TimeoutError):
                reason = f"it took longer than copy_timeout ({limits.copy_timeout:g} s)"
            elif isinstance(error, copies.CopyTooSlow):
                reason = f"{error} (copy_min_rate)"
            else:
                reason = error
            log.warning("copy of image %s failed: %s", image_id, reason)
        except BaseException:
            await self._kill(image_id)
            raise
        finally:
            self.uploading.discard(image_id)

    async def _still_saving(self, image_id: str) -> bool:
        row = await self._row(image_id)
        return row is not None and row.status == "saving"

    def _copy_slot(self, ctx: Context, change: Change) -> Slot | None:
        """A place under the copy caps for a copy-from request (429/503 when full)."""
        if change.copy_from is None:
            return None
        return self.copies.acquire(ctx.owner_id)

    async def _start_saving(self, image_id: str) -> bool:
        """queued -> saving, leased to this instance; False if the image was not queued."""
        async with writing(self.engine) as conn:
            if not await catalog.transition(conn, image_id, "queued", "saving"):
                return False
            await leases.claim(conn, image_id, self.node, catalog.now())
        self.uploading.add(image_id)
        return True

    async def download(self, ctx: Context, image_id: str) -> tuple[ImageRow, AsyncIterator[bytes]]:
        """The image and its bytes; errors surface on the first chunk (before any is sent)."""
        row = await self.get(ctx, image_id)
        if row.status == "deactivated":
            raise Forbidden(f"Image {image_id} is deactivated")
        if row.status != "active" or row.deleted:
            raise NotFound(f"Image {image_id} is not active")
        self.policy.enforce(ctx, "download_image", image_target(row))
        return row, self._sent(ctx, row, self._chunks(row))

    async def _sent(
        self, ctx: Context, row: ImageRow, chunks: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """Pass `chunks` through, counting them; then image.send (error if cut short)."""
        sent = 0
        try:
            async for chunk in chunks:
                sent += len(chunk)
                if self.metrics is not None:
                    self.metrics.downloaded.inc(len(chunk))
                yield chunk
        finally:
            payload = events.send_payload(row, ctx, sent)
            if sent == (row.size or 0):
                self.notifier.info(ctx, "image.send", payload)
            else:
                self.notifier.error(ctx, "image.send", payload)

    async def _chunks(self, row: ImageRow) -> AsyncIterator[bytes]:
        """The image's bytes, exactly `row.size` of them: a source or store that holds
        another size is refused before the first chunk (503), and one that breaks off or
        runs long after it raises `DownloadBroken` (the connection must be aborted)."""
        if not row.size or row.location is None:
            return
        if row.location_is_external:
            try:
                async with sources.open_source(row.location, self.source_policy) as source:
                    if source.size is not None and source.size != row.size:
                        raise self._mismatch(row, source.size, "its location")
                    async for chunk in _exactly(source.chunks(), row, "its location"):
                        yield chunk
            except sources.SourceError as error:
                raise _source_error(error) from None
            return
        try:
            if self.cache is None or not cacheable(row, self.store):
                # the cache checks size and md5 itself, and spares the store a request
                held = await self.store.size(row.location)
                if held != row.size:
                    raise self._mismatch(row, held, "the store")
            async for chunk in _exactly(self._stored(row, row.location), row, "the store"):
                yield chunk
        except BlobNotFound:
            raise NotFound(f"Data of image {row.id} is missing from the store.") from None
        except StoreUnavailable as error:
            self._count_store_error("get")
            raise ServiceUnavailable(str(error)) from None

    def _stored(self, row: ImageRow, location: str) -> AsyncIterator[bytes]:
        """The stored bytes, through this node's cache when it has one and `row` (just
        read from the database) is active with a checksum."""
        if self.cache is None or not cacheable(row, self.store):
            return self.store.get(location)
        assert row.checksum is not None
        assert row.size is not None
        return self.cache.read(row.id, row.checksum, row.size, partial(self.store.get, location))

    @staticmethod
    def _mismatch(row: ImageRow, held: int, where: str) -> ServiceUnavailable:
        log.warning(
            "download of image %s refused: %s holds %d bytes, the record says %d",
            row.id, where, held, row.size,
        )  # fmt: skip
        return ServiceUnavailable(
            f"The data of image {row.id} does not match its recorded size "
            f"({held} bytes held, {row.size} recorded)."
        )

    # -- delete ----------------------------------------------------------------------------

    async def delete(self, ctx: Context, image_id: str) -> None:
        """Soft-delete the image and remove its stored data, at once or (with delayed
        delete) by the scrubber, the image waiting in `pending_delete` until then."""
        for _ in range(5):  # a concurrent status change makes the conditional delete retry
            row = await self.get(ctx, image_id, action="delete_image")
            pending = row.status == "pending_delete"
            if row.status == "deleted" or (row.deleted and not pending):
                raise NotFound(f"Image {image_id} not found.")
            self._check_modify(ctx, row)
            if row.protected:
                raise Forbidden("Image is protected")
            if pending:
                raise Forbidden("Forbidden to delete a pending_delete image.")
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
                    self.copies.cancel(image_id)  # a copy another process runs sees it later
                # a crash (or a store failure) before `forget_data`: the sweep ends it
                if stored and not delay and await self._discard(row.location or ""):
                    async with writing(self.engine) as conn:
                        await catalog.forget_data(conn, image_id)
                if self.notifier.enabled:
                    gone = await self._reload(image_id)
                    payload = events.image_payload(gone, deleted=True, deleted_at=events.isotime())
                    self.notifier.info(ctx, "image.delete", payload)
                return
        raise Conflict("Image operation conflicts")

    async def scrub_forever(self, interval: float) -> None:
        """Scrub now, then every `interval` seconds until cancelled (at shutdown)."""
        while True:
            try:
                await scrub(self.engine, self.store)
            except Exception:
                log.exception("scrubber run failed")
            await anyio.sleep(interval)

    async def renew_leases_forever(self, interval: float) -> None:
        """Every `interval` seconds until cancelled: renew the leases of this process's
        uploads, and kill the uploads of any instance whose lease went stale."""
        while True:
            await anyio.sleep(interval)
            try:
                await self.renew_leases()
            except Exception:
                log.exception("upload lease renewal failed")

    async def renew_leases(self) -> list[str]:
        """One round of `renew_leases_forever`; returns the ids of the uploads it killed."""
        now = catalog.now()
        if self.uploading:
            async with writing(self.engine) as conn:
                await leases.renew(conn, set(self.uploading), self.node, now)
        stale_before = now - timedelta(seconds=self.upload_lease)
        async with reading(self.engine) as conn:
            candidates = await leases.stale(conn, stale_before)
        killed: list[tuple[str, str | None]] = []
        for image_id, location in candidates:
            async with writing(self.engine) as conn:
                if await leases.kill(conn, image_id, now, stale_before=stale_before):
                    killed.append((image_id, location))
        async with writing(self.engine) as conn:
            await leases.drop_finished(conn)
        await _discard_partial(self.store, killed)
        if killed:
            log.warning(
                "upload leases: %d stale upload(s) killed: %s",
                len(killed),
                ", ".join(image_id for image_id, _ in killed),
            )
        return [image_id for image_id, _ in killed]

    # -- lists -----------------------------------------------------------------------------

    async def list_images(
        self, ctx: Context, params: Mapping[str, str], *, detail: bool
    ) -> list[ImageRow]:
        """One page of the images the caller may list (§9.2, §10.2)."""
        self.policy.enforce(ctx, "get_images", image_target(owner=ctx.owner_id))
        query, is_public, marker = parse_list_query(
            params,
            limit_default=self.limits.limit_param_default,
            limit_max=self.limits.api_limit_max,
            filters_max=self.limits.list_filters_max,
        )
        query.scope, query.project = self._list_scope(ctx, is_public), ctx.owner_id
        query.with_properties = detail
        if self.protections is not None and not all(
            self.protections.allows(ctx.roles, key, "read") for key in query.properties
        ):
            return []  # a filter on a property the caller may not read matches nothing (§13.2)
        return await read(self.engine, partial(self._page, ctx=ctx, query=query, marker=marker))

    async def list_records(self, ctx: Context, params: Mapping[str, str]) -> list[str] | None:
        """A detail page as the images' stored v1 records (JSON text), or None when they
        cannot serve it (property protections, a stale record): then `list_images`."""
        if self.protections is not None:
            return None
        self.policy.enforce(ctx, "get_images", image_target(owner=ctx.owner_id))
        query, is_public, marker = parse_list_query(
            params,
            limit_default=self.limits.limit_param_default,
            limit_max=self.limits.api_limit_max,
            filters_max=self.limits.list_filters_max,
        )
        query.scope, query.project = self._list_scope(ctx, is_public), ctx.owner_id

        def page(conn: Connection) -> list[str] | None:
            if marker is not None:
                query.marker = self._marker(conn, ctx, marker)
            return catalog.list_records(conn, query)

        return await read(self.engine, page, point=catalog.is_bounded_page(query))

    @classmethod
    def _page(
        cls, conn: Connection, *, ctx: Context, query: ListQuery, marker: str | None
    ) -> list[ImageRow]:
        if marker is not None:
            query.marker = cls._marker(conn, ctx, marker)
        return catalog.list_images(conn, query)

    def _list_scope(self, ctx: Context, is_public: str | None) -> Scope:
        if ctx.is_admin and is_public == "none":
            return Scope.ALL
        if ctx.is_admin and is_public in ("false", "0"):
            return Scope.NON_PUBLIC
        return Scope.PROJECT if ctx.owner_id is not None else Scope.PUBLIC

    @classmethod
    def _marker(cls, conn: Connection, ctx: Context, marker: str) -> ImageRow:
        row = cls._visible_row(conn, ctx, marker)
        if row is None:
            raise BadRequest("Invalid marker. Image could not be found.")
        return row


async def _discard_partial(store: BlobStore, killed: list[tuple[str, str | None]]) -> None:
    """Remove what the store holds of uploads just killed: the blob at their location, or
    where `put` would have stored it (a crash after storing, before activating)."""
    for image_id, location in killed:
        where = location if location and store.owns(location) else store.location(image_id)
        try:
            await store.delete(where)
        except Exception as error:  # the next sweep tries again (`leftover_data`)
            log.warning("could not remove the data of killed image %s: %s", image_id, error)


async def _finish_leftovers(engine: AsyncEngine, store: BlobStore) -> int:
    """Remove the stored data of `killed` and `deleted` images that a crash left (see
    `catalog.leftover_data`); returns how many were finished."""
    async with reading(engine) as conn:
        leftovers = await catalog.leftover_data(conn)
    finished = 0
    for image_id, location in leftovers:
        where = location if location and store.owns(location) else store.location(image_id)
        try:
            await store.delete(where)
        except Exception as error:
            log.warning("could not remove the data of image %s: %s", image_id, error)
            continue
        async with writing(engine) as conn:
            await catalog.forget_data(conn, image_id)
        finished += 1
    return finished


async def sweep(
    engine: AsyncEngine, store: BlobStore, *, node: str | None = None, lease: float = 300.0
) -> list[str]:
    """After a crash: images left in `saving` become `killed`, and partial data goes.

    With a `node`, only the uploads stranded for it (see `leases.stranded`): its own,
    those without a lease, and those whose lease is older than `lease` seconds; the
    uploads other instances are receiving go on. Without one, every `saving` image.
    """
    now = catalog.now()
    stale_before = now - timedelta(seconds=lease)
    stranded: list[tuple[str, str | None]] = []
    async with writing(engine) as conn:
        if node is None:
            for image_id, location in await catalog.image_ids_in_status(conn, "saving"):
                if await catalog.transition(conn, image_id, "saving", "killed"):
                    stranded.append((image_id, location))
        else:
            for image_id, location in await leases.stranded(conn, node, stale_before):
                if await leases.kill(conn, image_id, now, stale_before=stale_before, node=node):
                    stranded.append((image_id, location))
    await _discard_partial(store, stranded)
    finished = await _finish_leftovers(engine, store)
    removed = await store.sweep()
    if stranded or removed or finished:
        log.warning(
            "crash sweep: %d image(s) killed, %d partial file(s) removed, "
            "data of %d killed or deleted image(s) removed",
            len(stranded),
            len(removed),
            finished,
        )
    return [image_id for image_id, _ in stranded]


async def scrub(engine: AsyncEngine, store: BlobStore) -> int:
    """Remove the data of `pending_delete` images, which then become `deleted`.

    Returns how many were scrubbed. Safe to run in several processes at once: a
    missing blob is no error, and each status change is conditional.
    """
    async with reading(engine) as conn:
        pending = await catalog.image_ids_in_status(conn, "pending_delete")
    scrubbed = 0
    for image_id, location in pending:
        values: dict[str, Any] = {"status": "deleted"}
        if location and store.owns(location):
            try:
                await store.delete(location)
            except Exception as error:  # kept pending: the next run tries again
                log.warning("scrubber could not remove the data of %s: %s", image_id, error)
                continue
            values["location"] = None  # gone: nothing for the crash sweep to finish
        async with writing(engine) as conn:
            if await catalog.update_image(
                conn, image_id, values, status="pending_delete", deleted=True
            ):
                scrubbed += 1
    if scrubbed:
        log.info("scrubber: %d image(s) deleted", scrubbed)
    return scrubbed
