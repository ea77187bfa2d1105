"""Declarative resources: typed fields, dirty tracking and the REST verbs.

A `Resource` subclass declares its attributes as fields (`Body`, `Header`, or a
subclass's own kind) that say where a value travels and what type it has. The verbs
(`create`, `fetch`, `head`, `commit`, `delete`, `list`, `find`) are generic; how values
become a request and a response becomes values is decided by hooks each subclass
implements (`_build_request`, `_values_from`, `_records_from`, `_record_values`): the
v1 `Image` speaks the ``x-image-meta`` codec. Listing pages through `osimage.pager`.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import (
    IO,
    TYPE_CHECKING,
    Any,
    ClassVar,
    Final,
    Generic,
    Literal,
    Self,
    TypeVar,
    overload,
)
from urllib.parse import quote

from osimage import exceptions
from osimage.wire import strict_flag

if TYPE_CHECKING:
    import requests
    from keystoneauth1.adapter import Adapter

T = TypeVar("T")

Data = bytes | IO[bytes] | Iterable[bytes]
"""A request body to send: bytes, a binary file object (streamed), or an iterable of
bytes (streamed with chunked transfer encoding)."""

OCTET_STREAM: Final = "application/octet-stream"


# --------------------------------------------------------------------------- coercion


def _to_str(value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {value!r}")


def _to_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 10)
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {value!r}")


def _to_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    found = strict_flag(value) if isinstance(value, str) else None
    if found is not None:
        return found
    raise ValueError(f"expected a boolean, got {value!r}")


def _to_dict(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        if all(isinstance(key, str) for key in value):
            return dict(value)
        raise ValueError(f"expected string keys, got {list(value)!r}")
    raise ValueError(f"expected a mapping, got {value!r}")


_COERCERS: Final[Mapping[type, Callable[[object], Any]]] = {
    str: _to_str,
    int: _to_int,
    bool: _to_bool,
    dict: _to_dict,
}


# --------------------------------------------------------------------------- fields


class Field(Generic[T]):
    """A typed attribute whose value is kept under `wire_name`.

    Two fields with one `wire_name` are aliases: one value, two attribute names.
    Assigning a value of the wrong type raises `InvalidRequest` naming the attribute;
    nothing is silently replaced by a default. `check`, if given, validates the
    coerced value further and raises `ValueError` with a readable message.
    """

    def __init__(
        self,
        wire_name: str,
        type: type[T],
        *,
        check: Callable[[T], object] | None = None,
    ) -> None:
        self.wire_name = wire_name
        self.type = type
        self.check = check
        self.name = wire_name  # replaced by the attribute name in __set_name__

    def __set_name__(self, owner: type[Resource], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type[Resource]) -> Self: ...
    @overload
    def __get__(self, obj: Resource, owner: type[Resource]) -> T | None: ...
    def __get__(self, obj: Resource | None, owner: type[Resource]) -> Self | T | None:
        if obj is None:
            return self
        return obj._state.hand_out(self.wire_name)  # type: ignore[no-any-return]

    def __set__(self, obj: Resource, value: T | None) -> None:
        coerced = self.coerce(value, type(obj).__name__)
        obj._state.snapshot()
        obj._state.values[self.wire_name] = coerced

    def coerce(self, value: object, owner_name: str = "") -> T | None:
        """Return `value` as this field's type, or raise `InvalidRequest` saying why not."""
        if value is None:
            return None
        coercer = _COERCERS.get(self.type)
        try:
            if coercer is not None:
                result: T = coercer(value)
            elif isinstance(value, self.type):
                result = value
            else:
                raise ValueError(f"expected {self.type.__name__}, got {value!r}")
            if self.check is not None:
                self.check(result)
        except ValueError as exc:
            where = f"{owner_name}.{self.name}" if owner_name else self.name
            raise exceptions.InvalidRequest(f"{where}: {exc}") from None
        return result


class Body(Field[T]):
    """A value carried in the resource's request and response body."""


