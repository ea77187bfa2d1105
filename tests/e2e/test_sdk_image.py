"""The SDK's Image against a real `osimage serve`: every verb, find, paging, streaming, checksums.

Requests are recorded with a requests response hook on the keystoneauth session, so the
tests see exactly which requests and headers went over the wire.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from keystoneauth1 import adapter, session, token_endpoint
from keystoneauth1 import exceptions as ksa_exceptions

from osimage import exceptions, wire
from osimage.image.v1.image import Image
from tests.support.server import Server

pytestmark = pytest.mark.e2e


@dataclass
class Sent:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any

    def meta(self) -> dict[str, str]:
        """The x-image-meta and purge headers this request carried (lower-cased names)."""
        return {
            k: v
            for k, v in self.headers.items()
            if k.startswith(wire.PREFIX) or k in (wire.PURGE_PROPS_HEADER, wire.COPY_FROM_HEADER)
        }


@dataclass
class Recorder:
    sent: list[Sent] = field(default_factory=list)

    def hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        request = response.request
        url = urlsplit(request.url or "")
        self.sent.append(
            Sent(
                method=request.method or "",
                path=url.path,
                query=url.query,
                headers={k.lower(): v for k, v in request.headers.items()},
                body=request.body,
            )
        )

    def clear(self) -> None:
        self.sent.clear()

    def calls(self) -> list[tuple[str, str]]:
        return [(s.method, s.path) for s in self.sent]


def make_adapter(endpoint: str, token: str | None = None) -> tuple[adapter.Adapter, Recorder]:
    recorder = Recorder()
    http = requests.Session()
    http.hooks["response"].append(recorder.hook)
    auth = token_endpoint.Token(endpoint, token) if token else None
    return adapter.Adapter(session.Session(auth=auth, session=http), endpoint_override=endpoint), (
        recorder
    )


@pytest.fixture
def sdk(server: Server) -> Iterator[tuple[adapter.Adapter, Recorder]]:
    ad, rec = make_adapter(server.endpoint)
    yield ad, rec
    ad.session.session.close()


# noauth callers are admins without a project: lists show them public images only (spec
# §10.2), so tests that list or find by name make their images public.


def unique(prefix: str = "img") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def id_of(image: Image) -> str:
    """The id of an image the server has given one."""
    assert image.id is not None
    return image.id


def closable(pages: Iterator[Image]) -> Generator[Image]:
    """`Image.list`'s iterator, which is a generator a caller may ``close()``."""
    assert isinstance(pages, Generator)
    return pages


def chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


SEEDED = (
    "checksum",
    "container_format",
    "created_at",
    "disk_format",
    "id",
    "is_protected",
    "is_public",
    "min_disk",
    "min_ram",
    "name",
    "owner",
    "owner_id",
    "properties",
    "size",
    "status",
    "updated_at",
)


def seen(image: Image) -> dict[str, Any]:
    return {attr: image[attr] for attr in SEEDED}


# ------------------------------------------------------------------ the lifecycle


def test_every_attribute_round_trips(sdk):
    ad, rec = sdk
    data = b"osimage-" * 1000
    name = unique("Ünïcode 100% 图像")
    image = Image.new(
        name=name,
        disk_format="qcow2",
        container_format="bare",
        min_disk=2,
        min_ram=512,
        is_public=True,
        is_protected=True,
        owner_id="p-owner",
        properties={"distro": "ubuntu", "note": "50% ü"},
    )
    created = image.create(ad, data=data)
    assert created is image
    assert image.dirty() == set()
    assert image.status == "active"
    assert image.size == len(data)
    assert image.checksum == hashlib.md5(data).hexdigest()
    assert image.owner == image.owner_id == "p-owner"
    assert image.created_at
    assert image.updated_at
    post = rec.sent[-1]
    assert (post.method, post.path) == ("POST", "/v1/images")
    assert all(k.isascii() and v.isascii() for k, v in post.headers.items())
    assert post.headers["content-type"] == "application/octet-stream"

    # HEAD gives the same values as the POST's JSON record
    fetched = Image.existing(id=image.id).fetch(ad)
    assert rec.sent[-1].method == "HEAD"
    assert seen(fetched) == seen(image)
    assert fetched.name == name
    assert fetched.properties == {"distro": "ubuntu", "note": "50% ü"}
    assert fetched.is_protected is True
    assert fetched.min_ram == 512

    # and so does the detail list
    listed = list(Image.list(ad, name=name))
    assert rec.sent[-1].path == "/v1/images/detail"
    assert [seen(i) for i in listed] == [seen(image)]

    # commit: only changes travel, then the server's values come back
    fetched.name = name + " renamed"
    fetched.min_ram = 1024
    fetched.is_public = False
    fetched.properties["distro"] = "fedora"
    fetched.commit(ad)
    assert rec.sent[-1].method == "PUT"
    assert fetched.dirty() == set()
    again = Image.existing(id=image.id).fetch(ad)
    assert again.name == name + " renamed"
    assert again.min_ram == 1024
    assert again.is_public is False
    assert again.properties == {"distro": "fedora", "note": "50% ü"}
    assert again.min_disk == 2

    # protected images cannot be deleted
    with pytest.raises(exceptions.ForbiddenException):
        again.delete(ad)
    again.is_protected = False
    again.commit(ad)
    assert again.delete(ad) is again
    assert rec.sent[-1].method == "DELETE"
    # noauth callers are admins, who still see a deleted image by id (spec §9.6)
    assert Image.existing(id=image.id).fetch(ad).status == "deleted"
    with pytest.raises(exceptions.ResourceNotFound):
        again.delete(ad)
    assert Image.find(ad, name + " renamed") is None


