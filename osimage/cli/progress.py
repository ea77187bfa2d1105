"""Progress bars for uploads and downloads, on stderr, only where a person is watching."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, BinaryIO

CHUNK_SIZE = 1024 * 1024


def wanted(choice: bool | None) -> bool:
    """``--progress``/``--no-progress`` decide; otherwise show bars when stderr is a terminal."""
    return sys.stderr.isatty() if choice is None else choice


@contextmanager
def bar(description: str, total: int | None, enabled: bool) -> Iterator[Any]:
    """A running rich progress task (or None when disabled); advance it with byte counts."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def chunks(source: BinaryIO | IO[bytes], advance: Any) -> Iterator[bytes]:
    """Read `source` in chunks, reporting each to `advance` (which may be None).

    ``read1`` forwards what a pipe has without waiting for a full chunk.
    """
    read = getattr(source, "read1", source.read)
    while True:
        chunk = read(CHUNK_SIZE)
        if not chunk:
            return
        if advance is not None:
            advance(len(chunk))
        yield chunk