class Header(Field[T]):
    """A value carried in an HTTP header of its own, e.g. ``x-glance-api-copy-from``."""

    def __init__(self, wire_name: str, type: type[T], *, header: str) -> None:
        super().__init__(wire_name, type)
        self.header = header


class QueryParameters:
    """The query parameters `list` accepts: client name -> server name.

    ``limit`` and ``marker`` are included unless ``include_pagination_defaults=False``.
    Either spelling (client or server) is accepted; anything else is an error.
    """

    def __init__(
        self, *names: str, include_pagination_defaults: bool = True, **mappings: str
    ) -> None:
        self.mapping: dict[str, str] = (
            {"limit": "limit", "marker": "marker"} if include_pagination_defaults else {}
        )
        self.mapping.update({name: name for name in names})
        self.mapping.update(mappings)

    def transpose(self, params: Mapping[str, Any], owner_name: str = "") -> dict[str, str]:
        """Server query for `params`; None values are dropped.

        Raises `InvalidRequest` naming every unknown key and listing the valid ones.
        """
        server_names = set(self.mapping.values())
        unknown = sorted(k for k in params if k not in self.mapping and k not in server_names)
        if unknown:
            valid = ", ".join(sorted(self.mapping))
            raise exceptions.InvalidRequest(
                f"Invalid query parameter(s) for {owner_name or 'this resource'}: "
                f"{', '.join(unknown)}; valid: {valid}"
            )
        query: dict[str, str] = {}
        for key, value in params.items():
            if value is not None:
                query[self.mapping.get(key, key)] = render_query_value(value)
        return query


def render_query_value(value: object) -> str:
    """Query text for a value: booleans as ``true``/``false``, others with ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------- state


_IMMUTABLE: Final = frozenset({str, int, bool, float, bytes, type(None)})


def _snapshot(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `values` that no later in-place edit of them can reach.

    Immutable values are shared and a dict of immutable values is copied shallowly
    (what every record of a list holds); anything else is deep-copied.
    """
    out = dict(values)
    for key, value in out.items():
        kind = type(value)
        if kind in _IMMUTABLE:
            continue
        if kind is dict and all(type(item) in _IMMUTABLE for item in value.values()):
            out[key] = value.copy()
        else:
            out[key] = copy.deepcopy(value)
    return out


class _State:
    """Current values by wire name, and the values last synchronized with the server.

    The synchronized copy may be deferred (copy on write): a resource built from a
    list record holds its values once, and copies them only when a value is about to
    change or a mutable one (``properties``) is handed out, which `hand_out` and
    `snapshot` take care of. Code that changes `values` calls `snapshot` first.
    """

    __slots__ = ("_synced", "values")

    def __init__(self, values: dict[str, Any] | None = None, *, deferred: bool = False) -> None:
        self.values: dict[str, Any] = {} if values is None else values
        self._synced: dict[str, Any] | None = None if deferred else _snapshot(self.values)

    @property
    def synced(self) -> dict[str, Any]:
        """The values as last synchronized with the server."""
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """Take the deferred copy now, if it still is deferred; return it."""
        if self._synced is None:
            self._synced = _snapshot(self.values)
        return self._synced

    def hand_out(self, name: str) -> Any:
        """The value of `name`, for a caller who may change it in place."""
        value = self.values.get(name)
        if self._synced is None and type(value) not in _IMMUTABLE:
            self.snapshot()
        return value

    def dirty(self) -> set[str]:
        """Names whose value differs from the synchronized one (in-place edits count)."""
        if self._synced is None:
            return set()
        names = self.values.keys() | self._synced.keys()
        return {n for n in names if self.values.get(n) != self._synced.get(n)}

    def synchronize(self) -> None:
        self._synced = _snapshot(self.values)


