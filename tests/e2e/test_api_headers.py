"""Spec §6 and §7: metadata header names, value validation, text encoding and formats."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.e2e.api_client import PREFIX, Api, meta, props, unique

pytestmark = pytest.mark.e2e

DISK_FORMATS = ["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"]
CONTAINER_FORMATS = ["ami", "ari", "aki", "bare", "ovf", "ova", "docker"]


@pytest.fixture(scope="module")
def queued(api: Api) -> dict[str, Any]:
    return api.reserve(name="header-target", disk_format="raw", container_format="bare")


def _created_nothing(api: Api, name: str) -> bool:
    return api.detail(name=name, is_public="none").images == []


# -- §6.1 names ------------------------------------------------------------------


def test_unknown_field_is_400_bad_header(api: Api) -> None:
    tag = unique()
    resp = api.create({**meta(name=tag), "X-Image-Meta-Colour": "blue"})
    assert resp.status == 400, resp
    assert "x-image-meta-colour" in resp.text
    assert _created_nothing(api, tag)


def test_unknown_field_on_update_is_400_even_for_an_unknown_id(api: Api) -> None:
    resp = api.update(str(uuid.uuid4()), {"x-image-meta-colour": "blue"})
    assert resp.status == 400, resp


def test_names_are_case_insensitive_and_dashes_mean_underscores(api: Api) -> None:
    resp = api.create(
        {
            "X-Image-Meta-Disk-Format": "raw",
            "X-IMAGE-META-CONTAINER-FORMAT": "bare",
            "X-Image-Meta-Min-Ram": "64",
            "x-image-meta-min_disk": "2",
            "X-Image-Meta-Is-Public": "True",
        }
    )
    assert resp.status == 201, resp
    image = resp.image
    assert (image["disk_format"], image["container_format"]) == ("raw", "bare")
    assert (image["min_ram"], image["min_disk"], image["is_public"]) == (64, 2, True)
    assert image["status"] == "queued"


def test_property_keys_are_lower_cased_with_dashes_as_underscores(api: Api) -> None:
    resp = api.create(
        {"X-Image-Meta-Property-Distro": "Fedora", "X-Image-Meta-Property-OS-Type": "l"}
    )
    assert resp.status == 201
    assert resp.image["properties"] == {"distro": "Fedora", "os_type": "l"}


def test_other_headers_are_ignored(api: Api) -> None:
    resp = api.create({"X-Image-Colour": "blue", "X-Meta-Name": "no", **meta(name="plain")})
    assert resp.status == 201
    assert resp.image["name"] == "plain"
    assert resp.image["properties"] == {}


# -- §6.2 values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", "invalid"),
        ("size", "-10"),
        ("size", "1.5"),
        ("min_disk", "-42"),
        ("min_ram", "-42"),
        ("min_disk", "abc"),
        ("min_disk", "2147483648"),
        ("min_ram", "2147483648"),
        ("min_disk", "9223372036854775808"),
        ("min_ram", "9223372036854775808"),
        ("virtual_size", "abc"),
        ("virtual_size", "-1"),
        ("created_at", "-42"),
        ("created_at", "foo"),
        ("updated_at", "1100"),
        ("deleted_at", "2012-01-01hey12:32:12"),
        ("name", "n" * 256),
        ("checksum", "c" * 33),
        ("checksum", "c" * 42),
        ("id", "not-a-uuid"),
    ],
)
def test_bad_values_on_create_are_400_and_create_nothing(api: Api, field: str, value: str) -> None:
    tag = unique()
    headers = {**meta(name=tag, is_public=True), PREFIX + field: value}
    resp = api.create(headers)
    assert resp.status == 400, resp
    if field != "name":
        assert field in resp.text, resp.text
    assert _created_nothing(api, tag)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", "invalid"),
        ("min_disk", "-42"),
        ("min_ram", "2147483649"),
        ("min_disk", "2147483649"),
        ("created_at", "foo"),
        ("name", "n" * 256),
        ("checksum", "c" * 33),
    ],
)
def test_bad_values_on_update_are_400_and_change_nothing(
    api: Api, queued: dict[str, Any], field: str, value: str
) -> None:
    resp = api.update(queued["id"], {PREFIX + field: value})
    assert resp.status == 400, resp
    head = api.head(queued["id"])
    assert head.meta["name"] == "header-target"
    assert head.meta["min_disk"] == "0"


def test_bad_value_on_an_unknown_id_is_400_not_404(api: Api) -> None:
    assert api.update(str(uuid.uuid4()), meta(min_ram="-1")).status == 400


@pytest.mark.parametrize("field", ["min_disk", "min_ram"])
def test_int32_maximum_is_accepted(api: Api, field: str) -> None:
    resp = api.create(meta(**{field: "2147483647"}))
    assert resp.status == 201, resp
    assert resp.image[field] == 2147483647


@pytest.mark.parametrize("field", ["size", "min_disk", "min_ram"])
def test_empty_integer_value_means_not_given(api: Api, field: str) -> None:
    # queens: unhandled -> 500 (§19). osimage applies §6.2's general rule instead:
    # an empty header value is null, so the field keeps its default.
    resp = api.create({PREFIX + field: ""})
    assert resp.status == 201, resp
    assert resp.image[field] == 0
    assert resp.image["status"] == "queued"


def test_name_of_255_characters_is_accepted(api: Api) -> None:
    resp = api.create(meta(name="n" * 255))
    assert resp.status == 201
    assert resp.image["name"] == "n" * 255


def test_virtual_size_accepts_none(api: Api) -> None:
    resp = api.create(meta(virtual_size="None"))
    assert resp.status == 201, resp
    assert resp.image["virtual_size"] is None
    resp = api.create(meta(virtual_size="77"))
    assert resp.image["virtual_size"] == 77


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", True),
        ("t", True),
        ("TRUE", True),
        (" on ", True),
        ("y", True),
        ("Yes", True),
        ("0", False),
        ("false", False),
        ("None", False),
        ("garbage", False),
        ("nope", False),
    ],
)
def test_boolean_spellings(api: Api, value: str, expected: bool) -> None:
    resp = api.create(meta(protected=value, is_public=value))
    assert resp.status == 201, resp
    assert resp.image["protected"] is expected
    assert resp.image["is_public"] is expected
    if expected:
        assert api.update(resp.image["id"], meta(protected=False)).status == 200


def test_valid_timestamps_on_create_are_accepted(api: Api) -> None:
    resp = api.create(meta(created_at="2012-01-01T00:00:00", deleted_at="2012-01-01"))
    assert resp.status == 201, resp


def test_timestamps_on_update_are_validated_then_ignored(api: Api, queued: dict[str, Any]) -> None:
    before = api.head(queued["id"]).meta["created_at"]
    resp = api.update(queued["id"], meta(created_at="2001-01-01T00:00:00"))
    assert resp.status == 200, resp
    assert resp.image["created_at"] == before


@pytest.mark.parametrize("field", ["deleted", "deleted_at"])
def test_deleted_fields_on_update_are_ignored(api: Api, field: str) -> None:
    image = api.reserve(name=unique())
    value = "True" if field == "deleted" else "2012-01-01T00:00:00"
    resp = api.update(image["id"], {PREFIX + field: value})
    assert resp.status == 200, resp
    assert resp.image["deleted"] is False
    assert resp.image["deleted_at"] is None
    head = api.head(image["id"])
    assert head.meta["status"] == "queued"
    assert head.meta["deleted"] == "False"


def test_status_on_create_is_ignored(api: Api) -> None:
    resp = api.create(meta(status="active"))
    assert resp.status == 201
    assert resp.image["status"] == "queued"


def test_copy_from_and_uri_fields_have_no_effect(api: Api) -> None:
    resp = api.create(meta(copy_from="http://127.0.0.1:1/x", uri="http://127.0.0.1:1/y"))
    assert resp.status == 201, resp
    assert resp.image["status"] == "queued"


def test_id_on_create(api: Api) -> None:
    wanted = str(uuid.uuid4())
    resp = api.create(meta(id=wanted))
    assert resp.status == 201, resp
    assert resp.image["id"] == wanted
    assert api.create(meta(id=wanted)).status == 409


# -- §6.3 text encoding -----------------------------------------------------------


def test_raw_utf8_values_are_stored_as_text_and_written_back_raw(api: Api) -> None:
    name = "café ☃ 雪"
    resp = api.create(
        [(PREFIX + "name", name.encode()), ("x-image-meta-property-motto", "ü".encode())]
    )
    assert resp.status == 201, resp
    assert resp.image["name"] == name
    assert resp.image["properties"] == {"motto": "ü"}
    head = api.head(resp.image["id"])
    assert head.meta["name"] == name  # the client decodes the header bytes as UTF-8
    raw = dict((k.lower(), v) for k, v in head.raw_headers)
    assert raw[PREFIX + "name"].encode("latin-1") == name.encode()


def test_percent_encoded_values_are_decoded(api: Api) -> None:
    resp = api.create(
        {PREFIX + "name": "my%20image%20caf%C3%A9", "x-image-meta-property-p": "a%2Fb"}
    )
    assert resp.status == 201, resp
    assert resp.image["name"] == "my image café"
    assert resp.image["properties"] == {"p": "a/b"}
    assert api.head(resp.image["id"]).meta["name"] == "my image café"


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (b"100% pure", "100% pure"),  # no %XX escape: literal
        ("café%20ok".encode(), "café%20ok"),  # raw UTF-8 is never percent-decoded
        (b"50%25", "50%"),
    ],
)
def test_percent_signs_that_are_not_encoding(api: Api, sent: bytes, stored: str) -> None:
    resp = api.create([("x-image-meta-property-p", sent)])
    assert resp.status == 201, resp
    assert resp.image["properties"] == {"p": stored}
    assert api.head(resp.image["id"]).properties == {"p": stored}


def test_invalid_utf8_is_400(api: Api) -> None:
    resp = api.create([(PREFIX + "name", b"\xff\xfe bad")])
    assert resp.status == 400, resp


# -- §7 formats -------------------------------------------------------------------


@pytest.mark.parametrize("value", DISK_FORMATS)
def test_every_default_disk_format_is_accepted(api: Api, value: str) -> None:
    resp = api.create(meta(disk_format=value))
    assert resp.status == 201, resp
    assert resp.image["disk_format"] == value


@pytest.mark.parametrize("value", CONTAINER_FORMATS)
def test_every_default_container_format_is_accepted(api: Api, value: str) -> None:
    resp = api.create(meta(container_format=value))
    assert resp.status == 201, resp
    assert resp.image["container_format"] == value


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("disk_format", "Invalid", "disk format"),
        ("disk_format", "bad_value", "disk format"),
        ("container_format", "bad_value", "container format"),
        ("disk_format", "RAW", "disk format"),
    ],
)
def test_unknown_formats_are_400_and_create_nothing(
    api: Api, field: str, value: str, text: str
) -> None:
    tag = unique()
    formats = {"disk_format": "raw", "container_format": "ovf", field: value}
    resp = api.create(meta(name=tag, is_public=True, **formats), b"x" * 10)
    assert resp.status == 400, resp
    assert text in resp.text.lower()
    assert value in resp.text
    assert _created_nothing(api, tag)


@pytest.mark.parametrize("field", ["disk_format", "container_format"])
def test_empty_format_is_rejected(api: Api, field: str) -> None:
    assert api.create({PREFIX + field: ""}).status == 400


@pytest.mark.parametrize("field", ["disk_format", "container_format"])
def test_unknown_format_on_update_is_400(api: Api, queued: dict[str, Any], field: str) -> None:
    assert api.update(queued["id"], {PREFIX + field: "bogus"}).status == 400
    assert api.head(queued["id"]).meta[field] in ("raw", "bare")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"disk_format": "aki"}, ("aki", "aki")),
        ({"disk_format": "ari"}, ("ari", "ari")),
        ({"container_format": "ami"}, ("ami", "ami")),
        ({"disk_format": "ami", "container_format": "ami"}, ("ami", "ami")),
    ],
)
def test_amazon_formats_complete_each_other(
    api: Api, given: dict[str, Any], expected: tuple[str, str]
) -> None:
    resp = api.create(meta(**given))
    assert resp.status == 201, resp
    assert (resp.image["disk_format"], resp.image["container_format"]) == expected


@pytest.mark.parametrize(
    ("disk", "container"), [("aki", "ami"), ("raw", "aki"), ("ami", "bare"), ("ari", "aki")]
)
def test_amazon_mix_is_400(api: Api, disk: str, container: str) -> None:
    resp = api.create(meta(disk_format=disk, container_format=container))
    assert resp.status == 400, resp
    assert "invalid mix of disk and container formats" in resp.text.lower()


def test_amazon_rule_on_update_looks_only_at_the_request(api: Api) -> None:
    image = api.reserve(disk_format="raw", container_format="bare")
    resp = api.update(image["id"], meta(disk_format="ami"))
    assert resp.status == 200, resp
    assert (resp.image["disk_format"], resp.image["container_format"]) == ("ami", "ami")


def test_formats_are_optional_while_reserving(api: Api) -> None:
    resp = api.create(meta(name="only a name"))
    assert resp.status == 201
    assert resp.image["disk_format"] is None


@pytest.mark.parametrize(
    ("stored", "missing"),
    [
        ({}, "disk format"),
        ({"disk_format": "raw"}, "container format"),
        ({"container_format": "bare"}, "disk format"),
    ],
)
def test_formats_are_required_at_upload(api: Api, stored: dict[str, Any], missing: str) -> None:
    image = api.reserve(name="needs formats", **stored)
    resp = api.update(image["id"], {}, b"data")
    assert resp.status == 400, resp
    assert f"{missing} is not specified" in resp.text.lower()


def test_formats_from_the_record_and_the_request_combine_at_upload(api: Api) -> None:
    image = api.reserve(disk_format="qcow2")
    resp = api.update(image["id"], meta(container_format="bare"), b"data")
    assert resp.status == 200, resp
    assert resp.image["status"] == "active"
    assert (resp.image["disk_format"], resp.image["container_format"]) == ("qcow2", "bare")


def test_post_with_data_but_no_formats_is_400(api: Api) -> None:
    resp = api.create(meta(name=unique()), b"data")
    assert resp.status == 400, resp
    assert "format is not specified" in resp.text.lower()


def test_properties_and_fields_in_one_request(api: Api) -> None:
    resp = api.create({**meta(name="both", min_ram=1), **props(a="1", b="2")})
    assert resp.status == 201
    assert resp.image["properties"] == {"a": "1", "b": "2"}
    assert resp.image["min_ram"] == 1


# -- what is accepted must be servable (osimage: no input breaks a later read) ------------


@pytest.mark.parametrize(
    "header",
    [
        ("x-image-meta-name", "a%00b"),
        ("x-image-meta-name", "a%0D%0Ab"),
        ("x-image-meta-property-k", "a%0D%0AX-Injected: 1"),
        ("x-image-meta-property-k", "tab%09and%7Fdel"),
        ("x-image-meta-property-os%20distro", "v"),
        ("x-image-meta-property-a%0Ab", "v"),
        ("x-image-meta-property-a%3Ab", "v"),
    ],
    ids=["nul", "crlf-name", "crlf-injection", "controls", "space-key", "lf-key", "colon-key"],
)
def test_text_that_cannot_be_a_header_is_refused_or_still_served(
    api: Api, header: tuple[str, str]
) -> None:
    resp = api.create([header, *meta(disk_format="raw", container_format="bare").items()], b"d")
    if resp.status != 201:
        assert 400 <= resp.status < 500, resp
        return
    image_id = resp.image["id"]
    for answer in (api.head(image_id), api.get(image_id)):  # must not drop the connection
        assert answer.status == 200, answer
        assert answer.header("x-injected") is None
    listed = api.detail(is_public="none", name=resp.image["name"] or "")
    assert listed.status == 200


@pytest.mark.parametrize("value", [str(2**63), str(10**30)])
def test_virtual_size_beyond_64_bits_is_a_4xx(api: Api, value: str) -> None:
    resp = api.create(meta(virtual_size=value))
    assert 400 <= resp.status < 500, resp


def test_largest_64_bit_virtual_size_round_trips(api: Api) -> None:
    resp = api.create(meta(virtual_size=2**63 - 1))
    assert resp.status == 201, resp
    assert api.head(resp.image["id"]).meta["virtual_size"] == str(2**63 - 1)
