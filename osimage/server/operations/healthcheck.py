"""`GET /healthcheck`, in the shape of oslo.middleware's healthcheck.

200 ``OK`` while the node serves; 503 when the operator's disable file exists (to drain the
node from a load balancer) or when the database or the store cannot be reached. The probes
(``SELECT 1``; a look at the store's root, or the store's own `probe()`) read no image
data, and their result is reused for ``--healthcheck-cache-seconds``, so a load balancer
polling every second costs one probe per interval, not per request. Admins asking for
JSON get each check's reason and timing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from osimage.server.settings import HealthOptions
    from osimage.server.stores.base import BlobStore


@dataclass(frozen=True)
class Reason:
    """One check's verdict, as oslo.middleware's detailed answer lists it."""

    check: str
    healthy: bool
    reason: str
    seconds: float = 0.0

    def document(self) -> dict[str, Any]:
        return {
            "class": self.check,
            "reason": self.reason,
            "details": {"healthy": self.healthy, "seconds": round(self.seconds, 6)},
        }


class HealthCheck:
    """The checks of one app: disable file (every time), database and store (cached)."""

    def __init__(
        self,
        engine: AsyncEngine,
        store: BlobStore,
        *,
        disable_file: Path | None,
        cache_seconds: float,
        timeout: float,
    ) -> None:
        self.engine = engine
        self.store = store
        self.disable_file = disable_file
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self._probed: list[Reason] = []
        self._probed_at = -1e9
        self._lock = anyio.Lock()

    @classmethod
    def from_options(
        cls, engine: AsyncEngine, store: BlobStore, options: HealthOptions
    ) -> HealthCheck:
        """The checks per the settings' healthcheck group."""
        return cls(
            engine,
            store,
            disable_file=options.disable_file,
            cache_seconds=options.cache_seconds,
            timeout=options.timeout,
        )

    async def reasons(self) -> list[Reason]:
        """Every check's verdict: the disable file first, then the (cached) probes."""
        if self.disable_file is not None and self.disable_file.exists():
            return [Reason("DisableByFile", False, "DISABLED BY FILE")]
        return await self._probes()

    async def _probes(self) -> list[Reason]:
        if time.monotonic() - self._probed_at < self.cache_seconds:
            return self._probed
        async with self._lock:  # concurrent checks share one probe
            if time.monotonic() - self._probed_at >= self.cache_seconds:
                self._probed = [await self._database(), await self._store()]
                self._probed_at = time.monotonic()
        return self._probed

    async def _database(self) -> Reason:
        from sqlalchemy import text

        started = time.perf_counter()
        try:
            with anyio.fail_after(self.timeout):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as error:
            why = "timed out" if isinstance(error, TimeoutError) else type(error).__name__
            return Reason("Database", False, f"DATABASE UNREACHABLE: {why}", _since(started))
        return Reason("Database", True, "OK", _since(started))

    async def _store(self) -> Reason:
        started = time.perf_counter()
        try:
            with anyio.fail_after(self.timeout):
                healthy = await probe_store(self.store)
        except Exception as error:
            why = "timed out" if isinstance(error, TimeoutError) else type(error).__name__
            return Reason("Store", False, f"STORE UNREACHABLE: {why}", _since(started))
        if not healthy:
            return Reason("Store", False, "STORE UNREACHABLE", _since(started))
        return Reason("Store", True, "OK", _since(started))


async def probe_store(store: BlobStore) -> bool:
    """Whether `store` answers: its own `probe()` if it has one (e.g. a HEAD on a Swift
    container), else whether its local root is a writable directory."""
    probe = getattr(store, "probe", None)
    if probe is not None:
        return bool(await probe())
    root = getattr(store, "root", None)
    if root is None:
        return True  # nothing cheap to ask: requests will tell
    path = os.fspath(root)
    return await anyio.to_thread.run_sync(_writable_dir, path)


def _writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def _since(started: float) -> float:
    return time.perf_counter() - started


def body(reasons: list[Reason], *, json_wanted: bool, detailed: bool) -> tuple[str, bytes]:
    """(content type, body) of the answer: text ``OK`` or the failed reasons; JSON on request,
    with each check's details only when `detailed`."""
    import json

    failed = [reason for reason in reasons if not reason.healthy]
    if json_wanted:
        document: dict[str, Any]
        if detailed:
            document = {"detailed": True, "reasons": [r.document() for r in reasons]}
        else:
            document = {"detailed": False, "reasons": [r.reason for r in failed] or ["OK"]}
        return "application/json", json.dumps(document).encode()
    text = "\n".join(reason.reason for reason in failed) or "OK"
    return "text/plain; charset=UTF-8", text.encode()
