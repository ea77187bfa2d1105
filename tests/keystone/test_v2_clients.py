"""Image API v2 clients that log in to Keystone themselves, against a keystone-mode server.

openstacksdk, glanceclient (library and `glance`) and `openstack` each get a password
login at the test Keystone and the server's unversioned root as the image endpoint, so
the project ids, the share and the discovery are the real ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import glanceclient
import pytest
import yaml
from glanceclient import exc as glance_exc
from keystoneauth1 import identity, session
from openstack import connection
from openstack import exceptions as sdk_exc

from tests.e2e.api_client import unique
from tests.keystone.conftest import Keystone, start_keystone_server
from tests.support.server import Server

pytestmark = [
    pytest.mark.keystone,
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK50Warning"),
    pytest.mark.filterwarnings("ignore::openstack.warnings.RemovedInSDK60Warning"),
    # create_image(filename=...) opens the file and never closes it
    pytest.mark.filterwarnings(
        "ignore:Exception ignored in. <_io.FileIO:pytest.PytestUnraisableExceptionWarning"
    ),
]
DATA = b"v2 through keystone" * 1000
FORMATS = {"disk_format": "raw", "container_format": "bare"}
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(keystone: Keystone, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_keystone_server(keystone, tmp_path_factory.mktemp("keystone-v2"))
    yield srv
    srv.stop()


def credentials(keystone: Keystone, who: str) -> dict[str, Any]:
    username, password, project = keystone.users[who]
    return {
        "auth_url": keystone.auth_url, "username": username, "password": password,
        "project_name": project, "user_domain_name": keystone.domain,
        "project_domain_name": keystone.domain,
    }  # fmt: skip


def sdk(keystone: Keystone, server: Server, who: str) -> Any:
    return connection.Connection(image_endpoint_override=server.url, **credentials(keystone, who))


def test_openstacksdk(keystone: Keystone, server: Server, tmp_path: Path) -> None:
    alice_project = keystone.login("alice").project_id
    bob_project = keystone.login("bob").project_id
    source = tmp_path / "disk.raw"
    source.write_bytes(DATA)
    alice, bob = sdk(keystone, server, "alice"), sdk(keystone, server, "bob")
    try:
        assert alice.image.api_version == "2"
        image = alice.image.create_image(unique("ks-sdk2"), filename=str(source), wait=True,
                                         **FORMATS)  # fmt: skip
        got = alice.image.get_image(image.id)
        assert (got.status, got.owner, got.size) == ("active", alice_project, len(DATA))
        assert got.hash_value == hashlib.sha512(DATA).hexdigest()
        with pytest.raises(sdk_exc.NotFoundException):
            bob.image.get_image(image.id)
        alice.image.add_member(image, member_id=bob_project)
        bob.image.update_member(bob_project, image, status="accepted")
        assert [i.id for i in bob.image.images(name=image.name)] == [image.id]
        assert bob.image.download_image(image).content == DATA
        with pytest.raises(sdk_exc.ForbiddenException):
            bob.image.delete_image(image, ignore_missing=False)
        alice.image.delete_image(image)
        assert alice.image.find_image(image.id) is None
    finally:
        alice.close()
        bob.close()


def glance_lib(keystone: Keystone, server: Server, who: str) -> Any:
    auth = identity.Password(**credentials(keystone, who))
    return glanceclient.Client("2", session=session.Session(auth=auth), endpoint=server.url)


def test_glanceclient_library_with_a_session(keystone: Keystone, server: Server) -> None:
    alice, bob = glance_lib(keystone, server, "alice"), glance_lib(keystone, server, "bob")
    image = alice.images.create(name=unique("ks-gc2"), **FORMATS)
    assert image["owner"] == keystone.login("alice").project_id
    alice.images.upload(image["id"], io.BytesIO(DATA), image_size=len(DATA))
    assert b"".join(alice.images.data(image["id"])) == DATA
    with pytest.raises(glance_exc.HTTPNotFound):
        bob.images.get(image["id"])
    bob_project = keystone.login("bob").project_id
    alice.image_members.create(image["id"], bob_project)
    assert bob.images.get(image["id"])["id"] == image["id"]
    alice.images.delete(image["id"])


def cli_env(keystone: Keystone, who: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update({f"OS_{k.upper()}": v for k, v in credentials(keystone, who).items()})
    env.update(HOME=str(home), PYTHONIOENCODING="utf-8", OS_IDENTITY_API_VERSION="3")
    return env


def run(cmd: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    assert done.returncode == 0, (cmd, done.stdout, done.stderr)
    return done.stdout


def test_glance_cli(keystone: Keystone, server: Server, tmp_path: Path) -> None:
    source = tmp_path / "disk.raw"
    source.write_bytes(DATA)
    env = cli_env(keystone, "alice", tmp_path)
    glance = [str(BIN / "glance"), "--os-image-api-version", "2", "--os-image-url", server.url]
    out = run([*glance, "image-create", "--name", unique("ks-cli2"), "--disk-format", "raw",
               "--container-format", "bare", "--file", str(source)], env)  # fmt: skip
    fields = {
        cells[0].strip(): cells[1].strip()
        for cells in (line.strip("|").split("|") for line in out.splitlines() if "|" in line)
    }
    assert (fields["status"], fields["owner"]) == ("active", keystone.login("alice").project_id)
    target = tmp_path / "copy.raw"
    run([*glance, "image-download", "--file", str(target), fields["id"]], env)
    assert target.read_bytes() == DATA
    run([*glance, "image-delete", fields["id"]], env)


def test_openstackclient(keystone: Keystone, server: Server, tmp_path: Path) -> None:
    clouds = {
        who: {"auth": credentials(keystone, who), "identity_api_version": 3,
              "image_endpoint_override": server.url}
        for who in ("alice", "bob")
    }  # fmt: skip
    config = tmp_path / "clouds.yaml"
    config.write_text(yaml.safe_dump({"clouds": clouds}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_CLIENT_CONFIG_FILE=str(config), HOME=str(tmp_path))
    source = tmp_path / "disk.raw"
    source.write_bytes(DATA)
    openstack = [str(BIN / "openstack"), "--os-cloud"]
    name = unique("ks-osc")
    made = json.loads(run([*openstack, "alice", "image", "create", "--file", str(source),
                           "--disk-format", "raw", "--container-format", "bare", name,
                           "-f", "json"], env))  # fmt: skip
    assert (made["status"], made["owner"]) == ("active", keystone.login("alice").project_id)
    bob_project = keystone.login("bob").project_id
    run([*openstack, "alice", "image", "add", "project", made["id"], bob_project], env)
    shown = json.loads(run([*openstack, "bob", "image", "show", made["id"], "-f", "json"], env))
    assert shown["id"] == made["id"]
    listed = json.loads(
        run([*openstack, "bob", "image", "list", "--name", name, "-f", "json"], env)
    )
    assert listed == []  # pending: not in bob's list yet
    run([*openstack, "bob", "image", "set", "--accept", made["id"]], env)
    listed = json.loads(
        run([*openstack, "bob", "image", "list", "--name", name, "-f", "json"], env)
    )
    assert [row["ID"] for row in listed] == [made["id"]]
    members = json.loads(
        run([*openstack, "alice", "image", "member", "list", made["id"], "-f", "json"], env)
    )
    assert [(m["Member ID"], m["Status"]) for m in members] == [(bob_project, "accepted")]
    run([*openstack, "alice", "image", "delete", made["id"]], env)