def test_reserve_then_upload(sdk):
    ad, rec = sdk
    image = Image.new(name=unique(), disk_format="raw", container_format="bare").create(ad)
    assert image.status == "queued"
    assert image.checksum is None
    data = b"x" * 5000
    assert image.name is not None
    image.name = image.name + " uploaded"
    image.properties = {"stage": "uploaded"}
    rec.clear()
    image.upload(ad, data)
    [put] = rec.sent  # metadata changes travel with the data
    assert put.meta() == {
        "x-image-meta-name": image.name,
        "x-image-meta-property-stage": "uploaded",
    }
    assert put.body == data
    assert image.dirty() == set()
    assert Image.existing(id=image.id).fetch(ad).properties == {"stage": "uploaded"}
    assert image.status == "active"
    assert image.checksum == hashlib.md5(data).hexdigest()
    assert image.download(ad) == data
    image.delete(ad)


def test_head_is_fetch(sdk):
    ad, rec = sdk
    image = Image.new(name=unique(), min_ram=7).create(ad)
    copy = Image.existing(id=image.id).head(ad)
    assert rec.calls()[-1] == ("HEAD", f"/v1/images/{image.id}")
    assert copy == image
    image.delete(ad)


def test_location_and_copy_from_travel_in_their_headers(sdk):
    ad, rec = sdk
    source = "http://127.0.0.1:1/never"
    with pytest.raises(exceptions.BadRequestException):
        Image.new(
            name=unique(), disk_format="raw", container_format="bare", location=source
        ).create(ad)
    assert rec.sent[-1].headers[wire.PREFIX + "location"] == source
    with pytest.raises(exceptions.BadRequestException):
        Image.new(name=unique(), copy_from=source).create(ad)
    assert rec.sent[-1].headers[wire.COPY_FROM_HEADER] == source
    assert wire.PREFIX + "copy_from" not in rec.sent[-1].headers


def test_server_errors_map_to_sdk_exceptions(sdk):
    ad, _ = sdk
    with pytest.raises(exceptions.BadRequestException) as caught:
        Image.new(name=unique(), disk_format="floppy").create(ad)
    assert caught.value.status_code == 400
    assert "floppy" in str(caught.value)
    with pytest.raises(exceptions.NotFoundException):
        Image.existing(id=str(uuid.uuid4())).fetch(ad)


# ------------------------------------------------------------------ dirty-only commits


