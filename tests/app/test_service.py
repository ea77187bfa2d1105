"""The service on real SQLite and real files: lifecycle, races, all-or-nothing, crash sweep."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from osimage.server.auth import Context
from osimage.server.db import catalog
from osimage.server.db.engine import migrate, open_engine, writing
from osimage.server.downloads import Downloads
from osimage.server.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PreconditionFailed,
    TooLarge,
)
from osimage.server.ingest import Ingest, Upload
from osimage.server.operations.notifications import NoNotifier
from osimage.server.service import Change, ImageService
from osimage.server.settings import Limits
from osimage.server.sharing import Sharing
from osimage.server.sources import SourcePolicy
from osimage.server.stores.filesystem import FilesystemStore
from osimage.server.upkeep import sweep

pytestmark = pytest.mark.anyio

ADMIN = Context(user_id="u-admin", project_id="p-admin", roles=frozenset({"admin"}), is_admin=True)
ALICE = Context(user_id="u-alice", project_id="p-alice", roles=frozenset(), is_admin=False)
BOB = Context(user_id="u-bob", project_id="p-bob", roles=frozenset(), is_admin=False)
FORMATS = {"disk_format": "raw", "container_format": "bare"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[ImageService]:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'osimage.db'}")
    await migrate(engine)
    store = FilesystemStore.from_url((tmp_path / "images").as_uri())
    try:
        async with anyio.create_task_group() as tasks:
            policy, notifier = SourcePolicy(), NoNotifier()
            limits = Limits(image_size_cap=1_000_000)
            ingest = Ingest(
                engine, store, limits=limits, source_policy=policy, tasks=tasks, notifier=notifier
            )
            downloads = Downloads(store, source_policy=policy, notifier=notifier)
            yield ImageService(ingest, downloads)
            tasks.cancel_scope.cancel()
    finally:
        await engine.dispose()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def files(service: ImageService) -> list[str]:
    return listing(Path(service.store.root))  # type: ignore[attr-defined]


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def reserve(service: ImageService, **fields: object) -> str:
    row = await service.create(ALICE, Change(fields={**FORMATS, **fields}))
    return row.id


async def read_all(service: ImageService, ctx: Context, image_id: str) -> bytes:
    _, chunks = await service.download(ctx, image_id)
    return b"".join([chunk async for chunk in chunks])


async def test_reserve_upload_download(service: ImageService) -> None:
    image_id = await reserve(service, name="one")
    row = await service.get(ALICE, image_id)
    assert (row.status, row.size, row.owner) == ("queued", 0, "p-alice")
    data = b"abc" * 100000
    updated = await service.update(
        ALICE, image_id, Change(data=Upload(chunks_of(data[:5], data[5:])))
    )
    assert updated.status == "active"
    assert updated.checksum == hashlib.md5(data).hexdigest()
    assert updated.sha256 == hashlib.sha256(data).hexdigest()
    assert await read_all(service, ALICE, image_id) == data
    assert files(service) == [image_id]


async def test_two_concurrent_transitions_exactly_one_wins(service: ImageService) -> None:
    image_id = await reserve(service)
    wins: list[bool] = []

    async def attempt() -> None:
        async with writing(service.engine) as conn:
            wins.append(await catalog.transition(conn, image_id, "queued", "saving"))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(attempt)
    assert sorted(wins) == [False, False, False, False, True]


async def test_second_upload_into_the_same_image_is_409(service: ImageService) -> None:
    image_id = await reserve(service)
    release = anyio.Event()
    started = anyio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"first"
        started.set()
        await release.wait()
        yield b"-done"

    results: list[object] = []

    async def first() -> None:
        results.append(await service.update(ALICE, image_id, Change(data=Upload(slow()))))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await started.wait()
        with pytest.raises(Conflict):
            await service.update(ALICE, image_id, Change(data=Upload(chunks_of(b"second"))))
        release.set()
    assert await read_all(service, ALICE, image_id) == b"first-done"
    assert files(service) == [image_id]


async def test_failing_body_kills_the_image_and_leaves_no_file(service: ImageService) -> None:
    image_id = await reserve(service)

    async def dropped() -> AsyncIterator[bytes]:
        yield b"x" * 100000
        raise BadRequest("Client disconnected before sending all data to backend")

    with pytest.raises(BadRequest):
        await service.update(ALICE, image_id, Change(data=Upload(dropped())))
    assert (await service.get(ALICE, image_id)).status == "killed"
    assert files(service) == []


async def test_cancelled_upload_kills_the_image_and_leaves_no_file(service: ImageService) -> None:
    image_id = await reserve(service)
    started = anyio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"y" * 65536
            started.set()
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as tg:
        tg.start_soon(service.update, ALICE, image_id, Change(data=Upload(endless())))
        await started.wait()
        tg.cancel_scope.cancel()
    assert (await service.get(ALICE, image_id)).status == "killed"
    assert files(service) == []


@pytest.mark.parametrize(
    ("declared", "error"),
    [
        ({"size": 4}, BadRequest),
        ({"checksum": "0" * 32}, BadRequest),
    ],
)
async def test_verification_failure_removes_data(
    service: ImageService, declared: dict[str, object], error: type[Exception]
) -> None:
    image_id = await reserve(service, **declared)
    with pytest.raises(error):
        await service.update(ALICE, image_id, Change(data=Upload(chunks_of(b"abc"))))
    assert (await service.get(ALICE, image_id)).status == "killed"
    assert files(service) == []


async def test_streamed_bytes_over_the_cap_are_413(service: ImageService) -> None:
    image_id = await reserve(service)
    big = [b"z" * 400_000] * 3
    with pytest.raises(TooLarge):
        await service.update(ALICE, image_id, Change(data=Upload(chunks_of(*big))))
    assert (await service.get(ALICE, image_id)).status == "killed"
    assert files(service) == []


async def test_delete_during_upload_gives_412_and_no_data(service: ImageService) -> None:
    image_id = await reserve(service)
    started = anyio.Event()
    release = anyio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"part"
        started.set()
        await release.wait()
        yield b"rest"

    outcome: list[BaseException] = []

    async def upload() -> None:
        try:
            await service.update(ALICE, image_id, Change(data=Upload(slow())))
        except PreconditionFailed as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(upload)
        await started.wait()
        await service.delete(ALICE, image_id)
        release.set()
    assert len(outcome) == 1
    row = await service.get(ADMIN, image_id)
    assert (row.status, row.deleted) == ("deleted", True)
    assert files(service) == []


async def test_isolation_of_private_images(service: ImageService) -> None:
    image_id = await reserve(service, name="secret")
    for attempt in (
        service.get(BOB, image_id),
        service.download(BOB, image_id),
        service.update(BOB, image_id, Change(fields={"name": "mine"})),
        service.delete(BOB, image_id),
        Sharing(service).members(BOB, image_id),
    ):
        with pytest.raises(NotFound):
            await attempt
    listed = await service.list_images(BOB, {"is_public": "none"}, detail=True)
    assert image_id not in [row.id for row in listed]
    await Sharing(service).add_member(ALICE, image_id, "p-bob", None)
    assert (await service.get(BOB, image_id)).name == "secret"
    listed = await service.list_images(BOB, {}, detail=False)
    assert image_id in [row.id for row in listed]
    with pytest.raises(NotFound):
        await service.update(BOB, image_id, Change(fields={"name": "mine"}))
    with pytest.raises(Forbidden):
        await service.update(ALICE, image_id, Change(fields={"is_public": True}))


async def test_crash_sweep_kills_saving_images_and_removes_partials(
    service: ImageService,
) -> None:
    image_id = await reserve(service)
    async with writing(service.engine) as conn:
        assert await catalog.transition(conn, image_id, "queued", "saving")
    root = Path(service.store.root)  # type: ignore[attr-defined]
    (root / f".{image_id}.partial").write_bytes(b"half")
    (root / f".{uuid.uuid4()}.partial").write_bytes(b"stray")
    killed = await sweep(service.engine, service.store)
    assert killed == [image_id]
    assert (await service.get(ALICE, image_id)).status == "killed"
    assert files(service) == []


async def test_filesystem_put_whose_chunks_raise_leaves_nothing(tmp_path: Path) -> None:
    store = FilesystemStore.from_url(tmp_path.as_uri())
    image_id = str(uuid.uuid4())

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 200_000
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await store.put(image_id, broken())
    assert listing(tmp_path) == []
    blob = await store.put(image_id, chunks_of(b"ok"))
    assert b"".join([c async for c in store.get(blob.location)]) == b"ok"
    assert not store.owns((tmp_path / "../etc/passwd").as_uri())
    with pytest.raises(ValueError, match="not an image id"):
        await store.put("../escape", chunks_of(b"x"))
