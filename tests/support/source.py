"""A scriptable loopback HTTP image source for copy_from and location tests: sources
that lie about their size, send less than they declare, or trickle forever."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Script:
    """What one path answers: HEAD declares `head_length`; GET declares `get_length` and
    sends `body`, then, with `trickle`, `trickle` bytes every `interval` s until the
    client goes away. A GET waits `delay` seconds before it answers at all."""

    head_length: str
    get_length: str
    body: bytes = b""
    trickle: int = 0
    interval: float = 0.1
    delay: float = 0.0


@dataclass
class Source:
    port: int
    scripts: dict[str, Script] = field(default_factory=dict)
    active: int = 0  # GETs being answered now
    served: int = 0  # bytes sent by all GETs
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(source: Source) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _script(self) -> Script | None:
            script = source.scripts.get(self.path)
            if script is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
            return script

        def do_HEAD(self) -> None:
            script = self._script()
            if script is not None:
                self.send_response(200)
                self.send_header("Content-Length", script.head_length)
                self.end_headers()

        def do_GET(self) -> None:
            script = self._script()
            if script is None:
                return
            with source.lock:
                source.active += 1
            try:
                time.sleep(script.delay)
                self.send_response(200)
                self.send_header("Content-Length", script.get_length)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(script.body)
                source.served += len(script.body)
                while script.trickle:
                    time.sleep(script.interval)
                    self.wfile.write(b"t" * script.trickle)
                    self.wfile.flush()
                    source.served += script.trickle
            except OSError:
                pass  # the client went away
            finally:
                self.close_connection = True
                with source.lock:
                    source.active -= 1

    return Handler


@contextmanager
def serve_source() -> Iterator[Source]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Source(0)))
    source = Source(httpd.server_address[1])
    httpd.RequestHandlerClass = _handler(source)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield source
    finally:
        httpd.shutdown()
        httpd.server_close()
