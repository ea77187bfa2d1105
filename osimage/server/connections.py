"""The HTTP/1.1 connection layer: uvicorn's h11 protocol with the limits it lacks.

uvicorn times out an idle keep-alive connection, but never a connection that has not
yet sent a complete request head, and its `limit_concurrency` answers 503 per request
while still accepting every connection. `GuardedH11Protocol` adds a deadline for the
request line and headers, refuses connections past a cap before file descriptors run
out, and drops a connection whose response failed half-way without uvicorn's
"Exception in ASGI application" traceback (the app has already logged that request).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from osimage.server.api.http import Receive, ResponseAborted, Scope, Send
from osimage.server.settings import Settings

log = logging.getLogger("osimage.server.connections")

# Descriptors kept free beside the connections: database and store clients, log files,
# remote sources. Each connection may hold a second one (an image file it streams).
RESERVED_DESCRIPTORS = 256
DESCRIPTORS_PER_CONNECTION = 2
# Under a flood of refused connections, one summary line per this many seconds.
REFUSAL_LOG_INTERVAL = 10.0

_REFUSAL_BODY = b"The server has too many open connections; try again later.\n"
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain; charset=UTF-8\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
)
_TIMEOUT_BODY = b"The request line and headers did not arrive in time.\n"
HEAD_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=UTF-8\r\n"
    b"connection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


@dataclass
class ConnectionGuard:
    """The connection limits of one server process, and its count of refusals.

    Passed to every `GuardedH11Protocol` of the process (it is pickled into worker
    processes with uvicorn's config, so each worker counts its own).
    """

    max_connections: int
    header_timeout: float
    max_header_bytes: int
    refused: int = field(default=0, compare=False)
    _last_report: float = field(default=0.0, compare=False)

    def note_refusal(self, open_connections: int) -> None:
        """Count one refused connection; log a summary at most every few seconds."""
        self.refused += 1
        now = time.monotonic()
        if now - self._last_report >= REFUSAL_LOG_INTERVAL:
            log.warning(
                "refused %d connection(s): %d are open, the most allowed (max_connections)",
                self.refused,
                open_connections,
            )
            self.refused = 0
            self._last_report = now


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline, a connection cap and quiet aborts."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        guard: ConnectionGuard,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self.app = self._guarded(self.app)

    # -- the connection cap and the header deadline ----------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.guard.max_connections:
            self._refused = True
            self.guard.note_refusal(len(self.connections))
            transport.write(REFUSAL)
            transport.close()
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        waiting_for_head = self.conn.their_state is h11.IDLE
        super().data_received(data)
        state = self.conn.their_state
        if waiting_for_head:
            if state is not h11.IDLE:
                self._cancel_head_timer()  # the head is complete (or refused)
            elif self._head_timer is None and not self.transport.is_closing():
                # part of a head on a kept-alive connection: it has the deadline from now
                # (a head that arrives whole, the usual case, never needs a timer)
                self._arm_head_timer()
        elif (
            state is h11.IDLE
            and self._head_timer is None
            and self.timeout_keep_alive_task is None
            and not self.transport.is_closing()
        ):
            # a body drained after an early answer: now the next head is awaited, and
            # uvicorn's keep-alive timer was cancelled by the body's bytes
            self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            # answered before the whole body arrived: the rest of it may take as long as
            # a request head would, then the connection ends (its bytes would otherwise
            # keep cancelling the keep-alive timer)
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.guard.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:
            started, _closed = self.conn.trailing_data
            if started:  # part of a request arrived: say why the connection ends
                self.transport.write(HEAD_TIMEOUT)
            self.transport.close()
        elif self.conn.their_state is h11.SEND_BODY and self.conn.our_state in (
            h11.DONE,
            h11.MUST_CLOSE,
        ):
            self.transport.close()  # the rest of an answered request's body never came

    # -- malformed requests ----------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """Answer a request h11 cannot parse, or drop the connection if an answer is under way.

        uvicorn writes its 400 whatever state the connection is in; in the middle of a
        response that fails inside h11, and asyncio logs a traceback.
        """
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self._abort()
            return
        buffered, _closed = self.conn.trailing_data
        status, reason = 400, b"Bad Request"
        text = f"{msg}\n"
        if len(buffered) > self.guard.max_header_bytes:
            status, reason = 431, b"Request Header Fields Too Large"
            text = f"The request line and headers exceed {self.guard.max_header_bytes} bytes.\n"
        headers = [(b"content-type", b"text/plain; charset=UTF-8"), (b"connection", b"close")]
        try:
            self.transport.write(
                self.conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
            )
            self.transport.write(self.conn.send(h11.Data(data=text.encode())))
            self.transport.write(self.conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            self._abort()
            return
        self.transport.close()

    # -- failed responses ------------------------------------------------------------

    def _abort(self) -> None:
        """Drop the connection now: the client sees a broken response, not a complete one."""
        if self.cycle is not None:
            self.cycle.disconnected = True  # uvicorn says nothing more about this response
        self.transport.abort()

    def _guarded(self, app: Any) -> Any:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            cycle = self.cycle
            try:
                await app(scope, receive, send)
            except ResponseAborted:
                pass  # the app logged it, with its request id
            except asyncio.CancelledError:
                log.warning("%s %s cancelled at shutdown", scope["method"], scope["path"])
            except Exception as exc:  # a bug outside the app's own handling
                log.error("%s %s failed: %r", scope["method"], scope["path"], exc)
                log.debug("the traceback", exc_info=True)
            else:
                return
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                self.transport.abort()

        return guarded


def guarded_h11(settings: Settings) -> Callable[..., asyncio.Protocol]:
    """The `http=` protocol factory for uvicorn: `GuardedH11Protocol` with these settings."""
    guard = ConnectionGuard(
        max_connections=fit_descriptor_limit(settings.max_connections),
        header_timeout=settings.header_timeout,
        max_header_bytes=settings.max_header_bytes,
    )
    return functools.partial(GuardedH11Protocol, guard=guard)


def fit_descriptor_limit(max_connections: int) -> int:
    """Raise RLIMIT_NOFILE for `max_connections`, or lower the cap to what the limit allows.

    Returns the number of connections the process may accept.
    """
    if sys.platform == "win32":
        return max_connections
    import resource

    needed = max_connections * DESCRIPTORS_PER_CONNECTION + RESERVED_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open file limit to %d: %s", target, exc)
    if soft >= needed:
        return max_connections
    allowed = max(1, (soft - RESERVED_DESCRIPTORS) // DESCRIPTORS_PER_CONNECTION)
    log.warning(
        "the open file limit (%d, hard %d) leaves room for %d connections: max_connections "
        "lowered from %d (raise `ulimit -n` to allow more)",
        soft,
        hard,
        allowed,
        max_connections,
    )
    return allowed
