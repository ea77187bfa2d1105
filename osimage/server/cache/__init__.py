"""The image cache of an API node: `disk` keeps the bytes, `manager` the admin operations."""

from osimage.server.cache.disk import CachedImage, Counters, ImageCache
from osimage.server.cache.disk import sweep as sweep_cache
from osimage.server.cache.manager import SYSTEM, CacheManager, cacheable, start_cache

__all__ = [
    "SYSTEM",
    "CacheManager",
    "CachedImage",
    "Counters",
    "ImageCache",
    "cacheable",
    "start_cache",
    "sweep_cache",
]
