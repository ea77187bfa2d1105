"""Fixtures over a real Keystone (shared/services/keystone-aio) and servers that use it.

The Keystone is found through the variables `keystone-aio start` prints
(OSIMAGE_KEYSTONE_* for the service's credentials, KEYSTONE_AIO_* for the test users);
without them the tests skip locally and fail in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import require_service
from tests.support.server import Server, start_server
from tests.support.tcp_proxy import TcpProxy

HOW = 'run e=$(shared/services/keystone-aio start); eval "$e"'
SERVICE_VARIABLES = (
    "OSIMAGE_KEYSTONE_AUTH_URL",
    "OSIMAGE_KEYSTONE_USERNAME",
    "OSIMAGE_KEYSTONE_PASSWORD",
    "OSIMAGE_KEYSTONE_PROJECT_NAME",
    "OSIMAGE_KEYSTONE_USER_DOMAIN_NAME",
    "OSIMAGE_KEYSTONE_PROJECT_DOMAIN_NAME",
)
VALIDATION = b"GET /v3/auth/tokens"


@dataclass(frozen=True)
class Login:
    """A project-scoped token and what Keystone says it stands for."""

    token: str
    user_id: str
    project_id: str
    roles: frozenset[str]


@dataclass
class Keystone:
    """The shared test Keystone: log users in, revoke tokens, configure servers."""

    auth_url: str
    service_env: dict[str, str]
    users: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    domain: str = "Default"

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.auth_url.rstrip("/"), trust_env=False, timeout=30)

    def login(self, who: str) -> Login:
        """A fresh token for `who` (alice, bob, admin, image) scoped to its project."""
        username, password, project = self.users[who]
        domain = {"name": self.domain}
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": username, "domain": domain, "password": password}
                    },
                },
                "scope": {"project": {"name": project, "domain": domain}},
            }
        }
        with self._client() as client:
            resp = client.post("/auth/tokens?nocatalog", json=body)
        assert resp.status_code == 201, resp.text
        token = resp.json()["token"]
        return Login(
            token=resp.headers["X-Subject-Token"],
            user_id=token["user"]["id"],
            project_id=token["project"]["id"],
            roles=frozenset(role["name"] for role in token["roles"]),
        )

    def revoke(self, token: str) -> None:
        """Revoke `token` as admin; Keystone refuses it from now on."""
        admin = self.login("admin").token
        with self._client() as client:
            resp = client.delete(
                "/auth/tokens", headers={"X-Auth-Token": admin, "X-Subject-Token": token}
            )
            assert resp.status_code == 204, resp.text
            check = client.get(
                "/auth/tokens", headers={"X-Auth-Token": admin, "X-Subject-Token": token}
            )
        assert check.status_code == 404, check.text

    def server_env(self, auth_url: str | None = None) -> dict[str, str]:
        """OSIMAGE_* variables for a `--auth keystone` server (optionally via a proxy)."""
        env = dict(self.service_env)
        if auth_url is not None:
            env["OSIMAGE_KEYSTONE_AUTH_URL"] = auth_url
        return env

    def proxy(self) -> TcpProxy:
        """A cuttable forwarder to this Keystone; counts token validations."""
        parts = urlsplit(self.auth_url)
        return TcpProxy(parts.hostname or "127.0.0.1", parts.port or 80, (VALIDATION,)).start()

    def proxied_url(self, proxy: TcpProxy) -> str:
        return urlsplit(self.auth_url)._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()


def _user(who: str, password: str, project: str) -> tuple[str, str, str]:
    prefix = f"KEYSTONE_AIO_{who.upper()}_"
    return (
        os.environ.get(prefix + "USERNAME", who),
        os.environ.get(prefix + "PASSWORD", password),
        os.environ.get(prefix + "PROJECT", project),
    )


@pytest.fixture(scope="session")
def keystone() -> Keystone:
    """The running test Keystone, or a skip (a failure in CI) naming how to start one."""
    missing = [name for name in SERVICE_VARIABLES if not os.environ.get(name)]
    require_service(not missing, f"no Keystone: {', '.join(missing)} unset ({HOW})")
    auth_url = os.environ["OSIMAGE_KEYSTONE_AUTH_URL"]
    try:
        with httpx.Client(trust_env=False, timeout=5) as client:
            reachable = client.get(auth_url).status_code == 200
    except httpx.HTTPError:
        reachable = False
    require_service(reachable, f"no Keystone answering at {auth_url} ({HOW})")
    return Keystone(
        auth_url=auth_url,
        service_env={name: os.environ[name] for name in SERVICE_VARIABLES},
        users={
            "alice": _user("alice", "alice-secret", "p-alice"),
            "bob": _user("bob", "bob-secret", "p-bob"),
            "admin": _user("admin", "admin-secret", "admin"),
        },
        domain=os.environ.get("KEYSTONE_AIO_DOMAIN", "Default"),
    )


@pytest.fixture
def proxy(keystone: Keystone) -> Iterator[TcpProxy]:
    forwarder = keystone.proxy()
    yield forwarder
    forwarder.close()


def start_keystone_server(
    keystone: Keystone, base: Path, *args: str, auth_url: str | None = None
) -> Server:
    """A `--auth keystone` server whose service credentials come from the environment."""
    return start_server(base, "--auth", "keystone", *args, environ=keystone.server_env(auth_url))


@pytest.fixture(scope="session")
def keystone_server(
    keystone: Keystone, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One shared keystone-mode server with the default cache."""
    srv = start_keystone_server(keystone, tmp_path_factory.mktemp("keystone"))
    yield srv
    srv.stop()
