"""Files written beside their target and renamed into place once they are safe on disk.

The filesystem store and the image cache both write a partial file in the target's
directory; `settle` is the one step that turns it into the real thing.
"""

from __future__ import annotations

import os
from pathlib import Path


def settle(fd: int, partial: Path, final: Path) -> None:
    """Flush the open file `fd` (the data of `partial`) to disk, then rename it to `final`.

    Blocking: run it in a worker thread. `partial` and `final` share a directory, so the
    rename is atomic: a reader sees the old file or the whole new one, never a part.
    """
    os.fsync(fd)
    os.replace(partial, final)
