"""v2 image data (spec v2 §9): upload, stage, import (`glance-direct`, `web-download`) and
download, as calls into the one data pipeline (`ingest`, `downloads`) with v2's rules: a
failed transfer puts the image back to `queued`, data waits in `uploading` when staged, and
a web-download stays `importing` until its source answers.

Knows no HTTP: it takes decoded requests and a `Context` and raises `ApiError`s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from osimage.server import rules, sources
from osimage.server.auth import Context
from osimage.server.db import catalog
from osimage.server.db.catalog import ImageRow
from osimage.server.db.engine import writing
from osimage.server.errors import ApiError, BadRequest, Conflict, Forbidden, Gone, TooLarge
from osimage.server.ingest import Flow, Upload
from osimage.server.service import ImageService
from osimage.server.v2.access import Access
from osimage.server.v2.schema import IMPORT_METHODS


def require_formats(row: ImageRow) -> None:
    """Data needs both formats on the image (`rules.missing_formats`, in v2's words)."""
    missing = rules.missing_formats({}, row)
    if len(missing) == 2:
        raise BadRequest(
            "Properties disk_format, container_format must be set prior to saving data."
        )
    if missing:
        raise BadRequest(f"Property {missing[0]} must be set prior to saving data.")


def check_size_cap(length: int | None, cap: int) -> None:
    """A declared length over `image_size_cap` (`rules.check_size_cap`): v2 answers 413."""
    try:
        rules.check_size_cap(length, cap)
    except rules.OverCap as over:
        raise TooLarge(
            f"The incoming image is too large: {over.size} > {over.cap} bytes."
        ) from None


def _gone(row: ImageRow) -> ApiError:
    """v2's answer when activation finds the image no longer `saving` (Glance's 410)."""
    return Gone(
        f"Image {row.id} could not be found after upload. The image may have "
        "been deleted during the upload, cleaning up the chunks uploaded."
    )


def _busy(start: str) -> str:
    return f"Image status transition from {start} to saving is not allowed"


class Data(Access):
    """The data of v2 images, in and out."""

    def __init__(self, images: ImageService) -> None:
        super().__init__(images)
        upload = Flow(
            undo="queued",
            busy=_busy("queued"),
            match_record=False,  # v2 checks the request's declared size, not the record's
            gone=_gone,
            payload=self._payload,
        )
        self._upload = upload
        self._stage = replace(upload, target="uploading", notify=False)
        self._web_download = replace(
            upload, name="web-download", start="importing", busy=_busy("importing"),
            connect_first=True,
        )  # fmt: skip

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
        require_formats(row)
        check_size_cap(data.length, self.limits.image_size_cap)
        await self.images.ingest.upload(image_id, data, row.owner, ctx=ctx, flow=self._upload)

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
        return row, self.images.downloads.stream(ctx, row, bounds), bounds

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
        check_size_cap(data.length, self.limits.image_size_cap)
        await self.images.ingest.upload(image_id, data, row.owner, flow=self._stage)

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
        ingest = self.images.ingest
        if name == "web-download":
            if not isinstance(uri, str) or not uri:
                raise BadRequest("URI for web-download does not pass filtering: None")
            try:
                sources.check_url(uri, ingest.source_policy)
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
            await ingest.announce(ctx, "image.prepare", image_id, self._upload)
            await ingest.announce(ctx, "image.upload", image_id, self._upload, activate=True)
            return
        assert isinstance(uri, str)
        slot = ingest.copies.acquire(ctx.owner_id)  # the copy caps: 429 / 503 when full
        try:
            # leased like an upload: a crash leaves it for `upkeep.sweep_imports`
            if not await ingest.begin(image_id, "queued", "importing"):
                raise Conflict(f"Image needs to be in 'queued' state to use '{name}' method")
            ingest.start_copy(image_id, uri, row.owner, slot, ctx=ctx, flow=self._web_download)
        except BaseException:
            slot.release()
            raise
