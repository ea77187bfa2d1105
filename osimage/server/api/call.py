"""One HTTP request as the handlers see it: ASGI plumbing, the caller and the service."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import anyio

from osimage.server.api.http import Receive, Scope, Send, header
from osimage.server.auth import Context
from osimage.server.errors import BadRequest, RequestTimeout, TooLarge
from osimage.server.service import ImageService
from osimage.server.sharing import Sharing

MAX_JSON_BODY = 1024 * 1024


class ClientGone(BadRequest):
    """The client went away before sending all of the body."""

    def __init__(self) -> None:
        super().__init__("Client disconnected before sending all data to backend")


@dataclass
class Call:
    scope: Scope
    receive: Receive
    send: Send
    context: Context
    service: ImageService
    sharing: Sharing

    @property
    def method(self) -> str:
        return str(self.scope["method"])

    def header(self, name: str) -> str | None:
        return header(self.scope, name)

    def query(self) -> dict[str, str]:
        """Query parameters; the last value of a repeated name wins."""
        raw = bytes(self.scope.get("query_string", b"")).decode("latin-1")
        try:
            raw = raw.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("The query string is not valid UTF-8.") from None
        return dict(parse_qsl(raw, keep_blank_values=True))

    async def body(self, *, idle_tick: float | None = None) -> AsyncIterator[bytes]:
        """The request body as it arrives; a disconnect raises `ClientGone` (400).

        A body that sends nothing for the service's `body_timeout` raises `RequestTimeout`
        (408; the connection then closes, the body being unread). With `idle_tick`, an
        empty chunk is yielded whenever nothing arrived for that long, so that a consumer
        holding a partial batch can hand it on instead of keeping it while the client stalls.
        """
        timeout = self.service.limits.body_timeout
        idle, ticked = 0.0, idle_tick is None
        while True:
            wait = timeout - idle if ticked else min(idle_tick or 0.0, timeout - idle)
            with anyio.move_on_after(wait) as waiting:
                message = await self.receive()  # cancelling this wait loses no message
            if waiting.cancelled_caught:
                idle += wait
                if idle >= timeout:
                    raise RequestTimeout(
                        f"No request body data for {timeout:g} seconds (body_timeout)."
                    )
                ticked = True  # one tick per stall: a stalled upload costs no wakeups
                yield b""
                continue
            idle, ticked = 0.0, idle_tick is None
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def json(self) -> Any:
        """The body parsed as JSON, or None when there is none. Malformed JSON is a 400."""
        parts: list[bytes] = []
        total = 0
        async for chunk in self.body():
            total += len(chunk)
            if total > MAX_JSON_BODY:
                raise TooLarge(f"A JSON body may not exceed {MAX_JSON_BODY} bytes.")
            parts.append(chunk)
        data = b"".join(parts)
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("Malformed JSON in request body.") from None
