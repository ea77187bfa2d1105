"""The list calls' query language (§9.2): parameters in, a validated `ListQuery` out."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime

from osimage import wire
from osimage.server.db.catalog import SORT_KEYS, ListQuery, Scope
from osimage.server.errors import BadRequest

_EXACT = ("name", "status", "container_format", "disk_format")
_TRISTATE = ("none", "true", "false", "1", "0")
_COMPACT_DATE = re.compile(r"([0-9]{4})-?([0-9]{2})-?([0-9]{2})")
_DIGITS = re.compile(r"[0-9]+")


_FILTERS = frozenset(
    {*_EXACT, "size_min", "size_max", "min_ram", "min_disk", "protected", "changes-since"}
)


def _count(name: str, value: str, maximum: int = wire.MAX_INT64) -> int:
    """ASCII digits only, and no more than the column holds (a 400, never a 500)."""
    try:
        return wire.parse_decimal(value, maximum=maximum)
    except ValueError:
        raise BadRequest(f"Bad value passed to filter {name} got {value[:64]}") from None


def _tristate(name: str, value: str) -> str:
    lowered = value.strip().lower()
    if lowered not in _TRISTATE:
        raise BadRequest(f"Bad value passed to filter {name} got {value}")
    return lowered


def _changes_since(value: str) -> datetime:
    text = value.strip()
    compact = _COMPACT_DATE.fullmatch(text)
    if compact:
        text = "-".join(compact.groups())
    try:
        return wire.parse_timestamp(text)
    except ValueError:
        raise BadRequest(f"Unrecognized changes-since value: {value!r}") from None


def parse_marker(value: str) -> str:
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise BadRequest("Invalid marker format") from None


def parse_list_query(
    params: Mapping[str, str], *, limit_default: int, limit_max: int, filters_max: int
) -> tuple[ListQuery, str | None, str | None]:
    """Validate list parameters; returns the query (scope still PUBLIC), the `is_public`
    value (lower case) if given, and the marker id if given. Unknown parameters are ignored.

    More than `filters_max` filters (field and property filters: not paging, sorting or
    `is_public`) is a 400 naming the limit (`list_filters_max`)."""
    filters = sum(1 for name in params if name in _FILTERS or name.startswith("property-"))
    if filters > filters_max:
        raise BadRequest(
            f"Too many filters: {filters} given, at most {filters_max} allowed per list "
            "(list_filters_max)."
        )
    query = ListQuery(scope=Scope.PUBLIC, limit=limit_default)
    is_public: str | None = None
    marker: str | None = None
    for name, value in params.items():
        if name in _EXACT:
            query.exact[name] = value
        elif name in ("size_min", "size_max"):
            setattr(query, name, _count(name, value))
        elif name in ("min_ram", "min_disk"):  # 32-bit columns
            query.exact[name] = _count(name, value, wire.MAX_INT32)
        elif name == "protected":
            flag = _tristate(name, value)
            if flag == "none":
                raise BadRequest("protected must be True, or False")
            query.exact["protected"] = flag in ("true", "1")
        elif name == "is_public":
            is_public = _tristate(name, value)
        elif name == "changes-since":
            query.changes_since = _changes_since(value)
        elif name.startswith("property-") and len(name) > len("property-"):
            query.properties[name[len("property-") :]] = value
        elif name == "sort_key":
            if value not in SORT_KEYS:
                raise BadRequest(f"Unsupported sort_key. Acceptable values: {', '.join(SORT_KEYS)}")
            query.sort_key = value
        elif name == "sort_dir":
            if value not in ("asc", "desc"):
                raise BadRequest("Unsupported sort_dir. Acceptable values: asc, desc")
            query.sort_dir = value
        elif name == "limit":
            text = value.strip(" \t")
            if text.startswith("-") and _DIGITS.fullmatch(text[1:]):
                raise BadRequest("limit param must be positive")
            try:
                limit = wire.parse_decimal(text)
            except ValueError:
                raise BadRequest(
                    f"limit param must be an integer from 0 to {wire.MAX_INT64}"
                ) from None
            query.limit = min(limit, limit_max)
        elif name == "marker":
            marker = parse_marker(value)
    return query, is_public, marker
