"""``conn.image``: openstacksdk's image v1 proxy methods, plus members and the v1 extras.

Each method is a thin layer over the `Image` verbs and the `member` functions; only
`create_image` carries logic of its own (one-pass checksums, skip-if-identical, cleanup).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, Final

from osimage import exceptions, transfer
from osimage.image.v1 import member as _member
from osimage.image.v1.image import Image
from osimage.transfer import CHUNK_SIZE

if TYPE_CHECKING:
    from keystoneauth1.adapter import Adapter

MD5_KEY: Final = "owner_specified.openstack.md5"
SHA256_KEY: Final = "owner_specified.openstack.sha256"
OBJECT_KEY: Final = "owner_specified.openstack.object"

# create_image keywords that are Image fields; every other keyword becomes a property.
_FIELD_KEYWORDS: Final = {
    "id": "id",
    "is_public": "is_public",
    "is_protected": "is_protected",
    "protected": "is_protected",
    "min_disk": "min_disk",
    "min_ram": "min_ram",
    "owner": "owner",
    "owner_id": "owner",
    "location": "location",
    "copy_from": "copy_from",
    "size": "size",
    "checksum": "checksum",
}
_EXTENSION_FORMATS: Final = {
    ".qcow2": "qcow2", ".img": "raw", ".raw": "raw", ".iso": "iso", ".vmdk": "vmdk",
    ".vhd": "vhd", ".vhdx": "vhdx", ".vdi": "vdi", ".ploop": "ploop",
}  # fmt: skip

ImageRef = str | Image


def guess_disk_format(filename: str | os.PathLike[str] | None) -> str | None:
    """The disk format a file name's extension suggests (``.qcow2``, ``.iso``, ...), or None."""
    if filename is None:
        return None
    extension = os.path.splitext(os.fspath(filename))[1].lower()
    return _EXTENSION_FORMATS.get(extension)


