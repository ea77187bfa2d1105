"""The data pipeline: image bytes in (upload, copy-from), through `saving`, to `active` or
`killed`, for both APIs.

Data is capped, hashed (md5, sha256 and the sha512 multihash) and held to the uploader's
storage quota as it passes, stored all or nothing, and activated by one conditional
UPDATE. Knows no HTTP: it takes chunks and raises `ApiError`s.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Final, NamedTuple

import anyio
from anyio import CancelScope
from anyio.abc import TaskGroup
from sqlalchemy.ext.asyncio import AsyncEngine

from osimage.server import copies, rules, sources
from osimage.server.auth import Context
from osimage.server.copies import Slot
from osimage.server.db import catalog, leases
from osimage.server.db.catalog import ImageRow
from osimage.server.db.engine import read, writing
from osimage.server.errors import (
    ApiError,
    BadRequest,
    Conflict,
    NotFound,
    PreconditionFailed,
    ServiceUnavailable,
    TooLarge,
)
from osimage.server.operations import notifications as events
from osimage.server.operations.metrics import Metrics
from osimage.server.operations.notifications import Notifier
from osimage.server.settings import Limits
from osimage.server.stores.base import Blob, BlobStore, StoreFull, StoreUnavailable

log = logging.getLogger("osimage.service")

_BATCH_SIZE = 1024 * 1024  # upload bytes per hash job and per store write
IDLE_FLUSH = 0.1  # seconds without upload data after which a partial batch is handed on
_RESERVE_STEP = 8 * 1024 * 1024  # quota an upload of unknown size reserves at a time


@dataclass
class Upload:
    """Image data arriving with a request; `length` is its Content-Length, if declared."""

    chunks: AsyncIterator[bytes]
    length: int | None = None


class Stored(NamedTuple):
    """What `Ingest.store` stored, and the digests of its bytes."""

    blob: Blob
    checksum: str  # md5
    sha256: str
    os_hash_value: str  # the `rules.HASH_ALGO` (sha512) multihash


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


def source_error(error: sources.SourceError) -> ApiError:
    """The answer for a source that cannot be fetched: 404, 503 or 400."""
    if isinstance(error, sources.SourceNotFound):
        return NotFound(error.message)
    if isinstance(error, sources.SourceUnavailable):
        return ServiceUnavailable(error.message)
    return BadRequest(error.message)


def store_error(error: BaseException) -> BaseException:
    """The answer for a store failure while storing (413 full, 503); others unchanged."""
    if isinstance(error, StoreFull):
        return TooLarge(str(error))
    if isinstance(error, StoreUnavailable | OSError):
        return ServiceUnavailable(f"The image store failed: {error}")
    return error


def failure_reason(error: BaseException, copy_timeout: float | None = None) -> object:
    """Why a transfer failed, for its log line and error event: an API or source error's
    message, a cancelled upload as interrupted; with `copy_timeout`, a copy's time and
    rate limits by the setting that ended it."""
    if isinstance(error, ApiError | sources.SourceError):
        return error.message
    if not isinstance(error, Exception):  # cancelled: the client went away
        return "the upload was interrupted"
    if copy_timeout is not None and isinstance(error, TimeoutError):
        return f"it took longer than copy_timeout ({copy_timeout:g} s)"
    if copy_timeout is not None and isinstance(error, copies.CopyTooSlow):
        return f"{error} (copy_min_rate)"
    return error


def _changed_meanwhile(row: ImageRow) -> ApiError:
    """v1's answer when activation finds the image no longer `saving`."""
    if row.deleted:
        return PreconditionFailed(f"Image {row.id} was deleted during its upload.")
    return Conflict("Image operation conflicts")


Payload = Callable[[str], Awaitable[dict[str, Any]]]  # an image's event payload, by its id


