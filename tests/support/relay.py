"""A TCP relay on loopback that stands between a client and a real server and misbehaves.

It plays the network, not osimage: it can alter bytes on the way to the server (a
corrupting middlebox), and hold or cut the server's answer part-way (a link that stalls
or dies), so that clients meet failures a well-behaved server never produces itself.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from dataclasses import dataclass, field


@dataclass
class Relay:
    """Listens on a free loopback port and forwards each connection to `target_port`.

    `replace` (old, new; same length) is applied to what clients send. With `hold_after`,
    only that many bytes of each answer pass until `release()`; `cut()` resets every
    connection instead.
    """

    target_port: int
    replace: tuple[bytes, bytes] | None = None
    hold_after: int | None = None
    forwarded_down: int = 0  # bytes of answers passed to clients so far
    _listener: socket.socket = field(init=False)
    _released: threading.Event = field(default_factory=threading.Event)
    _cut: threading.Event = field(default_factory=threading.Event)
    _closing: threading.Event = field(default_factory=threading.Event)
    _sockets: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.replace is not None:
            assert len(self.replace[0]) == len(self.replace[1]) > 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def release(self) -> None:
        self._released.set()

    def cut(self) -> None:
        """Reset every connection (RST), as a dead link or a crashed middlebox would."""
        self._cut.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
        self._released.set()  # wake the held answers: they see the cut and stop

    def close(self) -> None:
        self._closing.set()
        self._released.set()
        self._listener.close()
        self.cut()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    def _up(self, source: socket.socket, sink: socket.socket) -> None:
        """Client to server; a match split across reads is still found (the tail waits)."""
        keep = len(self.replace[0]) - 1 if self.replace else 0
        pending = b""
        try:
            while True:
                ready, _, _ = select.select([source], [], [], 0.05)
                if not ready:  # quiet: nothing more is coming for now, flush the tail
                    if pending:
                        sink.sendall(pending)
                        pending = b""
                    continue
                chunk = source.recv(65536)
                if not chunk:
                    break
                pending += chunk
                if self.replace:
                    pending = pending.replace(*self.replace)
                if len(pending) > keep:
                    cut_at = len(pending) - keep
                    sink.sendall(pending[:cut_at])
                    pending = pending[cut_at:]
            if pending:
                sink.sendall(pending)
            sink.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            pass

    def _down(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if self.hold_after is not None and not self._released.is_set():
                    room = max(0, self.hold_after - self.forwarded_down)
                    if len(chunk) > room:
                        sink.sendall(chunk[:room])
                        self.forwarded_down += room
                        chunk = chunk[room:]
                        self._released.wait()
                        if self._cut.is_set():
                            return
                sink.sendall(chunk)
                self.forwarded_down += len(chunk)
            sink.shutdown(socket.SHUT_WR)
        except (OSError, ValueError):
            pass
