"""osimage: the OpenStack Image Service API v1, as an SDK and as a service.

`import osimage` is light: it imports no server dependency.
"""

from osimage import exceptions
from osimage.connection import Connection, connect

__version__ = "0.1.0"

__all__ = ["Connection", "__version__", "connect", "exceptions"]
