"""`osimage serve --database postgresql://...` as a process: the missing extra, the password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.api_client import Api
from tests.support.backends import (
    create_database,
    postgres_available,
    postgres_url,
    require_service,
)
from tests.support.server import Server

pytestmark = pytest.mark.e2e

PASSWORD = "pw-9f3c-never-logged"  # trust auth on the test PostgreSQL ignores it

WITHOUT_ASYNCPG = (
    "import sys; sys.modules['asyncpg'] = None; "  # makes `import asyncpg` raise ImportError
    "from osimage.cli import main; main()"
)


def test_without_the_extra_serve_says_what_to_install_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable, "-c", WITHOUT_ASYNCPG, "serve", "--port", "0",
            "--data-dir", str(tmp_path), "--database", f"postgresql://u:{PASSWORD}@127.0.0.1/x",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "osimage serve: the postgresql database needs: pip install 'osimage[postgres]'"
    ]
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.postgres
def test_the_database_password_is_never_logged(tmp_path: Path) -> None:
    require_service(postgres_available(), "no PostgreSQL on 127.0.0.1:5432 (or no asyncpg)")
    name, drop = create_database()
    try:
        url = postgres_url(name, password=PASSWORD).replace("postgresql://", "postgres://")
        server = Server(
            data_dir=tmp_path / "ok" / "data",
            args=["--database", url, "--workers", "2", "--log-level", "debug"],
        )
        server.data_dir.parent.mkdir()
        server.start()
        try:
            api = Api(server.url)
            image = api.upload(b"logged?", name="password check")
            assert api.get(image["id"]).body == b"logged?"
        finally:
            server.stop()
        assert "GET /v1/images/" in server.log()  # the log was written, at debug level
        assert PASSWORD not in server.log()

        missing = postgres_url(f"{name}_absent", password=PASSWORD)
        failing = Server(data_dir=tmp_path / "bad" / "data", args=["--database", missing])
        failing.data_dir.parent.mkdir()
        with pytest.raises(RuntimeError, match="exited early"):
            failing.start()
        assert "cannot open the database postgresql+asyncpg://postgres:***@" in failing.log()
        assert f'database "{name}_absent" does not exist' in failing.log()
        assert "Traceback" not in failing.log()
        assert PASSWORD not in failing.log()
    finally:
        drop()