class Proxy:
    """The image service methods of a `Connection` (``conn.image``).

    `session` is the keystoneauth1 Adapter bound to the image endpoint (``.../v1``).
    Methods taking an ``image`` accept an `Image` or an image id (not a name: use
    `find_image` for names).

    `list_defaults` are query parameters every listing sends unless the caller gives
    them. A `Connection` without credentials (``auth_type`` none) passes
    ``is_public=none``: a noauth server treats every caller as an admin without a
    project, to whom v1 would list only public images, so an image just created would
    not be found by name.
    """

    def __init__(self, session: Adapter, *, list_defaults: Mapping[str, Any] | None = None) -> None:
        self.session = session
        self._list_defaults: dict[str, Any] = dict(list_defaults or {})

    # ---- images ---------------------------------------------------------------------

    def _image(self, image: ImageRef) -> Image:
        return image if isinstance(image, Image) else Image.existing(id=image)

    @staticmethod
    def _id(image: ImageRef) -> str:
        found = image.id if isinstance(image, Image) else image
        if not found:
            raise exceptions.InvalidRequest("an image id is needed")
        return found

    def images(self, **query: Any) -> Iterator[Image]:
        """Images matching `query` (name, status, size_min, sort_key, ..., limit), paged lazily.

        From the second page on, the next page is read ahead in a worker thread; close
        the iterator if you stop early (see `Image.list`).
        """
        return Image.list(self.session, **{**self._list_defaults, **query})

    def get_image(self, image: ImageRef) -> Image:
        """The image with its current metadata; raises NotFoundException."""
        return self._image(image).fetch(self.session)

    def find_image(self, name_or_id: str, ignore_missing: bool = True) -> Image | None:
        """The one image with this id or name; None (or NotFoundException) if none,
        DuplicateResource if several share the name."""
        return Image.find(
            self.session, name_or_id, ignore_missing=ignore_missing, **self._list_defaults
        )

    def delete_image(self, image: ImageRef, ignore_missing: bool = True) -> None:
        """Delete an image; a missing one raises NotFoundException only if not `ignore_missing`."""
        try:
            self._image(image).delete(self.session)
        except exceptions.NotFoundException:
            if not ignore_missing:
                raise

    def update_image(self, image: ImageRef, *, purge_props: bool = False, **attrs: Any) -> Image:
        """Change image fields (and ``properties``); only the named attributes are sent.

        Properties not named are kept unless ``purge_props=True`` (v1's raw default would
        drop them: the SDK always says which it means).
        """
        target = self._image(image)
        for key, value in attrs.items():
            setattr(target, _FIELD_KEYWORDS.get(key, key), value)
        return target.commit(self.session, purge_props=purge_props)

    def update_image_properties(
        self,
        image: ImageRef,
        properties: Mapping[str, Any] | None = None,
        *,
        purge: bool,
        meta: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> bool:
        """Set custom properties; with ``purge=True`` every property not given is removed.

        Values are sent as text. Returns False, sending no update, when the image already
        has exactly the resulting properties (one HEAD is always sent first).
        """
        wanted = {
            str(k): str(v) for k, v in {**(properties or {}), **kwargs, **(meta or {})}.items()
        }
        current = self.get_image(image)
        have = dict(current.properties or {})
        final = wanted if purge else {**have, **wanted}
        if final == have:
            return False
        current.properties = final
        current.commit(self.session, purge_props=purge)
        return True

    def reserve_image(self, **attrs: Any) -> Image:
        """Register an image without data (status ``queued``) to upload into later."""
        return Image.new(**attrs).create(self.session)

    def upload_image(
        self,
        container_format: str | None = None,
        disk_format: str | None = None,
        data: Any = None,
        **attrs: Any,
    ) -> Image:
        """Create an image from attributes and `data` in one request (openstacksdk's v1 shape).

        `data` may be bytes, a binary file object or an iterable of bytes; it is streamed.
        Prefer `create_image`, which also cleans up after a failed upload.
        """
        image = Image.new(container_format=container_format, disk_format=disk_format, **attrs)
        return image.create(self.session, data=data)

    def upload_image_data(
        self, image: ImageRef, data: Any = None, *, filename: str | None = None
    ) -> Image:
        """Upload data (bytes, a file object, an iterable of bytes, or `filename`) into a
        queued image, streamed."""
        target = self._image(image)
        if filename is not None:
            with open(filename, "rb") as handle:
                return target.upload(self.session, transfer.read_chunks(handle))
        return target.upload(self.session, data)

    def download_image(
        self,
        image: ImageRef,
        stream: bool = False,
        output: str | os.PathLike[str] | BinaryIO | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> Any:
        """Download image data, verified against its checksum.

        With `output` (a path or a binary file) the data is written there in chunks; with
        ``stream=True`` the response is returned for the caller to iterate; otherwise the
        response is returned after reading (small images only).
        """
        return self._image(image).download(
            self.session, stream=stream, output=output, chunk_size=chunk_size
        )

    def create_image(
        self,
        name: str | None,
        filename: str | os.PathLike[str] | None = None,
        data: Any = None,
        disk_format: str | None = None,
        container_format: str | None = None,
        md5: str | None = None,
        sha256: str | None = None,
        allow_duplicates: bool = False,
        validate_checksum: bool = False,
        meta: Mapping[str, Any] | None = None,
        wait: bool = False,
        timeout: float = 3600,
        container: str = "images",
        **kwargs: Any,
    ) -> Image:
        """Create an image and upload its data from `filename` or `data`, streamed.

        Checksums (md5 and sha256) are computed while uploading, the md5 the server
        records is compared with them, and they are recorded as the
        ``owner_specified.openstack.*`` properties. Unless `allow_duplicates`, an
        active image with the same name and the same checksums is returned instead of
        uploading again; only when an active image of that name exists (or with
        `validate_checksum`) is data that can be read twice (a file, bytes, a seekable
        file object) hashed before the upload, and that md5 is then also sent for the
        server to check. If the upload fails, the reserved image is deleted and the
        error re-raised.

        Keywords that are image fields (``is_public``, ``protected``, ``min_disk``,
        ``min_ram``, ``owner``, ``location``, ``copy_from``, ...) set them; other keywords
        and `meta` become custom properties. Without data (and with ``location`` or
        ``copy_from``) the image is only registered; ``wait=True`` then waits for
        ``active`` (copy-from is asynchronous).
        """
        if filename is not None and data is not None:
            raise exceptions.InvalidRequest("pass filename or data, not both")
        fields: dict[str, Any] = {"name": name}
        properties: dict[str, str] = {}
        for key, value in kwargs.items():
            if key == "properties":
                properties.update({str(k): str(v) for k, v in (value or {}).items()})
            elif key in _FIELD_KEYWORDS:
                fields[_FIELD_KEYWORDS[key]] = value
            elif value is not None:
                properties[key] = str(value)
        properties.update({str(k): str(v) for k, v in (meta or {}).items()})
        has_data = filename is not None or data is not None
        if has_data and ("location" in fields or "copy_from" in fields):
            raise exceptions.InvalidRequest("pass data or a location/copy_from, not both")
        fields["disk_format"] = disk_format
        fields["container_format"] = container_format
        if has_data:  # v1 needs both formats to activate; default as openstacksdk does
            fields["disk_format"] = disk_format or guess_disk_format(filename) or "qcow2"
            fields["container_format"] = container_format or "bare"

        # Active images of this name, which an upload of the same data is skipped for.
        twins: list[Image] = []
        if not allow_duplicates and name and (has_data or (md5 and sha256)):
            twins = [found for found in self.images(name=name) if found.status == "active"]
        if has_data and not (md5 and sha256) and (twins or validate_checksum):
            known = self._hash_before(filename, data)
            if known is not None:
                if validate_checksum and (md5 or known[0], sha256 or known[1]) != known:
                    raise exceptions.InvalidRequest(
                        f"the data's checksums (md5 {known[0]}, sha256 {known[1]}) differ "
                        "from the md5/sha256 given"
                    )
                md5, sha256 = known
            elif validate_checksum:
                raise exceptions.InvalidRequest(
                    "validate_checksum needs data that can be read twice (a file or bytes)"
                )

        if md5 and sha256:
            for existing in twins:
                props = existing.properties or {}
                if props.get(MD5_KEY) == md5 and props.get(SHA256_KEY) == sha256:
                    return existing

        if name:
            properties[OBJECT_KEY] = f"{container}/{name}"
        if md5:
            properties[MD5_KEY] = md5
        if sha256:
            properties[SHA256_KEY] = sha256
        fields["properties"] = properties

        if not has_data:
            image = self.reserve_image(**{k: v for k, v in fields.items() if v is not None})
            if wait and image.status != "active":
                image = self.wait_for_status(image, "active", failures=["killed"], wait=timeout)
            return image

        size = fields.get("size")  # declared by the caller, or known here
        if filename is not None:
            size = os.path.getsize(filename)
        elif isinstance(data, bytes | bytearray | memoryview):
            size = len(data)
        if size == 0:
            fields["size"] = 0  # v1 activates a zero-size image without an upload
            return self.reserve_image(**{k: v for k, v in fields.items() if v is not None})
        if md5:
            fields["checksum"] = md5
        if size is not None:
            fields["size"] = size
        image = self.reserve_image(**{k: v for k, v in fields.items() if v is not None})
        try:
            return self._upload_verified(image, filename, data, md5, sha256, validate_checksum)
        except BaseException:
            with contextlib.suppress(Exception):  # the upload's error is the one to report
                image.delete(self.session)
            raise

    def _hash_before(
        self, filename: str | os.PathLike[str] | None, data: Any
    ) -> tuple[str, str] | None:
        if filename is not None:
            return transfer.file_hashes(filename)
        if isinstance(data, bytes | bytearray | memoryview):
            return transfer.Hasher().hashes([bytes(data)])
        seekable = getattr(data, "seekable", None)
        if callable(seekable) and seekable():
            start = data.tell()
            known = transfer.Hasher().hashes(transfer.read_chunks(data))
            data.seek(start)
            return known
        return None

    def _upload_verified(
        self,
        image: Image,
        filename: str | os.PathLike[str] | None,
        data: Any,
        md5: str | None,
        sha256: str | None,
        validate_checksum: bool,
    ) -> Image:
        hasher = transfer.Hasher()
        try:
            if filename is not None:
                with open(filename, "rb") as handle:
                    uploaded = image.upload(
                        self.session, hasher.through(transfer.read_chunks(handle))
                    )
            else:
                if isinstance(data, bytes | bytearray | memoryview):
                    chunks: Iterable[bytes] = [bytes(data)]
                elif hasattr(data, "read"):
                    chunks = transfer.read_chunks(data)
                else:
                    chunks = data
                uploaded = image.upload(self.session, hasher.through(chunks))
        except Exception as exc:
            if hasher.source_error is not None and hasher.source_error is not exc:
                raise hasher.source_error from exc  # report the data source's own error
            raise
        sent_md5 = hasher.md5()
        if uploaded.checksum is not None and uploaded.checksum != sent_md5:
            raise exceptions.InvalidResponse(
                f"image {uploaded.id}: the server recorded checksum {uploaded.checksum}, "
                f"but the data sent has md5 {sent_md5}"
            )
        if validate_checksum and md5 and md5 != sent_md5:
            raise exceptions.InvalidRequest(f"md5 {md5} was given, but the data has {sent_md5}")
        missing = {}
        if md5 is None:
            missing[MD5_KEY] = sent_md5
        if sha256 is None:
            missing[SHA256_KEY] = hasher.sha256()
        if missing:
            uploaded.properties = {**(uploaded.properties or {}), **missing}
            uploaded = uploaded.commit(self.session, purge_props=False)
        return uploaded

    # ---- waiting ----------------------------------------------------------------------

    def wait_for_status(
        self,
        res: ImageRef,
        status: str,
        failures: list[str] | None = None,
        interval: float | None = 2,
        wait: float | None = None,
        attribute: str = "status",
        callback: Callable[[int], None] | None = None,
    ) -> Image:
        """Poll until the image's `attribute` equals `status`.

        Raises ResourceFailure when it reaches one of `failures` (default ``["killed"]``)
        and ResourceTimeout after `wait` seconds (None: wait forever).
        """
        failed = {f.lower() for f in (failures if failures is not None else ["killed"])}
        deadline = None if wait is None else time.monotonic() + wait
        image = self._image(res)
        while True:
            image = image.fetch(self.session)
            current = str(getattr(image, attribute, None) or "")
            if current.lower() == status.lower():
                return image
            if current.lower() in failed:
                raise exceptions.ResourceFailure(
                    f"image {image.id} went to {attribute} {current} waiting for {status}"
                )
            if callback is not None:
                callback(0)
            if deadline is not None and time.monotonic() >= deadline:
                raise exceptions.ResourceTimeout(
                    f"image {image.id} still has {attribute} {current} after {wait}s; "
                    f"waited for {status}"
                )
            time.sleep(interval or 0)

    def wait_for_delete(
        self,
        res: ImageRef,
        interval: float | None = 2,
        wait: float | None = 120,
        callback: Callable[[int], None] | None = None,
    ) -> Image:
        """Poll until the image is gone (404, or status ``deleted`` for admins).

        Raises ResourceTimeout after `wait` seconds (None: wait forever)."""
        deadline = None if wait is None else time.monotonic() + wait
        image = self._image(res)
        while True:
            try:
                current = image.fetch(self.session)
            except exceptions.NotFoundException:
                return image
            if current.status == "deleted":
                return current
            if callback is not None:
                callback(0)
            if deadline is not None and time.monotonic() >= deadline:
                raise exceptions.ResourceTimeout(f"image {image.id} was not deleted within {wait}s")
            time.sleep(interval or 0)

    # ---- members ----------------------------------------------------------------------

    def members(self, image: ImageRef) -> list[_member.Member]:
        """The projects an image is shared with."""
        return _member.list_members(self.session, self._id(image))

    def add_member(
        self, image: ImageRef, member_id: str, can_share: bool = False
    ) -> _member.Member:
        """Share an image with a project (or change its `can_share`)."""
        return _member.add_member(self.session, self._id(image), member_id, can_share)

    def remove_member(self, image: ImageRef, member_id: str, ignore_missing: bool = True) -> None:
        """Stop sharing an image with a project."""
        try:
            _member.remove_member(self.session, self._id(image), member_id)
        except exceptions.NotFoundException:
            if not ignore_missing:
                raise

    def replace_members(
        self, image: ImageRef, members: Iterable[_member.Member | str | Mapping[str, Any]]
    ) -> None:
        """Make `members` exactly the set of projects the image is shared with."""
        _member.replace_members(self.session, self._id(image), members)

    def shared_images(self, member_id: str | None = None) -> list[_member.SharedImage]:
        """Images shared with `member_id`, by default with the authenticated project.

        Raises InvalidRequest when no member is given and the credentials name no project
        (token-only and no-auth connections).
        """
        if member_id is None:
            member_id = self.session.get_project_id()
            if not member_id:
                raise exceptions.InvalidRequest(
                    "these credentials name no project: pass the member (project) id"
                )
        return _member.shared_images(self.session, member_id)
