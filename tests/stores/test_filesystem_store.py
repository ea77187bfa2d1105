"""The filesystem store keeps the store contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from osimage.server.stores.filesystem import FilesystemStore
from tests.stores.contract import Leftovers, StoreContract


class TestFilesystemStore(StoreContract):
    @pytest.fixture
    def segment(self) -> int:
        return 256 * 1024

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[FilesystemStore]:
        store = FilesystemStore.from_url((tmp_path / "images").as_uri())
        yield store
        await store.aclose()

    @pytest.fixture
    def leftovers(self, tmp_path: Path) -> Leftovers:
        async def listing() -> list[str]:
            return sorted(path.name for path in (tmp_path / "images").iterdir())

        return listing
