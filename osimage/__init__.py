"""osimage: the OpenStack Image Service API v1, as an SDK and as a service.

`import osimage` is light: it imports no server dependency, and `Connection` and
`connect` load their configuration machinery only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from osimage import exceptions

if TYPE_CHECKING:
    from osimage.connection import Connection, connect

__version__ = "0.1.0"

__all__ = ["Connection", "__version__", "connect", "exceptions"]


def __getattr__(name: str) -> Any:
    if name in ("Connection", "connect"):
        from osimage import connection

        return getattr(connection, name)
    raise AttributeError(f"module 'osimage' has no attribute {name!r}")
