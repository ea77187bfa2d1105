"""Authenticators that need no identity service: `noauth` (everyone is an admin) and
`tokens` (fixed tokens from a JSON file)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

from osimage.server.auth.base import NOAUTH_CONTEXT, Context, Unauthorized, raw_token

if TYPE_CHECKING:
    from osimage.server.settings import Settings

_ENTRY_KEYS: Final = frozenset({"user_id", "project_id", "roles"})


class NoAuth:
    """Glance's unauthenticated mode: every caller is an admin without a project."""

    @classmethod
    def from_options(
        cls, *, tokens_file: Path | None, admin_role: str, settings: Settings | None
    ) -> NoAuth:
        return cls()

    async def authenticate(self, headers: Mapping[str, str]) -> Context:
        return NOAUTH_CONTEXT

    async def aclose(self) -> None:
        return None


class TokenTable:
    """Fixed tokens from a JSON file: `{token: {"user_id", "project_id", "roles"}}`."""

    def __init__(self, contexts: Mapping[str, Context]) -> None:
        self._contexts = dict(contexts)

    @classmethod
    def from_options(
        cls, *, tokens_file: Path | None, admin_role: str, settings: Settings | None
    ) -> TokenTable:
        if tokens_file is None:
            raise ValueError("auth 'tokens' needs a tokens file (--tokens-file)")
        return cls(load_tokens(tokens_file, admin_role=admin_role))

    async def authenticate(self, headers: Mapping[str, str]) -> Context:
        raw = raw_token(headers)
        if not raw:
            raise Unauthorized("The request you have made requires authentication.")
        # python-glanceclient >= 2.11 percent-encodes the token; older clients send it raw.
        context = self._contexts.get(raw) or self._contexts.get(unquote(raw))
        if context is None:
            raise Unauthorized("The token is not recognised.")
        return context

    async def aclose(self) -> None:
        return None


def load_tokens(path: Path, *, admin_role: str = "admin") -> dict[str, Context]:
    """Read and validate a tokens file; ValueError names the file and the bad entry."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"tokens file {path}: cannot read it: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"tokens file {path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"tokens file {path}: expected a JSON object of token -> identity")
    admin = admin_role.lower()
    contexts: dict[str, Context] = {}
    for index, (token, entry) in enumerate(data.items(), start=1):
        where = f"tokens file {path}, entry #{index}"  # never the token itself
        contexts[_token(token, where)] = _context(entry, where, admin)
    return contexts


def _token(token: str, where: str) -> str:
    if not token or " " in token or not token.isprintable() or not token.isascii():
        raise ValueError(f"{where}: a token must be non-empty printable ASCII without spaces")
    return token


def _context(entry: Any, where: str, admin: str) -> Context:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object with user_id, project_id, roles")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (expected {sorted(_ENTRY_KEYS)})")
    user_id = _optional_id(entry.get("user_id"), "user_id", where)
    project_id = _optional_id(entry.get("project_id"), "project_id", where)
    roles = entry.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
        raise ValueError(f"{where}: roles: expected a list of non-empty strings, got {roles!r}")
    return Context(
        user_id=user_id,
        project_id=project_id,
        roles=frozenset(roles),
        is_admin=any(role.lower() == admin for role in roles),
    )


def _optional_id(value: Any, key: str, where: str) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    raise ValueError(f"{where}: {key}: expected a non-empty string or null, got {value!r}")