def test_commit_sends_only_what_changed(sdk):
    ad, rec = sdk
    image = Image.new(
        name=unique(), min_ram=1, min_disk=1, properties={"a": "1", "b": "2", "c": "3"}
    ).create(ad)

    rec.clear()
    image.commit(ad)
    assert rec.sent == []  # nothing changed: no request

    image.min_ram = 64
    assert image.properties is not None
    image.properties["b"] = "two"
    image.commit(ad)
    [put] = rec.sent
    assert (put.method, put.path) == ("PUT", f"/v1/images/{image.id}")
    assert put.meta() == {
        "x-image-meta-min_ram": "64",
        "x-image-meta-property-b": "two",
        wire.PURGE_PROPS_HEADER: "false",
    }
    assert put.body is None
    fetched = Image.existing(id=image.id).fetch(ad)
    assert fetched.properties == {"a": "1", "b": "two", "c": "3"}  # merged, none lost
    assert fetched.min_ram == 64
    assert fetched.min_disk == 1

    rec.clear()
    assert image.properties is not None
    del image.properties["a"]
    image.commit(ad)
    assert rec.sent[0].meta() == {
        "x-image-meta-property-b": "two",
        "x-image-meta-property-c": "3",
        wire.PURGE_PROPS_HEADER: "true",
    }
    assert Image.existing(id=image.id).fetch(ad).properties == {"b": "two", "c": "3"}

    rec.clear()
    image.name = None  # v1's null is an empty header
    image.commit(ad)
    assert rec.sent[0].meta() == {"x-image-meta-name": "", wire.PURGE_PROPS_HEADER: "false"}
    assert Image.existing(id=image.id).fetch(ad).name is None
    image.delete(ad)


def test_explicit_purge_choice(sdk):
    ad, rec = sdk
    image = Image.new(name=unique(), properties={"keep": "1"}).create(ad)
    # another client adds a property behind our back
    other = Image.existing(id=image.id).fetch(ad)
    assert other.properties is not None
    other.properties["theirs"] = "x"
    other.commit(ad)

    rec.clear()
    image.commit(ad, purge_props=False)
    assert rec.sent == []  # nothing to send and nothing to purge
    image.commit(ad, purge_props=True)  # make the server's set exactly ours
    assert rec.sent[0].meta() == {
        "x-image-meta-property-keep": "1",
        wire.PURGE_PROPS_HEADER: "true",
    }
    assert Image.existing(id=image.id).fetch(ad).properties == {"keep": "1"}
    image.delete(ad)


# ------------------------------------------------------------------ find


def test_find_by_id_takes_one_request(sdk):
    ad, rec = sdk
    image = Image.new(name=unique()).create(ad)
    rec.clear()
    assert Image.find(ad, id_of(image)) == image
    assert rec.calls() == [("HEAD", f"/v1/images/{image.id}")]
    image.delete(ad)


def test_find_by_name_takes_one_request(sdk):
    ad, rec = sdk
    name = unique("cirros")
    image = Image.new(is_public=True, name=name).create(ad)
    rec.clear()
    found = Image.find(ad, name)
    assert found == image
    assert rec.calls() == [("GET", "/v1/images/detail")]
    assert "limit=2" in rec.sent[0].query
    image.delete(ad)


def test_find_missing(sdk):
    ad, rec = sdk
    rec.clear()
    assert Image.find(ad, unique("nothing")) is None
    assert len(rec.sent) == 1  # not an id: no HEAD
    rec.clear()
    assert Image.find(ad, str(uuid.uuid4())) is None
    assert [m for m, _ in rec.calls()] == ["HEAD", "GET"]
    with pytest.raises(exceptions.ResourceNotFound):
        Image.find(ad, unique("nothing"), ignore_missing=False)
    with pytest.raises(exceptions.NotFoundException):
        Image.find(ad, str(uuid.uuid4()), ignore_missing=False)


def test_find_a_name_that_looks_like_an_id(sdk):
    ad, rec = sdk
    name = str(uuid.uuid4())
    image = Image.new(is_public=True, name=name).create(ad)
    rec.clear()
    assert Image.find(ad, name) == image
    assert [m for m, _ in rec.calls()] == ["HEAD", "GET"]
    image.delete(ad)


def test_find_duplicates(sdk):
    ad, rec = sdk
    name = unique("twin")
    first = Image.new(is_public=True, name=name).create(ad)
    second = Image.new(is_public=True, name=name).create(ad)
    rec.clear()
    with pytest.raises(exceptions.DuplicateResource, match=name):
        Image.find(ad, name)
    assert len(rec.sent) == 1
    with pytest.raises(exceptions.DuplicateResource):
        Image.find(ad, name, ignore_missing=False)
    first.delete(ad)
    assert Image.find(ad, name) == second
    second.delete(ad)


def test_find_passes_params_through(sdk):
    ad, rec = sdk
    name = unique()
    image = Image.new(is_public=True, name=name, disk_format="raw", container_format="bare").create(
        ad
    )
    assert Image.find(ad, name, disk_format="qcow2") is None
    assert "disk_format=qcow2" in rec.sent[-1].query
    assert Image.find(ad, name, disk_format="raw") == image
    image.delete(ad)


