"""What every authenticator shares: the caller's `Context`, the `Authenticator` protocol,
and the token header.

Imports nothing of any authenticator; `registry` picks one by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from osimage.server.settings import Settings

TOKEN_HEADER: Final = "x-auth-token"


@dataclass(frozen=True)
class Context:
    """The caller of one request, as the service's authorization decisions see it."""

    user_id: str | None
    project_id: str | None
    roles: frozenset[str]
    is_admin: bool

    @property
    def owner_id(self) -> str | None:
        """The id that owns images this caller creates: its project (owner_is_tenant)."""
        return self.project_id


NOAUTH_CONTEXT: Final = Context(
    user_id=None, project_id=None, roles=frozenset({"admin"}), is_admin=True
)


class Unauthorized(Exception):
    """The request carries no valid identity (401); the message never contains a token."""


class Authenticator(Protocol):
    async def authenticate(self, headers: Mapping[str, str]) -> Context:
        """Return the caller's Context; raise Unauthorized if there is none."""
        ...

    async def aclose(self) -> None:
        """Release whatever the authenticator holds open."""
        ...


class AuthenticatorClass(Protocol):
    """What the registry calls to build an authenticator of one kind."""

    def from_options(
        self, *, tokens_file: Path | None, admin_role: str, settings: Settings | None
    ) -> Authenticator:
        """Build it; ValueError names what is missing or malformed."""
        ...


def raw_token(headers: Mapping[str, str]) -> str | None:
    """The X-Auth-Token header as sent (any case of its name), or None."""
    value = headers.get(TOKEN_HEADER)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == TOKEN_HEADER:
            return candidate
    return None
