"""The x-image-meta codec shared by the SDK and the server."""

from __future__ import annotations

from typing import Any

import pytest

from osimage import wire


def decode(*headers: tuple[str, str]) -> wire.Metadata:
    return wire.decode(headers)


# ------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "header",
    [
        "x-image-meta-disk_format",
        "X-Image-Meta-Disk_Format",
        "X-IMAGE-META-DISK-FORMAT",
        "x-image-meta-disk-format",
    ],
)
def test_field_names_are_case_insensitive_and_dash_spelt(header):
    assert decode((header, "raw")).fields == {"disk_format": "raw"}


def test_property_keys_are_lower_cased_with_dashes_as_underscores():
    meta = decode(("X-Image-Meta-Property-OS-Type", "linux"), ("x-image-meta-property-Distro", "u"))
    assert meta.properties == {"os_type": "linux", "distro": "u"}
    assert meta.fields == {}


def test_other_headers_are_ignored():
    meta = decode(("Content-Type", "application/json"), ("x-openstack-request-id", "req-1"))
    assert meta.fields == {}
    assert meta.properties == {}


def test_unknown_field_names_the_header():
    with pytest.raises(wire.WireError) as caught:
        decode(("X-Image-Meta-Colour", "red"))
    assert caught.value.header == "x-image-meta-colour"
    assert "x-image-meta-colour" in str(caught.value)


def test_empty_property_key_is_an_error():
    with pytest.raises(wire.WireError):
        decode(("x-image-meta-property-", "v"))


def test_percent_encoded_header_names_are_decoded():
    assert decode(("x-image-meta-property-caf%C3%A9", "1")).properties == {"café": "1"}


# ------------------------------------------------------------------ values


@pytest.mark.parametrize("header", ["x-image-meta-disk_format", "x-image-meta-size"])
def test_empty_value_is_none(header):
    name = wire.field_name(header)
    assert decode((header, "")).fields == {name: None}


def test_empty_property_value_is_none():
    assert decode(("x-image-meta-property-a", "")).properties == {"a": None}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("True", True),
        ("true", True),
        ("1", True),
        ("t", True),
        (" yes ", True),
        ("ON", True),
        ("y", True),
        ("False", False),
        ("0", False),
        ("None", False),
        ("garbage", False),
    ],
)
def test_booleans_follow_the_v1_rule(text, expected):
    meta = decode(("x-image-meta-is_public", text), ("x-image-meta-protected", text))
    assert meta.fields == {"is_public": expected, "protected": expected}


@pytest.mark.parametrize(("text", "number"), [("0", 0), ("5120", 5120), (" 42 ", 42)])
def test_integers(text, number):
    assert decode(("x-image-meta-size", text)).fields == {"size": number}


@pytest.mark.parametrize(
    ("header", "text"),
    [
        ("x-image-meta-size", "-10"),
        ("x-image-meta-size", "invalid"),
        ("x-image-meta-size", "1.5"),
        ("x-image-meta-min_ram", "-42"),
        ("x-image-meta-min_disk", "2147483648"),
        ("x-image-meta-min_disk", "9223372036854775808"),
        ("x-image-meta-min-ram", "lots"),
    ],
)
def test_bad_integers_raise_naming_the_header(header, text):
    with pytest.raises(wire.WireError) as caught:
        decode((header, text))
    assert caught.value.header == header
    assert header in str(caught.value)
    assert repr(text) in str(caught.value)


def test_int32_upper_bound_is_inclusive():
    assert decode(("x-image-meta-min_ram", "2147483647")).fields == {"min_ram": 2147483647}


def test_virtual_size_accepts_the_literal_none():
    assert decode(("x-image-meta-virtual_size", "None")).fields == {"virtual_size": None}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2018-02-01T10:00:00.000000", "2018-02-01T10:00:00.000000"),
        ("2018-02-01T10:00:00", "2018-02-01T10:00:00.000000"),
        ("2018-02-01T10:00:00Z", "2018-02-01T10:00:00.000000"),
        ("2018-02-01T11:00:00+01:00", "2018-02-01T10:00:00.000000"),
        ("2018-02-01", "2018-02-01T00:00:00.000000"),
    ],
)
def test_timestamps_normalise_to_naive_utc(text, expected):
    assert decode(("x-image-meta-created_at", text)).fields == {"created_at": expected}


@pytest.mark.parametrize("text", ["-42", "foo", "1100", "2012-01-01hey12:32:12"])
def test_bad_timestamps_raise(text):
    with pytest.raises(wire.WireError) as caught:
        decode(("x-image-meta-updated_at", text))
    assert caught.value.header == "x-image-meta-updated_at"


def test_name_longer_than_255_raises():
    assert decode(("x-image-meta-name", "n" * 255)).fields == {"name": "n" * 255}
    with pytest.raises(wire.WireError, match="too long"):
        decode(("x-image-meta-name", "n" * 256))


def test_checksum_longer_than_32_raises():
    with pytest.raises(wire.WireError, match="Invalid checksum"):
        decode(("x-image-meta-checksum", "a" * 33))


# ------------------------------------------------------------------ text encodings


def test_raw_utf8_and_percent_encoded_decode_to_the_same_text():
    text = "Ünïcode 图像 name"
    raw_as_latin1 = text.encode("utf-8").decode("latin-1")  # what HTTP libraries hand us
    percent = "%C3%9Cn%C3%AFcode%20%E5%9B%BE%E5%83%8F%20name"
    from_raw = decode(
        ("x-image-meta-name", raw_as_latin1), ("x-image-meta-property-k", raw_as_latin1)
    )
    from_percent = decode(("x-image-meta-name", percent), ("x-image-meta-property-k", percent))
    assert from_raw.fields == from_percent.fields == {"name": text}
    assert from_raw.properties == from_percent.properties == {"k": text}


