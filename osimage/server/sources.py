"""External http(s) image sources: `x-image-meta-location` and `x-glance-api-copy-from`.

Fetching a user-supplied URL is a server-side request forgery risk, so every address the
server connects to is checked against `SourcePolicy`: names are resolved here, every
resolved address must be allowed, and the connection goes to a checked address while Host
and TLS SNI keep the name. Redirects are followed here, at most `max_redirects`, each hop
checked again.

Library: httpcore (the engine under httpx) because its network-backend hook lets us own
name resolution and the connect call; httpx itself exposes no such hook, and raw h11 would
mean re-writing connection, TLS and timeout handling that httpcore already gets right.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import anyio
import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CHUNK_SIZE: Final = 64 * 1024
SCHEMES: Final = frozenset({"http", "https"})
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_GONE: Final = frozenset({404, 410})

# Ranges refused even where the running Python's `is_global` tables are older than IANA's.
_FORBIDDEN: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # CGNAT shared space
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata services
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/128",
        "::1/128",
        "::/96",  # IPv4-compatible (deprecated)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, Teredo
        "2001:db8::/32",
        "3fff::/20",  # documentation
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique local
        "fe80::/10",
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",
    )
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_LOOPBACK_NAME: Final = ipaddress.IPv4Address("127.0.0.1")
_INET_ATON_FORM: Final = re.compile(r"[0-9a-fx.]+")


@dataclass(frozen=True)
class SourcePolicy:
    """Which addresses the server may fetch from, and how patiently.

    Only globally routable addresses are allowed, plus any inside `allowed_networks`
    (the operator's `allow_networks` setting). Timeouts are in seconds. `ssl_context`
    None verifies https sources against certifi's CA bundle, as httpx and requests do.
    """

    allowed_networks: tuple[IPNetwork, ...] = ()
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_redirects: int = 5
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> SourcePolicy:
        """Build a policy allowing `cidrs` (blank entries skipped); ValueError names a bad one."""
        networks: list[IPNetwork] = []
        for cidr in cidrs:
            text = cidr.strip()
            if not text:
                continue
            try:
                networks.append(ipaddress.ip_network(text))
            except ValueError as exc:
                raise ValueError(f"allow_networks: {text!r} is not a network: {exc}") from None
        return cls(allowed_networks=tuple(networks))


class SourceError(Exception):
    """A source that cannot be used; `.message` is safe to show the client.

    `.reason` adds detail for logs or for a client that wants it; neither ever contains
    credentials from the URL.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class SourceNotAllowed(SourceError):
    """Scheme or address refused by policy (400)."""

    def __init__(self, url: str, reason: str = "") -> None:
        super().__init__(f"External sources are not supported: '{redact(url)}'", reason)


class SourceInvalid(SourceError):
    """The URL cannot be used as written, or the source answered nonsense (400)."""

    def __init__(self, url: str, reason: str = "") -> None:
        if not url:
            super().__init__("External source should not be empty", reason)
        else:
            super().__init__(f"Invalid location {redact(url)}", reason)


class SourceNotFound(SourceError):
    """The source answered 404 or 410 (404)."""

    def __init__(self, url: str) -> None:
        super().__init__(
            "HTTP datastore could not find image at URI.", f"{redact(url)} was not found"
        )


class SourceUnavailable(SourceError):
    """Timeouts, refused connections, broken transfers, 5xx answers (503)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"External source {redact(url)} is unavailable: {reason}", reason)


def redact(url: str) -> str:
    """Return `url` with any user:password replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or "@" not in parts.netloc:
        # Not parseable as a URL with userinfo; still never echo what looks like one.
        return re.sub(r"//[^/@]*@", "//***@", url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def address_allowed(address: IPAddress, policy: SourcePolicy) -> bool:
    """Whether the server may connect to `address` under `policy`."""
    candidates = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    for candidate in candidates:
        if any(candidate in network for network in policy.allowed_networks):
            return True
    return _is_public(address)


def _is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        # Forms that carry an IPv4 destination are judged by that destination.
        if address.ipv4_mapped is not None:
            return _is_public(address.ipv4_mapped)
        if address in _NAT64:
            return _is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None:
            return _is_public(address.sixtofour)
        if address.is_site_local:
            return False
    if (
        address.is_multicast
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_unspecified
    ):
        return False
    if any(address in network for network in _FORBIDDEN):
        return False
    return address.is_global


@dataclass(frozen=True)
class _Target:
    """A checked URL, split into what the request needs."""

    url: str
    scheme: str
    host: str  # IDNA-encoded name or IP literal without brackets
    port: int
    target: str  # path and query, percent-encoded ASCII
    authorization: str | None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def request(self, method: str, policy: SourcePolicy) -> httpcore.Request:
        headers = [
            ("Host", self.host_header),
            ("Accept-Encoding", "identity"),
            ("User-Agent", "osimage"),
        ]
        if self.authorization is not None:
            headers.append(("Authorization", self.authorization))
        url = httpcore.URL(
            scheme=self.scheme.encode(),
            host=self.host.encode(),
            port=self.port,
            target=self.target.encode(),
        )
        timeouts = {
            "connect": policy.connect_timeout,
            "read": policy.read_timeout,
            "write": policy.read_timeout,
            "pool": policy.connect_timeout,
        }
        return httpcore.Request(method, url, headers=headers, extensions={"timeout": timeouts})


def check_url(url: str, policy: SourcePolicy) -> None:
    """Refuse a URL that can never be fetched: bad scheme, no host, forbidden IP literal.

    Does no I/O: names are resolved and checked again when connecting. Raises
    SourceInvalid (empty, malformed) or SourceNotAllowed.
    """
    _parse(url, policy)


def _parse(url: str, policy: SourcePolicy) -> _Target:
    if not url.strip():
        raise SourceInvalid("")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise SourceInvalid(url, "the URL contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SourceInvalid(url, f"the URL cannot be parsed: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise SourceNotAllowed(url, "only http and https sources are supported")
    host = parts.hostname
    if not host:
        raise SourceInvalid(url, "the URL names no host")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise SourceInvalid(url, "the host name is not valid") from None
    literal = _literal_address(host)
    if literal is not None and not address_allowed(literal, policy):
        raise SourceNotAllowed(url, f"the address {literal} is not allowed")
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    elif port == 0:
        raise SourceInvalid(url, "port 0 is not a valid port")
    target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        target += "?" + quote(parts.query, safe="/?%:@!$&'()*+,;=-._~")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return _Target(url, parts.scheme, host, port, target, authorization)


def _literal_address(host: str) -> IPAddress | None:
    """The address a host names without a lookup: IP literals, inet_aton forms, localhost."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _INET_ATON_FORM.fullmatch(host):
        # `127.1`, `0x7f.1`, `2130706433`: the resolver reads these as IPv4 addresses.
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    name = host.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return _LOOPBACK_NAME  # RFC 6761: always loopback
    return None


class _AddressRefused(Exception):
    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.address = address


class _ResolveFailed(Exception):
    pass


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Resolve names ourselves, refuse unless every address is allowed, connect by address."""

    def __init__(self, policy: SourcePolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise _ResolveFailed(f"resolving {host} timed out") from None
        except OSError as exc:
            raise _ResolveFailed(f"cannot resolve {host}: {exc.strerror or exc}") from None
        addresses: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
            if not address_allowed(address, self._policy):
                raise _AddressRefused(str(address))
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise _ResolveFailed(f"{host} has no address")
        failure: Exception | None = None
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
                continue
            peer = stream.get_extra_info("server_addr")
            peer_address = ipaddress.ip_address(str(peer[0]).partition("%")[0])
            if not address_allowed(peer_address, self._policy):
                await stream.aclose()
                raise _AddressRefused(str(peer_address))
            return stream
        assert failure is not None
        raise failure

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class Source:
    """An open source response; `size` is its Content-Length, None when not declared."""

    def __init__(self, url: str, response: httpcore.Response) -> None:
        self._url = url  # may carry credentials: only ever shown redacted
        self.size = _content_length(url, response)
        self._response = response

    async def chunks(self) -> AsyncIterator[bytes]:
        """Stream the body in chunks of at most CHUNK_SIZE; SourceUnavailable if it breaks."""
        try:
            async for piece in self._response.aiter_stream():
                for start in range(0, len(piece), CHUNK_SIZE):
                    yield piece[start : start + CHUNK_SIZE]
        except httpcore.TimeoutException:
            raise SourceUnavailable(self._url, "reading the data timed out") from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise SourceUnavailable(self._url, f"the transfer broke: {exc}") from None


MAX_SIZE: Final = 2**63 - 1  # what the size column holds


def _content_length(url: str, response: httpcore.Response) -> int | None:
    """The declared size; SourceInvalid (400) for one no image size column can hold."""
    for name, value in response.headers:
        text = value.strip()
        if name.lower() == b"content-length" and text.isdigit() and text.isascii():
            size = int(text)
            if size > MAX_SIZE:
                raise SourceError(
                    f"External source {redact(url)} declares a Content-Length larger than an "
                    f"image may be ({MAX_SIZE} bytes): {text[:40].decode()}"
                )
            return size
    return None


def _location(response: httpcore.Response) -> str | None:
    for name, value in response.headers:
        if name.lower() == b"location":
            return value.decode("latin-1").strip()
    return None


async def _fetch(
    pool: httpcore.AsyncConnectionPool, method: str, url: str, policy: SourcePolicy
) -> tuple[str, httpcore.Response]:
    """Send `method` to `url`, following redirects; return the final URL and open response.

    The caller closes the response. Every error is a SourceError.
    """
    target = _parse(url, policy)
    for _ in range(policy.max_redirects + 1):
        response = await _send(pool, target, method, policy)
        location = _location(response) if response.status in _REDIRECTS else None
        if location is None:
            return target.url, response
        await response.aclose()
        if response.status == 303 and method != "HEAD":
            method = "GET"
        nxt = _parse(urljoin(target.url, location), policy)
        if nxt.authorization is None and (nxt.scheme, nxt.host, nxt.port) == (
            target.scheme,
            target.host,
            target.port,
        ):
            # Same origin keeps the credentials; another origin never receives them.
            nxt = _Target(nxt.url, nxt.scheme, nxt.host, nxt.port, nxt.target, target.authorization)
        target = nxt
    raise SourceInvalid(url, f"more than {policy.max_redirects} redirects")


async def _send(
    pool: httpcore.AsyncConnectionPool, target: _Target, method: str, policy: SourcePolicy
) -> httpcore.Response:
    try:
        return await pool.handle_async_request(target.request(method, policy))
    except _AddressRefused as exc:
        raise SourceNotAllowed(target.url, f"the address {exc.address} is not allowed") from None
    except _ResolveFailed as exc:
        raise SourceUnavailable(target.url, str(exc)) from None
    except httpcore.TimeoutException:
        raise SourceUnavailable(target.url, "the source did not answer in time") from None
    except httpcore.RemoteProtocolError as exc:
        if "content-length" in str(exc).lower():  # e.g. more digits than h11 reads
            raise SourceError(
                f"External source {redact(target.url)} declares a Content-Length larger "
                f"than an image may be ({MAX_SIZE} bytes) or unreadable: {exc}"
            ) from None
        raise SourceUnavailable(target.url, f"cannot talk to the source: {exc}") from None
    except (httpcore.NetworkError, httpcore.ProtocolError, ssl.SSLError) as exc:
        raise SourceUnavailable(target.url, f"cannot talk to the source: {exc}") from None
    except httpcore.UnsupportedProtocol:
        raise SourceNotAllowed(target.url, "only http and https sources are supported") from None


def _raise_for_status(url: str, status: int) -> None:
    if 200 <= status < 300:
        return
    if status in _GONE:
        raise SourceNotFound(url)
    if status >= 500:
        raise SourceUnavailable(url, f"the source answered {status}")
    raise SourceInvalid(url, f"the source answered {status}")


def _pool(policy: SourcePolicy) -> httpcore.AsyncConnectionPool:
    # No proxy: the environment's proxy settings would hide the real destination.
    return httpcore.AsyncConnectionPool(
        ssl_context=policy.ssl_context,
        max_connections=1,
        network_backend=_CheckedBackend(policy),
    )


async def probe_size(url: str, policy: SourcePolicy) -> int | None:
    """Return the size the source declares, or None if it declares none.

    Asks with HEAD, and with GET (reading headers only) if HEAD gives no usable answer.
    Raises SourceNotFound on 404/410, and the other SourceErrors as `open_source`.
    """
    async with _pool(policy) as pool:
        final, response = await _fetch(pool, "HEAD", url, policy)
        await response.aclose()
        if response.status in _GONE:
            raise SourceNotFound(final)
        if 200 <= response.status < 300:
            size = _content_length(final, response)
            if size is not None:
                return size
    # HEAD refused (405, a URL signed for GET only, ...) or silent about size: ask GET.
    async with open_source(url, policy) as source:
        return source.size


@asynccontextmanager
async def open_source(url: str, policy: SourcePolicy) -> AsyncIterator[Source]:
    """Open a GET of `url` for streaming; the connection closes when the block exits.

    Raises SourceNotAllowed, SourceInvalid, SourceNotFound or SourceUnavailable before
    yielding; `Source.chunks()` raises SourceUnavailable if the transfer breaks.
    """
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(_pool(policy))
        final, response = await _fetch(pool, "GET", url, policy)
        stack.push_async_callback(response.aclose)
        _raise_for_status(final, response.status)
        yield Source(final, response)
