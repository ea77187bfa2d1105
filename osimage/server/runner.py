"""Run the app under uvicorn: one process, or N workers built by an app factory."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile

import anyio
import uvicorn

from osimage.server import logs
from osimage.server.app import create_app, prepare
from osimage.server.connections import guarded_protocol
from osimage.server.db.engine import DatabaseConfigError, database_url
from osimage.server.instance import DataInUse, exclusive, lock_paths
from osimage.server.operations.metrics import MULTIPROC_VARIABLE
from osimage.server.settings import Settings


def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT; uvicorn stops gracefully on either."""
    try:
        database_url(settings.database)  # e.g. a missing extra: one line, exit status 1
    except DatabaseConfigError as exc:
        sys.exit(f"osimage serve: {exc}")
    logs.configure(settings.log_level)
    try:
        with exclusive(lock_paths(settings.database, settings.store)):
            _serve(settings)
    except DataInUse as exc:
        sys.exit(f"osimage serve: {exc}")


def _serve(settings: Settings) -> None:
    common: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "log_level": settings.log_level,
        "lifespan": "on",
        "server_header": False,
        # h11 or httptools (--http), with the limits uvicorn lacks and the 501 for an
        # unknown method that llhttp refuses (osimage.server.connections)
        "http": guarded_protocol(settings),
        "timeout_keep_alive": settings.keep_alive_timeout,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        # in-flight requests get this long at shutdown; then they are cancelled, and an
        # upload cancelled that way still ends `killed` with its partial data removed
        "timeout_graceful_shutdown": 10,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
        return
    # Migrations and the crash sweep run once, here, before any worker takes requests.
    anyio.run(prepare, settings)
    os.environ.update(settings.environment())
    # prometheus-client's multi-process mode: each worker writes its samples here, and
    # /metrics sums them. Ours (made here, removed at exit) unless the operator set one.
    made = None
    if not os.environ.get(MULTIPROC_VARIABLE):
        made = os.environ[MULTIPROC_VARIABLE] = tempfile.mkdtemp(prefix="osimage-metrics-")
    logging.getLogger("osimage.metrics").info(
        "metrics: %d workers share %s", settings.workers, os.environ[MULTIPROC_VARIABLE]
    )
    try:
        uvicorn.run(
            "osimage.server.runner:worker_app",
            factory=True,
            workers=settings.workers,
            **common,  # type: ignore[arg-type]
        )
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def worker_app() -> object:
    """The app factory each worker process calls; settings arrive as OSIMAGE_* variables."""
    settings = Settings.load({}, os.environ)
    logs.configure(settings.log_level)
    return create_app(settings, prepared=True)
