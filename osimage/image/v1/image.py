"""The v1 `Image` resource: openstacksdk's attributes, carried as ``x-image-meta-*`` headers.

Metadata travels through `osimage.wire` (requests percent-encoded, responses decoded and
checked); image data travels as streamed bodies and is verified against the checksums
the server reports while it is read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, Final, Literal, Self, TypeVar, overload

from osimage import exceptions, resource, wire
from osimage.resource import OCTET_STREAM, Data

if TYPE_CHECKING:
    import requests
    from keystoneauth1.adapter import Adapter

__all__ = ["CHUNK_SIZE", "OCTET_STREAM", "Data", "Image", "ImageData", "Meta", "Output"]

T = TypeVar("T")

CHUNK_SIZE: Final = 1024 * 1024
"""Bytes per chunk when reading image data (openstacksdk's download default too): each
chunk is one hand-off to the hashing thread and one to the writing thread, so 64 KiB
chunks cost about 0.4 s more CPU per GiB than 1 MiB ones."""

Output = str | os.PathLike[str] | IO[bytes]


class Meta(resource.Field[T]):
    """An attribute carried in an ``x-image-meta-<wire_name>`` header.

    Values are checked with the codec's own rules (e.g. ``min_ram`` is a non-negative
    32-bit integer, ``name`` at most 255 characters) when they are assigned.
    """

    def __init__(self, wire_name: str, type: type[T]) -> None:
        kind = wire.FIELDS[wire_name]
        super().__init__(wire_name, type, check=lambda value: kind.parse(kind.render(value)))
        self.kind = kind


def _property_key(key: str) -> str:
    """The key the server will store for `key` (v1 lower-cases and turns ``-`` into ``_``)."""
    return wire.property_key(wire.canonical_name(wire.PROPERTY_PREFIX + key)) or ""


def _check_properties(value: dict[str, Any]) -> None:
    for key, prop in value.items():
        if not key or _property_key(key) != key:
            raise ValueError(
                f"property key {key!r} would be stored as {_property_key(key)!r}; use that"
            )
        if not isinstance(prop, str):
            raise ValueError(f"property {key!r}: expected a string, got {prop!r}")


class Properties(resource.Field[dict[str, str]]):
    """Custom properties, one ``x-image-meta-property-<key>`` header each."""

    def __init__(self) -> None:
        super().__init__("properties", dict, check=_check_properties)


_EMITTED_BY_CLASS: Final[dict[type[Image], tuple[str, ...]]] = {}
_RECORD_PLANS: Final[dict[type[Image], wire.RecordPlan]] = {}  # see `Image._record_values`


def _could_be_uuid(text: str) -> bool:
    if len(text) > 36:  # v1 answers 404 for longer ids
        return False
    try:
        import uuid  # only find() asks, and only for text of a UUID's length

        uuid.UUID(text)
    except ValueError:
        return False
    return True


class Image(resource.Resource):
    """An image of the Image API v1, with the attributes of ``openstack.image.v1.image.Image``.

    ``Image(_synchronized=False, connection=None, **attrs)``: unknown attributes given
    to the constructor are kept as custom `properties`, as openstacksdk does.

    Verbs and their requests: `create` ``POST /images`` (optionally with data),
    `fetch`/`head` ``HEAD /images/{id}``, `commit` ``PUT /images/{id}`` (changed
    headers only, never without a change), `upload` ``PUT`` with data, `delete`,
    `list` ``GET /images/detail`` paged by limit/marker, `download`/`data` a streamed
    ``GET /images/{id}`` verified against md5 and sha256. `find` takes 1 request for an
    existing id or for a name that is not a UUID, and 2 for a UUID that is no image's id.
    """

    resource_key = "image"
    resources_key = "images"
    base_path = "/images"

    allow_create = True
    allow_fetch = True
    allow_head = True
    allow_commit = True
    allow_delete = True
    allow_list = True

    fetch_method = "HEAD"

    _query_mapping = resource.QueryParameters(
        "name",
        "container_format",
        "disk_format",
        "status",
        "size_min",
        "size_max",
        "is_public",
        "min_ram",
        "min_disk",
        "sort_key",
        "sort_dir",
        changes_since="changes-since",
        is_protected="protected",
    )

    #: Hash of the image data used. The Image service uses this value for verification.
    checksum = Meta("checksum", str)
    #: The container format: whether the file also holds metadata about the VM (ovf, ami, bare...).
    container_format = Meta("container_format", str)
    #: A URL to copy an image from (sent as ``x-glance-api-copy-from``; never returned).
    copy_from = resource.Header("copy_from", str, header=wire.COPY_FROM_HEADER)
    #: The timestamp when this image was created.
    created_at = Meta("created_at", str)
    #: The disk format of the image: aki, ari, ami, raw, iso, vhd, vdi, qcow2, vmdk...
    disk_format = Meta("disk_format", str)
    #: The image id (a UUID).
    id = Meta("id", str)
    #: Defines whether the image can be deleted. *Type: bool*
    is_protected = Meta("protected", bool)
    #: ``True`` if this is a public image. *Type: bool*
    is_public = Meta("is_public", bool)
    #: A location for the image identified by a URI (sent only; never returned).
    location = Meta("location", str)
    #: The minimum disk size in GB that is required to boot the image.
    min_disk = Meta("min_disk", int)
    #: The minimum amount of RAM in MB that is required to boot the image.
    min_ram = Meta("min_ram", int)
    #: Name for the image; not unique.
    name = Meta("name", str)
    #: The ID of the owner, or project, of the image.
    owner = Meta("owner", str)
    #: The ID of the owner, or project, of the image. (backwards compat; same value as owner)
    owner_id = Meta("owner", str)
    #: Properties, if any, that are associated with the image.
    properties = Properties()
    #: The size of the image data, in bytes.
    size = Meta("size", int)
    #: The image status.
    status = Meta("status", str)
    #: The timestamp when this image was last updated.
    updated_at = Meta("updated_at", str)

    def _unknown_attr(self, key: str, value: Any) -> None:
        props = dict(self.properties or {})
        props[key] = value
        self.properties = props

    # ----------------------------------------------------------------- the wire

    def _build_request(self, verb: str, names: Collection[str]) -> resource.Request:
        """Create and upload never purge; a commit purges when a property was removed."""
        if verb != "commit":
            return self._meta_request(names, purge=None)
        synced = self._state.synced.get("properties") or {}
        current = self._state.values.get("properties") or {}
        return self._meta_request(names, purge=bool(synced.keys() - current.keys()))

    def _meta_request(self, names: Collection[str], purge: bool | None) -> resource.Request:
        """Headers for the values named by `names`.

        ``purge=None`` (create): the changed properties, no purge header. A bool
        (commit): the purge header, explicitly, with every property when True (the
        server deletes the ones not named) or only the changed ones when False.
        """
        values = self._state.values
        fields: dict[str, Any] = {}
        headers: dict[str, str] = {}
        for name in names:
            if name == "properties":
                continue
            value = values.get(name)
            if name == Image.copy_from.wire_name:
                if value is not None:
                    headers[Image.copy_from.header] = value
                continue
            if value is None:
                if str not in wire.FIELDS[name].json_types:
                    raise exceptions.InvalidRequest(
                        f"{type(self).__name__}: {name} cannot be unset, v1 has no null for it"
                    )
                value = ""  # an empty header is v1's null
            fields[name] = value
        current: dict[str, str] = values.get("properties") or {}
        synced: dict[str, str] = self._state.synced.get("properties") or {}
        changed = {k: v for k, v in current.items() if synced.get(k) != v}
        props = dict(current) if purge else changed
        headers.update(wire.encode(fields, props, percent=True))
        if purge is not None:
            headers[wire.PURGE_PROPS_HEADER] = wire.encode_flag_header(purge)
        return resource.Request(headers)

    @classmethod
    def _declared(cls) -> set[str]:
        return {f.wire_name for f in cls._fields.values()}

    @classmethod
    def _emitted(cls) -> tuple[str, ...]:
        """The emitted fields this class declares, in `wire.EMITTED` order (cached per class)."""
        found = _EMITTED_BY_CLASS.get(cls)
        if found is None:
            declared = cls._declared()
            found = _EMITTED_BY_CLASS[cls] = tuple(n for n in wire.EMITTED if n in declared)
        return found

    @classmethod
    def _values_from(cls, verb: str, response: requests.Response) -> dict[str, Any]:
        if verb in ("fetch", "head"):
            return cls._header_values(response)
        body = _json(response)
        record = body.get(cls.resource_key) if isinstance(body, dict) else None
        if not isinstance(record, dict):
            raise exceptions.InvalidResponse(f"expected {{'image': {{...}}}}, got {body!r}")
        return cls._record_values(record)

    @classmethod
    def _header_values(cls, response: requests.Response) -> dict[str, Any]:
        try:
            meta = wire.decode(response.headers.items(), percent=False)
        except wire.WireError as exc:
            raise exceptions.InvalidResponse(exc.message) from exc
        declared = cls._declared()
        values: dict[str, Any] = {
            name: meta.fields.get(name) for name in wire.EMITTED if name in declared
        }
        values["properties"] = {k: v for k, v in meta.properties.items() if v is not None}
        return values

    @classmethod
    def _record_values(cls, record: Mapping[str, Any]) -> dict[str, Any]:
        """The values of a record decoded from a response (it takes its properties)."""
        plan = _RECORD_PLANS.get(cls)
        if plan is None:
            plan = _RECORD_PLANS[cls] = wire.json_record_plan((*cls._emitted(), "properties"))
        try:
            values = wire.json_record_values(record, plan)
        except wire.WireError as exc:
            raise exceptions.InvalidResponse(exc.message) from exc
        props: dict[str, Any] = values["properties"] or {}
        for value in props.values():
            if type(value) is not str:
                break
        else:  # the record's own dict: records are decoded for this call alone, and a
            # copy per record is one more object for the cyclic GC to walk (issue 14)
            values["properties"] = props
            return values
        if all(isinstance(v, str | None) for v in props.values()):
            values["properties"] = {k: v for k, v in props.items() if v is not None}
        else:
            raise exceptions.InvalidResponse(f"properties: expected string values, got {props!r}")
        return values

    @classmethod
    def _records_from(cls, response: requests.Response) -> list[Mapping[str, Any]]:
        body = _json(response)
        records = body.get(cls.resources_key) if isinstance(body, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise exceptions.InvalidResponse(f"expected {{'images': [...]}}, got {body!r}")
        return records

    @classmethod
    def _list_path(cls, base_path: str | None) -> str:
        return f"{cls._collection_path(base_path)}/detail"

    @classmethod
    def _query(cls, params: Mapping[str, Any]) -> dict[str, str]:
        """Query for `params`; ``properties={k: v}`` and ``property-<k>=v`` filter on properties."""
        rest = dict(params)
        props = rest.pop("properties", None) or {}
        if not isinstance(props, Mapping):
            raise exceptions.InvalidRequest(f"properties: expected a mapping, got {props!r}")
        by_property = {f"property-{k}": v for k, v in props.items()}
        by_property.update({k: rest.pop(k) for k in list(rest) if k.startswith("property-")})
        query = super()._query(rest)
        query.update({k: resource.render_query_value(v) for k, v in by_property.items()})
        return query

    @classmethod
    def _could_be_id(cls, name_or_id: str) -> bool:
        return _could_be_uuid(name_or_id)

    # ----------------------------------------------------------------- verbs

    def commit(
        self,
        session: Adapter,
        base_path: str | None = None,
        *,
        data: Data | None = None,
        purge_props: bool | None = None,
    ) -> Self:
        """Send the changed metadata (``PUT /images/{id}``); no change, no request.

        Only changed fields and properties are sent. Properties removed locally make
        the request replace all properties (``purge_props=True``); otherwise changed
        ones are merged. Pass `purge_props` to choose explicitly: True sends every
        property and replaces the server's set with it; False never deletes one. With
        `data` this is `upload` (which never purges).
        """
        if purge_props is None:
            return super().commit(session, base_path, data=data)
        if data is not None:
            raise exceptions.InvalidRequest("purge_props: an upload never purges properties")
        self._require("commit")
        names = self._state.dirty()
        if not names and not purge_props:
            return self
        return self._commit(session, base_path, self._meta_request(names, purge_props))

    def upload(self, session: Adapter, data: Data, base_path: str | None = None) -> Self:
        """Upload image data to this queued image (``PUT /images/{id}``), streamed.

        Changed metadata travels in the same request. v1 never deletes properties in
        an upload, so a property removed locally stays until a later `commit`.
        """
        return self.commit(session, base_path, data=data)

    def data(self, session: Adapter, chunk_size: int = CHUNK_SIZE) -> ImageData:
        """Open a streamed download whose chunks are verified as they are read.

        Iterating the result yields the image data; after the last chunk the size, md5
        (and sha256 when the server reports it) are compared with what the server
        declared, and `ChecksumMismatch` is raised on any difference. Close it (or use
        it as a context manager) if you stop early.
        """
        self._require("fetch")
        response = self._send(session, "GET", self._item_path(None), stream=True)
        return ImageData(response, chunk_size)

    @overload
    def download(
        self,
        session: Adapter,
        stream: Literal[True],
        output: None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> ImageData: ...
    @overload
    def download(
        self, session: Adapter, stream: bool, output: Output, chunk_size: int = CHUNK_SIZE
    ) -> None: ...
    @overload
    def download(
        self,
        session: Adapter,
        stream: bool = False,
        *,
        output: Output,
        chunk_size: int = CHUNK_SIZE,
    ) -> None: ...
    @overload
    def download(
        self,
        session: Adapter,
        stream: Literal[False] = False,
        output: None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> bytes: ...
    @overload
    def download(
        self,
        session: Adapter,
        stream: bool = False,
        output: Output | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> ImageData | bytes | None: ...
    def download(
        self,
        session: Adapter,
        stream: bool = False,
        output: Output | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> ImageData | bytes | None:
        """Download the image data, verified against the server's checksums.

        - `output` given (a path or a binary file object): the data is streamed into
          it and None is returned. A path is written beside the target and renamed
          only once verified, so a bad download never leaves a file under that name; a
          file object that fails verification is truncated back to where it started
          when it is seekable.
        - ``stream=True``: returns an `ImageData` (see `data`).
        - otherwise: returns the data as bytes (held in memory: for small images).

        Raises `ChecksumMismatch` (an `InvalidResponse`) when the data does not match.
        """
        chunks = self.data(session, chunk_size)
        if output is None:
            if stream:
                return chunks
            with chunks:
                return b"".join(chunks)
        from osimage import transfer

        with chunks:
            if isinstance(output, str | os.PathLike):
                transfer.write_path(chunks, output)
            else:
                transfer.write_file(chunks, output)
        return None


class ImageData:
    """Image data streamed from one ``GET /images/{id}``, verified while it is read.

    Iterate once. `ChecksumMismatch` is raised after the last chunk when the size, md5
    or sha256 differ from what the server declared; `InvalidResponse` when the stream
    breaks off. `response` is the underlying ``requests.Response``.
    """

    def __init__(self, response: requests.Response, chunk_size: int = CHUNK_SIZE) -> None:
        self.response = response
        self.chunk_size = chunk_size
        try:
            meta = wire.decode(response.headers.items(), percent=False)
        except wire.WireError as exc:
            response.close()
            raise exceptions.InvalidResponse(exc.message) from exc
        self.expected_size: int | None = meta.fields.get("size")
        self.expected_md5: str | None = meta.fields.get("checksum")
        sha = response.headers.get(wire.SHA256_HEADER)
        self.expected_sha256: str | None = sha.strip().lower() if sha else None
        self.size = 0
        self._started = False
        from osimage.transfer import Digests  # imported when data flows

        self._digests = Digests(sha256=self.expected_sha256 is not None)

    def __iter__(self) -> Iterator[bytes]:
        if self._started:
            raise RuntimeError("ImageData can be iterated only once")
        self._started = True
        try:
            with self._digests:
                try:
                    for chunk in self.response.iter_content(self.chunk_size):
                        self.size += len(chunk)
                        self._digests.put(chunk)
                        yield chunk
                except OSError as exc:  # requests' ChunkedEncodingError/ConnectionError
                    raise exceptions.InvalidResponse(f"image data stream broke off: {exc}") from exc
            self._verify()
        finally:
            self.close()

    def _verify(self) -> None:
        problems = []
        if self.expected_size is not None and self.size != self.expected_size:
            problems.append(f"size {self.size} != declared {self.expected_size}")
        md5 = self._digests.md5.hexdigest()
        if self.expected_md5 is not None and md5 != self.expected_md5.lower():
            problems.append(f"md5 {md5} != declared {self.expected_md5}")
        sha256 = self._digests.sha256
        if sha256 is not None and sha256.hexdigest() != self.expected_sha256:
            problems.append(f"sha256 {sha256.hexdigest()} != declared {self.expected_sha256}")
        if problems:
            raise exceptions.ChecksumMismatch("image data is corrupt: " + "; ".join(problems))

    def close(self) -> None:
        """Release the connection; safe to call more than once."""
        self.response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _json(response: requests.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError as exc:
        raise exceptions.InvalidResponse(f"response body is not JSON: {exc}") from None
