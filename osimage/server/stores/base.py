"""The BlobStore protocol every store keeps, and the errors stores translate theirs into."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import urlsplit

CHUNK_SIZE: Final = 64 * 1024
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

    def get(self, location: str) -> AsyncIterator[bytes]:
        """Stream a stored blob; raises BlobNotFound if it is gone."""
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
