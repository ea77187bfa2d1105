"""The HTTP/1.1 connection layer: uvicorn's protocols with the limits they lack.

uvicorn times out an idle keep-alive connection, but never a connection that has not
yet sent a complete request head, and its `limit_concurrency` answers 503 per request
while still accepting every connection. `GuardedH11Protocol` (h11) and
`GuardedHttpToolsProtocol` (httptools, about half the parsing and writing cost) add a
deadline for the request line and headers, refuse connections past a cap before file
descriptors run out, answer a head past `max_header_bytes` with 431, and drop a
connection whose response failed half-way without uvicorn's "Exception in ASGI
application" traceback (the app has already logged that request). The httptools one
also hands a request with a method llhttp does not know to the app, which answers it
as under h11 (the spec's 501). `--http` chooses (`guarded_protocol`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import h11
import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
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


class _Guards:
    """What both guarded protocols share: the head timer, the cap, quiet aborts."""

    guard: ConnectionGuard
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: set[Any]
    cycle: Any
    _head_timer: asyncio.TimerHandle | None
    _refused: bool

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Past the cap the connection is refused; otherwise its head's deadline starts."""
        if self._refuse_connection(cast(asyncio.Transport, transport)):
            return
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._cancel_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _refuse_connection(self, transport: asyncio.Transport) -> bool:
        """Past the cap: answer 503 and close; True if this connection was refused."""
        if len(self.connections) < self.guard.max_connections:
            return False
        self._refused = True
        self.guard.note_refusal(len(self.connections))
        transport.write(REFUSAL)
        transport.close()
        return True

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.guard.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        raise NotImplementedError

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


class GuardedH11Protocol(_Guards, H11Protocol):
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

    # -- the header deadline ---------------------------------------------------------

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


class _HeadTooLarge(Exception):
    """Raised in a parser callback: the request line and headers exceed `max_header_bytes`."""


class _BadFraming(Exception):
    """Raised in a parser callback: a Transfer-Encoding other than chunked."""


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_VERSIONS = frozenset({b"HTTP/1.1", b"HTTP/1.0"})


