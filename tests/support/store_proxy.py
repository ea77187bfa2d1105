"""A loopback TCP forwarder in front of Swift/S3 that counts requests and can hold replies.

It fakes nothing: bytes pass unchanged. `count(marker)` says how often a request
containing `marker` (e.g. ``GET /bucket/<id>``) went through, so a test sees how many
times the store was really read. `hold(after)` makes every reply stop after `after`
bytes until `release()`, as a slow store would, so a test can act while a download from
the store is still running.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter

from tests.support.server import free_port


class StoreProxy:
    """Forward 127.0.0.1:`port` to `target`; `url` is the proxied endpoint."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.markers: set[bytes] = set()
        self.seen: Counter[bytes] = Counter()
        self._lock = threading.Lock()
        self._held_after: int | None = None
        self._released = threading.Event()
        self._released.set()
        self._listener = socket.create_server(("127.0.0.1", self.port), backlog=64)
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def watch(self, marker: str) -> None:
        """Count the requests that contain `marker` from now on."""
        with self._lock:
            self.markers.add(marker.encode())

    def count(self, marker: str) -> int:
        with self._lock:
            return self.seen[marker.encode()]

    def hold(self, after: int) -> None:
        """Replies stop after `after` bytes (each connection) until `release()`."""
        self._released.clear()
        self._held_after = after

    def release(self) -> None:
        self._held_after = None
        self._released.set()

    def close(self) -> None:
        self.release()
        _close(self._listener)
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update({client, upstream})
            threading.Thread(target=self._outbound, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._inbound, args=(upstream, client), daemon=True).start()

    def _outbound(self, source: socket.socket, sink: socket.socket) -> None:
        tail = b""
        try:
            while data := source.recv(65536):
                window = tail + data
                with self._lock:
                    for marker in self.markers:
                        self.seen[marker] += window.count(marker) - tail.count(marker)
                tail = data[-256:]
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
