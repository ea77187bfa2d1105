"""The Swift store keeps the store contract, against a real Swift on loopback."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from osimage.server.stores.base import StoreConfigError, StoreUnavailable
from osimage.server.stores.swift import SEGMENTS_SUFFIX, SwiftStore
from tests.conftest import require_service
from tests.stores.contract import Leftovers, StoreContract, chunked, md5, new_id, payload, read

SEGMENT = 1024 * 1024 + 7  # just over 1 MiB: several segments stay cheap


class SwiftAccount:
    """A plain HTTP view of the test account, to see what the store left behind."""

    def __init__(self, client: httpx.AsyncClient, url: str, token: str) -> None:
        self.client, self.url, self.token = client, url, token

    @classmethod
    async def login(cls, client: httpx.AsyncClient, env: dict[str, str]) -> SwiftAccount:
        answer = await client.get(
            env["ST_AUTH"], headers={"x-auth-user": env["ST_USER"], "x-auth-key": env["ST_KEY"]}
        )
        answer.raise_for_status()
        return cls(client, answer.headers["x-storage-url"], answer.headers["x-auth-token"])

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        return await self.client.request(
            method,
            f"{self.url}/{path}",
            headers={"x-auth-token": self.token},
            params=params,
            content=content,
        )

    async def names(self, container: str) -> list[str]:
        answer = await self.request("GET", container, params={"format": "json"})
        if answer.status_code == 404:
            return []
        answer.raise_for_status()
        return [entry["name"] for entry in answer.json()]

    async def info(self) -> dict[str, dict[str, int]]:
        root = httpx.URL(self.url).copy_with(path="/info", query=None)
        answer = await self.client.get(root)
        answer.raise_for_status()
        info: dict[str, dict[str, int]] = answer.json()
        return info

    async def drop(self, container: str) -> None:
        for name in await self.names(container):
            await self.request("DELETE", f"{container}/{name}")
        await self.request("DELETE", container)


def environ_of(env: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        "OSIMAGE_SWIFT_AUTH_URL": env["ST_AUTH"],
        "OSIMAGE_SWIFT_USER": env["ST_USER"],
        "OSIMAGE_SWIFT_KEY": env["ST_KEY"],
        **extra,
    }


@pytest.fixture
async def account(swift_aio: dict[str, str]) -> AsyncIterator[SwiftAccount]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield await SwiftAccount.login(client, swift_aio)


@pytest.fixture
async def container(account: SwiftAccount) -> AsyncIterator[str]:
    name = f"osimage-test-{uuid.uuid4().hex[:12]}"
    yield name
    await account.drop(name)
    await account.drop(name + SEGMENTS_SUFFIX)


@pytest.mark.swift
class TestSwiftStore(StoreContract):
    @pytest.fixture
    def segment(self) -> int:
        return SEGMENT

    @pytest.fixture
    async def store(
        self, swift_aio: dict[str, str], container: str, account: SwiftAccount
    ) -> AsyncIterator[SwiftStore]:
        info = await account.info()
        assert info["swift"]["max_file_size"] >= SEGMENT
        assert info["slo"]["min_segment_size"] <= SEGMENT
        store = SwiftStore.from_url(
            f"swift://{container}?segment_size={SEGMENT}&sweep_after=0", environ_of(swift_aio)
        )
        yield store
        await store.aclose()

    @pytest.fixture
    def leftovers(self, account: SwiftAccount, container: str) -> Leftovers:
        async def listing() -> list[str]:
            segments = container + SEGMENTS_SUFFIX
            return [f"{container}/{name}" for name in await account.names(container)] + [
                f"{segments}/{name}" for name in await account.names(segments)
            ]

        return listing


@pytest.mark.swift
@pytest.mark.anyio
class TestSwiftSpecifics:
    async def test_large_image_is_a_static_large_object(
        self, swift_aio: dict[str, str], container: str, account: SwiftAccount
    ) -> None:
        store = SwiftStore.from_url(
            f"swift://{container}?segment_size={SEGMENT}", environ_of(swift_aio)
        )
        data = payload(3 * SEGMENT + 1, seed=20)
        image_id = new_id()
        blob = await store.put(image_id, chunked(data))
        await store.aclose()
        assert blob.location == f"swift://{container}/{image_id}"
        assert len(await account.names(container + SEGMENTS_SUFFIX)) == 4
        head = await account.request("HEAD", f"{container}/{image_id}")
        assert head.headers["x-static-large-object"].lower() == "true"
        assert int(head.headers["content-length"]) == len(data)
        manifest = await account.request(
            "GET", f"{container}/{image_id}", params={"multipart-manifest": "get"}
        )
        sizes = [segment["bytes"] for segment in manifest.json()]
        assert sizes == [SEGMENT, SEGMENT, SEGMENT, 1]

    async def test_segment_size_is_capped_by_the_clusters_object_size_limit(
        self,
        swift_aio: dict[str, str],
        container: str,
        account: SwiftAccount,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        limit = (await account.info())["swift"]["max_file_size"]
        store = SwiftStore.from_url(
            f"swift://{container}?segment_size={limit + 1}", environ_of(swift_aio)
        )
        with caplog.at_level(logging.WARNING, logger="osimage.server.stores.swift"):
            blob = await store.put(new_id(), chunked(b"small"))
        await store.aclose()
        assert f"using {limit}" in caplog.text
        assert blob.size == 5

    async def test_sweep_removes_segments_of_a_crashed_upload_only(
        self, swift_aio: dict[str, str], container: str, account: SwiftAccount
    ) -> None:
        store = SwiftStore.from_url(
            f"swift://{container}?segment_size={SEGMENT}&sweep_after=0", environ_of(swift_aio)
        )
        kept = payload(SEGMENT + 3, seed=21)
        blob = await store.put(new_id(), chunked(kept))
        segments = container + SEGMENTS_SUFFIX
        crashed = f"{new_id()}/{uuid.uuid4().hex}/00000001"  # a crash runs no cleanup
        answer = await account.request("PUT", f"{segments}/{crashed}", content=b"partial")
        assert answer.status_code == 201

        removed = await store.sweep()
        assert removed == [f"{segments}/{crashed}"]
        assert crashed not in await account.names(segments)
        assert (await read(store, blob.location))[:2] == (md5(kept), len(kept))
        await store.aclose()

    async def test_sweep_spares_a_recent_upload(
        self, swift_aio: dict[str, str], container: str, account: SwiftAccount
    ) -> None:
        store = SwiftStore.from_url(f"swift://{container}", environ_of(swift_aio))
        await store.put(new_id(), chunked(b"make the containers"))
        in_flight = f"{new_id()}/{uuid.uuid4().hex}/00000001"
        await account.request("PUT", f"{container}{SEGMENTS_SUFFIX}/{in_flight}", content=b"x")
        assert await store.sweep() == []
        await store.aclose()

    async def test_wrong_key_is_store_unavailable(
        self, swift_aio: dict[str, str], container: str
    ) -> None:
        env = environ_of(swift_aio, OSIMAGE_SWIFT_KEY="wrong")
        store = SwiftStore.from_url(f"swift://{container}", env)
        with pytest.raises(StoreUnavailable, match="answered 401"):
            await store.put(new_id(), chunked(b"data"))
        await store.aclose()


def test_secrets_are_refused_in_the_url() -> None:
    env = {"OSIMAGE_SWIFT_AUTH_URL": "http://127.0.0.1:1/auth/v1.0", "OSIMAGE_SWIFT_USER": "u"}
    with pytest.raises(StoreConfigError, match="OSIMAGE_SWIFT_KEY"):
        SwiftStore.from_url("swift://images?key=secret", env)
    with pytest.raises(StoreConfigError, match="not in the store URL"):
        SwiftStore.from_url("swift://u:secret@images", env)
    with pytest.raises(StoreConfigError, match="OSIMAGE_SWIFT_KEY"):
        SwiftStore.from_url("swift://images", env)


def test_options_come_from_the_url_before_the_environment() -> None:
    env = {
        "OSIMAGE_SWIFT_AUTH_URL": "http://127.0.0.1:1/auth/v1.0",
        "OSIMAGE_SWIFT_USER": "u",
        "OSIMAGE_SWIFT_KEY": "secret",
        "OSIMAGE_SWIFT_SEGMENT_SIZE": "5000",
    }
    store = SwiftStore.from_url("swift://images?segment_size=7000", env)
    assert store.config.segment_size == 7000
    assert store.config.container == "images"
    assert "secret" not in repr(store) + repr(store.config)
    assert SwiftStore.from_url("swift://images", env).config.segment_size == 5000
    with pytest.raises(StoreConfigError, match="unknown swift store option 'colour'"):
        SwiftStore.from_url("swift://images?colour=red", env)


KEYSTONE_VARIABLES = (
    "OSIMAGE_KEYSTONE_AUTH_URL",
    "OSIMAGE_KEYSTONE_USERNAME",
    "OSIMAGE_KEYSTONE_PASSWORD",
    "OSIMAGE_KEYSTONE_PROJECT_NAME",
)


@pytest.fixture
def keystone_environ() -> dict[str, str]:
    """Swift store variables naming the test Keystone's service user (keystone-aio)."""
    missing = [name for name in KEYSTONE_VARIABLES if not os.environ.get(name)]
    require_service(not missing, f"no Keystone: {', '.join(missing)} unset (keystone-aio start)")
    return {
        "OSIMAGE_SWIFT_AUTH_URL": os.environ["OSIMAGE_KEYSTONE_AUTH_URL"],
        "OSIMAGE_SWIFT_USER": os.environ["OSIMAGE_KEYSTONE_USERNAME"],
        "OSIMAGE_SWIFT_KEY": os.environ["OSIMAGE_KEYSTONE_PASSWORD"],
        "OSIMAGE_SWIFT_PROJECT_NAME": os.environ["OSIMAGE_KEYSTONE_PROJECT_NAME"],
    }


