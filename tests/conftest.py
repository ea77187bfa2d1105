"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import Server, start_server

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_service(available: bool, reason: str) -> None:
    """Skip a test whose backing service is absent; in CI an absent service fails the run."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"required service missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared noauth server for tests that do not count the whole catalogue."""
    srv = start_server(tmp_path_factory.mktemp("noauth"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def tokens_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared `--auth tokens` server; identities are in tests.support.server.TOKENS."""
    srv = start_server(tmp_path_factory.mktemp("tokens"), auth="tokens")
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A noauth server with an empty catalogue, for tests that count images."""
    srv = start_server(tmp_path / "srv")
    yield srv
    srv.stop()
