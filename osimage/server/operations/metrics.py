"""Prometheus metrics: what `GET /metrics` shows, in prometheus-client's text format.

One `Metrics` per app. Under ``--workers`` every worker writes its samples to files in
``PROMETHEUS_MULTIPROC_DIR`` (the runner makes that directory and removes it at exit)
and `/metrics` sums them, whichever worker answers. Labels are bounded: the route is a
template (``/v1/images/{id}``), never the raw path.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("osimage.metrics")

MULTIPROC_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
ACCESS_MODES: Final = ("off", "loopback", "admin")
# Path segments kept as they are in a route label; any other segment becomes {id}.
_LITERALS: Final = frozenset(
    {
        "images", "detail", "file", "members", "shared-images", "tags", "schemas", "image",
        "import", "info", "stores", "tasks", "task", "actions", "deactivate", "reactivate",
        "locations", "stage", "discovery", "usage", "metadefs", "namespaces", "objects",
        "properties", "resource_types", "cache", "versions", "healthcheck", "metrics",
        "cached_images", "queued_images",
    }
)  # fmt: skip
# After these a segment is always a value (a tag, a member, an image id), whatever it reads.
_COLLECTIONS: Final = frozenset({"tags", "members", "cached_images", "queued_images", "cache"})
_MAX_ROUTE_SEGMENTS: Final = 6
_VERSION: Final = re.compile(r"v\d+(\.\d+)?")
LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
)  # fmt: skip


def route_of(path: str) -> tuple[str, str]:
    """(api, route template) of a request path: ``("v1", "/v1/images/{id}/members")``.

    `api` is the version segment (``none`` without one); the template keeps known
    words and turns every other segment into ``{id}``, so the label set stays small.
    """
    parts = [part for part in path.split("/") if part]
    if len(parts) > _MAX_ROUTE_SEGMENTS:
        return ("none", "other")
    api = "none"
    if parts and _VERSION.fullmatch(parts[0]):
        api = parts[0].split(".")[0]
        parts[0] = api
        rest = parts[1:]
    else:
        rest = parts
    shaped = [
        part if part in _LITERALS and (i == 0 or rest[i - 1] not in _COLLECTIONS) else "{id}"
        for i, part in enumerate(rest)
    ]
    if api != "none":
        shaped.insert(0, api)
    return api, "/" + "/".join(shaped)


class Metrics:
    """Every metric osimage exports, in its own registry (or the multi-process files)."""

    def __init__(self, *, multiprocess_dir: str | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "osimage_http_requests",
            "HTTP requests answered, by API version, route template, method and status.",
            ["api", "route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "osimage_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its answer.",
            ["api", "route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.uploaded = Counter(
            "osimage_image_bytes_uploaded", "Image bytes received and stored.", registry=r
        )
        self.downloaded = Counter(
            "osimage_image_bytes_downloaded", "Image bytes sent to clients.", registry=r
        )
        self.transfers = Gauge(
            "osimage_transfers_in_progress",
            "Uploads and copy-from transfers in progress.",
            ["kind"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.store_errors = Counter(
            "osimage_store_errors", "Failures of the image store.", ["operation"], registry=r
        )
        self.database_errors = Counter(
            "osimage_database_errors", "Requests that failed on a database error.", registry=r
        )
        self.token_cache = Counter(
            "osimage_token_cache_lookups",
            "Keystone token validations served from the cache (hit) or not (miss).",
            ["result"],
            registry=r,
        )
        self.notifications_sent = Counter(
            "osimage_notifications_sent", "Notifications handed to the broker.", registry=r
        )
        self.notifications_dropped = Counter(
            "osimage_notifications_dropped",
            "Notifications dropped: queue full or the broker unreachable.",
            registry=r,
        )
        for kind in ("upload", "copy"):
            self.transfers.labels(kind)
        for result in ("hit", "miss"):
            self.token_cache.labels(result)
        for operation in ("put", "get", "delete"):
            self.store_errors.labels(operation)
        self.images: dict[str, int] = {}  # the last count of images by status
        self._images_at = -1e9
        r.register(_ImagesCollector(self))
        self._rendered: bytes | None = None
        self._rendered_at = -1e9
        # (raw path, method, status) -> the samples its requests update: looking up the
        # labels took most of the time of counting a request (issue 14)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    # -- recording ------------------------------------------------------------------------

    def request(self, path: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        key = (path, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children_for(path, method, status)
            if len(self._children) >= _CHILDREN_CACHED:
                self._children.clear()  # raw paths are unbounded; their label sets are not
            self._children[key] = children
        count, latency = children
        count.inc()
        latency.observe(seconds)

    def _children_for(self, path: str, method: str, status: int) -> tuple[Any, Any]:
        """The request counter's and latency histogram's samples for one request's labels."""
        api, route = route_of(path)
        method = method if method in _METHODS else "OTHER"
        return (
            self.requests.labels(api, route, method, str(status or 0)),
            self.latency.labels(api, route, method),
        )

    def token_lookup(self, hit: bool) -> None:
        self.token_cache.labels("hit" if hit else "miss").inc()

    def store_error(self, operation: str) -> None:
        self.store_errors.labels(operation).inc()

    def notification_sent(self, event_type: str) -> None:
        self.notifications_sent.inc()

    def notification_dropped(self, event_type: str) -> None:
        self.notifications_dropped.inc()

    # -- exposition -----------------------------------------------------------------------

    async def refresh_images(self, engine: AsyncEngine, max_age: float) -> None:
        """Count images by status, at most once every `max_age` seconds."""
        now = time.monotonic()
        if now - self._images_at < max_age:
            return
        self._images_at = now  # concurrent scrapes do not pile up queries
        try:
            self.images = await count_images(engine)
        except Exception:
            self.database_errors.inc()
            log.exception("metrics: counting images by status failed")

    def rendered(self, max_age: float) -> bytes | None:
        """The last rendering if it is less than `max_age` seconds old, else None."""
        if self._rendered is not None and time.monotonic() - self._rendered_at < max_age:
            return self._rendered
        return None

    def render(self, max_age: float = 0.0) -> bytes:
        """The text exposition of every metric (all workers' under --workers); an answer
        rendered less than `max_age` seconds ago is reused (rendering takes milliseconds)."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        now = time.monotonic()
        if (reused := self.rendered(max_age)) is not None:
            return reused
        if self.multiprocess_dir is None:
            body = generate_latest(self.registry)
        else:
            registry = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            registry.register(_ImagesCollector(self))
            body = generate_latest(registry)
        self._rendered, self._rendered_at = body, now
        return body


_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_CHILDREN_CACHED: Final = 4096


class _ImagesCollector:
    """`osimage_images{status}` from the last count (a gauge of this worker's view)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "osimage_images", "Images in the catalogue by status.", labels=["status"]
        )
        for status, count in sorted(self._metrics.images.items()):
            family.add_metric([status], count)
        yield family


async def count_images(engine: AsyncEngine) -> dict[str, int]:
    """Images per status (one grouped query over the listing index)."""
    from sqlalchemy import func, select

    from osimage.server.db.engine import reading
    from osimage.server.db.tables import images

    query = select(images.c.status, func.count()).group_by(images.c.status)
    async with reading(engine) as conn:
        rows = (await conn.execute(query)).all()
    return {str(status): int(count) for status, count in rows}


def multiprocess_dir() -> str | None:
    """The multi-process directory from the environment, if the runner set one."""
    return os.environ.get(MULTIPROC_VARIABLE) or None


def forget_dead_workers(directory: str) -> list[int]:
    """Remove the live-gauge files of worker processes that are gone; return their pids."""
    from prometheus_client import multiprocess

    dead: set[int] = set()
    for path in Path(directory).glob("*.db"):
        match = re.search(r"_(\d+)\.db$", path.name)
        if match is None or not path.name.startswith("gauge_live"):
            continue
        pid = int(match.group(1))
        if not _alive(pid):
            dead.add(pid)
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
