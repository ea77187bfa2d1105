"""URL scheme -> store class, imported on first use so optional stores cost nothing."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from osimage.server.stores.base import BlobStore, StoreConfigError

STORES: Final = {
    "file": ("osimage.server.stores.filesystem:FilesystemStore", None),
    "swift": ("osimage.server.stores.swift:SwiftStore", "swift"),
    "s3": ("osimage.server.stores.s3:S3Store", "s3"),
}
"""scheme -> ("module:Class", the extra that installs its dependencies)."""


def open_store(url: str, options: Mapping[str, Any] | None = None) -> BlobStore:
    """The store `url` names, with `options` (`Settings.store_options`: the resolved
    `<scheme>_*` settings; the URL's query overrides them). Raises `StoreConfigError`
    saying what is missing."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in STORES:
        known = ", ".join(sorted(STORES))
        raise StoreConfigError(f"unknown store scheme {scheme!r} in {url!r} (known: {known})")
    target, extra = STORES[scheme]
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if extra is None:
            raise
        raise StoreConfigError(
            f"the {scheme} store needs: pip install 'osimage[{extra}]' ({exc})"
        ) from exc
    kind = getattr(module, class_name)
    store: BlobStore = (
        kind.from_url(url) if extra is None else kind.from_options(url, options or {})
    )
    return store
