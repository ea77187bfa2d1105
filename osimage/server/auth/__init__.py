"""Who is calling: turn request headers into a `Context` (noauth | tokens | keystone).

`base` holds the `Context` and the `Authenticator` protocol; `registry.open_authenticator`
is the one place that picks a mode, importing its module (`tokens`, `keystone`) on first
use. The names below are the ones the rest of the server imports.
"""

from osimage.server.auth.base import (
    NOAUTH_CONTEXT,
    TOKEN_HEADER,
    Authenticator,
    Context,
    Unauthorized,
)
from osimage.server.auth.registry import KINDS, open_authenticator
from osimage.server.auth.tokens import load_tokens

__all__ = [
    "KINDS",
    "NOAUTH_CONTEXT",
    "TOKEN_HEADER",
    "Authenticator",
    "Context",
    "Unauthorized",
    "load_tokens",
    "open_authenticator",
]