class GuardedHttpToolsProtocol(_Guards, HttpToolsProtocol):
    """uvicorn's httptools protocol with the guards of `GuardedH11Protocol`.

    llhttp knows no head size limit, and refuses a method it does not know before the
    app runs; here a head past `max_header_bytes` is a 431, and a request with a method
    llhttp has no name for (``BREW``) is parsed here and handed to the app without a
    body, which answers it as under h11 (501 on an unmatched path, 405 on a known one);
    the connection then closes, its body's framing unparsed.
    """

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
        self._head_timer = None
        self._in_message = False  # between the parser's message begin and complete
        self._head_done = False  # the current message's head is parsed
        self._head_bytes = 0  # bytes received while its head was incomplete
        self._head_size = 0  # bytes of the head as parsed (url and headers)
        self._unknown: bytearray | None = None  # the head of a request with an unknown method
        self._dropping = False  # that request went to the app: nothing more is read
        # Content-Length with Transfer-Encoding reaches the app, which refuses it with
        # the reason and closes the connection (as under h11), instead of a bare 400.
        self.parser.set_dangerous_leniencies(lenient_chunked_length=True)
        self.app = self._guarded(self.app)

    # -- the header deadline ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused or self._dropping:
            return
        if self._unknown is not None:
            self._unknown_method_head(data)
            return
        self._unset_keepalive_if_required()
        awaiting_head = not (self._in_message and self._head_done)
        starts_message = not self._in_message
        if awaiting_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserInvalidMethodError:
            self._unknown_method(data if starts_message else b"")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse_head()
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self._in_message and self._head_done:  # in a body, or its head just complete
            if awaiting_head:
                self._cancel_head_timer()
        elif self._in_message:  # part of a head is waiting for the rest
            if self._head_bytes > self.guard.max_header_bytes:
                self._refuse_head()
            elif self._head_timer is None and not self.transport.is_closing():
                # on a kept-alive connection, or after the body of the request before:
                # the head has the deadline from now (a head that arrives whole, the
                # usual case, never needs a timer)
                self._arm_head_timer()
        elif (
            not awaiting_head
            and self._head_timer is None
            and self.timeout_keep_alive_task is None
            and self.cycle is not None
            and self.cycle.response_complete
            and not self.transport.is_closing()
        ):
            # a body drained after an early answer: now the next head is awaited, and
            # uvicorn's keep-alive timer was cancelled by the body's bytes
            self._arm_head_timer()

    def on_message_begin(self) -> None:
        self._in_message = True
        self._head_done = False
        self._head_size = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.guard.max_header_bytes:
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_done = True
        self._head_bytes = 0
        for name, value in self.headers:
            # the leniency above would also read a body of another coding to the end of
            # the connection; h11 refuses every coding but chunked, and so does this
            if name == b"transfer-encoding" and value.strip().lower() != b"chunked":
                raise _BadFraming
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        if not cycle.body:
            # held as it came: the cycle's receive hands a bytes object on without a copy
            # (uvicorn appends every piece to a bytearray, then copies that into bytes)
            cycle.body = body
        else:
            if isinstance(cycle.body, bytes):
                cycle.body = bytearray(cycle.body)
            cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        self._in_message = False
        self._head_done = False
        self._cancel_head_timer()  # the rest of an early-answered body came in time
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_message and self._head_done and not self.transport.is_closing():
            # answered before the whole body arrived: the rest of it may take as long as
            # a request head would, then the connection ends (its bytes would otherwise
            # keep cancelling the keep-alive timer)
            self._arm_head_timer()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._unknown is not None or not (self._in_message and self._head_done):
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a pipelined head behind a response under way
            if self._in_message or self._unknown is not None:
                self.transport.write(HEAD_TIMEOUT)  # part of a request arrived: say why
            self.transport.close()
        elif self.cycle is not None and self.cycle.response_complete:
            self.transport.close()  # the rest of an answered request's body never came

    # -- malformed requests ----------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        """Answer a request llhttp cannot parse, or drop the connection if it was answered.

        uvicorn writes its 400 whatever state the connection is in, also after (or in
        the middle of) the answer to the request whose body turned out malformed.
        """
        cycle = self.cycle
        answered = self._in_message and self._head_done  # an error in an answered body
        if (
            cycle is not None
            and cycle.response_started
            and (not cycle.response_complete or answered)
        ):
            self._abort()
            return
        if cycle is not None and not cycle.response_complete:
            # the app is still reading this request's body: it now sees a disconnect
            cycle.disconnected = True
            cycle.message_event.set()
        self._answer_and_close(400, b"Bad Request", f"{msg}\n".encode())

    def _refuse_head(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self._abort()
            return
        limit = self.guard.max_header_bytes
        text = f"The request line and headers exceed {limit} bytes.\n".encode()
        self._answer_and_close(431, b"Request Header Fields Too Large", text)

    def _answer_and_close(
        self,
        status: int,
        reason: bytes,
        body: bytes,
        *,
        content_type: bytes = b"text/plain; charset=UTF-8",
        extra: bytes = b"",
    ) -> None:
        self._cancel_head_timer()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\n%sconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (status, reason, content_type, extra, len(body), body)
        )
        self.transport.close()

    # -- methods llhttp does not know ------------------------------------------------

    def _unknown_method(self, start: bytes) -> None:
        """The parser refused the method: collect the head (bounded, with the deadline)."""
        if self.cycle is not None and not self.cycle.response_complete:
            # pipelined behind a response under way: that one is finished, then the
            # connection ends, this request unanswered
            self.cycle.keep_alive = False
            self._dropping = True
            return
        if not start:  # its start came with an earlier read: not what a client sends
            self.send_400_response("Invalid HTTP request received.")
            return
        self._unknown = bytearray()
        if self._head_timer is None:
            self._arm_head_timer()
        self._unknown_method_head(start)

    def _unknown_method_head(self, data: bytes) -> None:
        assert self._unknown is not None
        self._unknown += data
        end = self._unknown.find(b"\r\n\r\n")
        if end < 0:
            if len(self._unknown) > self.guard.max_header_bytes:
                self._refuse_head()
            return
        head = bytes(self._unknown[:end]).lstrip(b"\r\n")
        self._unknown = None
        self._dropping = True  # the connection closes after this request's answer
        if end > self.guard.max_header_bytes:
            self._refuse_head()
            return
        self._cancel_head_timer()
        scope = self._unknown_method_scope(head)
        if scope is None:
            self.send_400_response("Invalid HTTP request received.")
            return
        self._in_message = False
        self.cycle = RequestResponseCycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=False,  # the body, if any, is not parsed: the connection ends
            on_response=self.on_response_complete,
        )
        self.cycle.more_body = False
        self._start_asgi_task(self.cycle, self.app)

    def _unknown_method_scope(self, head: bytes) -> Any | None:
        """The ASGI scope of a request whose method llhttp refused, or None if malformed.

        The app then answers it as under h11: 405 with Allow on a known path, the
        listing on /v1/shared-images/{member}, 501 elsewhere (spec §3).
        """
        line, *fields = head.split(b"\r\n")
        parts = line.split(b" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or parts[2] not in _VERSIONS:
            return None
        headers: list[tuple[bytes, bytes]] = []
        for field_line in fields:
            name, colon, value = field_line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
                return None
            headers.append((name.lower(), value.strip(b" \t")))
        try:
            url = httptools.parse_url(parts[1])
            path = url.path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            return None
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = self.root_path
        return {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": parts[2].decode("ascii")[5:],
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "root_path": root,
            "headers": headers,
            "state": self.app_state.copy(),
            "method": parts[0].decode("ascii"),
            "path": root + path,
            "raw_path": root.encode("ascii") + url.path,
            "query_string": url.query or b"",
        }


def guarded_protocol(settings: Settings) -> Callable[..., asyncio.Protocol]:
    """The `http=` protocol factory for uvicorn: the guarded protocol `settings.http` names."""
    guard = ConnectionGuard(
        max_connections=fit_descriptor_limit(settings.max_connections),
        header_timeout=settings.header_timeout,
        max_header_bytes=settings.max_header_bytes,
    )
    if settings.http == "httptools":
        return functools.partial(GuardedHttpToolsProtocol, guard=guard)
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
