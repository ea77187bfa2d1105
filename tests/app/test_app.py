"""`create_app` in process: the lifespan opens and closes everything, and apps share nothing.

The in-process transport buffers bodies, so streaming is proven by the e2e tests instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from osimage.server.app import App, create_app
from osimage.server.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def running(app: App) -> AsyncIterator[httpx.AsyncClient]:
    """Drive the ASGI lifespan around an httpx client bound to `app`."""
    to_app = anyio.create_memory_object_stream[dict[str, Any]](4)
    from_app = anyio.create_memory_object_stream[dict[str, Any]](4)
    send_in, receive_in = to_app
    send_out, receive_out = from_app

    async def receive() -> dict[str, Any]:
        return await receive_in.receive()

    async def send(message: Any) -> None:
        await send_out.send(dict(message))

    async with send_in, receive_in, send_out, receive_out, anyio.create_task_group() as tasks:
        tasks.start_soon(app, {"type": "lifespan"}, receive, send)
        await send_in.send({"type": "lifespan.startup"})
        assert (await receive_out.receive())["type"] == "lifespan.startup.complete"
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
        await send_in.send({"type": "lifespan.shutdown"})
        assert (await receive_out.receive())["type"] == "lifespan.shutdown.complete"


def settings_for(path: Path) -> Settings:
    return Settings.load({"data_dir": str(path)}, {})


async def test_two_apps_in_one_process_share_nothing(tmp_path: Path) -> None:
    first = create_app(settings_for(tmp_path / "a"))
    second = create_app(settings_for(tmp_path / "b"))
    async with running(first) as a, running(second) as b:
        made = await a.post("/v1/images", headers={"x-image-meta-name": "only-in-a"})
        assert made.status_code == 201
        assert (
            made.headers["location"] == f"http://testserver/v1/images/{made.json()['image']['id']}"
        )
        assert [i["name"] for i in (await a.get("/v1/images?is_public=none")).json()["images"]] == [
            "only-in-a"
        ]
        assert (await b.get("/v1/images?is_public=none")).json() == {"images": []}
    assert (tmp_path / "a" / "osimage.db").exists()
    assert (tmp_path / "b" / "osimage.db").exists()


async def test_requests_before_startup_are_refused_cleanly(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/versions")).status_code == 200  # discovery needs nothing
        refused = await client.get("/v1/images")
        assert refused.status_code == 503
        assert refused.headers["x-openstack-request-id"].startswith("req-")


async def test_a_restart_keeps_the_catalogue(tmp_path: Path) -> None:
    async with running(create_app(settings_for(tmp_path))) as client:
        made = await client.post(
            "/v1/images",
            headers={
                "x-image-meta-disk_format": "raw",
                "x-image-meta-container_format": "bare",
                "content-type": "application/octet-stream",
            },
            content=b"kept",
        )
        image_id = made.json()["image"]["id"]
    async with running(create_app(settings_for(tmp_path))) as client:
        got = await client.get(f"/v1/images/{image_id}")
        assert got.content == b"kept"
        assert got.headers["x-image-meta-status"] == "active"
