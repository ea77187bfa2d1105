"""The SDK and the CLI configured like a user of a Keystone cloud: a clouds.yaml cloud (or
OS_* variables) whose image endpoint comes from the service catalog.

The shared Keystone's catalog points `image` at 127.0.0.1:9292 in RegionOne, which is
not this test's server. So a module fixture adds a region of its own (RegionTest-...)
whose image endpoints point here, and the clouds.yaml copies alice's and bob's clouds
from keystone-aio's with that region_name: the lookup by service type, interface and
region is the real one, and RegionOne is left as other tests expect it. The region and
its endpoints are removed afterwards (and stale ones from a killed run are swept).
While they exist, `keystone-aio status` reports the catalog as unhealthy (its check
expects exactly three image endpoints), so the region lives only as long as this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from osimage import exceptions
from osimage.connection import Connection, versioned_endpoint
from tests.conftest import require_service
from tests.e2e.api_client import unique
from tests.keystone.conftest import Keystone, start_keystone_server
from tests.support.server import Server, free_port
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.keystone, pytest.mark.e2e]

OSIMAGE = Path(sys.executable).with_name("osimage")
LOGIN = b"POST /v3/auth/tokens"
REGION_PREFIX = "RegionTest-osimage-"
STALE_AFTER = 600.0  # seconds: older test regions come from a run that was killed
DATA = os.urandom(300_000)


@dataclass(frozen=True)
class CloudRegion:
    """A region whose image endpoints are public -> the server, internal -> `internal`."""

    name: str
    public: str
    internal: str


class Admin:
    """Keystone's admin API, just what the region fixture needs."""

    def __init__(self, keystone: Keystone) -> None:
        self.client = httpx.Client(
            base_url=keystone.auth_url.rstrip("/"),
            headers={"X-Auth-Token": keystone.login("admin").token},
            trust_env=False,
            timeout=30,
        )

    def call(self, method: str, path: str, body: Any = None, ok: int = 200) -> Any:
        resp = self.client.request(method, path, json=body)
        assert resp.status_code == ok, (method, path, resp.text)
        return resp.json() if resp.content else None

    def image_service(self) -> str:
        services = self.call("GET", "/services?type=image")["services"]
        assert services, "keystone-aio registers an image service"
        return str(services[0]["id"])

    def add_region(self, name: str, urls: dict[str, str]) -> None:
        created = f"{REGION_PREFIX}created={time.time():.0f}"
        self.call("POST", "/regions", {"region": {"id": name, "description": created}}, 201)
        service = self.image_service()
        for interface, url in urls.items():
            endpoint = {
                "service_id": service,
                "interface": interface,
                "region_id": name,
                "url": url,
            }
            self.call("POST", "/endpoints", {"endpoint": endpoint}, 201)

    def remove_region(self, name: str) -> None:
        for endpoint in self.call("GET", f"/endpoints?region_id={name}")["endpoints"]:
            self.call("DELETE", f"/endpoints/{endpoint['id']}", ok=204)
        self.call("DELETE", f"/regions/{name}", ok=204)

    def sweep_stale(self) -> None:
        """Remove test regions left by a killed run (never a live one of another run)."""
        for region in self.call("GET", "/regions")["regions"]:
            description = region.get("description") or ""
            if not region["id"].startswith(REGION_PREFIX) or "created=" not in description:
                continue
            created = float(description.rsplit("created=", 1)[1])
            if time.time() - created > STALE_AFTER:
                self.remove_region(region["id"])

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def server(keystone: Keystone, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # cache 0: a revoked token is refused (401) on the next request, not a minute later
    srv = start_keystone_server(
        keystone, tmp_path_factory.mktemp("keystone-cloud"), "--keystone-cache-seconds", "0"
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def region(keystone: Keystone, server: Server) -> Iterator[CloudRegion]:
    admin = Admin(keystone)
    name = f"{REGION_PREFIX}{uuid.uuid4().hex[:8]}"
    # Nothing listens on `internal`: a client that picked it would fail to connect.
    found = CloudRegion(name, public=server.url, internal=f"http://127.0.0.1:{free_port()}")
    try:
        admin.sweep_stale()
        admin.add_region(name, {"public": found.public, "internal": found.internal})
        yield found
    finally:
        try:
            admin.remove_region(name)
        finally:
            admin.close()


@pytest.fixture(scope="module")
def shared_clouds() -> dict[str, Any]:
    """keystone-aio's clouds.yaml, as the user would have it."""
    path = os.environ.get("KEYSTONE_AIO_CLOUDS_YAML", "")
    require_service(
        bool(path) and Path(path).is_file(),
        "KEYSTONE_AIO_CLOUDS_YAML unset or missing (run shared/services/keystone-aio start)",
    )
    clouds = yaml.safe_load(Path(path).read_text())["clouds"]
    assert {"alice", "bob"} <= set(clouds)
    return dict(clouds)


def write_clouds(path: Path, clouds: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({"clouds": clouds}))
    return path


@pytest.fixture(scope="module")
def clouds_file(
    shared_clouds: dict[str, Any], region: CloudRegion, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """alice and bob from keystone-aio's clouds.yaml, in the test region."""
    clouds = {who: {**shared_clouds[who], "region_name": region.name} for who in ("alice", "bob")}
    return write_clouds(tmp_path_factory.mktemp("clouds") / "clouds.yaml", clouds)


@pytest.fixture
def cloud_env(monkeypatch: pytest.MonkeyPatch, clouds_file: Path, tmp_path: Path) -> Path:
    """This process's environment as a user's with only OS_CLIENT_CONFIG_FILE set."""
    for name in list(os.environ):
        if name.startswith("OS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_file))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    return clouds_file


def project_id(keystone: Keystone, who: str) -> str:
    return keystone.login(who).project_id


def test_sdk_round_trip_through_the_catalog(keystone, server, region, cloud_env, tmp_path):
    alice_project = project_id(keystone, "alice")
    with Connection(cloud="alice") as alice, Connection(cloud="bob") as bob:
        assert alice.image_endpoint == region.public + "/v1"
        name = unique("cloud-sdk")
        image = alice.image.create_image(
            name, data=DATA, disk_format="raw", container_format="bare", is_public=False
        )
        assert image.id is not None
        assert image.status == "active"
        assert image.owner == alice_project
        assert [i.id for i in alice.image.images(name=name)] == [image.id]

        target = tmp_path / "copy.raw"
        alice.image.download_image(image, output=target)
        assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(DATA).digest()

        # bob's Connection finds the same server in the catalog; alice's image stays hers
        assert bob.image_endpoint == region.public + "/v1"
        assert image.id not in [i.id for i in bob.image.images()]
        with pytest.raises(exceptions.NotFoundException):
            bob.image.get_image(image.id)
        with pytest.raises(exceptions.NotFoundException):
            bob.image.download_image(image.id)
        with pytest.raises(exceptions.NotFoundException):
            bob.image.delete_image(image.id, ignore_missing=False)

        # ...and bob's private image stays his
        secret_name = unique("cloud-sdk-bob")
        secret = bob.image.create_image(
            secret_name, data=b"bob's", disk_format="raw", container_format="bare"
        )
        assert secret.id is not None
        assert secret.id not in [i.id for i in alice.image.images()]
        assert alice.image.find_image(secret_name) is None
        with pytest.raises(exceptions.NotFoundException):
            alice.image.download_image(secret.id)
        bob.image.delete_image(secret, ignore_missing=False)

        alice.image.delete_image(image, ignore_missing=False)
        assert name not in [i.name for i in alice.image.images()]
        with pytest.raises(exceptions.NotFoundException):
            alice.image.get_image(image.id)


def test_catalog_lookup_honours_interface_and_region(keystone, server, region, cloud_env):
    with Connection(cloud="alice", interface="internal") as internal:
        assert internal.image_endpoint == region.internal + "/v1"
    # RegionOne's image endpoint is keystone-aio's own, not this test's server
    region_one = os.environ.get("KEYSTONE_AIO_REGION", "RegionOne")
    their_url = os.environ.get("KEYSTONE_AIO_IMAGE_URL", "http://127.0.0.1:9292")
    with Connection(cloud="alice", region_name=region_one) as one:
        assert one.image_endpoint == versioned_endpoint(their_url)
        assert urlsplit(one.image_endpoint).port != server.port
    with (
        Connection(cloud="alice", interface="admin") as admin_interface,
        pytest.raises(exceptions.SDKException, match="no admin image endpoint"),
    ):
        _ = admin_interface.image_endpoint


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.pop("XDG_CONFIG_HOME", None)
    return {**env, "HOME": str(home), **extra}


def osimage(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(
        [str(OSIMAGE), *args], env=env, cwd=cwd, capture_output=True, timeout=300, check=False
    )
    assert done.returncode == 0, (args, done.stderr.decode(errors="replace"))
    assert b"Traceback" not in done.stderr
    return done


def refused(env: dict[str, str], cwd: Path, *args: str) -> str:
    """Run a command that must fail; return its error line."""
    done = subprocess.run(
        [str(OSIMAGE), *args], env=env, cwd=cwd, capture_output=True, timeout=300, check=False
    )
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 1, (args, err)
    assert done.stdout == b""
    assert err.startswith("osimage: error: "), err
    return err


def listed_ids(env: dict[str, str], cwd: Path) -> list[str]:
    rows = json.loads(osimage(env, cwd, "image", "list", "-f", "json").stdout)
    return [row["id"] for row in rows]


def test_cli_round_trip_with_os_cloud(keystone, server, region, clouds_file, tmp_path):
    alice_env = cli_env(tmp_path, OS_CLOUD="alice", OS_CLIENT_CONFIG_FILE=str(clouds_file))
    bob_env = {**alice_env, "OS_CLOUD": "bob"}
    source = tmp_path / "disk.raw"
    source.write_bytes(DATA)
    name = unique("cloud-cli")

    created = json.loads(
        osimage(
            alice_env, tmp_path, "image", "create", "--name", name, "--disk-format", "raw",
            "--container-format", "bare", "--file", str(source), "-f", "json",
        ).stdout
    )  # fmt: skip
    assert created["status"] == "active"
    assert created["owner"] == project_id(keystone, "alice")
    assert created["size"] == len(DATA)

    assert name in osimage(alice_env, tmp_path, "image", "list").stdout.decode()  # the table
    assert created["id"] in listed_ids(alice_env, tmp_path)
    target = tmp_path / "back.raw"
    osimage(alice_env, tmp_path, "image", "download", created["id"], "--file", str(target))
    assert target.read_bytes() == DATA

    # bob's private image: alice cannot list, show or download it
    secret = json.loads(
        osimage(bob_env, tmp_path, "image", "create", "--name", unique("cloud-cli-bob"),
                "-f", "json").stdout
    )  # fmt: skip
    assert secret["owner"] == project_id(keystone, "bob")
    assert secret["id"] not in listed_ids(alice_env, tmp_path)
    assert secret["id"] in refused(alice_env, tmp_path, "image", "show", secret["id"])
    refused(alice_env, tmp_path, "image", "download", secret["id"], "--file", "-")
    # ...and bob cannot see, download or delete alice's
    assert created["id"] not in listed_ids(bob_env, tmp_path)
    refused(bob_env, tmp_path, "image", "download", created["id"], "--file", "-")
    refused(bob_env, tmp_path, "image", "delete", created["id"])
    osimage(bob_env, tmp_path, "image", "delete", secret["id"])

    osimage(alice_env, tmp_path, "image", "delete", created["id"])
    assert created["id"] not in listed_ids(alice_env, tmp_path)


def test_cli_with_os_variables_only(keystone, server, region, shared_clouds, tmp_path):
    alice = shared_clouds["alice"]
    auth = alice["auth"]
    env = cli_env(
        tmp_path,
        OS_AUTH_URL=auth["auth_url"],
        OS_USERNAME=auth["username"],
        OS_PASSWORD=auth["password"],
        OS_PROJECT_NAME=auth["project_name"],
        OS_USER_DOMAIN_NAME=auth["user_domain_name"],
        OS_PROJECT_DOMAIN_NAME=auth["project_domain_name"],
        OS_IDENTITY_API_VERSION="3",
        OS_REGION_NAME=region.name,
    )
    name = unique("cloud-env")
    created = json.loads(
        osimage(env, tmp_path, "image", "create", "--name", name, "-f", "json").stdout
    )
    assert created["owner"] == project_id(keystone, "alice")
    assert created["id"] in listed_ids(env, tmp_path)
    osimage(env, tmp_path, "image", "delete", created["id"])


@pytest.fixture
def counted_login(keystone: Keystone) -> Iterator[TcpProxy]:
    """A forwarder to Keystone counting logins (POST /v3/auth/tokens)."""
    parts = urlsplit(keystone.auth_url)
    forwarder = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 80, (LOGIN,)).start()
    yield forwarder
    forwarder.close()


def test_revoked_token_is_renewed_without_the_caller_noticing(
    keystone, server, region, shared_clouds, counted_login, monkeypatch, tmp_path
):
    proxied = urlsplit(keystone.auth_url)._replace(netloc=f"127.0.0.1:{counted_login.port}")
    alice = shared_clouds["alice"]
    cloud = {
        **alice,
        "region_name": region.name,
        "auth": {**alice["auth"], "auth_url": proxied.geturl()},
    }
    clouds = write_clouds(tmp_path / "clouds.yaml", {"alice": cloud})
    for name in list(os.environ):
        if name.startswith("OS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))

    with Connection(cloud="alice") as conn:
        image = conn.image.create_image(
            unique("renewed"), data=DATA, disk_format="raw", container_format="bare"
        )
        assert counted_login.count(LOGIN) == 1
        first = conn.session.get_token()

        keystone.revoke(first)  # as an expiry would, mid-session
        assert image.id in [i.id for i in conn.image.images()]
        assert counted_login.count(LOGIN) == 2
        second = conn.session.get_token()
        assert second != first

        keystone.revoke(second)  # an upload is the next request: it must not lose its data
        again = conn.image.create_image(
            unique("renewed"), data=DATA, disk_format="raw", container_format="bare"
        )
        assert again.size == len(DATA)
        assert again.status == "active"
        assert counted_login.count(LOGIN) == 3

        keystone.revoke(conn.session.get_token())
        with conn.image.download_image(image, stream=True) as chunks:
            assert b"".join(chunks) == DATA
        conn.image.delete_image(image, ignore_missing=False)
        conn.image.delete_image(again, ignore_missing=False)
        assert counted_login.count(LOGIN) == 4


def test_streamed_upload_after_a_revocation_keeps_its_data(
    keystone, server, region, cloud_env, tmp_path
):
    # keystoneauth answers a 401 by logging in again and resending the request; a
    # streamed body is used up by then, so a blind resend would upload nothing
    source = tmp_path / "disk.raw"
    source.write_bytes(DATA)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(DATA), 65536):
            yield DATA[start : start + 65536]

    with Connection(cloud="alice") as conn:
        uploaded = []
        for label in ("iterator", "file", "filename"):
            image = conn.image.reserve_image(
                name=unique(f"revoked-{label}"), disk_format="raw", container_format="bare"
            )
            keystone.revoke(conn.session.get_token())
            if label == "iterator":
                conn.image.upload_image_data(image, data=chunks())
            elif label == "file":
                with source.open("rb") as handle:
                    conn.image.upload_image_data(image, data=handle)
            else:
                conn.image.upload_image_data(image, filename=str(source))
            uploaded.append(image)
        keystone.revoke(conn.session.get_token())  # create and upload in one POST
        uploaded.append(
            conn.image.upload_image(
                name=unique("revoked-post"), data=chunks(), disk_format="raw",
                container_format="bare",
            )
        )  # fmt: skip
        for image in uploaded:
            stored = conn.image.get_image(image)
            assert (stored.status, stored.size) == ("active", len(DATA)), stored.name
            assert stored.checksum == hashlib.md5(DATA).hexdigest()
            conn.image.delete_image(image, ignore_missing=False)


@pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK50Warning")
@pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK60Warning")
def test_v2_clients_discover_v2_at_the_catalog_url(keystone, server, region, cloud_env, tmp_path):
    """openstacksdk and `openstack` take the unversioned catalog URL and discover v2 there."""
    import openstack

    with openstack.connect(cloud="alice") as alice:
        assert str(alice.image.get_endpoint()).rstrip("/") == region.public + "/v2"
        image = alice.image.create_image(
            unique("cloud-sdk2"), data=DATA, allow_duplicates=True, disk_format="raw",
            container_format="bare",
        )  # fmt: skip
        assert alice.image.get_image(image.id).hash_value == hashlib.sha512(DATA).hexdigest()
        env = cli_env(tmp_path, OS_CLIENT_CONFIG_FILE=str(cloud_env))
        shown = subprocess.run(
            [str(OSIMAGE.with_name("openstack")), "--os-cloud", "alice", "image", "show",
             image.id, "-f", "json"],
            env=env, capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["checksum"] == hashlib.md5(DATA).hexdigest()
        alice.image.delete_image(image.id, ignore_missing=False)
