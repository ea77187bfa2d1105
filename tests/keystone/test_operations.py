"""Issue 15 under `--auth keystone`: the policy file reads Keystone's roles, /metrics counts
token-cache hits and misses and admits only a Keystone admin, /healthcheck needs no token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.api_client import Api, unique
from tests.keystone.conftest import Keystone, Login, start_keystone_server
from tests.support.server import Server

pytestmark = [pytest.mark.keystone, pytest.mark.e2e]

DATA = b"keystone policy data"


@pytest.fixture(scope="module")
def server(keystone: Keystone, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("keystone-ops")
    policy = base / "policy.yaml"
    policy.write_text('"delete_image": "role:admin"\n"download_image": "role:admin"\n')
    srv = start_keystone_server(
        keystone,
        base,
        "--policy-file",
        str(policy),
        "--metrics-access",
        "admin",
        "--metrics-render-seconds",
        "0",  # two scrapes in a row must both be fresh
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def logins(keystone: Keystone) -> dict[str, Login]:
    return {who: keystone.login(who) for who in ("alice", "admin")}


def cache_lookups(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "osimage_token_cache_lookups_total":
                found[sample.labels["result"]] = sample.value
    return found


def test_policy_reads_keystone_roles(server: Server, logins: dict[str, Login]) -> None:
    alice = Api(server.url, logins["alice"].token)
    admin = Api(server.url, logins["admin"].token)
    image_id = alice.upload(DATA, name=unique("ks-policy"))["id"]
    assert alice.head(image_id).status == 200
    assert alice.get(image_id).status == 403
    assert admin.get(image_id).body == DATA
    assert alice.delete(image_id).status == 403
    assert admin.delete(image_id).status == 200


def test_token_cache_hits_and_misses(
    server: Server, keystone: Keystone, logins: dict[str, Login]
) -> None:
    admin = Api(server.url, logins["admin"].token)
    before = cache_lookups(admin.request("GET", "/metrics").text)
    fresh = Api(server.url, keystone.login("alice").token)  # a token this server never saw
    for _ in range(3):
        assert fresh.list().status == 200
    after = cache_lookups(admin.request("GET", "/metrics").text)
    assert after["miss"] - before["miss"] == 1
    assert after["hit"] - before["hit"] >= 3  # three lists and this scrape's own token


def test_metrics_for_keystone_admins_and_health_for_anyone(
    server: Server, logins: dict[str, Login]
) -> None:
    assert Api(server.url, logins["alice"].token).request("GET", "/metrics").status == 403
    assert Api(server.url).request("GET", "/metrics").status == 401
    resp = Api(server.url).request("GET", "/healthcheck")
    assert (resp.status, resp.body) == (200, b"OK")
