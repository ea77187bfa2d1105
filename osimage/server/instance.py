"""One `osimage serve` per embedded data: an exclusive lock held while an instance runs.

The crash sweep removes every partial blob of the filesystem store and kills the uploads
stranded for its node id, so two instances over one SQLite file or one file store would
delete each other's data. The first instance holds an flock on a lock file beside that
data (`<db file>.lock`, `<store dir>.lock`); a second one is refused with a message
naming it. The kernel drops the lock when the process dies, SIGKILL included.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import make_url


class DataInUse(RuntimeError):
    """Another process holds the lock of this instance's data."""


def lock_paths(database: str, store: str) -> list[Path]:
    """The lock files guarding a SQLite `database` file and a `file://` `store` directory."""
    paths: list[Path] = []
    try:
        url = make_url(database)
    except Exception:  # a bad URL is refused later, with its own message
        url = None
    name = url.database if url is not None and url.drivername.startswith("sqlite") else None
    if name and name != ":memory:" and not name.startswith("file:"):
        db = Path(name).expanduser().resolve()
        paths.append(db.with_name(db.name + ".lock"))
    parts = urlsplit(store)
    if parts.scheme == "file":
        root = Path(unquote(parts.path)).expanduser().resolve()
        paths.append(root.with_name(root.name + ".lock"))
    return paths


@contextmanager
def exclusive(paths: list[Path]) -> Iterator[None]:
    """Hold an exclusive flock on each of `paths` (created if needed) for the block.

    Raises DataInUse naming the path if another process holds one of them.
    """
    held: list[int] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise DataInUse(
                    f"another osimage serve is using this data (it holds {path}); "
                    "stop it first, or give this one its own --data-dir"
                ) from None
            held.append(fd)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        for fd in held:
            os.close(fd)
