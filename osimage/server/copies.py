"""Copy-from transfers in progress: how many run, how fast they must go, how they stop.

A process runs at most `copy_max` copies, `copy_max_per_project` of one project; a slot
is taken before the source is even probed, so a flood of copies holds no sockets or
database connections beyond the caps. A copy is cancelled when its image is deleted: at
once in the process running it, and within `STATUS_CHECK_INTERVAL` seconds of data when
another process deleted it (the copier reads the image's status).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import anyio
from anyio import CancelScope

from osimage.server.errors import ServiceUnavailable, TooManyRequests

RATE_WINDOW: Final = 30.0  # seconds over which a copy's transfer rate is measured
STATUS_CHECK_INTERVAL: Final = 5.0  # seconds of transfer between reads of the status


class CopyTooSlow(Exception):
    """The source sent less than `copy_min_rate` bytes per second over a window."""


class CopyCancelled(Exception):
    """The image stopped being `saving` (deleted) while it was being copied."""


class Slot:
    """One running copy's place under the caps; `release` is idempotent."""

    def __init__(self, copies: Copies, project: str | None) -> None:
        self._copies, self._project, self._held = copies, project, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._copies._release(self._project)


class Copies:
    """The copies this process runs, under a global and a per-project cap."""

    def __init__(self, limit: int, per_project: int) -> None:
        self.limit, self.per_project = limit, per_project
        self._running = 0
        self._by_project: Counter[str | None] = Counter()
        self._scopes: dict[str, CancelScope] = {}

    def acquire(self, project: str | None) -> Slot:
        """A slot for a copy of `project`; 429 (the project's cap) or 503 (the global one)."""
        if self._by_project[project] >= self.per_project:
            raise TooManyRequests(
                f"This project already runs {self.per_project} image copies "
                "(copy_max_per_project); try again when one has finished.",
                headers={"retry-after": "30"},
            )
        if self._running >= self.limit:
            raise ServiceUnavailable(
                f"The server already runs {self.limit} image copies (copy_max); try again later.",
                headers={"retry-after": "30"},
            )
        self._running += 1
        self._by_project[project] += 1
        return Slot(self, project)

    def _release(self, project: str | None) -> None:
        self._running -= 1
        self._by_project[project] -= 1
        if not self._by_project[project]:
            del self._by_project[project]

    @property
    def running(self) -> int:
        return self._running

    def watch(self, image_id: str, scope: CancelScope) -> None:
        """Let `cancel(image_id)` stop the copy running under `scope`."""
        self._scopes[image_id] = scope

    def forget(self, image_id: str) -> None:
        self._scopes.pop(image_id, None)

    def cancel(self, image_id: str) -> bool:
        """Cancel this process's copy into `image_id`, if it runs one."""
        scope = self._scopes.get(image_id)
        if scope is None:
            return False
        scope.cancel()
        return True


async def paced(
    chunks: AsyncIterator[bytes],
    *,
    min_rate: int,
    still_wanted: Callable[[], Awaitable[bool]],
    window: float = RATE_WINDOW,
    check_every: float = STATUS_CHECK_INTERVAL,
) -> AsyncIterator[bytes]:
    """Pass `chunks` on; raise CopyTooSlow when a `window` brings fewer than
    `min_rate * window` bytes (0: no minimum), CopyCancelled when `still_wanted()` (asked
    every `check_every` seconds) says no."""
    need = min_rate * window
    source = aiter(chunks)
    started = anyio.current_time()
    window_end, got, checked = started + window, 0, started
    while True:
        deadline = None
        if need:
            # if this window already has its bytes, a silent source fails the next one
            deadline = window_end if got < need else window_end + window
        chunk: bytes | None = None
        with anyio.move_on_after(
            None if deadline is None else max(deadline - anyio.current_time(), 0)
        ):
            chunk = await anext(source, None)
            if chunk is None:
                return
        now = anyio.current_time()
        if chunk is None:
            raise CopyTooSlow(f"the source sent less than {min_rate} bytes/s for {window:g} s")
        while now >= window_end:
            if need and got < need:
                raise CopyTooSlow(f"the source sent less than {min_rate} bytes/s for {window:g} s")
            window_end, got = window_end + window, 0
        got += len(chunk)
        if now - checked >= check_every:
            checked = now
            if not await still_wanted():
                raise CopyCancelled()
        yield chunk