@dataclass(frozen=True)
class Flow:
    """What one API's data path decides for itself; `Ingest` runs the steps all share.

    The defaults are v1's upload: `queued` -> `saving` -> `active`, or `killed`."""

    name: str = "upload"  # in log lines: "<name> of image <id> failed: ..."
    start: str = "queued"  # the status data is received in
    target: str = "active"  # where stored data leaves the image (v2's stage: `uploading`)
    undo: str = "killed"  # where a failure leaves it; back in `queued` (v2) it has no size
    busy: str = "Cannot upload to an unqueued image"  # the 409 when it is not in `start`
    match_record: bool = True  # the data must match the size and checksum the record declares
    gone: Callable[[ImageRow], ApiError] = _changed_meanwhile  # activation found it changed
    notify: bool = True  # image.prepare, .upload, .activate and the error event
    payload: Payload | None = None  # the events' payload (None: v1's, `image_payload`)
    connect_first: bool = False  # a copy leaves `start` only once its source answered


UPLOAD: Final = Flow()
COPY: Final = Flow(name="copy")


async def current(engine: AsyncEngine, image_id: str) -> ImageRow | None:
    """The image's record as it is now, whoever may see it; None if there is none."""
    if not rules.plausible_id(image_id):
        return None
    return await read(engine, partial(catalog.fetch_image, image_id=image_id), point=True)


async def reloaded(engine: AsyncEngine, image_id: str) -> ImageRow:
    """`current`, for an image known to exist (rows are never removed)."""
    row = await current(engine, image_id)
    if row is None:  # pragma: no cover - rows are never removed
        raise NotFound(f"Image {image_id} not found.")
    return row


class Reservation:
    """The storage quota one upload holds (its lease's `reserved`); grows as data arrives.

    Released by the upload's end: only `saving` images' reservations count."""

    def __init__(self, ingest: Ingest, owner: str | None, image_id: str) -> None:
        self._ingest, self._owner, self._image_id = ingest, owner, image_id
        self.held = 0

    async def cover(self, needed: int, *, wanted: int) -> None:
        """Hold at least `needed` bytes (TooLarge if the quota has no room for them)."""
        self.held = await self._ingest._reserve(self._owner, self._image_id, needed, wanted)


