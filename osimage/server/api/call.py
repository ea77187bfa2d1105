"""One HTTP request as the handlers see it: ASGI plumbing, the caller and the service."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from osimage.server.api.http import Receive, Scope, Send, base_url
from osimage.server.auth import Context
from osimage.server.errors import BadRequest, RequestTimeout, TooLarge
from osimage.server.ingest import IDLE_FLUSH, Upload
from osimage.server.service import ImageService
from osimage.server.sharing import Sharing

_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_QUOTE, _OPENERS, _CLOSERS = ord('"'), frozenset(b"[{"), frozenset(b"]}")


class ClientGone(BadRequest):
    """The client went away before sending all of the body."""

    def __init__(self) -> None:
        super().__init__("Client disconnected before sending all data to backend")


class Pace:
    """How fast a body arrives, in windows of `window` seconds spent waiting for it: a
    window that brings fewer than `min_rate * window` bytes raises `RequestTimeout`.

    Only the time the server waits for the client counts, not the time it spends storing
    what arrived, so a slow store never fails an upload. The first window is the grace
    period; a body that ends before its window does is never measured.
    """

    def __init__(self, min_rate: int, window: float) -> None:
        self.min_rate, self.window = min_rate, window
        self.need = min_rate * window
        self.spent = 0.0  # seconds waited in the current window
        self.got = 0  # bytes received in it

    def left(self) -> float:
        """Seconds of waiting until a window short of its bytes would end (inf: it has them)."""
        return max(self.window - self.spent, 0.0) if self.got < self.need else math.inf

    def waited(self, seconds: float, received: int) -> None:
        """Count `seconds` of waiting that brought `received` bytes (at their end)."""
        self.spent += seconds
        while self.spent >= self.window:
            if self.got < self.need:
                raise RequestTimeout(
                    f"Request body data arrived at less than {self.min_rate} bytes per second "
                    f"over {self.window:g} seconds (upload_min_rate)."
                )
            self.spent -= self.window
            self.got = 0
        self.got += received


@dataclass
class Call:
    """One request: its ASGI plumbing, the caller, the service, and its headers, parsed once.

    `headers` maps lower-cased names to latin-1 values (a repeated name: the last value),
    as the app built it to authenticate the caller.
    """

    scope: Scope
    receive: Receive
    send: Send
    context: Context
    service: ImageService
    sharing: Sharing
    headers: Mapping[str, str]

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    def header(self, name: str) -> str | None:
        """The value of the header `name` (lower case), or None."""
        return self.headers.get(name)

    @property
    def base_url(self) -> str:
        """scheme://host[:port] of this request."""
        return base_url(self.scope, self.headers.get("host"))

    def query(self) -> dict[str, str]:
        """Query parameters; the last value of a repeated name wins (see `query_pairs`)."""
        return dict(self.query_pairs())

    def query_pairs(
        self, *, undecodable: str = "The query string is not valid UTF-8.", strict: bool = False
    ) -> list[tuple[str, str]]:
        """The query's pairs in order.

        More than `query_params_max` parameters, text that is not UTF-8 (answered with
        `undecodable`) or a NUL character (no database column holds one) is a 400. With
        `strict`, so is a percent-escape that is not UTF-8 (v2); else it decodes as U+FFFD."""
        raw = bytes(self.scope.get("query_string", b""))
        most = self.service.limits.query_params_max
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(undecodable) from None
        try:
            pairs = parse_qsl(
                text,
                keep_blank_values=True,
                errors="strict" if strict else "replace",
                max_num_fields=most,
            )
        except UnicodeDecodeError:  # a percent-escape that is not UTF-8
            raise BadRequest(undecodable) from None
        except ValueError:
            raise BadRequest(
                f"Too many query parameters: at most {most} allowed (query_params_max)."
            ) from None
        for name, value in pairs:
            if "\x00" in name or "\x00" in value:
                raise BadRequest(f"Query parameter {name[:64]!r}: NUL characters are not allowed")
        return pairs

    def upload_body(self, length: int | None) -> Upload:
        """The body as image data for the data pipeline: empty chunks while the client
        stalls (so a partial batch is handed on, `ingest.IDLE_FLUSH`), and at least
        `--upload-min-rate` bytes per second (`body`'s `min_rate`)."""
        rate = self.service.limits.upload_min_rate
        return Upload(chunks=self.body(idle_tick=IDLE_FLUSH, min_rate=rate), length=length)

    async def body(
        self, *, idle_tick: float | None = None, min_rate: int = 0
    ) -> AsyncIterator[bytes]:
        """The request body as it arrives; a disconnect raises `ClientGone` (400).

        A body that sends nothing for the service's `body_timeout` raises `RequestTimeout`
        (408; the connection then closes, the body being unread). With `min_rate`, so does
        one that brings fewer than `min_rate` bytes per second over a `body_timeout` window
        of waiting for it (see `Pace`). With `idle_tick`, an empty chunk is yielded whenever
        nothing arrived for that long, so that a consumer holding a partial batch can hand
        it on instead of keeping it while the client stalls.
        """
        timeout = self.service.limits.body_timeout
        pace = Pace(min_rate, timeout) if min_rate > 0 else None
        loop = asyncio.get_running_loop()
        idle, ticked = 0.0, idle_tick is None
        wait = 0.0
        while True:
            # One timer for a run of messages, moved for each wait and disarmed while the
            # consumer holds a chunk (about half the cost of an anyio scope per message);
            # a new one only after it expired. The server runs on asyncio (uvicorn).
            try:
                async with asyncio.timeout(None) as deadline:
                    while True:
                        wait = timeout - idle if ticked else min(idle_tick or 0.0, timeout - idle)
                        if pace is not None:
                            wait = min(wait, pace.left())
                        began = loop.time()
                        deadline.reschedule(began + wait)
                        message = await self.receive()  # cancelling this wait loses no message
                        deadline.reschedule(None)
                        idle, ticked = 0.0, idle_tick is None
                        if message["type"] == "http.disconnect":
                            raise ClientGone()
                        chunk = message.get("body", b"")
                        if pace is not None:
                            pace.waited(loop.time() - began, len(chunk))
                        if chunk:
                            yield chunk
                        if not message.get("more_body", False):
                            return
            except TimeoutError:
                pass  # (only an expired wait gets here)
            idle += wait
            if pace is not None:
                pace.waited(wait, 0)
            if idle >= timeout:
                raise RequestTimeout(
                    f"No request body data for {timeout:g} seconds (body_timeout)."
                )
            ticked = True  # one tick per stall: a stalled upload costs no wakeups
            yield b""

    async def json(self) -> Any:
        """The body parsed as JSON, or None when there is none.

        A body over `json_body_max` bytes is a 413; malformed JSON, or arrays and objects
        nested deeper than `json_depth_max`, a 400 (checked before parsing, whose
        recursion a deep body would exhaust)."""
        most = self.service.limits.json_body_max
        parts: list[bytes] = []
        total = 0
        async for chunk in self.body():
            total += len(chunk)
            if total > most:
                raise TooLarge(f"A JSON body may not exceed {most} bytes (json_body_max).")
            parts.append(chunk)
        data = b"".join(parts)
        if not data.strip():
            return None
        deepest = self.service.limits.json_depth_max
        if nests_deeper(data, deepest):
            raise BadRequest(f"The JSON body nests deeper than {deepest} levels (json_depth_max).")
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("Malformed JSON in request body.") from None


def nests_deeper(data: bytes, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` levels deep in the JSON `data`.

    A linear scan without recursion (the standard parser recurses once per level): escapes
    go first, then every byte but quotes and brackets; brackets inside strings do not count.
    Malformed text gives some answer; the parser refuses it afterwards.
    """
    depth = 0
    in_string = False
    for byte in _ESCAPE.sub(b"", data).translate(None, _NOT_STRUCTURE):
        if byte == _QUOTE:
            in_string = not in_string
        elif in_string:
            continue
        elif byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif byte in _CLOSERS:
            depth -= 1
    return False
