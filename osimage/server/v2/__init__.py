"""Image API v2's own rules over the one core (`service`, `ingest`, `downloads`, `rules`):
what an image body may hold (`schema`), the image records and tags (`images`), their data
(`data`) and members (`members`). `api/v2` decodes requests into calls of `ImagesV2`."""

from __future__ import annotations

from osimage.server.v2.access import ImageView
from osimage.server.v2.data import Data
from osimage.server.v2.images import Images, Patch
from osimage.server.v2.members import Members

__all__ = ["ImageView", "ImagesV2", "Patch"]


class ImagesV2(Images, Data, Members):
    """Every v2 operation, for the v2 handlers: each of the three parts reads, checks
    policy and notifies through the same `Access`."""
