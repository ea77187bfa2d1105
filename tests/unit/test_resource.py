"""Resource fields, coercion, dirty tracking and the Image's request building (no I/O)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from osimage import exceptions, resource, wire
from osimage.image.v1.image import Image

NO_SESSION: Any = None  # verbs that must not send anything get no session at all

SEED_ATTRIBUTES = {
    "checksum",
    "container_format",
    "copy_from",
    "created_at",
    "disk_format",
    "id",
    "is_protected",
    "is_public",
    "location",
    "min_disk",
    "min_ram",
    "name",
    "owner",
    "owner_id",
    "properties",
    "size",
    "status",
    "updated_at",
}


class Widget(resource.Resource):
    """A JSON resource that allows nothing but listing, to test the generic machinery."""

    resource_key = "widget"
    resources_key = "widgets"
    base_path = "/widgets"
    allow_list = True
    _query_mapping = resource.QueryParameters("colour", sort="sort_key")

    count = resource.Body("count", int)
    enabled = resource.Body("enabled", bool)
    size = resource.Body("size", int)
    magnitude = resource.Body("size", int)  # an alias of size
    token = resource.Header("token", str, header="x-widget-token")
    labels = resource.Body("labels", dict)


# ------------------------------------------------------------------ fields


def test_image_has_every_seed_attribute_and_the_openstacksdk_keys():
    assert set(Image().to_dict()) == SEED_ATTRIBUTES
    assert (Image.resource_key, Image.resources_key, Image.base_path) == (
        "image",
        "images",
        "/images",
    )


def test_is_protected_travels_as_protected():
    image = Image.new(is_protected=True)
    assert image._build_request("create", image.dirty()).headers == {
        "x-image-meta-protected": "True"
    }
    assert Image.new(protected=True).is_protected is True  # the wire name works as a key too


@pytest.mark.parametrize(
    ("attr", "given", "stored"),
    [
        ("min_ram", "512", 512),
        ("min_disk", 3, 3),
        ("size", " 7 ", 7),
        ("is_public", "yes", True),
        ("is_public", "False", False),
        ("is_protected", 1, True),
        ("name", "n", "n"),
    ],
)
def test_values_are_coerced_to_the_field_type(attr, given, stored):
    image = Image.new(**{attr: given})
    assert getattr(image, attr) == stored
    assert type(getattr(image, attr)) is type(stored)


@pytest.mark.parametrize(
    ("attr", "bad", "why"),
    [
        ("min_ram", "lots", "expected an integer"),
        ("min_ram", -5, "non-negative"),
        ("min_disk", 2**31, "out of range"),
        ("size", 1.5, "expected an integer"),
        ("size", True, "expected an integer"),
        ("is_public", "maybe", "expected a boolean"),
        ("is_public", 2, "expected a boolean"),
        ("name", 5, "expected a string"),
        ("name", "n" * 256, "too long"),
        ("checksum", "c" * 33, "Invalid checksum"),
        ("created_at", "yesterday", "ISO 8601"),
        ("properties", ["a"], "expected a mapping"),
        ("properties", {"a": 1}, "expected a string"),
        ("properties", {"OS-Type": "x"}, "os_type"),
    ],
)
def test_bad_values_are_rejected_naming_the_attribute(attr, bad, why):
    with pytest.raises(exceptions.InvalidRequest, match=why) as caught:
        Image.new(**{attr: bad})
    assert f"Image.{attr}" in str(caught.value)
    image = Image.existing(min_ram=1)
    with pytest.raises(exceptions.InvalidRequest):
        setattr(image, attr, bad)
    assert image.min_ram == 1  # a refused assignment changes nothing
    assert image.dirty() == set()


def test_none_is_accepted_for_every_field():
    image = Image.existing(name="n", min_ram=4)
    image.name = None
    image.min_ram = None
    assert image.name is None
    assert image.min_ram is None


def test_owner_and_owner_id_are_one_value():
    image = Image.new(owner_id="p1")
    assert image.owner == "p1"
    image.owner = "p2"
    assert image.owner_id == "p2"
    assert image.to_dict()["owner"] == image.to_dict()["owner_id"] == "p2"
    assert image.dirty() == {"owner"}


def test_aliases_share_state_in_a_generic_resource():
    widget = Widget.new(magnitude=3)
    assert widget.size == 3
    assert widget.dirty() == {"size"}


def test_unknown_attributes_become_image_properties():
    image = Image.new(name="n", distro="ubuntu", properties={"arch": "x86_64"})
    assert image.properties == {"arch": "x86_64", "distro": "ubuntu"}


def test_unknown_attributes_are_an_error_for_plain_resources():
    with pytest.raises(TypeError, match="colour"):
        Widget.new(colour="red")


# ------------------------------------------------------------------ state


def test_new_is_dirty_and_existing_is_clean():
    assert Image.new(name="n", size=1).dirty() == {"name", "size"}
    assert Image.existing(name="n", size=1).dirty() == set()
    assert Image(_synchronized=True, name="n").dirty() == set()
    assert Image(name="n").dirty() == {"name"}
    assert Image(_synchronized=True)._synchronized is True
    assert Image.new()._synchronized is False


def test_connection_is_kept_and_may_be_none():
    marker = object()
    assert Image.existing(connection=marker, id="x")._connection is marker
    assert Image.new(name="n")._connection is None


def test_setting_an_equal_value_is_not_a_change():
    image = Image.existing(name="n", min_ram=4)
    image.name = "n"
    image.min_ram = "4"  # type: ignore[assignment]  # a string on purpose: it equals 4
    assert image.dirty() == set()


def test_changing_back_clears_the_change():
    image = Image.existing(name="n")
    image.name = "m"
    assert image.dirty() == {"name"}
    image.name = "n"
    assert image.dirty() == set()


def test_in_place_property_edits_are_changes():
    image = Image.existing(properties={"a": "1"})
    assert image.properties is not None
    image.properties["b"] = "2"
    assert image.dirty() == {"properties"}


def test_absorbing_server_values_clears_dirty():
    image = Image.new(name="n")
    image._absorb({"name": "n", "status": "queued", "id": "i"})
    assert image.dirty() == set()
    assert image.status == "queued"


def test_the_caller_dict_is_not_aliased():
    props = {"a": "1"}
    image = Image.existing(properties=props)
    props["a"] = "2"
    assert image.properties == {"a": "1"}
    assert image.dirty() == set()


def listed_image() -> Image:
    """An Image as `list` builds one from a JSON record."""
    record = {
        "id": "i",
        "name": "n",
        "status": "active",
        "size": 3,
        "min_ram": 0,
        "is_public": True,
        "protected": False,
        "properties": {"a": "1", "gone": None},
    }
    return Image._from_server(Image._record_values(record))


def test_a_listed_resource_is_clean_and_tracks_every_change():
    image = listed_image()
    assert image.dirty() == set()
    assert image._synchronized is True
    assert image.to_dict() == Image.existing(
        id="i", name="n", status="active", size=3, min_ram=0, is_public=True,
        is_protected=False, properties={"a": "1"},
    ).to_dict()  # fmt: skip
    assert image.properties is not None
    image.properties["b"] = "2"  # in place
    assert image.dirty() == {"properties"}
    del image.properties["b"]
    assert image.dirty() == set()
    image.properties["a"] = "changed"
    image.name = "m"
    assert image.dirty() == {"properties", "name"}


def test_a_listed_resource_tracks_edits_through_key_access_and_copies():
    image = listed_image()
    image.to_dict()["properties"]["a"] = "copy"  # a copy: no change
    assert image.dirty() == set()
    image["properties"]["b"] = "2"
    assert image.dirty() == {"properties"}

    image = listed_image()
    image.get("properties")["a"] = "2"
    assert image.dirty() == {"properties"}
    assert image._state.synced["properties"] == {"a": "1"}

    image = listed_image()
    assert (image.name, image.size) == ("n", 3)  # reading changes nothing
    image.size = 4
    assert image.dirty() == {"size"}
    image.size = 3
    assert image.dirty() == set()


def test_listed_records_must_hold_string_properties():
    with pytest.raises(exceptions.InvalidResponse, match="properties"):
        Image._record_values({"id": "i", "properties": {"a": 1}})


def test_nested_mutable_values_are_snapshotted_deeply():
    widget = Widget._from_server({"labels": {"tags": ["x"]}, "count": 1})
    assert widget.labels is not None
    widget.labels["tags"].append("y")
    assert widget.dirty() == {"labels"}

    made = Widget.existing(labels={"tags": ["x"]})
    assert made.labels is not None
    made.labels["tags"].append("y")
    assert made.dirty() == {"labels"}


def test_a_commit_response_snapshots_the_new_values():
    image = listed_image()
    image._absorb({"properties": {"a": "2"}})
    assert image.dirty() == set()
    assert image.properties is not None
    image.properties["a"] = "3"
    assert image.dirty() == {"properties"}


# ------------------------------------------------------------------ reading


def test_key_access_and_get():
    image = Image.existing(name="n", is_protected=True, owner="p")
    assert image["name"] == "n"
    assert image["is_protected"] is True
    assert image["protected"] is True  # wire spelling
    assert image["owner_id"] == "p"
    assert image.get("size") is None
    assert image.get("size", 0) == 0
    assert image.get("nope", "dflt") == "dflt"
    assert "name" in image
    assert "nope" not in image
    with pytest.raises(KeyError):
        image["nope"]


def test_to_dict_copies_and_can_drop_none():
    image = Image.existing(name="n", properties={"a": "1"})
    out = image.to_dict()
    out["properties"]["a"] = "changed"
    assert image.properties == {"a": "1"}
    assert image.to_dict(ignore_none=True) == {"name": "n", "properties": {"a": "1"}}
    assert dict(image) == image.to_dict()


def test_equality_compares_type_and_values():
    assert Image.existing(id="x", name="n") == Image.new(id="x", name="n")
    assert Image.existing(id="x", name="n") != Image.existing(id="x", name="m")
    assert Image.existing(id="x") != Widget.existing(id="x")
    assert Image.existing(id="x") != {"id": "x"}
    with pytest.raises(TypeError):
        hash(Image())


def test_repr_is_readable():
    text = repr(Image.existing(name="cirros", id="i-1", size=5, owner="p"))
    assert text == "osimage.image.v1.image.Image(id='i-1', name='cirros', owner='p', size=5)"


# ------------------------------------------------------------------ queries and capabilities


def test_unknown_query_keys_are_refused_before_sending():
    with pytest.raises(exceptions.InvalidRequest) as caught:
        Image.list(NO_SESSION, nme="x", sizemin=3)  # session is never used
    message = str(caught.value)
    assert "nme" in message
    assert "sizemin" in message
    assert "size_min" in message  # the valid ones are listed


def test_find_refuses_unknown_query_keys_before_sending():
    with pytest.raises(exceptions.InvalidRequest, match="colour"):
        Image.find(NO_SESSION, "name", colour="red")


def test_image_query_mapping():
    query = Image._query(
        {
            "name": "n",
            "changes_since": "2020-01-01",
            "is_public": False,
            "is_protected": True,
            "properties": {"distro": "ubuntu"},
            "property-arch": "x86_64",
            "status": None,
            "limit": 5,
        }
    )
    assert query == {
        "name": "n",
        "changes-since": "2020-01-01",
        "is_public": "false",
        "protected": "true",
        "property-distro": "ubuntu",
        "property-arch": "x86_64",
        "limit": "5",
    }
    assert Image._query({"changes-since": "2020"}) == {"changes-since": "2020"}


def test_method_not_supported():
    widget = Widget.new(id="w")
    calls: tuple[Any, ...] = (
        lambda: widget.create(NO_SESSION),
        lambda: widget.fetch(NO_SESSION),
        lambda: widget.head(NO_SESSION),
        lambda: widget.commit(NO_SESSION),
        lambda: widget.delete(NO_SESSION),
    )
    for call in calls:
        with pytest.raises(exceptions.MethodNotSupported, match="Widget"):
            call()


def test_find_skips_the_id_lookup_only_for_impossible_ids():
    assert Image._could_be_id("0f6b1c9e-3d1a-4a8e-9a77-2b4f3c1d5e60")
    assert Image._could_be_id("0F6B1C9E3D1A4A8E9A772B4F3C1D5E60")
    assert not Image._could_be_id("cirros")
    assert not Image._could_be_id("urn:uuid:0f6b1c9e-3d1a-4a8e-9a77-2b4f3c1d5e60")


def test_get_one_match():
    a = Image.existing(id="1", name="n")
    b = Image.existing(id="2", name="n")
    c = Image.existing(id="3", name="other")
    assert Image._get_one_match("n", [c, a]) is a
    assert Image._get_one_match("3", [a, c]) is c
    assert Image._get_one_match("zzz", [a, c]) is None

    consumed = []

    def results() -> Iterator[Image]:
        for item in (a, b, c):
            consumed.append(item)
            yield item

    with pytest.raises(exceptions.DuplicateResource):
        Image._get_one_match("n", results())
    assert consumed == [a, b]  # stops at the second match


# ------------------------------------------------------------------ Image requests


def headers_for_commit(image: Image, purge: bool | None = None) -> dict[str, str]:
    names = image.dirty()
    synced = image._state.synced.get("properties") or {}
    current = image._state.values.get("properties") or {}
    if purge is None:
        purge = bool(synced.keys() - current.keys())
    return image._meta_request(names, purge).headers


def test_create_sends_every_value_set_percent_encoded():
    image = Image.new(name="图像 100%", min_ram=5, properties={"note": "ü"}, copy_from="http://x/y")
    headers = image._build_request("create", image.dirty()).headers
    assert all(k.isascii() and v.isascii() for k, v in headers.items())
    assert wire.PURGE_PROPS_HEADER not in headers
    assert headers[wire.COPY_FROM_HEADER] == "http://x/y"
    meta = wire.decode(headers.items())
    assert meta.fields == {"name": "图像 100%", "min_ram": 5}
    assert meta.properties == {"note": "ü"}


def test_commit_sends_only_changed_headers_and_says_merge():
    image = Image.existing(id="i", name="n", min_ram=1, properties={"a": "1", "b": "2"})
    image.min_ram = 2
    image.properties = {"a": "1", "b": "3"}
    assert headers_for_commit(image) == {
        "x-image-meta-min_ram": "2",
        "x-image-meta-property-b": "3",
        wire.PURGE_PROPS_HEADER: "false",
    }


def test_removing_a_property_purges_and_resends_the_rest():
    image = Image.existing(id="i", properties={"a": "1", "b": "2"})
    image.properties = {"a": "1"}
    assert headers_for_commit(image) == {
        "x-image-meta-property-a": "1",
        wire.PURGE_PROPS_HEADER: "true",
    }


def test_clearing_a_text_field_sends_an_empty_header():
    image = Image.existing(id="i", name="n")
    image.name = None
    assert headers_for_commit(image)["x-image-meta-name"] == ""


def test_clearing_a_number_is_refused():
    image = Image.existing(id="i", min_ram=3)
    image.min_ram = None
    with pytest.raises(exceptions.InvalidRequest, match="min_ram"):
        headers_for_commit(image)


def test_commit_with_nothing_changed_sends_nothing():
    image = Image.existing(id="i", name="n")
    assert image.commit(NO_SESSION) is image  # None would fail if anything were sent


def test_the_hooks_build_commit_and_upload_requests():
    image = Image.existing(id="i", properties={"a": "1", "b": "2"})
    image.properties = {"a": "1"}
    assert image._build_request("commit", image.dirty()).headers == headers_for_commit(image)
    upload = image._build_request("upload", image.dirty())
    assert wire.PURGE_PROPS_HEADER not in upload.headers  # an upload never purges
    assert upload.data is None


def test_attached_data_is_sent_as_octet_stream_and_never_as_text():
    request = resource.Request({"x-image-meta-name": "n"})
    # attach() accepts a bytearray, but `resource.Data` does not list it
    request.attach(bytearray(b"abc"))  # type: ignore[arg-type]
    assert request.data == b"abc"
    assert request.headers["Content-Type"] == "application/octet-stream"
    with pytest.raises(exceptions.InvalidRequest, match="not str"):
        resource.Request().attach("abc")  # type: ignore[arg-type]


def test_an_upload_that_asks_to_purge_is_refused_before_sending():
    image = Image.existing(id="i")
    with pytest.raises(exceptions.InvalidRequest, match="purge_props"):
        image.commit(NO_SESSION, data=b"x", purge_props=True)


def test_a_resource_without_wire_hooks_says_so():
    with pytest.raises(NotImplementedError, match="Widget"):
        Widget.new(count=1)._build_request("create", {"count"})


def test_verbs_need_an_id():
    with pytest.raises(exceptions.InvalidRequest, match="no id"):
        Image.new(name="n").fetch(NO_SESSION)
