"""Fixtures for the API conformance suite: raw clients per identity and configured servers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.api_client import Api
from tests.support.server import Server, start_server

# The options most spec scenarios (§17) were written against, plus a small size cap.
LIMITS = ("--property-quota", "10", "--member-quota", "10", "--image-size-cap", "10000")
SIZE_CAP = 10000


def assert_no_tracebacks(srv: Server) -> None:
    """For module-scoped servers: called after their tests, before stopping them."""
    log = srv.log()
    assert "Traceback" not in log, f"the server logged a traceback:\n{log[-3000:]}"


@pytest.fixture(autouse=True)
def _no_server_tracebacks(request: pytest.FixtureRequest) -> Iterator[None]:
    """In the API suite, a test whose requests made a shared server log a traceback fails:
    a right status code must not hide an internal error."""
    if not request.module.__name__.startswith("tests.e2e.test_api_"):
        yield
        return
    names = [n for n in ("server", "tokens_server", "limits_server") if n in request.fixturenames]
    servers: list[Server] = [request.getfixturevalue(n) for n in names]
    before = [len(s.log()) for s in servers]
    yield
    for srv, offset in zip(servers, before, strict=True):
        new = srv.log()[offset:]
        assert "Traceback" not in new, f"the server logged a traceback:\n{new[-3000:]}"


@pytest.fixture(scope="session")
def api(server: Server) -> Api:
    """noauth: every caller is an admin without a project."""
    return Api(server.url)


@pytest.fixture(scope="session")
def users(tokens_server: Server) -> dict[str, Api]:
    """One client per identity of the tokens server, plus `anonymous` (no token)."""
    names = ("admin", "alice", "bob", "carol", "noproject")
    clients = {name: Api(tokens_server.url, f"{name}-token") for name in names}
    clients["anonymous"] = Api(tokens_server.url)
    return clients


@pytest.fixture(scope="session")
def limits_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """noauth with property and member quotas of 10 and an image size cap of 10000 bytes."""
    srv = start_server(tmp_path_factory.mktemp("limits"), *LIMITS)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def limited(limits_server: Server) -> Api:
    return Api(limits_server.url)


@pytest.fixture
def fresh(fresh_server: Server) -> Api:
    return Api(fresh_server.url)