@dataclass
class Request:
    """What one verb sends, as built by a resource's `_build_request` hook."""

    headers: dict[str, str] = field(default_factory=dict)
    data: Any = None  # bytes, a binary file object, or an iterable of bytes

    def attach(self, data: Data) -> None:
        """Send `data` as the body, as ``application/octet-stream``: bytes as they are,
        file objects and iterables streamed. A ``str`` raises `InvalidRequest`."""
        if isinstance(data, str):
            raise exceptions.InvalidRequest("data must be bytes, not str")
        self.headers["Content-Type"] = OCTET_STREAM
        self.data = bytes(data) if isinstance(data, bytes | bytearray | memoryview) else data


def _connection_of(session: Adapter) -> Any:
    """The Connection behind an openstacksdk-shaped proxy, or None for a plain Adapter."""
    getter = getattr(session, "_get_connection", None)
    return getter() if callable(getter) else None


# --------------------------------------------------------------------------- resource


class Resource:
    """A declarative REST resource: fields, dirty tracking and the verbs.

    ``Resource(_synchronized=False, connection=None, **attrs)``: `attrs` are attribute
    names (or wire names). Use `new` for a resource the server has not seen yet (every
    value is dirty) and `existing` for one it has (nothing is dirty). `connection` may
    be None; the SDK never needs it.
    """

    resource_key: ClassVar[str | None] = None
    resources_key: ClassVar[str | None] = None
    base_path: ClassVar[str] = ""

    allow_create: ClassVar[bool] = False
    allow_fetch: ClassVar[bool] = False
    allow_head: ClassVar[bool] = False
    allow_commit: ClassVar[bool] = False
    allow_delete: ClassVar[bool] = False
    allow_list: ClassVar[bool] = False

    create_method: ClassVar[str] = "POST"
    fetch_method: ClassVar[str] = "GET"
    commit_method: ClassVar[str] = "PUT"

    _query_mapping: ClassVar[QueryParameters] = QueryParameters()
    _fields: ClassVar[dict[str, Field[Any]]] = {}

    id: Field[str] = Body("id", str)
    name: Field[str] = Body("name", str)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._fields = _collect_fields(cls)

    def __init__(self, _synchronized: bool = False, connection: Any = None, **attrs: Any) -> None:
        self._state = _State()
        self._connection = connection
        self._synchronized = _synchronized
        self._update(attrs)
        if _synchronized:
            self._state.synchronize()

    # ----------------------------------------------------------------- construction

    @classmethod
    def new(cls, **attrs: Any) -> Self:
        """A resource the server has not seen: every value given is dirty."""
        return cls(_synchronized=False, **attrs)

    @classmethod
    def existing(cls, connection: Any = None, **attrs: Any) -> Self:
        """A resource that exists on the server: nothing is dirty."""
        return cls(_synchronized=True, connection=connection, **attrs)

    @classmethod
    def _field_for(cls, key: str) -> Field[Any] | None:
        found = cls._fields.get(key)
        if found is not None:
            return found
        return next((f for f in cls._fields.values() if f.wire_name == key), None)

    def _update(self, attrs: Mapping[str, Any]) -> None:
        unknown: dict[str, Any] = {}
        for key, value in attrs.items():
            found = self._field_for(key)
            if found is None:
                unknown[key] = value
            else:
                found.__set__(self, value)
        for key, value in unknown.items():  # after the fields, which they may extend
            self._unknown_attr(key, value)

    def _unknown_attr(self, key: str, value: Any) -> None:
        raise TypeError(f"{type(self).__name__} has no attribute {key!r}")

    def _absorb(self, values: Mapping[str, Any]) -> None:
        """Take values the server reported (already decoded and typed) and clear dirty."""
        self._state.values.update(values)  # replaced wholesale, so no snapshot first
        self._state.synchronize()
        self._synchronized = True

    @classmethod
    def _from_server(cls, values: dict[str, Any], connection: Any = None) -> Self:
        """A clean resource that takes ownership of `values` (decoded and typed by a hook).

        `list` builds one per record, so this skips ``__init__``, whose work (coercing
        each value) the hook has done, and defers the synchronized copy until needed.
        """
        resource = cls.__new__(cls)
        resource._state = _State(values, deferred=True)
        resource._connection = connection
        resource._synchronized = True
        return resource

    # ----------------------------------------------------------------- reading

    def dirty(self) -> set[str]:
        """Wire names of values changed since the last synchronization with the server."""
        return self._state.dirty()

    def to_dict(self, ignore_none: bool = False) -> dict[str, Any]:
        """Every attribute by attribute name (aliases included); mutable values are copied."""
        out: dict[str, Any] = {}
        for attr, fld in self._fields.items():
            value = copy.deepcopy(self._state.values.get(fld.wire_name))
            if value is not None or not ignore_none:
                out[attr] = value
        return out

    def keys(self) -> list[str]:
        """Attribute names, so that ``dict(resource)`` works."""
        return list(self._fields)

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._field_for(key) is not None

    def __getitem__(self, key: str) -> Any:
        found = self._field_for(key)
        if found is None:
            raise KeyError(key)
        return self._state.hand_out(found.wire_name)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of attribute `key`, or `default` if unknown or unset."""
        try:
            value = self[key]
        except KeyError:
            return default
        return default if value is None else value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resource):
            return NotImplemented
        return type(self) is type(other) and self._state.values == other._state.values

    __hash__ = None  # type: ignore[assignment]  # mutable: equal values, equal objects

    def __repr__(self) -> str:
        seen: set[str] = set()
        parts = []
        ordered = sorted(self._fields.items(), key=lambda item: item[0] != "id")
        for attr, fld in ordered:
            if fld.wire_name in seen:
                continue
            seen.add(fld.wire_name)
            value = self._state.values.get(fld.wire_name)
            if value is not None:
                parts.append(f"{attr}={value!r}")
        return f"{type(self).__module__}.{type(self).__name__}({', '.join(parts)})"

    # ----------------------------------------------------------------- wire hooks

    def _build_request(self, verb: str, names: Collection[str]) -> Request:
        """The request of `verb` (``create``, ``commit`` or ``upload``: a commit that
        sends data) carrying the values named by `names`."""
        raise NotImplementedError(f"{type(self).__name__} does not say how values are sent")

    @classmethod
    def _values_from(cls, verb: str, response: requests.Response) -> dict[str, Any]:
        """Values, typed, that a response to `verb` reports about one resource."""
        raise NotImplementedError(f"{cls.__name__} does not say how responses are read")

    @classmethod
    def _records_from(cls, response: requests.Response) -> list[Mapping[str, Any]]:
        """The records one list page holds, not yet checked.

        `list` reads the next page's marker from the last record's ``id`` before it
        turns each record into values with `_record_values`, which checks them.
        """
        raise NotImplementedError(f"{cls.__name__} does not say how list pages are read")

    @classmethod
    def _record_values(cls, record: Mapping[str, Any]) -> dict[str, Any]:
        """Values one list record reports, typed; raises `InvalidResponse` if one is bad."""
        raise NotImplementedError(f"{cls.__name__} does not say how list records are read")

    # ----------------------------------------------------------------- plumbing

    @classmethod
    def _require(cls, capability: str) -> None:
        if not getattr(cls, f"allow_{capability}"):
            raise exceptions.MethodNotSupported(cls, capability)

    @classmethod
    def _collection_path(cls, base_path: str | None) -> str:
        return base_path if base_path is not None else cls.base_path

    def _item_path(self, base_path: str | None) -> str:
        if not self.id:
            raise exceptions.InvalidRequest(f"{type(self).__name__} has no id")
        return f"{self._collection_path(base_path)}/{quote(self.id, safe='')}"

    @staticmethod
    def _send(
        session: Adapter,
        method: str,
        path: str,
        request: Request | None = None,
        *,
        params: Mapping[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """One request through the keystoneauth `session`; error statuses raise."""
        request = request or Request()
        kwargs: dict[str, Any] = {"headers": request.headers, "raise_exc": False}
        if request.data is not None:
            kwargs["data"] = request.data
        if params:
            kwargs["params"] = dict(params)
        if stream:
            kwargs["stream"] = True
        response: requests.Response = session.request(path, method, **kwargs)
        if response.status_code >= 400 and stream:
            response.content  # noqa: B018 - read the (small) error body before mapping it
        exceptions.raise_from_response(response)
        return response

    # ----------------------------------------------------------------- verbs

    def create(
        self, session: Adapter, base_path: str | None = None, *, data: Data | None = None
    ) -> Self:
        """Create this resource on the server from every value set; return self.

        With `data` (see `Data`) the resource's data travels in the same request.
        """
        self._require("create")
        request = self._build_request("create", self._state.dirty())
        if data is not None:
            request.attach(data)
        response = self._send(
            session, self.create_method, self._collection_path(base_path), request
        )
        self._absorb(self._values_from("create", response))
        return self

    def fetch(self, session: Adapter, base_path: str | None = None) -> Self:
        """Replace local values with the server's; raises NotFoundException if absent."""
        self._require("fetch")
        response = self._send(session, self.fetch_method, self._item_path(base_path))
        self._absorb(self._values_from("fetch", response))
        return self

    def head(self, session: Adapter, base_path: str | None = None) -> Self:
        """Update local values from a HEAD of this resource."""
        self._require("head")
        response = self._send(session, "HEAD", self._item_path(base_path))
        self._absorb(self._values_from("head", response))
        return self

    def commit(
        self, session: Adapter, base_path: str | None = None, *, data: Data | None = None
    ) -> Self:
        """Send the values changed since the last synchronization; no change, no request.

        With `data` (see `Data`) the request is sent even without a change, and carries
        the data as its body (the hook builds it as an ``upload``).
        """
        self._require("commit")
        names = self._state.dirty()
        if data is None:
            if not names:
                return self
            return self._commit(session, base_path, self._build_request("commit", names))
        request = self._build_request("upload", names)
        request.attach(data)
        return self._commit(session, base_path, request)

    def _commit(self, session: Adapter, base_path: str | None, request: Request) -> Self:
        """Send a built commit request; take the values the server reports."""
        response = self._send(session, self.commit_method, self._item_path(base_path), request)
        self._absorb(self._values_from("commit", response))
        return self

    def delete(self, session: Adapter, base_path: str | None = None) -> Self:
        """Delete this resource on the server; raises NotFoundException if absent."""
        self._require("delete")
        self._send(session, "DELETE", self._item_path(base_path))
        return self

    @classmethod
    def _query(cls, params: Mapping[str, Any]) -> dict[str, str]:
        return cls._query_mapping.transpose(params, cls.__name__)

    @classmethod
    def _list_path(cls, base_path: str | None) -> str:
        return cls._collection_path(base_path)

    @classmethod
    def list(
        cls,
        session: Adapter,
        paginated: bool = True,
        base_path: str | None = None,
        *,
        max_items: int | None = None,
        **params: Any,
    ) -> Iterator[Self]:
        """Lazily yield matching resources, following limit/marker pages to the end.

        ``limit`` is the page size (default `osimage.pager.DEFAULT_PAGE_SIZE`), `max_items` the most
        resources to yield in all. With ``paginated=False`` one page is fetched. Unknown
        query parameters raise `InvalidRequest` at once, before anything is sent.

        From the second page on, the next page is requested in a worker thread (sharing
        `session`) while the caller consumes the current one; a caller who stops early
        should ``close()`` the iterator, which waits for that request. An error in a
        page is raised when the caller reaches it.
        """
        cls._require("list")
        query = cls._query(params)
        if max_items is not None and max_items < 0:
            raise exceptions.InvalidRequest(f"max_items must not be negative, got {max_items}")
        return cls._pages(session, cls._list_path(base_path), query, paginated, max_items)

    @classmethod
    def _pages(
        cls,
        session: Adapter,
        path: str,
        query: dict[str, str],
        paginated: bool,
        max_items: int | None,
    ) -> Iterator[Self]:
        """Yield the resources of each page `osimage.pager` reads (ahead, from page two).

        A page whose records fail their check raises before any of its resources.
        """
        from osimage import pager  # only once a list is read

        connection = _connection_of(session)

        def start(page_query: Mapping[str, str]) -> pager.Answer:
            # streamed: the body is read by `read`, in the caller's thread (see pager)
            response = cls._send(session, "GET", path, params=page_query, stream=True)
            return pager.Answer(partial(cls._records_from, response), response.close)

        pages = pager.read_pages(
            start, query, paginated=paginated, max_items=max_items, what=cls.__name__
        )
        with contextlib.closing(pages):
            for records in pages:
                for values in [cls._record_values(record) for record in records]:
                    yield cls._from_server(values, connection)

    @classmethod
    def _could_be_id(cls, name_or_id: str) -> bool:
        """False when `name_or_id` cannot be an id, so `find` need not look it up."""
        return True

    @classmethod
    def _get_one_match(cls, name_or_id: str, results: Iterable[Self]) -> Self | None:
        """The one result whose id or name equals `name_or_id`, or None.

        Stops consuming `results` at the second match and raises `DuplicateResource`.
        """
        match: Self | None = None
        for candidate in results:
            if name_or_id not in (candidate.id, candidate.name):
                continue
            if match is not None:
                raise exceptions.DuplicateResource(
                    f"More than one {cls.__name__} exists with the name {name_or_id!r}"
                )
            match = candidate
        return match

    @overload
    @classmethod
    def find(
        cls, session: Adapter, name_or_id: str, ignore_missing: Literal[False], **params: Any
    ) -> Self: ...
    @overload
    @classmethod
    def find(
        cls, session: Adapter, name_or_id: str, ignore_missing: bool = True, **params: Any
    ) -> Self | None: ...
    @classmethod
    def find(
        cls, session: Adapter, name_or_id: str, ignore_missing: bool = True, **params: Any
    ) -> Self | None:
        """Find a resource by its id first, then by its name.

        Two or more name matches raise `DuplicateResource`. Nothing found returns None,
        or raises `ResourceNotFound` when ``ignore_missing=False``. `params` are passed
        to `list` as query parameters (unknown keys raise `InvalidRequest` before any
        request).

        Round trips: a `name_or_id` that could be an id is fetched first (one request,
        which ends the search when it finds it); then one list request filtered by name
        with a page size of 2, enough to tell one match from two. So: an existing id
        takes 1 request, a name that cannot be an id 1, an id-shaped string that is
        not an id 2. (For `Image`, only UUIDs of at most 36 characters can be ids.)
        """
        cls._query(params)  # unknown keys fail before anything is sent
        if cls._could_be_id(name_or_id):
            try:
                found = cls.existing(connection=_connection_of(session), id=name_or_id)
                return found.fetch(session)
            except exceptions.NotFoundException:
                pass
        if "name" in cls._query_mapping.mapping:
            matches = cls.list(session, **{"limit": 2, **params, "name": name_or_id})
        else:
            matches = cls.list(session, **params)
        match = cls._get_one_match(name_or_id, matches)
        if match is not None or ignore_missing:
            return match
        raise exceptions.ResourceNotFound(f"No {cls.__name__} found for {name_or_id}")


def _collect_fields(cls: type[Resource]) -> dict[str, Field[Any]]:
    """Attribute name -> field over the MRO, in declaration order; subclasses override."""
    found: dict[str, Field[Any]] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if isinstance(value, Field):
                found.pop(attr, None)  # an override moves to its subclass position
                found[attr] = value
            elif attr in found:
                del found[attr]
    return found


Resource._fields = _collect_fields(Resource)
