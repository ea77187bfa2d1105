"""Keystone authentication: each X-Auth-Token is validated against Keystone v3 and cached.

Validation runs `GET /v3/auth/tokens` with the token as X-Subject-Token through a
keystoneauth1 session holding the service's own credentials, in a worker thread.
Results (valid or not) are kept in a bounded LRU keyed by a hash of the token, for at
most `cache_seconds` and never past the token's `expires_at`; concurrent requests with
the same uncached token share one validation. Tokens are never stored or logged.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote

import anyio
from anyio import to_thread
from keystoneauth1 import exceptions as ksa_exceptions
from keystoneauth1 import session as ksa_session
from keystoneauth1.identity import v3

from osimage import __version__
from osimage.server.auth.base import Context, Unauthorized, raw_token
from osimage.server.errors import ServiceUnavailable
from osimage.server.settings import KeystoneOptions, Settings

log = logging.getLogger("osimage.keystone")

MAX_TOKEN_LENGTH: Final = 8192
MAX_PARALLEL_VALIDATIONS: Final = 8
UNAVAILABLE: Final = "Keystone cannot validate the token right now; try again later."
NO_TOKEN: Final = "The request you have made requires authentication."
BAD_TOKEN: Final = "The token is not valid: Keystone does not know it, or it has expired."


class AuthUnavailable(ServiceUnavailable):
    """Keystone cannot be asked (unreachable, failing, refusing our credentials): 503."""


@dataclass(frozen=True)
class Refusal:
    """Keystone said the token is not valid; `message` is what the caller is told."""

    message: str


Outcome = Context | Refusal


class ValidationCache:
    """A bounded LRU of token digest -> outcome, each entry with its own expiry."""

    def __init__(self, size: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[bytes, tuple[Outcome, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Outcome | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        outcome, expires = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return outcome

    def put(self, key: bytes, outcome: Outcome, ttl: float) -> None:
        """Keep `outcome` for `ttl` seconds (nothing is kept for ttl <= 0)."""
        if ttl <= 0 or self._size <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (outcome, self._clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


def digest(token: str) -> bytes:
    """The cache key of a token: its SHA-256, so raw tokens are never kept."""
    return hashlib.sha256(token.encode("ascii")).digest()


def context_from_token(body: Any, admin_role: str) -> tuple[Context, datetime | None]:
    """The caller's Context and the token's expiry from a validation body `{"token": ...}`.

    Raises ValueError when the body is not shaped like Keystone's answer.
    """
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, dict):
        raise ValueError("no 'token' object in the validation answer")
    user = token.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not user["id"]:
        raise ValueError("no token.user.id in the validation answer")
    project = token.get("project")
    project_id: str | None = None
    if project is not None:
        if not isinstance(project, dict) or not isinstance(project.get("id"), str):
            raise ValueError("token.project has no id in the validation answer")
        project_id = project["id"] or None
    roles: set[str] = set()
    for role in token.get("roles") or []:
        if not isinstance(role, dict) or not isinstance(role.get("name"), str):
            raise ValueError("a token.roles entry has no name in the validation answer")
        roles.add(role["name"])
    admin = admin_role.lower()
    context = Context(
        user_id=user["id"],
        project_id=project_id,
        roles=frozenset(roles),
        is_admin=any(role.lower() == admin for role in roles),
    )
    return context, _expiry(token.get("expires_at"))


def cache_ttl(expires_at: datetime | None, cache_seconds: float, now: datetime) -> float:
    """How long to keep a validation: `cache_seconds`, cut short by the token's expiry."""
    if expires_at is None:
        return cache_seconds
    return min(cache_seconds, (expires_at - now).total_seconds())


