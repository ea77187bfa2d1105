"""The Image API v1 wire codec: the one place that spells an ``x-image-meta-*`` header.

Client and server both import this module. One table (`FIELDS`) drives decoding of
request and response headers, encoding of both, and the JSON record shapes.

Header text: HTTP libraries hand us header values as ``str`` holding one character per
byte (latin-1). `decode` turns those bytes back into UTF-8 text and then undoes
percent-encoding when the value is plain ASCII containing ``%XX`` escapes, so both raw
UTF-8 (older clients) and percent-encoded UTF-8 (python-glanceclient >= 2.11) arrive as
the text the user meant. `encode` writes raw UTF-8 text (the server's way, as Glance v1
did) or, with ``percent=True``, percent-encodes any value that needs it (the SDK's way:
pure ASCII on the wire, and a literal ``%`` survives the round trip).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar
from urllib.parse import quote, unquote

T = TypeVar("T")

PREFIX: Final = "x-image-meta-"
PROPERTY_PREFIX: Final = "x-image-meta-property-"
COPY_FROM_HEADER: Final = "x-glance-api-copy-from"
PURGE_PROPS_HEADER: Final = "x-glance-registry-purge-props"
REQUEST_ID_HEADER: Final = "x-openstack-request-id"
SHA256_HEADER: Final = "x-openstack-image-sha256"
"""Not metadata: the SHA-256 hex digest of the image data, sent with HEAD/GET when known."""

MAX_NAME_LENGTH: Final = 255
MAX_CHECKSUM_LENGTH: Final = 32
MAX_INT32: Final = 2147483647
MAX_INT64: Final = 2**63 - 1
"""The largest count a header may carry: what a signed 64-bit database column holds."""
TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%f"

TRUE_WORDS: Final = frozenset({"1", "t", "true", "on", "y", "yes"})
"""The words (lower-cased) that mean true; v1 reads every other word as false."""
FALSE_WORDS: Final = frozenset({"0", "f", "false", "off", "n", "no"})
"""The words (lower-cased) that mean false, for strict readers that refuse anything else
(the SDK's attribute coercion, its configuration)."""

DISK_FORMATS: Final = (
    "ami",
    "ari",
    "aki",
    "vhd",
    "vhdx",
    "vmdk",
    "raw",
    "qcow2",
    "vdi",
    "iso",
    "ploop",
)
CONTAINER_FORMATS: Final = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker")
AMAZON_FORMATS: Final = frozenset({"aki", "ari", "ami"})

STATUSES: Final = (
    "queued",
    "saving",
    "active",
    "killed",
    "deleted",
    "pending_delete",
    "deactivated",
    "uploading",
    "importing",
)


class WireError(ValueError):
    """A header or record that cannot be decoded; `.header` names it."""

    def __init__(self, header: str, message: str) -> None:
        super().__init__(message)
        self.header = header
        self.message = message


@dataclass(frozen=True)
class Kind(Generic[T]):
    """How one field's value is parsed from and rendered to header text."""

    parse: Callable[[str], T]  # raises ValueError with a readable message
    render: Callable[[T], str]
    json_types: tuple[type, ...]


def _text(value: str) -> str:
    return value


_DECIMAL = re.compile(r"[0-9]+")
_INT64_DIGITS = len(str(MAX_INT64))


def parse_decimal(value: str, *, maximum: int = MAX_INT64) -> int:
    """A non-negative integer written in ASCII decimal digits, at most `maximum`.

    Surrounding spaces and tabs are allowed; signs, ``_`` separators, other whitespace
    and non-ASCII digits (which Python's `int` accepts) are not. Raises ValueError.
    """
    text = value.strip(" \t")
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    # the length check first: int() of a huge digit string is slow (or refused)
    if len(text.lstrip("0")) > _INT64_DIGITS or int(text) > maximum:
        raise ValueError(f"value out of range, must not exceed {maximum}, got {value!r}")
    return int(text)


def _count(value: str) -> int:
    return parse_decimal(value)


def _int32(value: str) -> int:
    return parse_decimal(value, maximum=MAX_INT32)


def _optional_count(value: str) -> int | None:
    return None if value.strip(" \t") == "None" else _count(value)


def parse_flag(value: str) -> bool:
    """v1's boolean rule: true iff one of 1/t/true/on/y/yes (any case); anything else is false."""
    return value.strip().lower() in TRUE_WORDS


def strict_flag(value: str) -> bool | None:
    """True or False for one of the true or false words (any case, spaces around
    ignored), None for any other text: for readers that refuse what v1 would read as false."""
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def render_flag(value: bool) -> str:
    return "True" if value else "False"


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO 8601 time (date-only and offset forms too) into naive UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time, got {value!r}") from None
    if when.tzinfo is not None:
        try:  # an offset can move a time past year 1 or 9999
            when = when.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError(f"time out of range once moved to UTC, got {value!r}") from None
    if when.year < 1900:
        raise ValueError(f"expected a time after 1900, got {value!r}")
    return when


def render_timestamp(when: datetime) -> str:
    """The v1 timestamp form: ``YYYY-MM-DDTHH:MM:SS.ffffff``, UTC, no zone suffix."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    if when.year >= 1000:  # the same text as the format gives, several times faster
        return when.isoformat(timespec="microseconds")
    return when.strftime(TIMESTAMP_FORMAT)


def _timestamp(value: str) -> str:
    return render_timestamp(parse_timestamp(value))


def _name(value: str) -> str:
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"Image name too long: {len(value)}")
    return value


def _checksum(value: str) -> str:
    if len(value) > MAX_CHECKSUM_LENGTH:
        raise ValueError(
            f"Invalid checksum {value!r}: can't exceed {MAX_CHECKSUM_LENGTH} characters"
        )
    return value


TEXT: Final = Kind[str](_text, str, (str,))
NAME: Final = Kind[str](_name, str, (str,))
CHECKSUM: Final = Kind[str](_checksum, str, (str,))
COUNT: Final = Kind[int](_count, str, (int,))
INT32: Final = Kind[int](_int32, str, (int,))
OPTIONAL_COUNT: Final = Kind[int | None](_optional_count, str, (int,))
FLAG: Final = Kind[bool](parse_flag, render_flag, (bool,))
TIME: Final = Kind[str](_timestamp, str, (str,))

FIELDS: Final[Mapping[str, Kind[Any]]] = {
    "id": TEXT,
    "name": NAME,
    "status": TEXT,
    "size": COUNT,
    "virtual_size": OPTIONAL_COUNT,
    "checksum": CHECKSUM,
    "disk_format": TEXT,
    "container_format": TEXT,
    "min_disk": INT32,
    "min_ram": INT32,
    "owner": TEXT,
    "is_public": FLAG,
    "protected": FLAG,
    "deleted": FLAG,
    "created_at": TIME,
    "updated_at": TIME,
    "deleted_at": TIME,
    # accepted on requests only; never emitted
    "location": TEXT,
    "copy_from": TEXT,
    "uri": TEXT,
    "store": TEXT,
}
"""Every field a request may carry as ``x-image-meta-<field>``; anything else is a bad header."""

EMITTED: Final = (
    "id",
    "name",
    "status",
    "size",
    "virtual_size",
    "checksum",
    "disk_format",
    "container_format",
    "min_disk",
    "min_ram",
    "owner",
    "is_public",
    "protected",
    "deleted",
    "created_at",
    "updated_at",
    "deleted_at",
)
"""The fields a server emits as headers (HEAD/GET) and, with ``properties``, in JSON details."""

DETAIL_KEYS: Final = (*EMITTED, "properties")
SUMMARY_KEYS: Final = ("id", "name", "size", "disk_format", "container_format", "checksum")

_TOKEN_SAFE = "!#$&'*+-.^_`|~"  # RFC 9110 token characters but '%', our escape
_TOKEN = re.compile(r"[0-9A-Za-z!#$&'*+.^_`|~-]+")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_SAFE_ASCII = re.compile(r"[\x21-\x24\x26-\x7e]([\x20-\x24\x26-\x7e]*[\x21-\x24\x26-\x7e])?")


@dataclass
class Metadata:
    """Decoded image metadata: core fields by name, and custom properties."""

    fields: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, str | None] = field(default_factory=dict)


def header_text(raw: str | bytes, *, percent: bool = True) -> str:
    """The text a header carried: UTF-8 bytes (given as bytes or latin-1 str), percent-decoded
    unless ``percent=False`` (for answers from a server that writes raw UTF-8)."""
    data = raw if isinstance(raw, bytes) else raw.encode("latin-1", errors="replace")
    text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError: callers report it
    if percent and text.isascii() and _ESCAPE.search(text):
        try:
            return unquote(text, errors="strict")
        except UnicodeDecodeError:
            return text
    return text


def canonical_name(raw_name: str | bytes) -> str:
    """Lower-case a header name and undo its percent-encoding.

    Names are always percent-decoded: python-glanceclient quotes them, and `encode`
    escapes every property key that is not plain token text (non-ASCII, ``%``...).
    """
    return header_text(raw_name).strip().lower()


def property_key(header: str) -> str | None:
    """The property key a canonical header name sets, or None if it is not a property header."""
    if header.startswith(PROPERTY_PREFIX):
        return header[len(PROPERTY_PREFIX) :].replace("-", "_")
    return None


def field_name(header: str) -> str | None:
    """The core field a canonical header name sets (``disk-format`` spelling too), or None."""
    if header.startswith(PREFIX) and not header.startswith(PROPERTY_PREFIX):
        return header[len(PREFIX) :].replace("-", "_")
    return None


def _decode_value(header: str, name: str, raw: str | bytes, percent: bool) -> Any:
    try:
        text = header_text(raw, percent=percent)
    except UnicodeDecodeError:
        raise WireError(header, f"{header}: value is not valid UTF-8") from None
    if text.strip() == "" and name != "name":
        return None
    if name == "name" and text == "":
        return None
    try:
        return FIELDS[name].parse(text)
    except ValueError as exc:
        raise WireError(header, f"{header}: {exc}") from None


def decode(headers: Iterable[tuple[str | bytes, str | bytes]], *, percent: bool = True) -> Metadata:
    """Decode the ``x-image-meta-*`` headers among `headers`; ignore all others.

    Raises `WireError` naming the header for an unknown field or a malformed value.
    An empty value decodes to None (for properties too). ``percent=False`` reads values
    as raw UTF-8 only, as a server writes them (`encode` without ``percent``): a value
    that really is ``a%20b`` then stays ``a%20b``.
    """
    meta = Metadata()
    for raw_name, raw_value in headers:
        try:
            header = canonical_name(raw_name)
        except UnicodeDecodeError:
            continue  # not a header we own
        key = property_key(header)
        if key is not None:
            if not key:
                raise WireError(header, f"Bad header: {header}")
            try:
                text = header_text(raw_value, percent=percent)
            except UnicodeDecodeError:
                raise WireError(header, f"{header}: value is not valid UTF-8") from None
            meta.properties[key] = text if text != "" else None
            continue
        name = field_name(header)
        if name is None:
            continue
        if name not in FIELDS:
            raise WireError(header, f"Bad header: {header}")
        meta.fields[name] = _decode_value(header, name, raw_value, percent)
    return meta


def _name_part(key: str) -> str:
    """A property key as header-name text: kept when it is plain token text, else escaped."""
    if _TOKEN.fullmatch(key):
        return key
    return quote(key, safe=_TOKEN_SAFE)


# What a header value cannot carry (RFC 9110, 5.5: the control characters but HTAB).
_UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_value(text: str) -> str:
    """`text` as a raw header value: unchanged, or percent-encoded (as `encode` with
    ``percent`` does) when it holds a character HTTP cannot carry, e.g. a newline in a
    name or property set through v2's JSON."""
    return _quote(text) if _UNSENDABLE.search(text) else text


def _quote(text: str) -> str:
    if _SAFE_ASCII.fullmatch(text):
        return text
    return quote(text, safe="/:=+@,;~!$&'()*")


def encode(
    fields: Mapping[str, Any],
    properties: Mapping[str, str | None] | None = None,
    *,
    percent: bool = False,
) -> list[tuple[str, str]]:
    """Headers for `fields` and `properties`; None values are left out.

    With ``percent=False`` values are raw text (write them as UTF-8 bytes) unless HTTP
    cannot carry them (`header_value`); with
    ``percent=True`` every value that is not plain printable ASCII without ``%`` is
    percent-encoded, so the result is pure ASCII. Header names are always legal HTTP
    tokens: a property key with other characters (non-ASCII, space, ``%``) is
    percent-encoded in the name in both modes, and `decode` undoes it.
    """
    out: list[tuple[str, str]] = []
    for name, value in fields.items():
        if value is None:
            continue
        kind = FIELDS.get(name)
        if kind is None:
            raise WireError(PREFIX + name, f"Bad header: {PREFIX}{name}")
        text = kind.render(value)
        out.append((PREFIX + name, _quote(text) if percent else header_value(text)))
    for key, prop in (properties or {}).items():
        if prop is None:
            continue
        name = PROPERTY_PREFIX + _name_part(key)
        out.append((name, _quote(prop) if percent else header_value(prop)))
    return out


def encode_flag_header(value: bool) -> str:
    """Render a boolean for a non-metadata header such as the purge-props header."""
    return "true" if value else "false"


def check_json_record(record: Mapping[str, Any], keys: Iterable[str] = DETAIL_KEYS) -> None:
    """Raise `WireError` if a JSON image record has a value of the wrong type."""
    exact = _JSON_EXACT
    for key in keys:
        value = record.get(key)
        # decoded JSON holds exactly these types: one set lookup per value (issue 14)
        if value is None or type(value) in exact[key]:
            continue
        _check_json_value(key, value)


RecordPlan = tuple[tuple[str, frozenset[type], bool], ...]


def json_record_plan(keys: Iterable[str]) -> RecordPlan:
    """How `json_record_values` reads a detail record keeping `keys` (make it once)."""
    kept = set(keys)
    return tuple((key, _JSON_EXACT[key], key in kept) for key in DETAIL_KEYS)


def json_record_values(record: Mapping[str, Any], plan: RecordPlan) -> dict[str, Any]:
    """The values of the plan's kept keys in a JSON detail record (None where absent), in
    `DETAIL_KEYS` order, after checking every value as `check_json_record` does: one
    pass, one lookup per key (issue 14)."""
    values: dict[str, Any] = {}
    for key, exact, kept in plan:
        value = record.get(key)
        if value is not None and type(value) not in exact:
            _check_json_value(key, value)
        if kept:
            values[key] = value
    return values


def _check_json_value(key: str, value: Any) -> None:
    if key == "properties":
        if not isinstance(value, dict):
            raise WireError(key, f"properties: expected an object, got {value!r}")
        return
    kind = FIELDS[key]
    ok = isinstance(value, kind.json_types) and not (
        bool not in kind.json_types and isinstance(value, bool)
    )
    if not ok:
        raise WireError(key, f"{key}: unexpected JSON value {value!r}")


# key -> the exact types its JSON value may have (a subclass takes the slower full check)
_JSON_EXACT: Final[Mapping[str, frozenset[type]]] = {
    **{key: frozenset(kind.json_types) for key, kind in FIELDS.items()},
    "properties": frozenset({dict}),
}