class Ingest:
    """Image data into the store: uploads and background copies, each ending `active` or
    `killed` with nothing left behind. One per service process."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: BlobStore,
        *,
        limits: Limits,
        source_policy: sources.SourcePolicy,
        tasks: TaskGroup,
        notifier: Notifier,
        node: str = "",
        metrics: Metrics | None = None,
    ) -> None:
        self.engine = engine
        self.blobs = store  # the BlobStore; `store` is the step that fills it
        self.limits = limits
        self.source_policy = source_policy
        self.tasks = tasks
        self.notifier = notifier
        self.node = node  # this instance's name in upload leases
        self.metrics = metrics
        self.uploading: set[str] = set()  # ids of the uploads this process receives
        self.copies = copies.Copies(limits.copy_max, limits.copy_max_per_project)

    # -- sources ---------------------------------------------------------------------------

    def check_source(self, url: str) -> None:
        """Refuse a location or copy-from URL the source policy never allows (no I/O)."""
        try:
            sources.check_url(url, self.source_policy)
        except sources.SourceError as error:
            raise source_error(error) from None

    async def _probe(self, url: str) -> int | None:
        try:
            return await sources.probe_size(url, self.source_policy)
        except sources.SourceError as error:
            raise source_error(error) from None

    async def located_size(self, url: str, declared: int | None) -> int:
        """The size of an external location: the declared one, which must match what the
        source says (409), or the source's."""
        probed = await self._probe(url) if declared is None or declared else None
        if declared is not None and probed and declared != probed:
            raise Conflict(
                "Provided image size must match the stored image size. "
                f"(provided size: {declared}, stored size: {probed})"
            )
        return declared if declared is not None else (probed or 0)

    async def copy_size(self, url: str, declared: int | None) -> int:
        """The size a copy will have: the source's, if it says (§12), else the declared one."""
        return await self._probe(url) or declared or 0

    # -- storing ---------------------------------------------------------------------------

    async def discard(self, location: str) -> bool:
        """Remove a blob, even while being cancelled; False (logged) if the store failed."""
        with CancelScope(shield=True):
            try:
                await self.blobs.delete(location)
            except Exception as error:
                self._count_store_error("delete")
                log.warning("could not remove blob %s: %s", location, error)
                return False
        return True

    def _count_store_error(self, operation: str) -> None:
        if self.metrics is not None:
            self.metrics.store_error(operation)

    async def store(
        self,
        image_id: str,
        chunks: AsyncIterator[bytes],
        reservation: Reservation | None = None,
    ) -> Stored:
        """Store `chunks`, counting size and digests as they pass; enforce the size cap and
        the uploader's storage quota: no byte reaches the store before `reservation` (None:
        no quota) holds it."""
        cap = self.limits.image_size_cap
        md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
        multihash = hashlib.new(rules.HASH_ALGO)

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

        def md5_and_sha256(batch: bytes) -> None:
            md5.update(batch)
            sha256.update(batch)

        async def digested() -> AsyncIterator[bytes]:
            # Two worker-thread jobs per batch (hashlib releases the GIL): md5 + sha256 in
            # one, sha512 in the other, each about as long, while the store writes the
            # batch and the loop receives the next one.
            loop = asyncio.get_running_loop()
            hashing: list[asyncio.Future[None]] = []
            async for batch in _batches(checked(), _BATCH_SIZE):
                for job in hashing:
                    await job
                hashing = [
                    loop.run_in_executor(None, md5_and_sha256, batch),
                    loop.run_in_executor(None, multihash.update, batch),
                ]
                yield batch
                del batch  # not pinned while the next one is awaited (a stalled client)
            for job in hashing:
                await job

        blob = await self.blobs.put(image_id, digested())
        return Stored(blob, md5.hexdigest(), sha256.hexdigest(), multihash.hexdigest())

    async def reserve(
        self, owner: str | None, image_id: str, declared: int | None
    ) -> Reservation | None:
        """A storage-quota reservation for an upload of `declared` bytes (None: unknown),
        already holding them if declared; None when there is no storage quota. Raises
        TooLarge if it cannot fit."""
        if self.limits.user_storage_quota <= 0:
            return None
        reservation = Reservation(self, owner, image_id)
        await reservation.cover(declared or 0, wanted=declared or _RESERVE_STEP)
        return reservation

    async def _reserve(self, owner: str | None, image_id: str, needed: int, wanted: int) -> int:
        """Hold at least `needed`, at most `wanted` bytes of `owner`'s quota for the upload
        of `image_id`, in one transaction that owner's other reservations wait for;
        returns what is held. Raises TooLarge if `needed` does not fit."""
        quota = self.limits.user_storage_quota
        async with writing(self.engine) as conn:
            await catalog.lock_owner(conn, owner)
            used = await catalog.storage_usage(conn, owner, exclude=image_id)
            held = rules.storage_reservation(quota, used, needed=needed, wanted=wanted)
            await leases.reserve(conn, image_id, held)
        return held

    # -- uploads ---------------------------------------------------------------------------

    async def upload(
        self,
        image_id: str,
        data: Upload,
        owner: str | None,
        *,
        ctx: Context | None = None,
        flow: Flow = UPLOAD,
    ) -> None:
        """`flow.start` -> saving -> `flow.target`, or `flow.undo` with no data left behind."""
        if not await self.begin(image_id, flow.start):
            raise Conflict(flow.busy)
        with self.transfer("upload"):
            if flow.notify:
                await self.announce(ctx, "image.prepare", image_id, flow)
            stored = await self._take(image_id, data.chunks, owner, flow, data.length, ctx)
            await self._finish(image_id, stored, owner, flow, data.length, ctx)

    @contextmanager
    def transfer(self, kind: str) -> Iterator[None]:
        """Count an upload or copy in progress (osimage_transfers_in_progress)."""
        gauge = self.metrics.transfers.labels(kind) if self.metrics is not None else None
        if gauge is not None:
            gauge.inc()
        try:
            yield
        finally:
            if gauge is not None:
                gauge.dec()

    async def begin(self, image_id: str, start: str = "queued", target: str = "saving") -> bool:
        """`start` -> `target`, leased to this instance (renewed while this process holds
        it in `uploading`); False if the image was not in `start`."""
        async with writing(self.engine) as conn:
            if not await catalog.transition(conn, image_id, start, target):
                return False
            await leases.claim(conn, image_id, self.node, catalog.now())
        self.uploading.add(image_id)
        return True

    async def _undo(self, image_id: str, flow: Flow, *statuses: str) -> None:
        """A failed transfer leaves the image in `flow.undo` (from `saving`, or `statuses`);
        back in `queued` it has no size, even while being cancelled."""
        values: dict[str, object] = {"size": None} if flow.undo == "queued" else {}
        with CancelScope(shield=True):
            async with writing(self.engine) as conn:
                for status in statuses or ("saving",):
                    await catalog.transition(conn, image_id, status, flow.undo, **values)

    async def _take(
        self,
        image_id: str,
        chunks: AsyncIterator[bytes],
        owner: str | None,
        flow: Flow,
        declared: int | None,
        ctx: Context | None,
    ) -> Stored:
        """Reserve quota for and store the data of an image in `saving`; a failure undoes
        the image (`flow.undo`) and becomes its answer (`store_error`)."""
        try:
            if declared is None and flow.match_record and self.limits.user_storage_quota > 0:
                declared = (await reloaded(self.engine, image_id)).size or None
            reservation = await self.reserve(owner, image_id, declared)
            return await self.store(image_id, chunks, reservation)
        except BaseException as error:
            await self._undo(image_id, flow)
            if isinstance(error, StoreFull | StoreUnavailable | OSError):
                self._count_store_error("put")
            if flow.notify:
                self.notify_failed(ctx, image_id, error)
            mapped = store_error(error)
            if mapped is error:
                raise
            raise mapped from error
        finally:
            self.uploading.discard(image_id)

    async def _finish(
        self,
        image_id: str,
        stored: Stored,
        owner: str | None,
        flow: Flow,
        declared: int | None,
        ctx: Context | None,
    ) -> None:
        """saving -> `flow.target` with the stored data, in one transaction that checks the
        owner's storage quota again (its other uploads wait) and what the client declared;
        a failure removes the data and undoes the image."""
        blob = stored.blob
        quota = self.limits.user_storage_quota
        try:
            rules.check_declared_size(declared, blob.size)
            row = await reloaded(self.engine, image_id) if flow.match_record else None
            async with writing(self.engine) as conn:
                if quota > 0:  # again, now the size is known, in the activating transaction
                    await catalog.lock_owner(conn, owner)
                    used = await catalog.storage_usage(conn, owner, exclude=image_id)
                    rules.check_storage_quota(quota, used, blob.size)
                if row is not None:
                    rules.check_upload_matches(row, blob.size, stored.checksum)
                done = await catalog.transition(
                    conn,
                    image_id,
                    "saving",
                    flow.target,
                    size=blob.size,
                    checksum=stored.checksum,
                    sha256=stored.sha256,
                    location=blob.location,
                    location_is_external=False,
                    os_hash_algo=rules.HASH_ALGO,
                    os_hash_value=stored.os_hash_value,
                )
            if not done:
                raise flow.gone(await reloaded(self.engine, image_id))
        except BaseException as error:
            await self.discard(blob.location)
            await self._undo(image_id, flow)
            if flow.notify:
                self.notify_failed(ctx, image_id, error)
            raise
        if flow.notify:
            await self.announce(ctx, "image.upload", image_id, flow, activate=True)

    async def announce(
        self,
        ctx: Context | None,
        event: str,
        image_id: str,
        flow: Flow,
        *,
        activate: bool = False,
    ) -> None:
        """An info-priority image event (with `activate`, image.activate too if it is
        active), the payload as `flow` shows the image."""
        if not self.notifier.enabled:
            return
        if flow.payload is not None:
            payload = await flow.payload(image_id)
        else:
            payload = events.image_payload(await reloaded(self.engine, image_id))
        self.notifier.info(ctx, event, payload)
        if activate and payload["status"] == "active":
            self.notifier.info(ctx, "image.activate", payload)

    def notify_failed(
        self, ctx: Context | None, image_id: str, error: BaseException, *, copy: bool = False
    ) -> None:
        """Glance's error-priority image.upload: a message, not an image."""
        reason = failure_reason(error, self.limits.copy_timeout if copy else None)
        self.notifier.error(
            ctx, "image.upload", f"Failed to upload image data for image {image_id}: {reason}"
        )

    # -- copies ----------------------------------------------------------------------------

    def copy_slot(self, owner: str | None, copy_from: str | None) -> Slot | None:
        """A place under the copy caps for a copy-from request (429/503 when full); None
        when the request copies nothing."""
        if copy_from is None:
            return None
        return self.copies.acquire(owner)

    def start_copy(
        self,
        image_id: str,
        url: str,
        owner: str | None,
        slot: Slot,
        *,
        ctx: Context | None,
        flow: Flow = COPY,
    ) -> None:
        """Copy `url` into the image in the background; `slot` is released at its end."""

        async def copy() -> None:
            try:
                await self._copy(image_id, url, owner, ctx, flow)
            finally:
                slot.release()

        self.tasks.start_soon(copy)

    def cancel_copy(self, image_id: str) -> None:
        """Stop the copy into a just deleted image, if this process runs it."""
        self.copies.cancel(image_id)

    async def _copy(
        self, image_id: str, url: str, owner: str | None, ctx: Context | None, flow: Flow
    ) -> None:
        """Background copy: `flow.start` -> saving -> `flow.target`, or `flow.undo`; within
        `copy_timeout` and `copy_min_rate`, cancelled by a delete of the image."""
        with CancelScope() as deleted:
            self.copies.watch(image_id, deleted)
            try:
                with self.transfer("copy"):
                    await self._copy_data(image_id, url, owner, ctx, flow)
            finally:
                self.copies.forget(image_id)
                self.uploading.discard(image_id)
        if deleted.cancelled_caught:
            log.info("%s of image %s cancelled: the image was deleted", flow.name, image_id)

    async def _copy_data(
        self, image_id: str, url: str, owner: str | None, ctx: Context | None, flow: Flow
    ) -> None:
        # a copy-from is `saving` at once; a v2 web-download stays `importing` until its
        # source answers (a crash meanwhile requeues it: `upkeep.sweep_imports`)
        if not flow.connect_first and not await self.begin(image_id, flow.start):
            return
        limits = self.limits
        quiet = replace(flow, notify=False)  # a copy's failure is told once, below
        try:
            with anyio.fail_after(limits.copy_timeout):
                if flow.notify:
                    await self.announce(ctx, "image.prepare", image_id, flow)
                async with sources.open_source(url, self.source_policy) as source:
                    if flow.connect_first and not await self.begin(image_id, flow.start):
                        raise Conflict(flow.busy)
                    chunks = copies.paced(
                        source.chunks(),
                        min_rate=limits.copy_min_rate,
                        still_wanted=partial(self._still_saving, image_id),
                    )
                    stored = await self._take(image_id, chunks, owner, quiet, None, None)
            if flow.match_record:  # the copy's own size wins over a declared one (§12)
                async with writing(self.engine) as conn:
                    await catalog.update_image(
                        conn, image_id, {"size": stored.blob.size}, status="saving"
                    )
            await self._finish(image_id, stored, owner, quiet, None, None)
            if flow.notify:
                await self.announce(ctx, "image.upload", image_id, flow, activate=True)
        except copies.CopyCancelled:
            log.info("%s of image %s cancelled: the image was deleted", flow.name, image_id)
        except BaseException as error:
            await self._undo(
                image_id, flow, *(("saving", flow.start) if flow.connect_first else ())
            )
            if not isinstance(error, Exception):
                raise
            if isinstance(error, StoreFull | StoreUnavailable | OSError):
                self._count_store_error("put")
            if flow.notify:
                self.notify_failed(ctx, image_id, error, copy=True)
            reason = failure_reason(error, limits.copy_timeout)
            log.warning("%s of image %s failed: %s", flow.name, image_id, reason)

    async def _still_saving(self, image_id: str) -> bool:
        row = await current(self.engine, image_id)
        return row is not None and row.status == "saving"
