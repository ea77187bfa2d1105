"""Glance's notifications (image.create, image.upload, image.send...) through oslo.messaging.

The core calls `notifier.info(ctx, event_type, payload)`; that only puts the event on a
bounded queue (`--notification-queue-size`). One thread sends the queue's events with
oslo.messaging's `Notifier`, so a slow or absent broker never holds up a request: when the
queue is full the event is dropped, counted (`osimage_notifications_dropped_total`) and
logged, at most once a minute.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from osimage.server.auth import Context
    from osimage.server.db.catalog import ImageRow, MemberRow
    from osimage.server.settings import NotificationOptions

log = logging.getLogger("osimage.notifications")

DROP_LOG_INTERVAL: Final = 60.0  # seconds between two "events dropped" log lines
SEND_RETRIES: Final = 2  # oslo.messaging retries of one send before it counts as failed
THREAD_NAME: Final = "osimage-notifier"
# oslo.messaging logs each failed send (with its payload and a traceback) and each
# reconnection attempt; from our thread these become one rate-limited warning of ours.
_QUIETED_LOGGERS: Final = (
    "oslo_messaging.notify.messaging",
    "oslo_messaging.notify.notifier",
    "oslo_messaging._drivers.impl_rabbit",
    "oslo.messaging._drivers.impl_rabbit",  # oslo.log's spelling of the same module
)


def isotime(when: datetime | None = None) -> str:
    """A UTC time as Glance's payloads show it: ``2026-12-03T05:28:35Z``."""
    when = when or datetime.now(UTC)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def image_payload(row: ImageRow, **extra: Any) -> dict[str, Any]:
    """The payload of an image event, with the fields of Glance's image notifications."""
    payload: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "created_at": isotime(row.created_at),
        "updated_at": isotime(row.updated_at),
        "min_disk": row.min_disk,
        "min_ram": row.min_ram,
        "protected": row.protected,
        "checksum": row.checksum,
        "owner": row.owner,
        "disk_format": row.disk_format,
        "container_format": row.container_format,
        "size": row.size,
        "virtual_size": row.virtual_size,
        "is_public": row.is_public,
        "visibility": "public" if row.is_public else "private",
        "properties": {k: v for k, v in row.properties.items() if v is not None},
        "tags": [],
        "deleted": False,
        "deleted_at": None,
    }
    payload.update(extra)
    return payload


def member_payload(member: MemberRow, *, status: str = "accepted", **extra: Any) -> dict[str, Any]:
    """The payload of an image.member.* event (v1 memberships are in effect at once)."""
    payload: dict[str, Any] = {
        "image_id": member.image_id,
        "member_id": member.member,
        "status": getattr(member, "status", status),
        "created_at": isotime(getattr(member, "created_at", None)),
        "updated_at": isotime(getattr(member, "updated_at", None)),
        "deleted": False,
        "deleted_at": None,
    }
    payload.update(extra)
    return payload


def send_payload(row: ImageRow, ctx: Context, sent: int) -> dict[str, Any]:
    """The payload of image.send: who received how many bytes of whose image."""
    return {
        "bytes_sent": sent,
        "image_id": row.id,
        "owner_id": row.owner,
        "receiver_tenant_id": ctx.project_id,
        "receiver_user_id": ctx.user_id,
    }


class Notifier(Protocol):
    """What the core calls; never blocks and never raises. When `enabled` is False the
    core skips building payloads (which may cost a database read)."""

    enabled: bool

    def info(self, ctx: Context | None, event_type: str, payload: Any) -> None: ...

    def error(self, ctx: Context | None, event_type: str, payload: Any) -> None: ...


class NoNotifier:
    """Notifications off (the default): every event is ignored."""

    enabled = False

    def info(self, ctx: Context | None, event_type: str, payload: Any) -> None:
        return None

    def error(self, ctx: Context | None, event_type: str, payload: Any) -> None:
        return None

    def close(self) -> None:
        return None


Event = tuple[str, dict[str, Any], str, Any]  # priority, context, event type, payload