def test_bytes_values_decode_as_utf8():
    assert wire.decode([(b"x-image-meta-name", "é".encode())]).fields == {"name": "é"}


def test_invalid_utf8_raises_naming_the_header():
    with pytest.raises(wire.WireError) as caught:
        wire.decode([("x-image-meta-name", b"\xff\xfe".decode("latin-1"))])
    assert caught.value.header == "x-image-meta-name"


@pytest.mark.parametrize(
    "text",
    ["plain", "100% sure", "%41 is not A", "with space", "ümlaut", "图像", "tab\tand/colon:", " "],
)
def test_percent_encoding_is_ascii_and_round_trips(text):
    headers = wire.encode({"name": text}, {"note": text, "ключ": "v"}, percent=True)
    for name, value in headers:
        assert name.isascii()
        assert value.isascii()

    meta = wire.decode(headers)
    assert meta.fields == {"name": text}
    assert meta.properties == {"note": text, "ключ": "v"}


def test_encode_without_percent_keeps_raw_text():
    assert wire.encode({"name": "图像"}) == [("x-image-meta-name", "图像")]


def test_encode_renders_kinds_and_drops_none():
    headers = dict(
        wire.encode(
            {"size": 5, "is_public": True, "protected": False, "checksum": None},
            {"a": "1", "b": None},
        )
    )
    assert headers == {
        "x-image-meta-size": "5",
        "x-image-meta-is_public": "True",
        "x-image-meta-protected": "False",
        "x-image-meta-property-a": "1",
    }


def test_encode_refuses_unknown_fields():
    with pytest.raises(wire.WireError) as caught:
        wire.encode({"colour": "red"})
    assert caught.value.header == "x-image-meta-colour"


def test_encode_then_decode_round_trips_every_emitted_kind():
    fields = {
        "id": "0f6b1c9e-3d1a-4a8e-9a77-2b4f3c1d5e60",
        "name": "n",
        "status": "active",
        "size": 10,
        "checksum": "0123456789abcdef0123456789abcdef",
        "min_disk": 1,
        "min_ram": 256,
        "is_public": True,
        "protected": False,
        "created_at": "2018-02-01T10:00:00.000000",
    }
    assert wire.decode(wire.encode(fields, percent=True)).fields == fields


def test_purge_flag_header():
    assert wire.encode_flag_header(True) == "true"
    assert wire.encode_flag_header(False) == "false"
    assert wire.parse_flag(wire.encode_flag_header(True)) is True
    assert wire.parse_flag(wire.encode_flag_header(False)) is False


def test_strict_flag_knows_each_word_and_refuses_the_rest():
    for word in wire.TRUE_WORDS:
        assert wire.strict_flag(f" {word.upper()} ") is True
        assert wire.parse_flag(word) is True
    for word in wire.FALSE_WORDS:
        assert wire.strict_flag(word.title()) is False
        assert wire.parse_flag(word) is False
    assert wire.TRUE_WORDS.isdisjoint(wire.FALSE_WORDS)
    for other in ("maybe", "", "2", "truee"):
        assert wire.strict_flag(other) is None
        assert wire.parse_flag(other) is False  # v1 reads anything else as false


# ------------------------------------------------------------------ JSON records


def record(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "0f6b1c9e-3d1a-4a8e-9a77-2b4f3c1d5e60",
        "name": None,
        "status": "queued",
        "size": 0,
        "virtual_size": None,
        "checksum": None,
        "disk_format": None,
        "container_format": None,
        "min_disk": 0,
        "min_ram": 0,
        "owner": None,
        "is_public": False,
        "protected": False,
        "deleted": False,
        "deleted_at": None,
        "created_at": "2018-02-01T10:00:00.000000",
        "updated_at": "2018-02-01T10:00:00.000000",
        "properties": {},
    }
    return {**base, **changes}


def test_check_json_record_accepts_the_spec_shape():
    wire.check_json_record(record())
    wire.check_json_record(record(size=5120, properties={"a": "b"}, is_public=True))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("size", "5120"),
        ("size", True),
        ("min_ram", 1.5),
        ("is_public", "False"),
        ("protected", 0),
        ("name", 5),
        ("properties", []),
    ],
)
def test_check_json_record_rejects_wrong_types(key, value):
    with pytest.raises(wire.WireError) as caught:
        wire.check_json_record(record(**{key: value}))
    assert caught.value.header == key


@pytest.mark.parametrize(
    ("key", "value"),
    [("size", "5120"), ("is_public", "False"), ("deleted", 0), ("properties", [])],
)
def test_json_record_values_checks_every_detail_key_as_check_json_record(key, value):
    plan = wire.json_record_plan(("id", "size", "is_public"))  # "deleted" is not kept
    with pytest.raises(wire.WireError) as caught:
        wire.json_record_values(record(**{key: value}), plan)
    assert caught.value.header == key


def test_json_record_values_keeps_the_planned_keys_in_detail_order():
    plan = wire.json_record_plan(("properties", "size", "id", "virtual_size"))
    values = wire.json_record_values(record(size=5, properties={"a": "b"}), plan)
    assert list(values.items()) == [
        ("id", values["id"]),
        ("size", 5),
        ("virtual_size", None),
        ("properties", {"a": "b"}),
    ]
    assert wire.json_record_values({}, plan) == dict.fromkeys(values)


def test_check_json_record_only_checks_the_keys_asked_for():
    wire.check_json_record({"id": "x", "size": 1, "checksum": None}, wire.SUMMARY_KEYS)
    with pytest.raises(wire.WireError):
        wire.check_json_record({"size": "1"}, wire.SUMMARY_KEYS)
