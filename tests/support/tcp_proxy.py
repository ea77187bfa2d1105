"""A loopback TCP forwarder in front of a real service (Keystone, Swift, S3) for tests.

It fakes nothing: bytes pass unchanged. `count(marker)` says how often a request
containing `marker` (e.g. ``GET /bucket/<id>``) went through, so a test sees how many
times the service was really asked. `hold(after)` makes every reply stop after `after`
bytes until `release()`, as a slow service would; `cut()` stops listening and drops the
open connections, as a stopped one would; `stall()` accepts connections but never
answers, as a hung one would; `restore()` forwards again, on the same port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable

from tests.support.server import free_port

_TAIL = 256  # bytes of one read kept to find a marker split across reads (the longest)


class TcpProxy:
    """Forward 127.0.0.1:`port` to `target` once started; `url` is the proxied endpoint.

    `markers` (and those given to `watch`) are counted in the requests sent upstream.
    """

    def __init__(self, target_host: str, target_port: int, markers: Iterable[bytes] = ()) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.markers: set[bytes] = set(markers)
        self.seen: Counter[bytes] = Counter()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stalled = False
        self._held_after: int | None = None
        self._released = threading.Event()
        self._released.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self.restore()
        return self

    def watch(self, marker: bytes) -> None:
        """Count the requests that contain `marker` from now on."""
        with self._lock:
            self.markers.add(marker)

    def count(self, marker: bytes) -> int:
        with self._lock:
            return self.seen[marker]

    def hold(self, after: int) -> None:
        """Replies stop after `after` bytes (each connection) until `release()`."""
        self._released.clear()
        self._held_after = after

    def release(self) -> None:
        self._held_after = None
        self._released.set()

    def restore(self) -> None:
        """Forward again (listening on the same port)."""
        if self._stalled:
            self._stalled = False
            self._drop_open()
        if self._listener is not None:
            return
        listener = socket.create_server(("127.0.0.1", self.port), backlog=64)
        self._listener = listener
        self._spawn(self._accept, listener)

    def cut(self) -> None:
        """Refuse new connections and drop open ones, like a service that stopped."""
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)
        self._drop_open()

    def stall(self) -> None:
        """Drop open connections; accept new ones but never answer them."""
        self._stalled = True
        self._drop_open()

    def close(self) -> None:
        self.release()
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5)

    def _drop_open(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            if self._stalled:
                with self._lock:
                    self._sockets.add(client)  # held open, never read: closed by cut
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    _close(client)
                    _close(upstream)
                    return
                self._sockets.update({client, upstream})
            self._spawn(self._outbound, client, upstream)
            self._spawn(self._inbound, upstream, client)

    def _outbound(self, source: socket.socket, sink: socket.socket) -> None:
        tail = b""
        try:
            while data := source.recv(65536):
                window = tail + data
                with self._lock:
                    for marker in self.markers:
                        # markers wholly inside `tail` were counted last time
                        self.seen[marker] += window.count(marker) - tail.count(marker)
                tail = data[-_TAIL:]
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)

    def _inbound(self, source: socket.socket, sink: socket.socket) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                held_after = self._held_after
                if held_after is not None and sent + len(data) > held_after:
                    head = max(held_after - sent, 0)
                    sink.sendall(data[:head])
                    sent += head
                    data = data[head:]
                    self._released.wait()
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
