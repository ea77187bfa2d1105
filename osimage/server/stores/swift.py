"""Image data in OpenStack Swift: one static large object (SLO) per image, segments streamed.

The store speaks Swift's REST API over httpx rather than through python-swiftclient:
swiftclient is blocking (it would need a worker thread per upload, bridged chunk by
chunk, and a thread blocked in a socket write cannot be cancelled), while httpx is
already a server dependency, is async, sends an async iterator as a chunked body, and
lets a client disconnect cancel the segment PUT in flight. The part of the API used
here is small: auth, PUT/GET/DELETE of objects, one SLO manifest PUT, a listing.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

import anyio
import httpx
from anyio import move_on_after, to_thread

from osimage.server.settings import default
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

log = logging.getLogger("osimage.server.stores.swift")

SEGMENTS_SUFFIX: Final = "_segments"
UPLOAD_META: Final = "x-object-meta-osimage-upload"
_TOKEN_MARGIN: Final = 60.0
_TUNING: Final = (
    "storage_url",
    "project_name",
    "project_domain_name",
    "user_domain_name",
    "region",
    "interface",
    "segment_size",
    "sweep_after",
)
_SECRETS: Final = frozenset({"key", "password"})


@dataclass(frozen=True)
class SwiftConfig:
    """Where the store writes and how it authenticates; see docs/stores.md."""

    container: str
    auth_url: str
    user: str
    key: str = field(repr=False)
    auth_version: str = "1"
    storage_url: str | None = None
    project_name: str | None = None
    project_domain_name: str = default("swift_project_domain_name")
    user_domain_name: str = default("swift_user_domain_name")
    region: str | None = None
    interface: str = default("swift_interface")
    segment_size: int = default("swift_segment_size")
    sweep_after: int = default("swift_sweep_after")

    @property
    def segments_container(self) -> str:
        return self.container + SEGMENTS_SUFFIX

    @classmethod
    def from_url(cls, url: str, given: Mapping[str, Any]) -> SwiftConfig:
        """Parse `swift://<container>?<option>=...`; the URL's options override `given`
        (the `swift_*` settings, see `Settings.store_options`).

        The key (tempauth) or password (keystone) comes only from the settings, so the
        store URL can be logged.
        """
        parts, options = url_options(
            url,
            "swift",
            given,
            secrets=_SECRETS,
            credentials="OSIMAGE_SWIFT_USER and OSIMAGE_SWIFT_KEY",
        )
        if parts.scheme != "swift" or not parts.netloc or parts.path not in ("", "/"):
            raise StoreConfigError(f"expected swift://<container>?auth_url=..., got {url!r}")
        auth_url, user = options.get("auth_url"), options.get("user")
        secret = options.get("key") or options.get("password")
        if not auth_url or not user or not secret:
            raise StoreConfigError(
                "the swift store needs auth_url (URL option or OSIMAGE_SWIFT_AUTH_URL), "
                "OSIMAGE_SWIFT_USER and OSIMAGE_SWIFT_KEY"
            )
        version = options.get("auth_version") or (
            "3" if auth_url.rstrip("/").endswith("v3") else "1"
        )
        if version == "3" and not options.get("project_name"):
            raise StoreConfigError("keystone auth needs project_name (OSIMAGE_SWIFT_PROJECT_NAME)")
        return cls(
            container=unquote(parts.netloc),
            auth_url=auth_url,
            user=user,
            key=secret,
            auth_version=version,
            **{name: options[name] for name in _TUNING if name in options},
        )


@dataclass(frozen=True)
class _Limits:
    segment_size: int
    max_segments: int


class _Segmenter:
    """Cuts a chunk stream into consecutive bodies of at most `size` bytes each."""

    def __init__(self, chunks: AsyncIterator[bytes], size: int) -> None:
        self._chunks = chunks
        self.size = size
        self._pending = b""
        self.total = 0

    async def more(self) -> bool:
        """Whether another non-empty body follows (pulls one chunk ahead if needed)."""
        while not self._pending:
            try:
                self._pending = await anext(self._chunks)
            except StopAsyncIteration:
                return False
        return True

    async def body(self) -> AsyncIterator[bytes]:
        left = self.size
        while left and await self.more():
            piece, self._pending = self._pending[:left], self._pending[left:]
            left -= len(piece)
            self.total += len(piece)
            yield piece


class _Auth:
    """A token and the storage URL it is good for, renewed before it expires."""

    def __init__(self, config: SwiftConfig, client: httpx.AsyncClient) -> None:
        self._config = config
        self._client = client
        self._token: tuple[str, str, float] | None = None
        self._lock = anyio.Lock()

    async def get(self) -> tuple[str, str]:
        """(storage URL, token). Raises StoreUnavailable if auth fails."""
        async with self._lock:
            if self._token is None or self._token[2] - _TOKEN_MARGIN < time.monotonic():
                self._token = await self._fetch()
            url, token, _ = self._token
        return self._config.storage_url or url, token

    def forget(self) -> None:
        self._token = None

    async def _fetch(self) -> tuple[str, str, float]:
        if self._config.auth_version == "3":
            return await to_thread.run_sync(self._keystone)
        try:
            response = await self._client.get(
                self._config.auth_url,
                headers={"x-auth-user": self._config.user, "x-auth-key": self._config.key},
            )
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"swift auth at {self._config.auth_url} failed: {exc}") from exc
        url, token = response.headers.get("x-storage-url"), response.headers.get("x-auth-token")
        if response.status_code != 200 or not url or not token:
            raise StoreUnavailable(
                f"swift auth at {self._config.auth_url} answered {response.status_code}"
                f" for user {self._config.user!r}"
            )
        lifetime = float(response.headers.get("x-auth-token-expires", "3600"))
        return url, token, time.monotonic() + lifetime

    def _keystone(self) -> tuple[str, str, float]:
        # keystoneauth1 is blocking and runs in a worker thread; it is only asked for a
        # token and the catalog's object-store endpoint, never to move image bytes.
        from keystoneauth1 import exceptions as ks_exceptions
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity import v3

        config = self._config
        auth = v3.Password(
            auth_url=config.auth_url,
            username=config.user,
            password=config.key,
            project_name=config.project_name,
            user_domain_name=config.user_domain_name,
            project_domain_name=config.project_domain_name,
        )
        session = ks_session.Session(auth=auth)
        try:
            token = str(session.get_token())
            url = config.storage_url or session.get_endpoint(
                service_type="object-store", interface=config.interface, region_name=config.region
            )
            expires_at = auth.get_access(session).expires
            lifetime = expires_at.timestamp() - time.time() if expires_at else 3600.0
        except ks_exceptions.ClientException as exc:
            raise StoreUnavailable(f"keystone auth at {config.auth_url} failed: {exc}") from exc
        if not url:
            raise StoreUnavailable("keystone's catalog has no object-store endpoint")
        return str(url), token, time.monotonic() + lifetime


class SwiftStore(NamedBlobs):
    """`swift://<container>`: each image an SLO there, its segments in `<container>_segments`."""

    scheme = "swift"

    def __init__(self, config: SwiftConfig) -> None:
        self.config = config
        self._netloc = config.container
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0))
        self._auth = _Auth(config, self._client)
        self._limits: _Limits | None = None
        self._prepare_lock = anyio.Lock()

    @classmethod
    def from_options(
        cls, url: str, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> SwiftStore:
        return cls(SwiftConfig.from_url(url, options))

    def __repr__(self) -> str:
        return f"SwiftStore(swift://{self.config.container}, auth_url={self.config.auth_url!r})"

    # -- the protocol ------------------------------------------------------------

    async def put(self, image_id: str, chunks: AsyncIterator[bytes]) -> Blob:
        image_id = check_image_id(image_id)
        limits = await self._prepare()
        upload = uuid.uuid4().hex
        segmenter = _Segmenter(chunks, limits.segment_size)
        manifest: list[dict[str, Any]] = []
        written: list[str] = []  # segment names, the one in flight included
        finishing = False
        try:
            while await segmenter.more():
                if len(manifest) >= limits.max_segments:
                    raise StoreFull(
                        f"image exceeds {limits.max_segments} swift segments of "
                        f"{segmenter.size} bytes; raise segment_size"
                    )
                name = f"{image_id}/{upload}/{len(manifest) + 1:08d}"
                written.append(name)
                before = segmenter.total
                response = await self._send(
                    "PUT", self.config.segments_container, name, content=segmenter.body()
                )
                manifest.append(
                    {
                        "path": f"/{self.config.segments_container}/{name}",
                        "etag": response.headers.get("etag", "").strip('"') or None,
                        "size_bytes": segmenter.total - before,
                    }
                )
            finishing = True
            headers = {UPLOAD_META: upload}
            if manifest:
                await self._send(
                    "PUT",
                    self.config.container,
                    image_id,
                    params={"multipart-manifest": "put"},
                    content=json.dumps(manifest).encode(),
                    headers=headers,
                )
            else:
                await self._send(
                    "PUT", self.config.container, image_id, content=b"", headers=headers
                )
        except BaseException as exc:
            with move_on_after(CLEANUP_TIMEOUT, shield=True):
                await self._discard(image_id if finishing else None, written)
            if isinstance(exc, BlobNotFound):  # a container vanished under us
                self._limits = None
                raise StoreUnavailable(f"swift container missing while storing: {exc}") from exc
            raise
        return Blob(location=self.location(image_id), size=segmenter.total)

    async def get(self, location: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Chunks of at most CHUNK_SIZE even if `chunk_size` allows more: a bigger one
        would hold back bytes already received until it filled."""
        name = self._name(location)
        url, token = await self._auth.get()
        request = self._client.build_request(
            "GET", self._url(url, self.config.container, name), headers={"x-auth-token": token}
        )
        try:
            response = await self._client.send(request, stream=True)
            if response.status_code == 401:
                await response.aclose()
                self._auth.forget()
                url, token = await self._auth.get()
                request.headers["x-auth-token"] = token
                response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"swift GET {name} failed: {exc}") from exc
        try:
            _check(response, f"GET {name}")
            async for chunk in response.aiter_bytes(min(chunk_size, CHUNK_SIZE)):
                yield chunk
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"swift GET {name} broke off: {exc}") from exc
        finally:
            with move_on_after(CLEANUP_TIMEOUT, shield=True):
                await response.aclose()

    async def size(self, location: str) -> int:
        name = self._name(location)
        response = await self._send("HEAD", self.config.container, name)
        try:
            return int(response.headers["content-length"])
        except (KeyError, ValueError):
            raise StoreUnavailable(f"swift HEAD {name}: no usable Content-Length") from None

    async def delete(self, location: str) -> None:
        with suppress(BlobNotFound):  # another store's location, or already gone
            name = self._name(location)
            await self._send(
                "DELETE", self.config.container, name, params={"multipart-manifest": "delete"}
            )

    async def sweep(self) -> list[str]:
        """Delete segments of uploads a crash left without a manifest, idle for `sweep_after`."""
        groups: dict[str, list[str]] = {}
        newest: dict[str, float] = {}
        async for entry in self._list(self.config.segments_container):
            name = str(entry.get("name", ""))
            image_id, _, rest = name.partition("/")
            upload = rest.partition("/")[0]
            if not upload:
                continue
            group = f"{image_id}/{upload}"
            groups.setdefault(group, []).append(name)
            modified = _timestamp(str(entry.get("last_modified", "")))
            newest[group] = max(newest.get(group, 0.0), modified)
        removed: list[str] = []
        cutoff = time.time() - self.config.sweep_after
        for group, names in groups.items():
            recent = self.config.sweep_after and newest[group] > cutoff
            if recent or await self._is_live(group):
                continue
            for name in names:
                await self._delete_quietly(self.config.segments_container, name)
                removed.append(f"{self.config.segments_container}/{name}")
        return removed

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- helpers -----------------------------------------------------------------

    async def _prepare(self) -> _Limits:
        """Create the containers and read the cluster's limits, once."""
        async with self._prepare_lock:
            if self._limits is None:
                for container in (self.config.container, self.config.segments_container):
                    await self._send("PUT", container, None)
                self._limits = await self._read_limits()
        return self._limits

    async def _read_limits(self) -> _Limits:
        """Segment size within the cluster's object and SLO segment limits (from /info)."""
        url, _ = await self._auth.get()
        parts = urlsplit(url)
        try:
            response = await self._client.get(f"{parts.scheme}://{parts.netloc}/info")
            info = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            info = {}
        swift = info.get("swift", {}) if isinstance(info, dict) else {}
        slo = info.get("slo", {}) if isinstance(info, dict) else {}
        largest = int(swift.get("max_file_size", 5 * 1024**3))
        smallest = int(slo.get("min_segment_size", 1024**2))
        size = max(min(self.config.segment_size, largest), smallest)
        if size != self.config.segment_size:
            log.warning(
                "swift segment_size %d is outside the cluster's limits (%d..%d); using %d",
                self.config.segment_size,
                smallest,
                largest,
                size,
            )
        return _Limits(segment_size=size, max_segments=int(slo.get("max_manifest_segments", 1000)))

    def _url(self, storage_url: str, container: str, name: str | None) -> str:
        url = f"{storage_url.rstrip('/')}/{quote(container, safe='')}"
        return url if name is None else f"{url}/{quote(name)}"

    async def _send(
        self,
        method: str,
        container: str,
        name: str | None,
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request; a 401 renews the token and retries when the body can be sent again."""
        what = f"{method} {container}/{name or ''}"
        for attempt in (1, 2):
            url, token = await self._auth.get()
            try:
                response = await self._client.request(
                    method,
                    self._url(url, container, name),
                    params=params,
                    content=content,
                    headers={**(headers or {}), "x-auth-token": token},
                )
            except httpx.HTTPError as exc:
                raise StoreUnavailable(f"swift {what} failed: {exc}") from exc
            if response.status_code == 401 and attempt == 1 and not _streamed(content):
                self._auth.forget()
                continue
            break
        _check(response, what)
        return response

    async def _discard(self, image_id: str | None, segments: list[str]) -> None:
        """Undo a put: the manifest if it may exist, then every segment written."""
        if image_id is not None:
            await self._delete_quietly(self.config.container, image_id)
        for name in segments:
            await self._delete_quietly(self.config.segments_container, name)

    async def _delete_quietly(self, container: str, name: str) -> None:
        with quietly(log, f"delete swift object {container}/{name}"):
            await self._send("DELETE", container, name)

    async def _is_live(self, group: str) -> bool:
        """Whether the manifest of `image_id/upload` exists and names that upload."""
        image_id, _, upload = group.partition("/")
        try:
            response = await self._send("HEAD", self.config.container, image_id)
        except BlobNotFound:
            return False
        return bool(response.headers.get(UPLOAD_META) == upload)

    async def _list(self, container: str) -> AsyncIterator[dict[str, Any]]:
        marker = ""
        while True:
            try:
                response = await self._send(
                    "GET", container, None, params={"format": "json", "marker": marker}
                )
            except BlobNotFound:
                return
            page = response.json() if response.content else []
            if not isinstance(page, list) or not page:
                return
            for entry in page:
                if isinstance(entry, dict):
                    yield entry
            marker = str(page[-1].get("name", ""))


def _streamed(content: bytes | AsyncIterator[bytes] | None) -> bool:
    return content is not None and not isinstance(content, bytes)


def _check(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if status < 300:
        return
    if status == 404:
        raise BlobNotFound(f"swift has no {what.partition(' ')[2]}")
    if status in (413, 507):
        raise StoreFull(f"swift refused {what}: {status} (no room, or above its size limits)")
    raise StoreUnavailable(f"swift answered {status} to {what}")


def _timestamp(text: str) -> float:
    """Seconds since the epoch of a listing's `last_modified` (UTC, no zone suffix)."""
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0
