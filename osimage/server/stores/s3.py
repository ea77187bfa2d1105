"""Image data in S3 (AWS, Ceph RGW, MinIO, Swift's s3api): one object per image.

Uploads stream as a multipart upload, one part buffered at a time (`part_size` bytes,
default 8 MiB; an upload in flight costs about twice that, measured), and are aborted on
any failure. The client is boto3, each blocking call in a worker thread: it brings the
credential chain users expect (AWS_* variables, ~/.aws profiles, instance roles),
retries and the quirks of S3 look-alikes, while the event loop never blocks. aiobotocore
was passed over because it pins botocore to narrow ranges and brings a second HTTP stack
(aiohttp) beside httpx; obstore because its streaming put runs the multipart upload inside
its Rust runtime, out of reach of the store's own cancellation and shielded abort.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import unquote

import anyio
import boto3
import urllib3.exceptions
from anyio import move_on_after, to_thread
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from osimage.server.settings import S3_MIN_PART_SIZE, default
from osimage.server.stores.base import (
    CHUNK_SIZE,
    CLEANUP_TIMEOUT,
    Blob,
    BlobNotFound,
    NamedBlobs,
    StoreConfigError,
    StoreFull,
    StoreUnavailable,
    check_image_id,
    quietly,
    url_options,
)

log = logging.getLogger("osimage.server.stores.s3")

MIN_PART_SIZE: Final = S3_MIN_PART_SIZE
"""S3's smallest part but the last (what the s3_part_size row accepts at least)."""
MAX_PARTS: Final = 10000
"""S3's most parts in one upload (some look-alikes allow fewer, and say so when refusing)."""
READ_RETRIES: Final = 3
_NOT_FOUND: Final = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchUpload"})
_TOO_LARGE: Final = frozenset({"EntityTooLarge", "413"})
_BROKEN_READ: Final = (BotoCoreError, urllib3.exceptions.HTTPError, OSError)


