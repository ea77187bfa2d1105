"""Raw ASGI replies: header values go out as UTF-8 bytes, bodies as JSON or streamed chunks."""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from osimage.server.errors import BadRequest

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
HeaderList = Sequence[tuple[str, str]]


class ResponseAborted(Exception):
    """The response cannot be completed and the failure is logged: drop the connection.

    The app raises it after a response has started; the connection layer
    (`osimage.server.connections`) then aborts the connection without logging again.
    """


def raw_headers(headers: HeaderList) -> list[tuple[bytes, bytes]]:
    """Encode header pairs for ASGI; non-ASCII text is written as raw UTF-8 bytes."""
    return [(name.lower().encode("utf-8"), value.encode("utf-8")) for name, value in headers]


async def reply(
    send: Send,
    status: int,
    body: bytes = b"",
    *,
    content_type: str | None = None,
    headers: HeaderList = (),
    head: bool = False,
) -> None:
    """Send a complete answer; with `head` the Content-Length still describes `body`."""
    out = list(headers)
    if content_type is not None:
        out.append(("content-type", content_type))
    if status != 204 and not any(name.lower() == "content-length" for name, _ in out):
        out.append(("content-length", str(len(body))))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers(out)})
    await send({"type": "http.response.body", "body": b"" if head or status == 204 else body})


_JSON_TYPE = (b"content-type", b"application/json")


async def reply_ready_json(send: Send, body: bytes) -> None:
    """A 200 of ready JSON bytes: `reply`'s answer with its headers written as bytes
    (the v2 record routes, issue 12)."""
    headers = [_JSON_TYPE, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def reply_json(
    send: Send, status: int, document: Any, *, headers: HeaderList = (), head: bool = False
) -> None:
    body = json.dumps(document).encode()
    await reply(send, status, body, content_type="application/json", headers=headers, head=head)


async def reply_stream(
    send: Send,
    status: int,
    chunks: AsyncIterator[bytes],
    *,
    headers: HeaderList,
    receive: Receive,
    first: bytes = b"",
) -> None:
    """Stream `first` then `chunks` as the body; the caller sets Content-Length.

    A client that goes away stops the stream (the server would otherwise read the
    whole blob for nobody).
    """
    async with anyio.create_task_group() as tasks:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tasks.cancel_scope.cancel()

        tasks.start_soon(watch)
        start = {"type": "http.response.start", "status": status, "headers": raw_headers(headers)}
        await send(start)
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        async for chunk in chunks:
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        tasks.cancel_scope.cancel()


def header(scope: Scope, name: str) -> str | None:
    """The first request header called `name` (lower case), decoded as latin-1, or None."""
    wanted = name.encode()
    for key, value in scope.get("headers", ()):
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


def base_url(scope: Scope, host: str | None = None) -> str:
    """scheme://host[:port] of this request, from its Host header (`host`, if already read)."""
    scheme = scope.get("scheme", "http")
    host = host if host is not None else header(scope, "host")
    if not host:
        server = scope.get("server") or ("127.0.0.1", 80)
        address, port = server[0], server[1]
        if ":" in address:
            address = f"[{address}]"
        host = f"{address}:{port}"
    return f"{scheme}://{host}"


def refuse_ambiguous_framing(headers: Mapping[str, str]) -> None:
    """Refuse a request with both Content-Length and Transfer-Encoding (RFC 9112 §6.3);
    `headers` by lower-case name.

    h11 lets Transfer-Encoding win; a proxy in front may have let Content-Length win,
    so the two disagree on where this request ends. The answer closes the connection.
    """
    if "content-length" in headers and "transfer-encoding" in headers:
        raise BadRequest(
            "A request may not carry both Content-Length and Transfer-Encoding.",
            headers={"connection": "close"},
        )


def describe_failure(exc: BaseException) -> str:
    """One line naming an unexpected exception and where it was raised."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:300] + "..."
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [frame for frame in frames if f"{os.sep}osimage{os.sep}" in frame.filename]
    if ours or frames:
        last = (ours or frames)[-1]  # the innermost line of ours: where to start looking
        where = f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return f"{type(exc).__name__}: {text}{where}"
