"""The real RabbitMQ on 127.0.0.1:5672, as the notification tests read it: a topic of a
test's own, and the notifications the server sent to it (read with kombu)."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from kombu.connection import Connection
from kombu.entity import Queue

from tests.conftest import require_service

BROKER = "amqp://guest:guest@127.0.0.1:5672//"
TRANSPORT = "rabbit://guest:guest@127.0.0.1:5672/"


def rabbit_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            return True
    except OSError:
        return False


def own_topic() -> Iterator[str]:
    """A topic of the caller's own; its queues are deleted when the caller is done."""
    require_service(rabbit_up(), "no RabbitMQ on 127.0.0.1:5672")
    name = f"osimage-test-{uuid.uuid4().hex[:12]}"
    yield name
    with Connection(BROKER) as conn:
        for priority in ("info", "error"):
            # a queue never declared (nothing sent at that priority) closes the channel
            with conn.channel() as channel, contextlib.suppress(Exception):
                Queue(f"{name}.{priority}", channel=channel, no_declare=True).delete()


def consume(topic: str, priority: str, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """The next `count` notifications of `topic` at `priority`, in the order sent."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    with Connection(BROKER) as conn:
        while len(got) < count and time.monotonic() < deadline:
            with conn.channel() as channel:
                queue = Queue(f"{topic}.{priority}", channel=channel, no_declare=True)
                try:
                    message = queue.get(no_ack=True)
                except Exception:  # not declared yet: the server has not sent anything
                    message = None
            if message is None:
                time.sleep(0.2)
                continue
            envelope = message.payload
            got.append(json.loads(envelope["oslo.message"]))
    assert len(got) == count, f"{len(got)} of {count} notifications: {got}"
    return got