@dataclass(frozen=True)
class S3Config:
    """Bucket, key prefix and client options.

    `credentials` are the AWS_* variables of the environ given to `from_url`; without
    them boto3's own chain (profiles, instance roles) applies.
    """

    bucket: str
    prefix: str = ""
    endpoint: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: str = "auto"
    part_size: int = default("s3_part_size")
    sweep_after: int = default("s3_sweep_after")
    credentials: tuple[str, str, str | None] | None = field(default=None, repr=False)

    @classmethod
    def from_url(
        cls, url: str, given: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> S3Config:
        """Parse `s3://<bucket>[/<prefix>]?<option>=...`; the URL's options override `given`
        (the `s3_*` settings, see `Settings.store_options`). Credentials: the AWS_* variables
        of `environ` when given, else boto3's own chain (which reads them too)."""
        parts, options = url_options(
            url, "s3", given, credentials="AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or a profile)"
        )
        if parts.scheme != "s3" or not parts.netloc:
            raise StoreConfigError(f"expected s3://<bucket>[/<prefix>], got {url!r}")
        endpoint = options.get("endpoint")
        prefix = unquote(parts.path).strip("/")
        environ = environ or {}
        key_id, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
        return cls(
            bucket=parts.netloc,
            prefix=f"{prefix}/" if prefix else "",
            endpoint=endpoint,
            region=options.get("region"),
            profile=options.get("profile"),
            addressing_style=options.get("addressing_style") or ("path" if endpoint else "auto"),
            **{name: options[name] for name in ("part_size", "sweep_after") if name in options},
            credentials=(
                (key_id, secret, environ.get("AWS_SESSION_TOKEN")) if key_id and secret else None
            ),
        )


class S3Store(NamedBlobs):
    """`s3://<bucket>[/<prefix>]`: each image the object `<prefix><image id>`."""

    scheme = "s3"

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self._netloc, self._prefix = config.bucket, config.prefix
        self._client: Any = None
        self._bucket_ready = False
        self._lock = anyio.Lock()

    @classmethod
    def from_options(
        cls, url: str, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> S3Store:
        """Credentials: `environ`'s AWS_* variables if given, else boto3's own chain."""
        return cls(S3Config.from_url(url, options, environ))

    def __repr__(self) -> str:
        return f"S3Store(s3://{self.config.bucket}/{self.config.prefix})"

    # -- the protocol ------------------------------------------------------------

    async def put(self, image_id: str, chunks: AsyncIterator[bytes]) -> Blob:
        key = self.config.prefix + check_image_id(image_id)
        await self._prepare()
        part_size = self.config.part_size
        part = bytearray()
        parts: list[dict[str, Any]] = []
        upload_id: str | None = None
        committing = False
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                while chunk:
                    room = part_size - len(part)
                    part += chunk[:room]
                    chunk = chunk[room:]
                    if len(part) == part_size:
                        if upload_id is None:
                            upload_id = await self._start(key)
                        parts.append(await self._upload_part(key, upload_id, len(parts) + 1, part))
                        part = bytearray()
            committing = True
            if upload_id is None:
                await self._call("put_object", Bucket=self.config.bucket, Key=key, Body=part)
            else:
                if part:
                    parts.append(await self._upload_part(key, upload_id, len(parts) + 1, part))
                await self._call(
                    "complete_multipart_upload",
                    Bucket=self.config.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException as exc:
            with move_on_after(CLEANUP_TIMEOUT, shield=True):
                await self._discard(key, upload_id, committing)
            if isinstance(exc, BlobNotFound):  # the bucket vanished under us
                self._bucket_ready = False
                raise StoreUnavailable(f"s3 bucket missing while storing: {exc}") from exc
            raise
        return Blob(location=self.location(key[len(self.config.prefix) :]), size=size)

    async def get(self, location: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Stream the object in chunks of at most CHUNK_SIZE (and `chunk_size`); a read that
        breaks off resumes with a range request (same ETag)."""
        key = self._name(location)
        response = await self._call("get_object", Bucket=self.config.bucket, Key=key)
        etag, offset, retries = response.get("ETag"), 0, 0
        body = response["Body"]
        try:
            while True:
                try:
                    chunk = await to_thread.run_sync(body.read, min(chunk_size, CHUNK_SIZE))
                except _BROKEN_READ as exc:
                    retries += 1
                    if retries > READ_RETRIES:
                        raise StoreUnavailable(f"s3 read of {key} broke off: {exc}") from exc
                    log.warning("s3 read of %s broke off at %d, resuming: %s", key, offset, exc)
                    await to_thread.run_sync(body.close)
                    response = await self._call(
                        "get_object",
                        Bucket=self.config.bucket,
                        Key=key,
                        Range=f"bytes={offset}-",
                        **({"IfMatch": etag} if etag else {}),
                    )
                    body = response["Body"]
                    continue
                if not chunk:
                    return
                offset += len(chunk)
                yield chunk
        finally:
            with move_on_after(CLEANUP_TIMEOUT, shield=True):
                await to_thread.run_sync(body.close)

    async def size(self, location: str) -> int:
        key = self._name(location)
        response = await self._call("head_object", Bucket=self.config.bucket, Key=key)
        return int(response["ContentLength"])

    async def delete(self, location: str) -> None:
        with suppress(BlobNotFound):  # another store's location, or already gone
            await self._call("delete_object", Bucket=self.config.bucket, Key=self._name(location))

    async def sweep(self) -> list[str]:
        """Abort multipart uploads a crash left behind, started over `sweep_after` seconds ago.

        `sweep_after=0` aborts every pending upload under the prefix: only for a store
        that no other server process writes to.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=self.config.sweep_after)
        removed: list[str] = []
        for upload in await self._uploads():
            initiated = upload.get("Initiated")
            recent = isinstance(initiated, datetime) and initiated > cutoff
            if self.config.sweep_after and recent:
                continue
            key, upload_id = str(upload["Key"]), str(upload["UploadId"])
            await self._abort_quietly(key, upload_id)
            removed.append(f"{key} (upload {upload_id})")
        return removed

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await to_thread.run_sync(client.close)

    # -- helpers -----------------------------------------------------------------

    async def _prepare(self) -> None:
        """Make the client and, if it is missing, the bucket; once."""
        async with self._lock:
            if self._client is None:
                self._client = await to_thread.run_sync(self._make_client)
            if not self._bucket_ready:
                try:
                    await self._call("head_bucket", Bucket=self.config.bucket)
                except BlobNotFound:
                    await self._create_bucket()
                self._bucket_ready = True

    def _make_client(self) -> Any:
        config = self.config
        try:
            key_id, secret, token = config.credentials or (None, None, None)
            session = boto3.session.Session(
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
                aws_session_token=token,
                profile_name=config.profile,
            )
            return session.client(
                "s3",
                endpoint_url=config.endpoint,
                region_name=config.region,
                config=Config(
                    s3={"addressing_style": config.addressing_style},
                    retries={"mode": "standard"},
                    # S3 look-alikes do not all know the newer default checksums.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        except BotoCoreError as exc:
            raise StoreUnavailable(f"cannot configure the s3 client: {exc}") from exc

    async def _create_bucket(self) -> None:
        region = self.config.region
        extra: dict[str, Any] = {}
        if region and region != "us-east-1":
            extra["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            await self._call("create_bucket", Bucket=self.config.bucket, **extra)
        except StoreUnavailable as exc:
            if "BucketAlreadyOwnedByYou" not in str(exc):
                raise

    async def _call(self, operation: str, **params: Any) -> Any:
        """One S3 call in a worker thread, its errors translated to the store's."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await to_thread.run_sync(self._make_client)
        method: Callable[..., Any] = getattr(self._client, operation)
        try:
            return await to_thread.run_sync(functools.partial(method, **params))
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            what = f"s3 {operation} {params.get('Key', params.get('Bucket', ''))}"
            if code in _NOT_FOUND or status == "404":
                raise BlobNotFound(f"{what}: {code or status}") from exc
            if code in _TOO_LARGE or status == "413":
                raise StoreFull(f"{what}: {code or status}") from exc
            raise StoreUnavailable(f"{what}: {code} {error.get('Message', '')}".rstrip()) from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"s3 {operation} failed: {exc}") from exc

    async def _start(self, key: str) -> str:
        response = await self._call("create_multipart_upload", Bucket=self.config.bucket, Key=key)
        return str(response["UploadId"])

    async def _upload_part(
        self, key: str, upload_id: str, number: int, data: bytearray
    ) -> dict[str, Any]:
        if number > MAX_PARTS:
            raise StoreFull(
                f"image exceeds {MAX_PARTS} s3 parts of {self.config.part_size} bytes; "
                "raise part_size"
            )
        response = await self._call(
            "upload_part",
            Bucket=self.config.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    async def _discard(self, key: str, upload_id: str | None, committed: bool) -> None:
        """Undo a put: abort its multipart upload, and delete the object if it may exist."""
        if upload_id is not None:
            await self._abort_quietly(key, upload_id)
        if committed:
            with quietly(log, f"delete s3 object {key}"):
                await self._call("delete_object", Bucket=self.config.bucket, Key=key)

    async def _abort_quietly(self, key: str, upload_id: str) -> None:
        with quietly(log, f"abort s3 upload {upload_id} of {key}"):
            await self._call(
                "abort_multipart_upload", Bucket=self.config.bucket, Key=key, UploadId=upload_id
            )

    async def _uploads(self) -> list[dict[str, Any]]:
        uploads: list[dict[str, Any]] = []
        params: dict[str, Any] = {"Bucket": self.config.bucket, "Prefix": self.config.prefix}
        while True:
            try:
                page = await self._call("list_multipart_uploads", **params)
            except BlobNotFound:
                return uploads
            uploads.extend(page.get("Uploads", []))
            if not page.get("IsTruncated"):
                return uploads
            params["KeyMarker"] = page.get("NextKeyMarker", "")
            params["UploadIdMarker"] = page.get("NextUploadIdMarker", "")