# ------------------------------------------------------------------ paging


def test_list_follows_pages_to_the_end(fresh_server):
    ad, rec = make_adapter(fresh_server.endpoint)
    ids = [id_of(Image.new(is_public=True, name=f"page-{n}").create(ad)) for n in range(7)]

    rec.clear()
    everything = list(Image.list(ad, limit=3))
    assert sorted(id_of(i) for i in everything) == sorted(ids)
    assert len({i.id for i in everything}) == 7
    assert [s.method for s in rec.sent] == ["GET", "GET", "GET"]  # 3 + 3 + 1, short page ends
    assert "marker" not in rec.sent[0].query
    assert f"marker={everything[2].id}" in rec.sent[1].query
    assert f"marker={everything[5].id}" in rec.sent[2].query

    # the default order, unpaged, is the same order
    assert [i.id for i in Image.list(ad, paginated=False)] == [i.id for i in everything]

    rec.clear()
    assert [i.id for i in Image.list(ad, limit=3, max_items=5)] == [i.id for i in everything[:5]]
    assert len(rec.sent) == 2

    rec.clear()
    assert len(list(Image.list(ad, limit=3, paginated=False))) == 3
    assert len(rec.sent) == 1

    rec.clear()
    assert len(list(Image.list(ad, max_items=2))) == 2
    assert "limit=2" in rec.sent[0].query
    assert len(rec.sent) == 1

    Image.existing(id=ids[0]).delete(ad)
    rec.clear()
    assert len(list(Image.list(ad, limit=3))) == 6
    assert len(rec.sent) == 3  # 3 + 3 + an empty page

    rec.clear()
    assert [i.name for i in Image.list(ad, limit=4, sort_key="name", sort_dir="asc")] == [
        f"page-{n}" for n in range(1, 7)
    ]
    assert len(rec.sent) == 2


def test_list_is_lazy(fresh_server):
    ad, rec = make_adapter(fresh_server.endpoint)
    for n in range(3):
        Image.new(is_public=True, name=f"lazy-{n}").create(ad)
    rec.clear()
    pages = Image.list(ad, limit=1)
    assert rec.sent == []
    next(pages)
    assert len(rec.sent) == 1


def readers() -> list[threading.Thread]:
    """Threads reading list pages ahead that are still alive."""
    return [t for t in threading.enumerate() if t.name.startswith("osimage-list")]


def named_catalogue(ad: adapter.Adapter, count: int) -> list[str]:
    """Ids of `count` public images named so that ``sort_key=name`` lists them in order."""
    return [
        Image.new(is_public=True, name=f"ahead-{n:02}").create(ad).id or "" for n in range(count)
    ]


def test_list_reads_ahead_one_page_and_sends_nothing_past_the_end(fresh_server):
    ad, rec = make_adapter(fresh_server.endpoint)
    ids = named_catalogue(ad, 9)
    by_name: dict[str, Any] = {"limit": 2, "sort_key": "name", "sort_dir": "asc"}

    rec.clear()
    assert [i.id for i in Image.list(ad, **by_name)] == ids
    assert len(rec.sent) == 5  # 2 + 2 + 2 + 2 + 1: the short page ends it, nothing after
    assert [q for s in rec.sent for q in s.query.split("&") if q.startswith("marker=")] == [
        f"marker={ids[n]}" for n in (1, 3, 5, 7)
    ]
    assert readers() == []

    # within page 2, page 3 is read ahead; never page 4
    rec.clear()
    pages = closable(Image.list(ad, **by_name))
    assert [next(pages).id for _ in range(3)] == ids[:3]
    pages.close()  # waits for the request in flight
    assert len(rec.sent) == 3
    assert f"marker={ids[3]}" in rec.sent[2].query
    assert readers() == []

    # a generator dropped mid-list is closed the same way
    rec.clear()
    pages = closable(Image.list(ad, **by_name))
    assert [next(pages).id for _ in range(5)] == ids[:5]
    del pages
    assert len(rec.sent) == 4
    assert readers() == []

    # a list read within its first page reads nothing ahead
    rec.clear()
    pages = closable(Image.list(ad, **by_name))
    assert [next(pages).id for _ in range(2)] == ids[:2]
    pages.close()
    assert len(rec.sent) == 1

    # the caller may use the same session while a page is read ahead
    rec.clear()
    fetched = [Image.existing(id=i.id).fetch(ad).name for i in Image.list(ad, **by_name)]
    assert fetched == [f"ahead-{n:02}" for n in range(9)]
    assert [s.method for s in rec.sent].count("GET") == 5
    assert readers() == []

    # max_items stops the reading ahead too
    rec.clear()
    assert [i.id for i in Image.list(ad, max_items=6, **by_name)] == ids[:6]
    assert len(rec.sent) == 3
    assert readers() == []


