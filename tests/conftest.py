"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.backends import BACKEND_VARIABLE, IN_CI, require_service, selected_backend
from tests.support.server import Server, start_server

__all__ = ["IN_CI", "require_service"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under another store than files, tests that read the data directory do not apply."""
    backend = selected_backend()
    if backend.store == "file":
        return
    skip = pytest.mark.skip(
        reason=f"reads the file store's data directory; {BACKEND_VARIABLE}={backend.name}"
    )
    for item in items:
        if item.get_closest_marker("file_store"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared noauth server for tests that do not count the whole catalogue."""
    srv = start_server(tmp_path_factory.mktemp("noauth"))
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def tokens_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared `--auth tokens` server; identities are in tests.support.server.TOKENS."""
    srv = start_server(tmp_path_factory.mktemp("tokens"), auth="tokens")
    yield srv
    srv.close()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A noauth server with an empty catalogue, for tests that count images."""
    srv = start_server(tmp_path / "srv")
    yield srv
    srv.close()
