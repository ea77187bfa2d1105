"""Auth mode -> authenticator class, imported on first use (as `stores.registry` does for
stores), so keystoneauth1 is imported only by a keystone-mode server."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Final

from osimage.server.auth.base import Authenticator, AuthenticatorClass

if TYPE_CHECKING:
    from osimage.server.settings import Settings

AUTHENTICATORS: Final = {
    "noauth": "osimage.server.auth.tokens:NoAuth",
    "tokens": "osimage.server.auth.tokens:TokenTable",
    "keystone": "osimage.server.auth.keystone:KeystoneAuthenticator",
}
"""mode -> "module:Class"; the class builds itself with `from_options`."""
KINDS: Final = tuple(AUTHENTICATORS)


def open_authenticator(
    kind: str,
    *,
    tokens_file: Path | None,
    admin_role: str = "admin",
    settings: Settings | None = None,
) -> Authenticator:
    """Build the authenticator for `kind` (noauth | tokens | keystone).

    tokens reads `tokens_file`; keystone reads its `keystone_*` rows and `admin_role`
    from `settings`. Raises ValueError for an unknown kind, a missing or malformed
    tokens file, or keystone without settings.
    """
    if kind not in AUTHENTICATORS:
        raise ValueError(f"auth: expected one of {', '.join(KINDS)}, got {kind!r}")
    module_name, _, class_name = AUTHENTICATORS[kind].partition(":")
    factory: AuthenticatorClass = getattr(importlib.import_module(module_name), class_name)
    return factory.from_options(tokens_file=tokens_file, admin_role=admin_role, settings=settings)