def stop_after_list_response(number: int, server: Server) -> Any:
    """A response hook that kills `server` once it has answered that many list requests.

    The next page's request then fails to connect: a real error on a page read ahead,
    at a known point.
    """
    seen = 0

    def hook(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        nonlocal seen
        if response.request.method == "GET" and "/images/detail" in (response.url or ""):
            seen += 1
            if seen == number:
                response.content  # noqa: B018 - the page is read before the server goes
                server.kill()

    return hook


def test_an_error_on_a_page_read_ahead_is_raised_when_the_caller_reaches_it(fresh_server):
    ad, rec = make_adapter(fresh_server.endpoint)
    ids = named_catalogue(ad, 9)
    ad.session.session.hooks["response"].append(stop_after_list_response(3, fresh_server))
    rec.clear()

    pages = Image.list(ad, limit=2, sort_key="name", sort_dir="asc")
    assert [next(pages).id for _ in range(6)] == ids[:6]  # pages 1-3, whole
    with pytest.raises(ksa_exceptions.ConnectFailure):  # page 4, read ahead, failed
        next(pages)
    assert len(rec.sent) == 3
    with pytest.raises(StopIteration):
        next(pages)
    assert readers() == []


def test_closing_early_discards_an_error_the_caller_never_reached(fresh_server):
    ad, rec = make_adapter(fresh_server.endpoint)
    ids = named_catalogue(ad, 9)
    ad.session.session.hooks["response"].append(stop_after_list_response(3, fresh_server))
    rec.clear()

    pages = closable(Image.list(ad, limit=2, sort_key="name", sort_dir="asc"))
    assert [next(pages).id for _ in range(5)] == ids[:5]  # within page 3; page 4 sent
    pages.close()  # no exception: page 4 failed, but the caller never reached it
    assert len(rec.sent) == 3
    assert readers() == []


def test_list_filters(fresh_server):
    ad, _ = make_adapter(fresh_server.endpoint)
    Image.new(
        is_public=True, name="a", disk_format="raw", container_format="bare", properties={"os": "x"}
    ).create(ad, data=b"12345")
    Image.new(
        is_public=True,
        name="b",
        disk_format="qcow2",
        container_format="bare",
        properties={"os": "y"},
    ).create(ad, data=b"1234567890")
    Image.new(is_public=True, name="c").create(ad)

    def names(**query: Any) -> list[str]:
        return sorted(i.name or "" for i in Image.list(ad, **query))

    assert names() == ["a", "b", "c"]
    assert names(disk_format="raw") == ["a"]
    assert names(status="active") == ["a", "b"]
    assert names(size_min=6) == ["b"]
    assert names(size_max=5) == ["a", "c"]
    assert names(properties={"os": "y"}) == ["b"]
    assert names(**{"property-os": "x"}) == ["a"]
    assert names(changes_since="2000-01-01T00:00:00") == ["a", "b", "c"]
    assert names(changes_since="2999-01-01T00:00:00") == []


# ------------------------------------------------------------------ streaming and checksums


def test_upload_streams_from_a_generator(sdk):
    ad, rec = sdk
    data = bytes(range(256)) * 400
    gen = chunks(data, 4096)
    image = Image.new(name=unique(), disk_format="raw", container_format="bare").create(
        ad, data=gen
    )
    post = rec.sent[-1]
    assert post.body is gen  # handed to requests as an iterator, not joined
    assert post.headers["transfer-encoding"] == "chunked"
    assert image.size == len(data)
    assert image.checksum == hashlib.md5(data).hexdigest()
    assert image.download(ad) == data
    image.delete(ad)


def test_upload_streams_from_a_file(sdk: tuple[adapter.Adapter, Recorder], tmp_path: Path) -> None:
    ad, rec = sdk
    data = b"file-data-" * 5000
    path = tmp_path / "disk.raw"
    path.write_bytes(data)
    with path.open("rb") as handle:
        image = Image.new(name=unique(), disk_format="raw", container_format="bare").create(
            ad, data=handle
        )
        post = rec.sent[-1]
        assert post.body is handle  # streamed by requests from the file object
    assert post.headers["content-length"] == str(len(data))
    assert image.size == len(data)
    assert image.checksum == hashlib.md5(data).hexdigest()

    reserved = Image.new(name=unique(), disk_format="raw", container_format="bare").create(ad)
    with path.open("rb") as handle:
        reserved.upload(ad, handle)
    assert reserved.checksum == image.checksum
    image.delete(ad)
    reserved.delete(ad)


def test_verified_download_every_way(sdk: tuple[adapter.Adapter, Recorder], tmp_path: Path) -> None:
    ad, rec = sdk
    data = b"0123456789abcdef" * 10000
    image = Image.new(name=unique(), disk_format="raw", container_format="bare").create(
        ad, data=data
    )

    rec.clear()
    target = tmp_path / "out.img"
    assert image.download(ad, output=target) is None
    assert target.read_bytes() == data
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not a private temp file's mode
    assert rec.calls() == [("GET", f"/v1/images/{image.id}")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.img"]

    buffer = io.BytesIO()
    image.download(ad, output=buffer)
    assert buffer.getvalue() == data

    with image.download(ad, stream=True, chunk_size=1000) as stream:
        pieces = list(stream)
    assert b"".join(pieces) == data
    assert max(len(p) for p in pieces) <= 1000
    assert stream.size == len(data)
    assert stream.expected_md5 == hashlib.md5(data).hexdigest()
    assert stream.expected_sha256 == hashlib.sha256(data).hexdigest()  # both were checked

    assert image.download(ad) == data
    assert b"".join(image.data(ad)) == data
    image.delete(ad)


def test_download_of_an_empty_image(sdk):
    ad, _ = sdk
    image = Image.new(name=unique(), size=0).create(ad)
    assert image.status == "active"
    assert image.download(ad) == b""
    image.delete(ad)


def blob_of(server: Server, image_id: str) -> Path:
    found = [
        p for p in (server.data_dir / "images").rglob("*") if p.is_file() and image_id in p.name
    ]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.file_store
def test_corrupted_data_is_detected(
    server: Server, sdk: tuple[adapter.Adapter, Recorder], tmp_path: Path
) -> None:
    ad, _ = sdk
    data = b"good data " * 5000
    image = Image.new(name=unique(), disk_format="raw", container_format="bare").create(
        ad, data=data
    )
    blob = blob_of(server, id_of(image))
    raw = bytearray(blob.read_bytes())
    raw[100:110] = b"BAD  DATA!"  # same length: only the checksum can tell
    blob.write_bytes(bytes(raw))

    with pytest.raises(exceptions.ChecksumMismatch, match="md5") as caught:
        image.download(ad)
    assert "sha256" in str(caught.value)

    target = tmp_path / "out.img"
    with pytest.raises(exceptions.ChecksumMismatch):
        image.download(ad, output=target)
    assert list(tmp_path.iterdir()) == []  # no file under the final name, no partial left

    buffer = io.BytesIO(b"prefix:")
    buffer.seek(0, io.SEEK_END)
    with pytest.raises(exceptions.InvalidResponse):
        image.download(ad, output=buffer)
    assert buffer.getvalue() == b"prefix:"  # rolled back to where it started

    received: list[bytes] = []
    with pytest.raises(exceptions.ChecksumMismatch):
        received.extend(image.download(ad, stream=True))
    assert b"".join(received) == bytes(raw)  # every byte was seen before the verdict

    image.delete(ad)


# ------------------------------------------------------------------ identities


def test_tokens_and_isolation(tokens_server):
    alice, _ = make_adapter(tokens_server.endpoint, "alice-token")
    bob, _ = make_adapter(tokens_server.endpoint, "bob-token")
    admin, _ = make_adapter(tokens_server.endpoint, "admin-token")
    name = unique("private")
    image = Image.new(name=name).create(alice)
    assert image.owner == "p-alice"
    assert Image.find(alice, name) == image
    assert Image.find(bob, name) is None
    assert Image.find(bob, id_of(image)) is None
    with pytest.raises(exceptions.NotFoundException):
        Image.existing(id=image.id).fetch(bob)
    found = Image.find(admin, id_of(image))
    assert found is not None
    assert found.owner_id == "p-alice"
    image.delete(alice)
