"""The BlobStore protocol every store keeps, and the errors stores translate theirs into."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol, Self
from urllib.parse import SplitResult, parse_qsl, urlsplit

CHUNK_SIZE: Final = 64 * 1024
CLEANUP_TIMEOUT: Final = 60.0
"""Seconds a remote store's cleanup (abort, delete, close) may run, shielded from cancellation."""
_IMAGE_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


class StoreError(Exception):
    """Base of the errors a store raises."""


class BlobNotFound(StoreError):
    """The blob is not in the store."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or refuses the operation."""


class StoreFull(StoreError):
    """The store has no room left for the blob."""


class StoreConfigError(ValueError):
    """A store URL that names no usable store; the message says what to do."""


@dataclass(frozen=True)
class Blob:
    """Where a stored blob lives and how many bytes it holds."""

    location: str
    size: int


class BlobStore(Protocol):
    scheme: str

    async def put(self, image_id: str, chunks: AsyncIterator[bytes]) -> Blob:
        """Store all of `chunks` and return where, or store nothing and raise."""
        ...

    def get(self, location: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Stream a stored blob in chunks of at most `chunk_size` bytes (a store may keep
        to smaller ones); raises BlobNotFound if it is gone."""
        ...

    async def delete(self, location: str) -> None:
        """Remove a blob; removing a missing one is not an error."""
        ...

    async def size(self, location: str) -> int:
        """How many bytes the blob holds; raises BlobNotFound if it is gone."""
        ...

    def location(self, image_id: str) -> str:
        """Where `put` stores (or would store) the blob of `image_id`."""
        ...

    def owns(self, location: str) -> bool:
        """Whether `location` is a blob of this store."""
        ...

    async def sweep(self) -> list[str]:
        """Remove partial blobs a crash left behind; return what was removed."""
        ...

    async def aclose(self) -> None: ...


def check_image_id(image_id: str) -> str:
    """Refuse an id that is not a UUID before it becomes part of a path or key."""
    if not _IMAGE_ID.fullmatch(image_id):
        raise ValueError(f"not an image id: {image_id!r}")
    return image_id.lower()


def accepts(parse: Callable[[str], object], location: str) -> bool:
    """Whether a store's location parser `parse` takes `location` for one of its blobs
    (a parser raises BlobNotFound for any other location)."""
    try:
        parse(location)
    except BlobNotFound:
        return False
    return True


@contextmanager
def quietly(log: logging.Logger, what: str) -> Iterator[None]:
    """Around one step of undoing a write: a blob already gone is done, and any other
    store error is logged as "could not <what>", so the error being handled is the one
    raised."""
    try:
        yield
    except BlobNotFound:
        pass
    except StoreError as exc:
        log.warning("could not %s: %s", what, exc)


def image_id_in(location: str, *, scheme: str, netloc: str, prefix: str = "") -> str:
    """The image id in a location ``<scheme>://<netloc>/<prefix><id>`` that a store wrote.

    Raises BlobNotFound when `location` is not such a URL, so a location from another
    store, container or bucket never reaches a request or a path.
    """
    parts = urlsplit(location)
    name = parts.path.lstrip("/")
    if parts.scheme != scheme or parts.netloc != netloc or not name.startswith(prefix):
        raise BlobNotFound(f"not a blob of this store: {location!r}")
    try:
        return check_image_id(name[len(prefix) :])
    except ValueError:
        raise BlobNotFound(f"not a blob of this store: {location!r}") from None


def url_options(
    url: str,
    scheme: str,
    given: Mapping[str, Any],
    *,
    secrets: Collection[str] = (),
    credentials: str = "the store's variables",
) -> tuple[SplitResult, dict[str, Any]]:
    """Split a store URL and lay its query options over `given` (the resolved settings).

    Each option is parsed by its settings row; an empty one leaves `given` in force. Refuses
    unknown options, secrets and user:password in the URL (URLs are logged); `credentials`
    says where they belong.
    """
    from osimage.server.settings import SETTINGS, parse_store_option  # stdlib-only module

    parts = urlsplit(url)
    if parts.username or parts.password:
        raise StoreConfigError(f"put {scheme} credentials in {credentials}, not in the store URL")
    known = sorted(
        row.name[len(scheme) + 1 :]
        for row in SETTINGS
        if row.name.startswith(f"{scheme}_") and row.name[len(scheme) + 1 :] not in secrets
    )
    options = dict(given)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in secrets:
            variable = f"OSIMAGE_{scheme.upper()}_{name.upper()}"
            raise StoreConfigError(f"put the {scheme} {name} in {variable}, not in the store URL")
        if name not in known:
            raise StoreConfigError(
                f"unknown {scheme} store option {name!r} (known: {', '.join(known)})"
            )
        if not value:
            continue
        try:
            options[name] = parse_store_option(scheme, name, value)
        except ValueError as exc:
            raise StoreConfigError(f"{scheme} store option {name}: {exc}") from None
    return parts, options


class NamedBlobs:
    """A remote store whose blobs are ``<scheme>://<netloc>/<prefix><image id>``: how it is
    configured from a URL, and its locations. Subclasses provide `from_options`."""

    scheme: str
    _netloc: str
    _prefix: str = ""

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str] | None = None) -> Self:
        """The store `url` names; options not in it from `environ`'s
        ``OSIMAGE_<SCHEME>_*`` variables, resolved by the settings table."""
        from osimage.server.settings import store_options

        environ = environ or {}
        return cls.from_options(url, store_options(cls.scheme, environ), environ)

    @classmethod
    def from_options(
        cls, url: str, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> Self:
        """The store `url` names; options not in it from `options` (`Settings.store_options`)."""
        raise NotImplementedError

    def location(self, image_id: str) -> str:
        """Where `put` stores (or would store) the blob of `image_id`."""
        return f"{self.scheme}://{self._netloc}/{self._prefix}{image_id}"

    def _name(self, location: str) -> str:
        """The object name of a blob of this store; BlobNotFound for any other location."""
        found = image_id_in(location, scheme=self.scheme, netloc=self._netloc, prefix=self._prefix)
        return self._prefix + found

    def owns(self, location: str) -> bool:
        """Whether `location` is a blob of this store."""
        return accepts(self._name, location)