class QueuedNotifier:
    """Queue events and send them from one thread with oslo.messaging's `Notifier`.

    `on_drop` and `on_sent` are called (from any thread) with the event type, for metrics.
    """

    enabled = True

    def __init__(
        self,
        transport_url: str,
        *,
        topic: str = "notifications",
        publisher_id: str | None = None,
        queue_size: int = 1000,
        on_drop: Callable[[str], None] | None = None,
        on_sent: Callable[[str], None] | None = None,
    ) -> None:
        from oslo_config import cfg

        with warnings.catch_warnings():
            # oslo.messaging imports oslo.service, whose eventlet parts warn on import;
            # osimage uses no eventlet (the notifier runs in a plain thread)
            warnings.simplefilter("ignore")
            import oslo_messaging

        conf = cfg.ConfigOpts()
        conf([], project="osimage", default_config_files=[], default_config_dirs=[])
        self._transport = oslo_messaging.get_notification_transport(conf, url=transport_url)
        self._notifier = oslo_messaging.Notifier(
            self._transport,
            publisher_id=publisher_id or f"image.{socket.gethostname()}",
            driver="messagingv2",
            topics=[topic],
            retry=SEND_RETRIES,
        )
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=queue_size)
        self._on_drop = on_drop
        self._on_sent = on_sent
        self._dropped = 0
        self._last_drop_log = 0.0
        self._lock = threading.Lock()
        self._failed = False  # set by _SendFailures while a send of our thread fails
        self._quiet = _SendFailures(self)
        for name in _QUIETED_LOGGERS:
            logging.getLogger(name).addFilter(self._quiet)
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """How many events were dropped since start."""
        return self._dropped

    def info(self, ctx: Context | None, event_type: str, payload: Any) -> None:
        self._put("info", ctx, event_type, payload)

    def error(self, ctx: Context | None, event_type: str, payload: Any) -> None:
        self._put("error", ctx, event_type, payload)

    def _put(self, priority: str, ctx: Context | None, event_type: str, payload: Any) -> None:
        context = {} if ctx is None else {"user_id": ctx.user_id, "project_id": ctx.project_id}
        try:
            self._queue.put_nowait((priority, context, event_type, payload))
        except queue.Full:
            self._drop(event_type, "the notification queue is full")

    def _drop(self, event_type: str, why: str) -> None:
        with self._lock:
            self._dropped += 1
            now = time.monotonic()
            report = now - self._last_drop_log >= DROP_LOG_INTERVAL
            if report:
                self._last_drop_log = now
        if self._on_drop is not None:
            self._on_drop(event_type)
        if report:
            log.warning(
                "notification %s dropped (%s); %d dropped since start",
                event_type,
                why,
                self.dropped,
            )

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            priority, context, event_type, payload = event
            self._failed = False
            try:
                send = self._notifier.error if priority == "error" else self._notifier.info
                send(context, event_type, payload)
            except Exception as error:  # the broker is gone: the event is lost, say so
                self._drop(event_type, f"sending failed: {error}")
                continue
            if self._failed:  # oslo.messaging swallowed the failure (and logged it)
                self._drop(event_type, "the broker could not be reached")
            elif self._on_sent is not None:
                self._on_sent(event_type)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (for up to `timeout` seconds), then stop the thread."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self._transport.cleanup()
        for name in _QUIETED_LOGGERS:
            logging.getLogger(name).removeFilter(self._quiet)


class _SendFailures(logging.Filter):
    """Drop oslo.messaging's error records from the notifier thread; note the failure."""

    def __init__(self, notifier: QueuedNotifier) -> None:
        super().__init__()
        self._notifier = notifier

    def filter(self, record: logging.LogRecord) -> bool:
        if record.threadName != THREAD_NAME or record.levelno < logging.ERROR:
            return True
        if "send" in record.msg if isinstance(record.msg, str) else False:
            self._notifier._failed = True
        return False


def open_notifier(
    options: NotificationOptions,
    *,
    on_drop: Callable[[str], None] | None = None,
    on_sent: Callable[[str], None] | None = None,
) -> QueuedNotifier | NoNotifier:
    """A `QueuedNotifier` per `options`, or a `NoNotifier` when it has no transport URL."""
    if not options.transport_url:
        return NoNotifier()
    return QueuedNotifier(
        options.transport_url,
        topic=options.topic,
        queue_size=options.queue_size,
        on_drop=on_drop,
        on_sent=on_sent,
    )


def redacted(url: str) -> str:
    """A transport URL without its password, for logs."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, creds = head.partition("://")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}"
