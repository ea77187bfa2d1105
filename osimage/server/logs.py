"""The server's log: one line per request (the access line) and what goes wrong.

`configure` sets up logging for `osimage serve` (stderr, `LOG_FORMAT`) and points
`access` there. An access line is then formatted here, in the log's shape
(``2026-12-03 12:00:00,123 INFO osimage.access: req-... HEAD /v1/images/... 200 0.4ms``),
and appended to stderr's buffer, which is flushed `FLUSH_DELAY` (50 ms) after the first
line it holds, or when full (as nginx buffers its access log): under load one write
carries many lines. Through `logging` (a record, its formatting, a handler lock and a
write each) the line cost a fifth of a HEAD's CPU (issue 14). The lines keep their
order with other log lines (both go through the same buffer, which logging flushes at
each of its own), and they follow the ``osimage.access`` logger's level. Without
`configure` (the app run in process, or embedded), the line goes through `logging` as
any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from typing import BinaryIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS = "osimage.access"
# Seconds an access line may wait in stderr's buffer for others to share its write
FLUSH_DELAY = 0.05
_ENCODING = "utf-8"


def configure(level: str) -> None:
    """Log at `level` to stderr in `LOG_FORMAT`; access lines straight to its buffer."""
    # Nothing reads a record's caller (file, line) or process: not looking them up saves
    # a third of the cost of a record (the logging HOWTO's "Optimization"). The thread
    # name stays: the notifier's filter reads it.
    logging._srcfile = None
    logging.logProcesses = logging.logMultiprocessing = False
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr, force=True)
    access.sink = sys.stderr.buffer


class AccessLog:
    """Writes the access lines (see the module's docstring)."""

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS)
        self.sink: BinaryIO | None = None
        self._second = -1
        self._stamp = ""
        self._flush_due = False

    def write(self, request_id: str, method: str, path: str, status: int, ms: float) -> None:
        """Log one request: its id, method, path, status (0: none sent) and duration."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        shown = status or "-"
        sink = self.sink
        if sink is None:
            self.logger.info("%s %s %s %s %.1fms", request_id, method, path, shown, ms)
            return
        now = time.time()
        second = int(now)
        if second != self._second:  # what logging's default asctime shows, once a second
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        millis = int((now - second) * 1000)
        message = f"{request_id} {method} {path} {shown} {ms:.1f}ms"
        sink.write(
            f"{self._stamp},{millis:03d} INFO {ACCESS}: {message}\n".encode(
                _ENCODING, "backslashreplace"
            )
        )
        if not self._flush_due:
            self._flush_due = True
            try:
                asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush)
            except RuntimeError:  # no loop in this thread: now
                self._flush()

    def _flush(self) -> None:
        self._flush_due = False
        if self.sink is not None:
            with contextlib.suppress(OSError, ValueError):  # stderr gone: carry on, as logging
                self.sink.flush()


access = AccessLog()
