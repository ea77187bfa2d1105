"""Real failing filesystems for tests (root only): a small tmpfs that fills up, and a
read-only bind mount over a directory. Tests that need them skip when they cannot mount."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _mount(*args: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a test filesystem needs root")
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a test filesystem: {done.stderr.strip()}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=True)


@contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "2m") mounted at `path` (created) for the block."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


class ReadOnly:
    """`path` made read-only (for root too) by a bind mount, until `release()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False
        _mount("--bind", str(path), str(path))
        self.mounted = True
        try:
            _mount("-o", "remount,ro,bind", str(path))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self.mounted:
            self.mounted = False
            _umount(self.path)


@contextmanager
def read_only(path: Path) -> Iterator[ReadOnly]:
    handle = ReadOnly(path)
    try:
        yield handle
    finally:
        handle.release()
