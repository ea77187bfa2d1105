"""The S3 store keeps the store contract, against Swift's s3api on loopback."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from osimage.server.stores.base import CHUNK_SIZE, StoreConfigError, StoreUnavailable
from osimage.server.stores.s3 import MIN_PART_SIZE, S3Store
from tests.stores.contract import Leftovers, MiB, StoreContract, chunked, md5, new_id, payload, read
from tests.support.backends import s3_client
from tests.support.tcp_proxy import TcpProxy

PART = MIN_PART_SIZE  # the smallest S3 allows, so that several parts stay cheap
REGION = "us-east-1"


def environ_of(env: dict[str, str], **extra: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
        **extra,
    }


def store_url(env: dict[str, str], bucket: str, **options: object) -> str:
    query = "&".join(
        f"{name}={value}"
        for name, value in {"endpoint": env["S3_ENDPOINT_URL"], "region": REGION, **options}.items()
    )
    return f"s3://{bucket}?{query}"


@pytest.fixture(scope="module")
def s3(swift_aio: dict[str, str]) -> Iterator[Any]:
    """A plain boto3 client, to see what the store left behind."""
    client = s3_client(swift_aio)
    yield client
    client.close()


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = f"osimage-test-{uuid.uuid4().hex[:12]}"
    yield name
    try:
        for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for entry in s3.list_objects_v2(Bucket=name).get("Contents", []):
            s3.delete_object(Bucket=name, Key=entry["Key"])
        s3.delete_bucket(Bucket=name)
    except s3.exceptions.NoSuchBucket:
        pass


def swift_segments(env: dict[str, str], bucket: str) -> list[str]:
    """Names in the Swift container where s3api keeps multipart parts (none: [])."""
    auth = httpx.get(
        env["ST_AUTH"], headers={"x-auth-user": env["ST_USER"], "x-auth-key": env["ST_KEY"]}
    )
    answer = httpx.get(
        f"{auth.headers['x-storage-url']}/{bucket}+segments",
        headers={"x-auth-token": auth.headers["x-auth-token"]},
        params={"format": "json"},
    )
    return [] if answer.status_code == 404 else [entry["name"] for entry in answer.json()]


@pytest.mark.s3
class TestS3Store(StoreContract):
    @pytest.fixture
    def segment(self) -> int:
        return PART

    @pytest.fixture
    async def store(self, swift_aio: dict[str, str], bucket: str) -> AsyncIterator[S3Store]:
        store = S3Store.from_url(
            store_url(swift_aio, bucket, part_size=PART), environ_of(swift_aio)
        )
        yield store
        await store.aclose()

    @pytest.fixture
    def leftovers(self, s3: Any, bucket: str) -> Leftovers:
        async def listing() -> list[str]:
            try:
                objects = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
                uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            except s3.exceptions.NoSuchBucket:
                return []
            return [entry["Key"] for entry in objects] + [
                f"upload {entry['Key']}" for entry in uploads
            ]

        return listing


@pytest.mark.s3
@pytest.mark.anyio
class TestS3Specifics:
    async def test_large_image_is_one_object_from_a_multipart_upload(
        self, swift_aio: dict[str, str], bucket: str, s3: Any
    ) -> None:
        store = S3Store.from_url(
            store_url(swift_aio, bucket, part_size=PART), environ_of(swift_aio)
        )
        data = payload(2 * PART + 3, seed=30)
        image_id = new_id()
        blob = await store.put(image_id, chunked(data))
        await store.aclose()
        assert blob.location == f"s3://{bucket}/{image_id}"
        head = s3.head_object(Bucket=bucket, Key=image_id)
        assert head["ContentLength"] == len(data)
        assert head["ETag"].strip('"').endswith("-3")  # three parts

    async def test_a_failed_multipart_put_leaves_no_parts_on_the_server(
        self, swift_aio: dict[str, str], bucket: str
    ) -> None:
        # Behind the S3 API, s3api keeps parts as Swift objects: the abort must remove them.
        store = S3Store.from_url(
            store_url(swift_aio, bucket, part_size=PART), environ_of(swift_aio)
        )

        async def dropped() -> AsyncIterator[bytes]:
            async for chunk in chunked(payload(2 * PART + 1, seed=31)):
                yield chunk
            raise ConnectionResetError

        with pytest.raises(ConnectionResetError):
            await store.put(new_id(), dropped())
        await store.aclose()
        assert swift_segments(swift_aio, bucket) == []

    async def test_small_image_is_a_single_put(
        self, swift_aio: dict[str, str], bucket: str, s3: Any
    ) -> None:
        store = S3Store.from_url(store_url(swift_aio, bucket), environ_of(swift_aio))
        image_id = new_id()
        await store.put(image_id, chunked(b"tiny image"))
        await store.aclose()
        assert s3.head_object(Bucket=bucket, Key=image_id)["ETag"].strip('"') == md5(b"tiny image")

    async def test_prefix_is_part_of_the_key_and_the_location(
        self, swift_aio: dict[str, str], bucket: str, s3: Any
    ) -> None:
        store = S3Store.from_url(
            store_url(swift_aio, f"{bucket}/glance/images"), environ_of(swift_aio)
        )
        image_id = new_id()
        blob = await store.put(image_id, chunked(b"prefixed"))
        assert blob.location == f"s3://{bucket}/glance/images/{image_id}"
        assert s3.head_object(Bucket=bucket, Key=f"glance/images/{image_id}")["ContentLength"] == 8
        assert not store.owns(f"s3://{bucket}/{image_id}")
        assert (await read(store, blob.location))[:2] == (md5(b"prefixed"), 8)
        await store.aclose()

    async def test_sweep_aborts_uploads_a_crash_left_behind(
        self, swift_aio: dict[str, str], bucket: str, s3: Any
    ) -> None:
        store = S3Store.from_url(store_url(swift_aio, bucket, sweep_after=0), environ_of(swift_aio))
        kept = await store.put(new_id(), chunked(b"complete"))
        crashed = new_id()
        upload = s3.create_multipart_upload(Bucket=bucket, Key=crashed)["UploadId"]
        s3.upload_part(Bucket=bucket, Key=crashed, UploadId=upload, PartNumber=1, Body=b"x" * 1024)
        assert await store.sweep() == [f"{crashed} (upload {upload})"]
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert (await read(store, kept.location))[:2] == (md5(b"complete"), 8)
        await store.aclose()

    async def test_sweep_spares_a_recent_upload(
        self, swift_aio: dict[str, str], bucket: str, s3: Any
    ) -> None:
        store = S3Store.from_url(store_url(swift_aio, bucket), environ_of(swift_aio))
        await store.put(new_id(), chunked(b"make the bucket"))
        s3.create_multipart_upload(Bucket=bucket, Key=new_id())
        assert await store.sweep() == []
        await store.aclose()

    async def test_a_download_that_breaks_off_resumes_where_it_stopped(
        self, swift_aio: dict[str, str], bucket: str
    ) -> None:
        data = payload(24 * MiB, seed=32)
        writer = S3Store.from_url(store_url(swift_aio, bucket), environ_of(swift_aio))
        blob = await writer.put(new_id(), chunked(data, sizes=(CHUNK_SIZE,)))
        await writer.aclose()
        target = urlsplit(swift_aio["S3_ENDPOINT_URL"])
        proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 80, (b"Range: bytes=",))
        proxy.start()
        through = {**swift_aio, "S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
        reader = S3Store.from_url(store_url(through, bucket), environ_of(swift_aio))
        digest, seen, cut = hashlib.md5(usedforsecurity=False), 0, False
        try:
            async for chunk in reader.get(blob.location):
                digest.update(chunk)
                seen += len(chunk)
                if seen >= MiB and not cut:
                    proxy.cut()  # the open connection drops mid-body
                    proxy.restore()
                    cut = True
        finally:
            await reader.aclose()
            proxy.close()
        assert (digest.hexdigest(), seen) == (md5(data), len(data))
        assert proxy.count(b"Range: bytes=") == 1

    async def test_wrong_secret_is_store_unavailable(
        self, swift_aio: dict[str, str], bucket: str
    ) -> None:
        env = environ_of(swift_aio, AWS_SECRET_ACCESS_KEY="wrong")
        store = S3Store.from_url(store_url(swift_aio, bucket), env)
        with pytest.raises(StoreUnavailable, match=r"SignatureDoesNotMatch|AccessDenied|403"):
            await store.put(new_id(), chunked(b"data"))
        await store.aclose()


def test_url_shapes() -> None:
    env = {"OSIMAGE_S3_PART_SIZE": str(16 * 1024**2)}
    store = S3Store.from_url("s3://images/some/prefix?endpoint=http://127.0.0.1:1", env)
    assert (store.config.bucket, store.config.prefix) == ("images", "some/prefix/")
    assert store.config.part_size == 16 * 1024**2
    assert store.config.addressing_style == "path"
    with pytest.raises(StoreConfigError, match="part_size: expected an integer >= 5242880"):
        S3Store.from_url("s3://images?part_size=1024", {})
    with pytest.raises(StoreConfigError, match="not in the store URL"):
        S3Store.from_url("s3://key:secret@images", {})
    with pytest.raises(StoreConfigError, match="unknown s3 store option 'secret'"):
        S3Store.from_url("s3://images?secret=x", {})
    keyed = S3Store.from_url(
        "s3://images", {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "sekrit"}
    )
    assert keyed.config.credentials == ("id", "sekrit", None)
    assert "sekrit" not in repr(keyed) + repr(keyed.config)
