"""`openstack image ...` (python-openstackclient, image API v2) against `osimage serve`.

Each call is a real `openstack` subprocess reading a clouds.yaml written for the test:
the server's unversioned root is the image endpoint, so openstacksdk's version
discovery picks v2; the auth is `none` (noauth) or `admin_token` (tokens).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.interop.helpers import Target, md5, payload, unique

pytestmark = pytest.mark.e2e

OPENSTACK = str(Path(sys.executable).parent / "openstack")
# every `openstack` run costs seconds of start-up: the long tests run in tokens mode only
# (the noauth cloud is covered by test_projects_and_member_list)
TOKENS_ONLY = pytest.mark.parametrize("target", ["tokens"], indirect=True)
FORMATS = ["--disk-format", "raw", "--container-format", "bare"]


class Cli:
    """`openstack --os-cloud <cloud>` with a clouds.yaml of its own."""

    def __init__(self, target: Target, directory: Path) -> None:
        self.config = directory / "clouds.yaml"
        clouds = {}
        for cloud, token in (("alice", target.token), ("bob", "bob-token")):
            if target.mode == "noauth":
                auth: dict[str, Any] = {
                    "auth_type": "none",
                    "auth": {"endpoint": target.server.url},
                }
            else:
                auth = {
                    "auth_type": "admin_token",
                    "auth": {"token": token, "endpoint": target.server.url},
                }
            clouds[cloud] = {**auth, "image_endpoint_override": target.server.url}
        self.config.write_text(yaml.safe_dump({"clouds": clouds}))

    def run(
        self, *args: str, cloud: str = "alice", check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env["OS_CLIENT_CONFIG_FILE"] = str(self.config)
        done = subprocess.run(
            [OPENSTACK, "--os-cloud", cloud, *args], capture_output=True, text=True, env=env,
            stdin=subprocess.DEVNULL, timeout=120, check=False,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def json(self, *args: str, cloud: str = "alice") -> Any:
        return json.loads(self.run(*args, "-f", "json", cloud=cloud).stdout)


@pytest.fixture
def cli(target: Target, tmp_path: Path) -> Cli:
    return Cli(target, tmp_path)


def properties(shown: dict[str, Any]) -> dict[str, Any]:
    props = shown["properties"]
    return props if isinstance(props, dict) else {}


@TOKENS_ONLY
def test_create_list_show_save_delete(cli: Cli, tmp_path: Path) -> None:
    data = payload(350_000, "osc-create")
    source = tmp_path / "disk.raw"
    source.write_bytes(data)
    name = unique("osc")
    made = cli.json(
        "image", "create", "--file", str(source), *FORMATS, "--property", "distro=debian",
        "--min-ram", "64", name,
    )  # fmt: skip
    assert (made["name"], made["status"], made["checksum"]) == (name, "active", md5(data))
    listed = cli.json("image", "list", "--name", name)
    assert [(row["ID"], row["Name"], row["Status"]) for row in listed] == [
        (made["id"], name, "active")
    ]
    shown = cli.json("image", "show", name)
    assert (shown["id"], shown["size"], shown["min_ram"]) == (made["id"], len(data), 64)
    assert (shown["visibility"], properties(shown)["distro"]) == ("shared", "debian")

    out = tmp_path / "saved.raw"
    cli.run("image", "save", "--file", str(out), name)
    assert out.read_bytes() == data

    cli.run("image", "delete", name)
    assert cli.json("image", "list", "--name", name) == []
    assert cli.run("image", "show", made["id"], check=False).returncode != 0


@TOKENS_ONLY
def test_set_and_unset(cli: Cli) -> None:
    name = unique("osc-set")
    made = cli.json("image", "create", *FORMATS, "--property", "a=1", "--property", "b=2", name)
    renamed = unique("osc-renamed")
    cli.run(
        "image", "set", "--property", "a=one", "--property", "c=3", "--min-disk", "2",
        "--name", renamed, "--tag", "red", made["id"],
    )  # fmt: skip
    shown = cli.json("image", "show", made["id"])
    assert (shown["name"], shown["min_disk"], shown["tags"]) == (renamed, 2, ["red"])
    assert {k: properties(shown)[k] for k in ("a", "b", "c")} == {"a": "one", "b": "2", "c": "3"}
    cli.run("image", "unset", "--property", "b", "--tag", "red", made["id"])
    shown = cli.json("image", "show", made["id"])
    assert "b" not in properties(shown)
    assert shown["tags"] == []
    assert properties(shown)["a"] == "one"


def test_projects_and_member_list(cli: Cli, target: Target) -> None:
    made = cli.json("image", "create", *FORMATS, unique("osc-share"))
    if target.mode == "noauth":
        # `image add project` first resolves the project at the identity service; a noauth
        # cloud has none (openstacksdk discovers the image server's root as identity and
        # gets 404 from /v2/tenants), so openstackclient gives up before any image call.
        refused = cli.run("image", "add", "project", made["id"], "p-bob", check=False)
        assert refused.returncode == 1
        assert cli.json("image", "member", "list", made["id"]) == []
        return
    added = cli.json("image", "add", "project", made["id"], "p-bob")
    assert (added["member_id"], added["image_id"], added["status"]) == (
        "p-bob", made["id"], "pending",
    )  # fmt: skip
    members = cli.json("image", "member", "list", made["id"])
    assert [(m["Member ID"], m["Status"]) for m in members] == [("p-bob", "pending")]
    assert cli.json("image", "show", made["id"], cloud="bob")["id"] == made["id"]  # pending
    cli.run("image", "remove", "project", made["id"], "p-bob")
    assert cli.json("image", "member", "list", made["id"]) == []
    assert cli.run("image", "show", made["id"], cloud="bob", check=False).returncode != 0
