"""Fixtures for the store contract suite: the anyio backend and the Swift/S3 service."""

from __future__ import annotations

import pytest

from tests.conftest import require_service
from tests.support.backends import swift_aio_env

pytest.register_assert_rewrite("tests.stores.contract")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def swift_aio() -> dict[str, str]:
    """ST_*/AWS_* variables of a healthy loopback Swift with s3api; skips (fails in CI) if none."""
    env = swift_aio_env()
    require_service(bool(env), "no Swift on loopback (shared/services/swift-aio start)")
    return env