def _expiry(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _token(headers: Mapping[str, str]) -> str | None:
    raw = raw_token(headers)
    if raw is None or not raw.strip():
        return None
    # python-glanceclient >= 2.11 percent-encodes the token; Keystone tokens never hold '%'.
    return unquote(raw).strip() if "%" in raw else raw.strip()


def _plausible(token: str) -> bool:
    return (
        len(token) <= MAX_TOKEN_LENGTH
        and token.isascii()
        and token.isprintable()
        and " " not in token
    )


@dataclass
class _Flight:
    """One validation in progress; waiters read its outcome once `done` is set."""

    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: Outcome | None = None
    failure: str | None = None


class KeystoneAuthenticator:
    """The `Authenticator` for `--auth keystone`."""

    def __init__(
        self, options: KeystoneOptions, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.options = options
        self._validate_url = options.identity_url + "/auth/tokens?nocatalog"
        self._session = ksa_session.Session(
            auth=_plugin(options),
            timeout=options.timeout,
            app_name="osimage",
            app_version=__version__,
        )
        self._cache = ValidationCache(options.cache_size, clock=clock)
        self._flights: dict[bytes, _Flight] = {}
        self._limiter = anyio.CapacityLimiter(MAX_PARALLEL_VALIDATIONS)
        # told True when a token's validation needed no call to Keystone (metrics)
        self.on_cache_lookup: Callable[[bool], None] | None = None

    @classmethod
    def from_options(
        cls, *, tokens_file: Path | None, admin_role: str, settings: Settings | None
    ) -> KeystoneAuthenticator:
        """`open_keystone`; the admin role is the settings' `admin_role`."""
        if settings is None:
            raise ValueError("auth 'keystone' needs the server settings (keystone_* rows)")
        return open_keystone(settings)

    async def authenticate(self, headers: Mapping[str, str]) -> Context:
        """Return the caller's Context.

        Raises Unauthorized (no token, or Keystone refuses it) or AuthUnavailable (503).
        """
        token = _token(headers)
        if token is None:
            raise Unauthorized(NO_TOKEN)
        if not _plausible(token):
            raise Unauthorized(BAD_TOKEN)
        outcome = await self._outcome(digest(token), token)
        if isinstance(outcome, Refusal):
            raise Unauthorized(outcome.message)
        return outcome

    async def aclose(self) -> None:
        self._session.session.close()

    async def _outcome(self, key: bytes, token: str) -> Outcome:
        while True:
            cached = self._cache.get(key)
            if cached is not None:
                if self.on_cache_lookup is not None:
                    self.on_cache_lookup(True)
                return cached
            flight = self._flights.get(key)
            if flight is not None:  # someone is asking Keystone about this token: wait
                await flight.done.wait()
                if flight.outcome is not None:
                    return flight.outcome
                if flight.failure is not None:
                    raise AuthUnavailable(flight.failure)
                continue  # that request was cancelled before it had an answer: ask again
            if self.on_cache_lookup is not None:
                self.on_cache_lookup(False)
            return await self._lead(key, token)

    async def _lead(self, key: bytes, token: str) -> Outcome:
        flight = self._flights[key] = _Flight()
        try:
            outcome, ttl = await to_thread.run_sync(self._validate, token, limiter=self._limiter)
            self._cache.put(key, outcome, ttl)
            flight.outcome = outcome
            return outcome
        except AuthUnavailable as exc:
            flight.failure = exc.message
            raise
        finally:
            del self._flights[key]
            flight.done.set()

    def _validate(self, token: str) -> tuple[Outcome, float]:
        """Ask Keystone (blocking; runs in a worker thread)."""
        try:
            response = self._session.get(
                self._validate_url,
                headers={"X-Subject-Token": token, "Accept": "application/json"},
                authenticated=True,
                raise_exc=False,
                log=False,  # keystoneauth hashes token headers, but keep bodies out too
            )
        except ksa_exceptions.Unauthorized:
            log.error(
                "keystone refused the service's own credentials (%s)", _describe(self.options)
            )
            raise AuthUnavailable(UNAVAILABLE) from None
        except ksa_exceptions.ClientException as exc:
            log.warning("keystone unreachable at %s: %s", self.options.identity_url, exc)
            raise AuthUnavailable(UNAVAILABLE) from None
        status = response.status_code
        if status == 404:
            return Refusal(BAD_TOKEN), self.options.cache_seconds
        if status in {401, 403}:
            log.error(
                "keystone answered %d to a token validation: the service user (%s) needs"
                " the admin or service role",
                status,
                _describe(self.options),
            )
            raise AuthUnavailable(UNAVAILABLE)
        if status != 200:
            log.warning("keystone answered %d to a token validation", status)
            raise AuthUnavailable(UNAVAILABLE)
        try:
            context, expires_at = context_from_token(response.json(), self.options.admin_role)
        except ValueError as exc:
            log.warning("keystone's validation answer is unusable: %s", exc)
            raise AuthUnavailable(UNAVAILABLE) from None
        now = datetime.now(UTC)
        if expires_at is not None and expires_at <= now:
            return Refusal(BAD_TOKEN), 0.0
        return context, cache_ttl(expires_at, self.options.cache_seconds, now)


def _describe(options: KeystoneOptions) -> str:
    if options.application_credential_id:
        return f"application credential {options.application_credential_id}"
    return f"user {options.username!r} of project {options.project_name!r}"


def _plugin(options: KeystoneOptions) -> v3.Auth:
    if options.application_credential_id:
        if not options.application_credential_secret:
            raise ValueError("an application credential needs its secret")
        return v3.ApplicationCredential(
            auth_url=options.identity_url,
            application_credential_id=options.application_credential_id,
            application_credential_secret=options.application_credential_secret,
        )
    if not (options.username and options.password and options.project_name):
        raise ValueError(
            "keystone auth needs the service's username, password and project name,"
            " or an application credential"
        )
    return v3.Password(
        auth_url=options.identity_url,
        username=options.username,
        password=options.password,
        user_domain_name=options.user_domain_name,
        project_name=options.project_name,
        project_domain_name=options.project_domain_name,
    )


def open_keystone(settings: Settings) -> KeystoneAuthenticator:
    """Build the keystone authenticator from the server's settings (nothing is sent yet)."""
    authenticator = KeystoneAuthenticator(settings.keystone)
    options = authenticator.options
    log.info(
        "keystone auth: validating tokens at %s as %s; validations kept up to %gs",
        options.identity_url,
        _describe(options),
        options.cache_seconds,
    )
    return authenticator
