"""What runs beside the requests: the crash sweep (of uploads and of v2 web-downloads), the
scrubber of delayed deletes, the expiry of v2 staged data never imported, and the renewal
of this process's upload leases (which also ends the uploads of dead instances).

Each step changes status only by conditional UPDATEs, so several processes may run them
at once.
"""

from __future__ import annotations

import logging
from collections.abc import Set
from datetime import timedelta
from typing import Any, Final

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from osimage.server.db import catalog, leases
from osimage.server.db.engine import reading, writing
from osimage.server.stores.base import BlobStore

log = logging.getLogger("osimage.service")

STAGE_SWEEP_INTERVAL: Final = 300.0  # longest pause between runs of the stage sweep


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


async def sweep_imports(engine: AsyncEngine, *, lease: float, node: str | None = None) -> list[str]:
    """Web-downloads a crash stranded in `importing` go back to `queued` (as a failed one).

    `importing` holds no data (the data moves under `saving`, which `sweep`
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


async def expire_stages(
    engine: AsyncEngine, store: BlobStore, *, ttl: float, node: str = ""
) -> list[str]:
    """v2 data staged longer than `ttl` seconds ago (its image unchanged since) and never
    imported is removed, and its image goes back to `queued`, to be staged again.

    Each image is first taken `uploading` -> `saving` by one conditional UPDATE, leased to
    `node`: one process wins it, and no import can start while its data goes. A crash
    meanwhile leaves it to the crash sweep, which kills it and removes the data; a store
    that fails to remove it leaves it `killed` too, for the sweep to try again."""
    now = catalog.now()
    staged_before = now - timedelta(seconds=ttl)
    async with reading(engine) as conn:
        candidates = await catalog.stale_stages(conn, staged_before)
    requeued: list[str] = []
    for image_id, location in candidates:
        async with writing(engine) as conn:
            if not await catalog.take_stale_stage(conn, image_id, staged_before):
                continue  # imported, deleted, changed, or taken by another process
            await leases.claim(conn, image_id, node, now)
        where = location if location and store.owns(location) else store.location(image_id)
        try:
            await store.delete(where)
        except Exception as error:
            log.warning("could not remove the staged data of image %s: %s", image_id, error)
            async with writing(engine) as conn:
                await catalog.transition(conn, image_id, "saving", "killed")
            continue
        async with writing(engine) as conn:
            if await catalog.requeue_unstaged(conn, image_id):
                requeued.append(image_id)
    if requeued:
        log.warning(
            "stage sweep: staged data older than stage_ttl (%g s) removed, %d image(s) back "
            "to queued: %s",
            ttl,
            len(requeued),
            ", ".join(requeued),
        )
    return requeued


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


class Upkeep:
    """The background duties of one service process, started in the app's lifespan.

    `uploading` is the live set of ids this process receives (`Ingest.uploading`).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        store: BlobStore,
        *,
        uploading: Set[str],
        node: str = "",
        upload_lease: float = 300.0,
    ) -> None:
        self.engine = engine
        self.store = store
        self.uploading = uploading
        self.node = node  # this instance's name in upload leases
        self.upload_lease = upload_lease

    async def scrub_forever(self, interval: float) -> None:
        """Scrub now, then every `interval` seconds until cancelled (at shutdown)."""
        while True:
            try:
                await scrub(self.engine, self.store)
            except Exception:
                log.exception("scrubber run failed")
            await anyio.sleep(interval)

    async def expire_stages_forever(self, ttl: float) -> None:
        """`expire_stages` every `ttl / 4` seconds (at most every 5 minutes) until
        cancelled: staged data goes within `ttl` and a quarter (at most 5 minutes) more."""
        while True:
            await anyio.sleep(min(ttl / 4, STAGE_SWEEP_INTERVAL))
            try:
                await expire_stages(self.engine, self.store, ttl=ttl, node=self.node)
            except Exception:
                log.exception("stage sweep failed")

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
