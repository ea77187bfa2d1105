"""Fixtures the v1 and v2 notification tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import TRANSPORT, own_topic
from tests.support.server import Server, start_server


@pytest.fixture
def topic() -> Iterator[str]:
    """A topic of this test's own; its queues are deleted afterwards."""
    yield from own_topic()


@pytest.fixture
def notifying(topic: str, tmp_path: Path) -> Iterator[Server]:
    """A server (tokens auth) sending its notifications to `topic`."""
    srv = start_server(
        tmp_path / "srv",
        "--notification-transport-url",
        TRANSPORT,
        "--notification-topic",
        topic,
        auth="tokens",
    )
    yield srv
    srv.close()
