"""External sources against real HTTP servers on loopback: sizes, streaming, refusals."""

from __future__ import annotations

import datetime
import hashlib
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from osimage.server.sources import (
    CHUNK_SIZE,
    SourceInvalid,
    SourceNotAllowed,
    SourceNotFound,
    SourcePolicy,
    SourceUnavailable,
    open_source,
    probe_size,
)

pytestmark = pytest.mark.anyio

DATA = bytes(range(256)) * 1200 + b"tail"  # 307204 bytes: several chunks, not a multiple
LOOPBACK = SourcePolicy.from_cidrs(["127.0.0.0/8"])
SECRET = "hunter2-secret"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class SourceServer:
    """A stdlib HTTP server in a thread; records every connection and request."""

    host: str
    httpd: ThreadingHTTPServer = field(init=False)
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]


def make_handler(server: SourceServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return None

        def do_HEAD(self) -> None:
            self.route(head=True)

        def do_GET(self) -> None:
            self.route(head=False)

        def reply(self, status: int, body: bytes = b"", **headers: str) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def route(self, *, head: bool) -> None:
            parts = urlsplit(self.path)
            server.requests.append(Seen(self.command, parts.path, dict(self.headers.items())))
            query = parse_qs(parts.query)
            path = parts.path
            if path == "/data":
                self.reply(200, DATA, Content_Type="application/octet-stream")
            elif path == "/missing":
                self.reply(404, b"no such thing")
            elif path == "/gone":
                self.reply(410)
            elif path == "/forbidden":
                self.reply(403)
            elif path == "/broken":
                self.reply(500, b"oops")
            elif path == "/no-head":
                self.reply(405) if head else self.reply(200, DATA)
            elif path == "/redirect-without-location":
                self.reply(302)
            elif path.startswith("/hops/"):
                left = int(path.removeprefix("/hops/"))
                target = "/data" if left == 0 else f"/hops/{left - 1}"
                self.reply(302, Location=target)
            elif path == "/to":
                self.reply(int(query.get("status", ["302"])[0]), Location=query["url"][0])
            elif path == "/chunked":
                self.chunked(head)
            elif path == "/short":
                self.send_response(200)
                self.send_header("Content-Length", str(len(DATA)))
                self.end_headers()
                if not head:
                    self.wfile.write(DATA[:1000])
                self.close_connection = True
            elif path == "/stall":
                server.release.wait(30)
                self.close_connection = True
            else:
                self.reply(200, b"ok")

        def chunked(self, head: bool) -> None:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if head:
                return
            for start in range(0, len(DATA), 50_000):
                piece = DATA[start : start + 50_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")

    return Handler


class CountingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    recorder: SourceServer

    def get_request(self) -> tuple[socket.socket, object]:
        accepted = super().get_request()
        self.recorder.connections += 1
        return accepted

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that stops reading (a size probe by GET) resets the connection: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def serve(host: str, tls: ssl.SSLContext | None = None) -> Iterator[SourceServer]:
    recorder = SourceServer(host)
    httpd = CountingHTTPServer((host, 0), make_handler(recorder))
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    httpd.recorder = recorder
    recorder.httpd = httpd
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        recorder.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture
def origin() -> Iterator[SourceServer]:
    yield from serve("127.0.0.1")


@pytest.fixture
def elsewhere() -> Iterator[SourceServer]:
    """A second server on another loopback address (127.0.0.2)."""
    yield from serve("127.0.0.2")


async def read_all(url: str, policy: SourcePolicy) -> tuple[int | None, list[int], bytes]:
    sizes: list[int] = []
    digest = hashlib.sha256()
    async with open_source(url, policy) as source:
        async for chunk in source.chunks():
            sizes.append(len(chunk))
            digest.update(chunk)
        return source.size, sizes, digest.digest()


async def test_probe_size_reads_content_length(origin):
    assert await probe_size(f"{origin.url}/data", LOOPBACK) == len(DATA)
    assert [(seen.method, seen.path) for seen in origin.requests] == [("HEAD", "/data")]


async def test_probe_size_falls_back_to_get_when_head_is_refused(origin):
    assert await probe_size(f"{origin.url}/no-head", LOOPBACK) == len(DATA)
    assert [seen.method for seen in origin.requests] == ["HEAD", "GET"]


async def test_probe_size_is_none_when_the_source_does_not_say(origin):
    assert await probe_size(f"{origin.url}/chunked", LOOPBACK) is None


async def test_streaming_delivers_every_byte_in_bounded_chunks(origin):
    size, sizes, digest = await read_all(f"{origin.url}/data", LOOPBACK)
    assert size == len(DATA)
    assert sum(sizes) == len(DATA)
    assert digest == hashlib.sha256(DATA).digest()
    assert len(sizes) > 1
    assert max(sizes) <= CHUNK_SIZE


async def test_streaming_a_chunked_body(origin):
    size, sizes, digest = await read_all(f"{origin.url}/chunked", LOOPBACK)
    assert size is None
    assert digest == hashlib.sha256(DATA).digest()
    assert max(sizes) <= CHUNK_SIZE


async def test_request_headers(origin):
    async with open_source(
        f"http://someone:{SECRET}@127.0.0.1:{origin.port}/echo", LOOPBACK
    ) as source:
        async for _ in source.chunks():
            pass
    (seen,) = origin.requests
    assert seen.headers["Host"] == f"127.0.0.1:{origin.port}"
    assert seen.headers["Accept-Encoding"] == "identity"
    assert seen.headers["Authorization"].startswith("Basic ")


async def test_a_name_is_connected_by_checked_address_but_keeps_its_host(origin):
    port = origin.port
    policy = SourcePolicy.from_cidrs(["127.0.0.0/8", "::1"])
    assert await probe_size(f"http://localhost:{port}/data", policy) == len(DATA)
    assert origin.requests[0].headers["Host"] == f"localhost:{port}"


@pytest.mark.parametrize("path", ["/missing", "/gone"])
async def test_missing_source_is_not_found(origin, path):
    with pytest.raises(SourceNotFound) as raised:
        await probe_size(f"{origin.url}{path}", LOOPBACK)
    assert raised.value.message == "HTTP datastore could not find image at URI."
    with pytest.raises(SourceNotFound):
        async with open_source(f"{origin.url}{path}", LOOPBACK):
            pytest.fail("a missing source must not open")


async def test_server_error_is_unavailable(origin):
    with pytest.raises(SourceUnavailable, match="500"):
        await probe_size(f"{origin.url}/broken", LOOPBACK)


async def test_client_error_is_invalid(origin):
    with pytest.raises(SourceInvalid) as raised:
        await probe_size(f"{origin.url}/forbidden", LOOPBACK)
    assert raised.value.reason == "the source answered 403"


async def test_refused_connection_is_unavailable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(SourceUnavailable):
            await probe_size(f"http://127.0.0.1:{port}/data", LOOPBACK)


async def test_silent_source_times_out(origin):
    policy = SourcePolicy(allowed_networks=LOOPBACK.allowed_networks, read_timeout=0.3)
    with pytest.raises(SourceUnavailable, match="in time"):
        await probe_size(f"{origin.url}/stall", policy)


async def test_truncated_body_breaks_the_stream(origin):
    received: list[int] = []

    async def consume() -> None:
        async with open_source(f"{origin.url}/short", LOOPBACK) as source:
            assert source.size == len(DATA)
            async for chunk in source.chunks():
                received.append(len(chunk))

    with pytest.raises(SourceUnavailable):
        await consume()
    assert 0 < sum(received) < len(DATA)


async def test_without_allowance_nothing_reaches_the_server(origin):
    for url in (f"{origin.url}/data", f"http://localhost:{origin.port}/data"):
        with pytest.raises(SourceNotAllowed):
            await probe_size(url, SourcePolicy())
        with pytest.raises(SourceNotAllowed):
            async with open_source(url, SourcePolicy()):
                pytest.fail("a refused source must not open")
    # A permitted request afterwards: any earlier connection would be accepted before it.
    assert await probe_size(f"{origin.url}/data", LOOPBACK) == len(DATA)
    assert origin.connections == 1
    assert origin.paths() == ["/data"]


async def test_redirects_are_followed(origin):
    size, _, digest = await read_all(f"{origin.url}/hops/4", LOOPBACK)
    assert (size, digest) == (len(DATA), hashlib.sha256(DATA).digest())
    assert await probe_size(f"{origin.url}/hops/4", LOOPBACK) == len(DATA)


async def test_too_many_redirects(origin):
    with pytest.raises(SourceInvalid) as raised:
        await probe_size(f"{origin.url}/hops/5", LOOPBACK)
    assert raised.value.reason == "more than 5 redirects"
    assert "/data" not in origin.paths()


async def test_redirect_without_location_is_invalid(origin):
    with pytest.raises(SourceInvalid) as raised:
        await probe_size(f"{origin.url}/redirect-without-location", LOOPBACK)
    assert raised.value.reason == "the source answered 302"


async def test_redirect_to_a_disallowed_network_is_refused(origin, elsewhere):
    only_origin = SourcePolicy.from_cidrs(["127.0.0.1/32"])
    target = f"{elsewhere.url}/data"
    for status in (301, 302, 303, 307, 308):
        with pytest.raises(SourceNotAllowed) as raised:
            async with open_source(f"{origin.url}/to?status={status}&url={target}", only_origin):
                pytest.fail("the redirect must not be followed")
        assert "127.0.0.2" in raised.value.message
    with pytest.raises(SourceNotAllowed):
        await probe_size(f"{origin.url}/to?url={target}", only_origin)
    # Allowing the second address shows the redirect itself works, and is the only contact.
    both = SourcePolicy.from_cidrs(["127.0.0.1/32", "127.0.0.2/32"])
    assert await probe_size(f"{origin.url}/to?url={target}", both) == len(DATA)
    assert elsewhere.connections == 1
    assert elsewhere.paths() == ["/data"]


@pytest.mark.parametrize(
    "target", ["file:///etc/passwd", "http://[::1]:1/x", "http://169.254.169.254/latest/"]
)
async def test_redirect_to_a_forbidden_url_is_refused(origin, target):
    with pytest.raises(SourceNotAllowed):
        await probe_size(f"{origin.url}/to?url={target}", LOOPBACK)


async def test_credentials_stay_with_their_origin(origin, elsewhere):
    both = SourcePolicy.from_cidrs(["127.0.0.1/32", "127.0.0.2/32"])
    port = origin.port
    start = f"http://u:{SECRET}@127.0.0.1:{port}/to?url=/to%3Furl%3D{elsewhere.url}/data"
    size, _, _ = await read_all(start, both)
    assert size == len(DATA)
    assert [seen.headers.get("Authorization") is not None for seen in origin.requests] == [
        True,
        True,
    ]
    assert "Authorization" not in elsewhere.requests[0].headers


async def test_errors_never_show_credentials(origin):
    port = origin.port
    for path, error in (("/missing", SourceNotFound), ("/broken", SourceUnavailable)):
        with pytest.raises(error) as raised:
            await probe_size(f"http://u:{SECRET}@127.0.0.1:{port}{path}", LOOPBACK)
        for text in (raised.value.message, raised.value.reason, repr(raised.value)):
            assert SECRET not in text
    with pytest.raises(SourceNotAllowed) as refused:
        await probe_size(f"http://u:{SECRET}@localhost:{port}/data", SourcePolicy())
    assert SECRET not in refused.value.message


@dataclass
class Certificate:
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def localhost_cert(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate naming only DNS:localhost (no IP address)."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    paths = Certificate(directory / "cert.pem", directory / "key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture
def tls_origin(localhost_cert: Certificate) -> Iterator[SourceServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(localhost_cert.cert, localhost_cert.key)
    yield from serve("127.0.0.1", tls=context)


async def test_https_verifies_the_name_while_connecting_to_the_checked_address(
    tls_origin, localhost_cert
):
    trusting = SourcePolicy(
        allowed_networks=LOOPBACK.allowed_networks,
        ssl_context=ssl.create_default_context(cafile=str(localhost_cert.cert)),
    )
    url = f"https://localhost:{tls_origin.port}/data"
    size, _, digest = await read_all(url, trusting)
    assert (size, digest) == (len(DATA), hashlib.sha256(DATA).digest())
    # SNI and certificate checks used the name: the certificate does not cover 127.0.0.1.
    assert tls_origin.requests[0].headers["Host"] == f"localhost:{tls_origin.port}"
    with pytest.raises(SourceUnavailable):
        await probe_size(f"https://127.0.0.1:{tls_origin.port}/data", trusting)


async def test_https_refuses_an_untrusted_certificate(tls_origin):
    with pytest.raises(SourceUnavailable) as raised:
        await probe_size(f"https://localhost:{tls_origin.port}/data", LOOPBACK)
    assert "CERTIFICATE_VERIFY_FAILED" in raised.value.reason
    assert tls_origin.requests == []
