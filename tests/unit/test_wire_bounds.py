"""The codec's bounds (#11): integers are ASCII decimal digits within 64 (or 32) bits, and
times that an offset moves out of range are errors naming the header, never OverflowError."""

from __future__ import annotations

import pytest

from osimage import wire


def decode(*pairs: tuple[str, str]) -> wire.Metadata:
    return wire.decode(pairs)


@pytest.mark.parametrize(
    "text",
    ["1_0", "+5", " +5", "0x10", "1e3", "5 5", "\u0661\u0662", "\uff11\uff12", "\u00a05", "5\x0b"],
)
@pytest.mark.parametrize("header", ["x-image-meta-size", "x-image-meta-min_ram"])
def test_integers_are_ascii_digits_only(header: str, text: str) -> None:
    """Python's int() reads most of these (signs, `_`, Unicode digits and spaces)."""
    with pytest.raises(wire.WireError) as caught:
        decode((header, text))
    assert caught.value.header == header


def test_surrounding_spaces_and_tabs_are_allowed() -> None:
    assert decode(("x-image-meta-size", "\t 7 \t")).fields == {"size": 7}


def test_counts_stop_at_the_signed_64_bit_maximum() -> None:
    top = str(wire.MAX_INT64)
    assert decode(("x-image-meta-size", top)).fields == {"size": wire.MAX_INT64}
    assert decode(("x-image-meta-size", "000" + top)).fields == {"size": wire.MAX_INT64}
    for text in (str(wire.MAX_INT64 + 1), str(2**64), "9" * 5000):
        with pytest.raises(wire.WireError, match="out of range"):
            decode(("x-image-meta-virtual_size", text))


def test_parse_decimal() -> None:
    assert wire.parse_decimal("12") == 12
    assert wire.parse_decimal("12", maximum=12) == 12
    with pytest.raises(ValueError, match="out of range"):
        wire.parse_decimal("13", maximum=12)
    with pytest.raises(ValueError, match="non-negative integer"):
        wire.parse_decimal("")


@pytest.mark.parametrize(
    "text",
    ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "0001-01-01T00:00:00+23:59"],
)
@pytest.mark.parametrize("header", ["x-image-meta-created_at", "x-image-meta-updated_at"])
def test_times_moved_out_of_range_by_their_offset_raise(header: str, text: str) -> None:
    with pytest.raises(wire.WireError) as caught:
        decode((header, text))
    assert caught.value.header == header
    with pytest.raises(ValueError, match="out of range"):
        wire.parse_timestamp(text)


def test_the_last_representable_time_is_accepted() -> None:
    assert wire.parse_timestamp("9999-12-31T23:59:59+00:00").year == 9999
    assert wire.parse_timestamp("9999-12-31T18:59:59-05:00").hour == 23
