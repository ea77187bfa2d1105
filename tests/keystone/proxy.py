"""A loopback TCP forwarder in front of Keystone that a test can cut and restore.

It fakes only the network: bytes pass through unchanged. `cut()` stops listening (new
connections are refused) and drops the open ones, as a stopped Keystone would;
`stall()` accepts connections but never answers, as a hung one would; `restore()`
forwards again, on the same port. It also counts how often a request line
went through, so a test can see how many times Keystone was really asked.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter

from tests.support.server import free_port


class TcpProxy:
    """Forward 127.0.0.1:`port` to `target`; `url` is the proxied Keystone URL."""

    def __init__(self, target_host: str, target_port: int, markers: tuple[bytes, ...] = ()) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.markers = markers
        self.seen: Counter[bytes] = Counter()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._stalled = False

    def start(self) -> TcpProxy:
        self.restore()
        return self

    def restore(self) -> None:
        """Forward again (listening on the same port)."""
        if self._stalled:
            self._stalled = False
            self._drop_open()
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._spawn(self._accept, listener)

    def cut(self) -> None:
        """Refuse new connections and drop open ones, like a Keystone that stopped."""
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)
        self._drop_open()

    def stall(self) -> None:
        """Drop open connections; accept new ones but never answer them."""
        self._stalled = True
        self._drop_open()

    def _drop_open(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def close(self) -> None:
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5)

    def count(self, marker: bytes) -> int:
        with self._lock:
            return self.seen[marker]

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
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
            self._spawn(self._pump, client, upstream, True)
            self._spawn(self._pump, upstream, client, False)

    def _pump(self, source: socket.socket, sink: socket.socket, outbound: bool) -> None:
        tail = b""
        try:
            while data := source.recv(65536):
                if outbound and self.markers:
                    window = tail + data
                    with self._lock:
                        for marker in self.markers:
                            # markers wholly inside `tail` were counted last time
                            self.seen[marker] += window.count(marker) - tail.count(marker)
                    tail = data[-64:]
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
