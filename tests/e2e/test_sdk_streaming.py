"""The SDK streams: a large upload and download never hold the image in client memory.

The transfer runs in a child process so that its peak RSS (ru_maxrss) is its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.server import Server

pytestmark = pytest.mark.e2e

SIZE = 256 * 2**20
BOUND = 48 * 2**20  # far below SIZE: a buffered image would blow through it

_CHILD = textwrap.dedent(
    """
    import hashlib, json, resource, sys
    import osimage

    endpoint, size, target = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    conn = osimage.connect(endpoint=endpoint)
    block = bytes(range(256)) * 256  # 64 KiB
    digest = hashlib.md5()

    def chunks():
        for _ in range(size // len(block)):
            digest.update(block)
            yield block

    list(conn.image.images())  # warm up: imports, connection pool
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    image = conn.image.upload_image(
        name="streamed", disk_format="raw", container_format="bare", data=chunks()
    )
    conn.image.download_image(image, output=target)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"growth": after - before, "md5": digest.hexdigest(),
                      "checksum": image.checksum, "size": image.size}))
    """
)


def test_large_upload_and_download_keep_client_memory_flat(server: Server, tmp_path: Path) -> None:
    target = tmp_path / "copy.raw"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}  # no cloud config
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, server.url, str(SIZE), str(target)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["size"] == SIZE
    assert result["checksum"] == result["md5"]
    assert target.stat().st_size == SIZE
    assert result["growth"] < BOUND, result