@pytest.mark.keystone
@pytest.mark.anyio
class TestSwiftKeystoneAuth:
    """The test Keystone has no object-store endpoint and Swift uses tempauth, so these
    prove Keystone login and error translation, not a Keystone-authenticated upload."""

    async def test_a_catalog_without_object_store_is_store_unavailable(
        self, keystone_environ: dict[str, str]
    ) -> None:
        store = SwiftStore.from_url("swift://images", keystone_environ)
        assert store.config.auth_version == "3"
        with pytest.raises(StoreUnavailable, match="endpoint for object-store service not found"):
            await store.put(new_id(), chunked(b"data"))
        await store.aclose()

    async def test_a_wrong_password_is_store_unavailable(
        self, keystone_environ: dict[str, str]
    ) -> None:
        environ = {**keystone_environ, "OSIMAGE_SWIFT_KEY": "wrong"}
        store = SwiftStore.from_url("swift://images", environ)
        with pytest.raises(StoreUnavailable, match=r"keystone auth at .* failed: .*401"):
            await store.put(new_id(), chunked(b"data"))
        await store.aclose()

    async def test_a_keystone_token_goes_to_the_given_storage_url(
        self, keystone_environ: dict[str, str], swift_aio: dict[str, str], account: SwiftAccount
    ) -> None:
        # tempauth does not know Keystone tokens: a 401 from Swift proves the token was sent.
        environ = {**keystone_environ, "OSIMAGE_SWIFT_STORAGE_URL": account.url}
        store = SwiftStore.from_url("swift://images", environ)
        with pytest.raises(StoreUnavailable, match="swift answered 401"):
            await store.put(new_id(), chunked(b"data"))
        await store.aclose()
