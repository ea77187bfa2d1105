"""The v2 list query language (v2 §6.3): query pairs in, a validated `V2Query` out.

Pure: no I/O. Repeated parameters keep every value (`tag`, `sort_key`, `sort_dir`).
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Sequence
from datetime import datetime

from osimage import wire
from osimage.server.auth import Context
from osimage.server.db.catalog import SORT_KEYS
from osimage.server.db.listing import V2Query
from osimage.server.errors import BadRequest

MAX_BIGINT = 2**63 - 1
_OPERATOR_COLUMNS = ("name", "id", "status", "container_format", "disk_format")
_TIME_COLUMNS = ("created_at", "updated_at")
_TIME_OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte")
_PLAIN_COLUMNS = ("owner", "checksum", "os_hash_value")
_COUNT_COLUMNS = ("size", "min_ram", "min_disk", "virtual_size")
_VISIBILITIES = ("public", "private", "shared", "community", "all")
_MEMBER_STATUSES = ("accepted", "pending", "rejected", "all")
_PAGING = ("limit", "marker", "sort", "sort_key", "sort_dir")


def _is_time(text: str) -> bool:
    try:
        wire.parse_timestamp(text)
    except ValueError:
        return False
    return True


def _in_list(text: str) -> list[str]:
    try:
        rows = list(csv.reader([text], skipinitialspace=True, strict=True))
    except csv.Error:
        raise BadRequest(f"Invalid in: list {text!r}: unbalanced quotes.") from None
    return rows[0] if rows else [""]


def _operator_values(name: str, value: str) -> list[str]:
    """`in:a,b` / `eq:x` / a plain value -> the allowed values of `name`."""
    if ":" not in value or _is_time(value):
        return [value]
    op, _, rest = value.partition(":")
    if op == "in":
        return _in_list(rest)
    if op == "eq":
        return [rest]
    raise BadRequest(f"Unable to filter by unknown operator '{op}'.")


def _time_filter(name: str, value: str) -> tuple[str, str, datetime]:
    op, text = "eq", value
    if not _is_time(value):
        op, _, text = value.partition(":")
        if op not in _TIME_OPERATORS:
            raise BadRequest("Unable to filter on a unknown operator.")
    try:
        when = wire.parse_timestamp(text)
    except ValueError:
        raise BadRequest(
            f'Bad "{name}" query filter format. Use ISO 8601 DateTime notation.'
        ) from None
    return name, op, when


def _sort_key(key: str) -> str:
    if key not in SORT_KEYS:
        raise BadRequest(
            f"Invalid sort key: {key}. It must be one of the following: {', '.join(SORT_KEYS)}."
        )
    return key


def _sort_dir(direction: str) -> str:
    if direction not in ("asc", "desc"):
        raise BadRequest(f"Invalid sort direction: {direction}")
    return direction


_SORTING = frozenset({"sort", "sort_key", "sort_dir"})


def _sorting(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    if not any(name in _SORTING for name, _ in pairs):  # the default order, most lists'
        return [("created_at", "desc"), ("id", "desc")]
    new = [value for name, value in pairs if name == "sort"]
    keys = [value for name, value in pairs if name == "sort_key"]
    dirs = [value for name, value in pairs if name == "sort_dir"]
    if new and (keys or dirs):
        raise BadRequest("Old and new sorting syntax cannot be combined")
    order: list[tuple[str, str]] = []
    if new:
        for item in ",".join(new).split(","):
            key, _, direction = item.strip().partition(":")
            order.append((_sort_key(key.strip()), _sort_dir(direction.strip() or "desc")))
    else:
        keys = [_sort_key(key) for key in keys] or ["created_at"]
        dirs = [_sort_dir(direction) for direction in dirs]
        if len(dirs) > 1 and len(dirs) != len(keys):
            raise BadRequest("Number of sort dirs does not match the number of sort keys")
        if len(dirs) <= 1:
            dirs = [dirs[0] if dirs else "desc"] * len(keys)
        order = list(zip(keys, dirs, strict=True))
    first_dir = order[0][1]
    for key in ("created_at", "id"):
        if key not in (k for k, _ in order):
            order.append((key, first_dir))
    return order


def _count(name: str, value: str) -> int:
    """An ASCII decimal within 64 bits (`wire.parse_decimal`); anything else a 400."""
    try:
        return wire.parse_decimal(value, maximum=MAX_BIGINT)
    except ValueError:
        raise BadRequest(f"Invalid value '{value}' for '{name}' filter.") from None


def _limit(value: str) -> int:
    try:
        return wire.parse_decimal(value, maximum=MAX_BIGINT)
    except ValueError:
        text = value.strip(" \t")
        if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
            raise BadRequest("limit param must be positive") from None
        raise BadRequest("limit param must be an integer") from None


def _filters(pairs: Sequence[tuple[str, str]], most: int) -> None:
    """At most `most` filters: every parameter but paging and sorting (list_filters_max)."""
    count = sum(1 for name, _ in pairs if name not in _PAGING)
    if count > most:
        raise BadRequest(
            f"Too many filters: {count} given, at most {most} allowed per list (list_filters_max)."
        )


def _flag(name: str, value: str, *, strict: bool) -> bool:
    text = value if strict else value.lower()
    if text not in ("true", "false"):
        raise BadRequest(
            f"Invalid value '{value}' for '{name}' filter. Valid values are 'true' or 'false'."
        )
    return text == "true"


def parse_marker(value: str) -> str:
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        raise BadRequest(f"Invalid marker {value!r}: no such image.") from None


def parse(
    ctx: Context,
    pairs: Sequence[tuple[str, str]],
    *,
    limit_default: int,
    limit_max: int,
    filters_max: int | None = None,
) -> tuple[V2Query, str | None]:
    """Validate a v2 list query; returns it and the marker id, if any (looked up later).

    Integers are ASCII decimals within 64 bits; more than `filters_max` filters is a 400."""
    if filters_max is not None:
        _filters(pairs, filters_max)
    query = V2Query(project=ctx.owner_id, is_admin=ctx.is_admin, limit=limit_default)
    query.sort = _sorting(pairs)
    marker: str | None = None
    for name, value in pairs:
        if name == "limit":
            query.limit = min(_limit(value), limit_max)
        elif name == "marker":
            marker = parse_marker(value)
        elif name in _PAGING:
            continue
        elif name == "visibility":
            if value not in _VISIBILITIES:
                raise BadRequest(f"Invalid visibility value: {value}")
            query.visibility = value
        elif name == "member_status":
            if value not in _MEMBER_STATUSES:
                raise BadRequest(f"Invalid status: {value}")
            query.member_status = value
        elif name == "tag":
            query.tags.append(value)
        elif name == "protected":
            query.exact["protected"] = _flag(name, value, strict=True)
        elif name == "os_hidden":
            query.os_hidden = _flag(name, value, strict=False)
        elif name in ("size_min", "size_max"):
            try:
                setattr(query, name, wire.parse_decimal(value, maximum=MAX_BIGINT))
            except ValueError:
                raise BadRequest("Unable to filter on a range with a non-numeric value.") from None
        elif name in _OPERATOR_COLUMNS:
            values = _operator_values(name, value)
            previous = query.one_of.get(name)
            query.one_of[name] = [v for v in values if previous is None or v in previous]
        elif name in _TIME_COLUMNS:
            column, op, when = _time_filter(name, value)
            query.times.append((column, op, when))
        elif name == "changes-since":
            raise BadRequest('The "changes-since" filter is no longer available on v2.')
        elif name in _PLAIN_COLUMNS:
            query.exact[name] = value
        elif name in _COUNT_COLUMNS:
            query.exact[name] = _count(name, value)
        else:
            query.properties[name] = value
    return query, marker
