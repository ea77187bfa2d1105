"""The `osimage` command in subprocesses against real servers, configured by flags, by OS_*
variables and by a clouds.yaml in a temp HOME: every client command, each way."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.server import Server, start_server

pytestmark = pytest.mark.e2e

OSIMAGE = Path(sys.executable).with_name("osimage")


def default_sigint() -> None:
    """Give a child the default SIGINT (so Python makes it KeyboardInterrupt): a test
    runner started in the background, or a pytest-xdist worker, passes SIGINT on ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def clean_env(home: Path) -> dict[str, str]:
    """The test process's environment without any OS_* setting, HOME pointing at `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.pop("XDG_CONFIG_HOME", None)
    env["HOME"] = str(home)
    return env


@dataclass
class Cli:
    """`osimage` with fixed leading options and environment; `cwd` holds no clouds.yaml."""

    home: Path
    prefix: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**clean_env(self.home), **self.extra_env}

    def run(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(OSIMAGE), *self.prefix, *args],
            env=self.env,
            cwd=self.home,
            input=input,
            capture_output=True,
            timeout=300,
            check=False,
        )

    def ok(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        done = self.run(*args, input=input)
        assert done.returncode == 0, (args, done.stderr.decode(errors="replace"))
        assert b"Traceback" not in done.stderr
        return done

    def fails(self, *args: str, input: bytes | None = None) -> str:
        """Run a command expected to fail; return its one-line error message."""
        done = self.run(*args, input=input)
        err = done.stderr.decode(errors="replace")
        assert done.returncode == 1, (args, done.returncode, err)
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("osimage: error: ")
        return lines[0]

    def json(self, *args: str, input: bytes | None = None) -> Any:
        return json.loads(self.ok(*args, "-f", "json", input=input).stdout)

    def yaml(self, *args: str) -> Any:
        return yaml.safe_load(self.ok(*args, "-f", "yaml").stdout)

    def values(self, *args: str) -> list[str]:
        return self.ok(*args, "-f", "value").stdout.decode().splitlines()


def write_clouds(home: Path, clouds: dict[str, Any], secure: dict[str, Any] | None = None) -> Path:
    """Write ~/.config/openstack/clouds.yaml (and secure.yaml) under `home`."""
    directory = home / ".config" / "openstack"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "clouds.yaml"
    path.write_text(yaml.safe_dump({"clouds": clouds}))
    if secure is not None:
        (directory / "secure.yaml").write_text(yaml.safe_dump({"clouds": secure}))
    return path


# --------------------------------------------------------------------------- tests


def unique(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(os.urandom(300_000))
    return path


def configured(mode: str, home: Path, url: str, token: str) -> Cli:
    """A Cli that reaches `url` with `token`, configured the way `mode` says."""
    if mode == "flags":
        return Cli(home, prefix=["--os-endpoint", url, "--os-token", token])
    if mode == "env":
        return Cli(home, extra_env={"OS_ENDPOINT": url, "OS_TOKEN": token})
    write_clouds(
        home,
        {"test": {"auth_type": "admin_token", "auth": {"endpoint": url}}},
        secure={"test": {"auth": {"token": token}}},
    )
    return Cli(home, extra_env={"OS_CLOUD": "test"})


@pytest.fixture(params=["flags", "env", "clouds"])
def alice(request: pytest.FixtureRequest, home: Path, tokens_server: Server) -> Cli:
    return configured(request.param, home, tokens_server.url, "alice-token")


@pytest.fixture
def local(home: Path, server: Server) -> Cli:
    """The shared noauth server, reached through OS_IMAGE_URL."""
    return Cli(home, extra_env={"OS_IMAGE_URL": server.url})


def test_every_command_in_each_configuration(alice: Cli, payload: Path, tmp_path: Path) -> None:
    name = unique()
    data = payload.read_bytes()
    created = alice.json(
        "image", "create", "--name", name, "--disk-format", "raw", "--container-format",
        "bare", "--file", str(payload), "--property", "distro=debian", "--min-ram", "128",
    )  # fmt: skip
    assert created["status"] == "active"
    assert created["size"] == len(data)
    assert created["checksum"] == hashlib.md5(data).hexdigest()
    assert created["owner"] == "p-alice"
    assert created["min_ram"] == 128
    assert created["properties"]["distro"] == "debian"
    image_id = created["id"]

    assert alice.values("image", "list", "--name", name, "-c", "id") == [image_id]
    assert alice.json("image", "show", name)["id"] == image_id
    assert alice.yaml("image", "show", image_id)["name"] == name

    renamed = alice.json("image", "update", name, "--name", name + "-2", "--property", "arch=x")
    assert renamed["name"] == name + "-2"
    assert renamed["properties"]["distro"] == "debian"
    assert renamed["properties"]["arch"] == "x"
    purged = alice.json("image", "update", image_id, "--purge-props", "--property", "only=1")
    assert purged["properties"] == {"only": "1"}

    target = tmp_path / "out.raw"
    alice.ok("image", "download", name + "-2", "--file", str(target))
    assert target.read_bytes() == data
    assert alice.ok("image", "download", image_id).stdout == data

    added = alice.json("member", "add", image_id, "p-bob", "--can-share")
    assert added["member_id"] == "p-bob"
    assert added["can_share"] is True
    assert [m["member_id"] for m in alice.json("member", "list", name + "-2")] == ["p-bob"]
    shared = alice.json("image", "shared", "--member", "p-bob")
    assert {"image_id": image_id, "member_id": "p-bob", "can_share": True} in shared
    alice.ok("member", "delete", image_id, "p-bob")
    assert alice.json("member", "list", image_id) == []

    reserved = alice.json("image", "create", "--name", name + "-r")
    assert reserved["status"] == "queued"
    uploaded = alice.json(
        "image", "update", reserved["id"], "--disk-format", "raw", "--container-format", "bare",
        "--file", str(payload),
    )  # fmt: skip
    assert uploaded["status"] == "active"
    assert uploaded["size"] == len(data)

    alice.ok("image", "delete", image_id, reserved["id"])
    assert "no image has the id or name" in alice.fails("image", "show", image_id)
    assert alice.values("image", "list", "--name", name + "-2") == []


def test_clouds_yaml_with_an_image_endpoint_override(home: Path, tokens_server: Server) -> None:
    write_clouds(
        home,
        {"over": {"auth_type": "admin_token", "auth": {"token": "bob-token"},
                  "image_endpoint_override": tokens_server.endpoint + "/"}},
    )  # fmt: skip
    cli = Cli(home, prefix=["--os-cloud", "over"])
    created = cli.json("image", "create", "--name", unique())
    assert created["owner"] == "p-bob"


def test_flags_beat_variables_beat_clouds_yaml(home: Path, tokens_server: Server) -> None:
    write_clouds(
        home, {"c": {"auth_type": "admin_token",
                     "auth": {"endpoint": tokens_server.url, "token": "carol-token"}}}
    )  # fmt: skip
    base = {"OS_CLOUD": "c"}
    owner = Cli(home, extra_env=base).json("image", "create", "--name", unique())["owner"]
    assert owner == "p-carol"
    env = {**base, "OS_TOKEN": "bob-token"}
    assert Cli(home, extra_env=env).json("image", "create")["owner"] == "p-bob"
    flags = Cli(home, prefix=["--os-token", "alice-token"], extra_env=env)
    assert flags.json("image", "create")["owner"] == "p-alice"


def test_upload_from_stdin_only_when_asked(local: Cli) -> None:
    data = os.urandom(70_000)
    name = unique()
    created = local.json(
        "image", "create", "--name", name, "--disk-format", "raw", "--container-format", "bare",
        "--file", "-", input=data,
    )  # fmt: skip
    assert created["size"] == len(data)
    assert local.ok("image", "download", name, "--file", "-").stdout == data
    qcow = local.home / "guest.qcow2"
    qcow.write_bytes(b"QFI\xfb" + bytes(60))
    guessed = local.json("image", "create", "--file", str(qcow))  # formats from the extension
    assert (guessed["disk_format"], guessed["container_format"]) == ("qcow2", "bare")
    empty = local.home / "empty.raw"
    empty.write_bytes(b"")
    nothing = local.json("image", "create", "--file", str(empty))
    assert (nothing["status"], nothing["size"]) == ("active", 0)
    reserved = local.json("image", "create", "--name", unique(), input=b"ignored")
    assert reserved["status"] == "queued"
    assert reserved["size"] == 0


def test_output_formats_and_sizes(local: Cli, payload: Path) -> None:
    name = unique()
    local.ok("image", "create", "--name", name, "--disk-format", "raw", "--container-format",
             "bare", "--file", str(payload), "--property", "k=v")  # fmt: skip
    table = local.ok("image", "list", "--name", name).stdout.decode()
    assert "Disk Format" in table
    assert name in table
    row = local.values("image", "list", "--name", name, "-c", "name", "-c", "size")
    assert row == [f"{name} {payload.stat().st_size}"]
    assert local.values("image", "show", name, "-c", "size", "--human-readable") == ["293.0KiB"]
    assert "v" in local.values("image", "show", name, "-c", "properties")
    shown = local.ok("image", "show", name).stdout.decode()
    assert "Property 'k'" in shown
    long = local.json("image", "list", "--name", name, "--long")
    assert set(long[0]) >= {"owner", "is_public", "checksum", "created_at"}
    assert "no column nope" in local.fails("image", "list", "-c", "nope")


def test_list_filters_sorting_and_limits(local: Cli) -> None:
    tag = unique("tag")
    names = sorted(unique("f") for _ in range(3))
    for i, n in enumerate(names):
        local.ok("image", "create", "--name", n, "--disk-format", "raw", "--container-format",
                 "bare", "--file", "-", "--property", f"tag={tag}",
                 input=b"x" * (i + 1))  # fmt: skip
    by_tag = ["--property-filter", f"tag={tag}"]
    asc = local.values("image", "list", *by_tag, "--sort-key", "name", "--sort-dir", "asc",
                       "-c", "name")  # fmt: skip
    assert asc == names
    desc = local.values("image", "list", *by_tag, "--sort-key", "size", "--sort-dir", "desc",
                        "-c", "name")  # fmt: skip
    assert desc == names[::-1]
    assert len(local.values("image", "list", *by_tag, "--limit", "2", "--page-size", "1")) == 2
    assert local.values("image", "list", *by_tag, "--size-min", "2", "--size-max", "2",
                        "-c", "name") == [names[1]]  # fmt: skip
    assert local.values("image", "list", *by_tag, "--disk-format", "qcow2") == []
    assert len(local.values("image", "list", *by_tag, "--all-tenants")) == 3


def test_flags_for_visibility_protection_and_owner(home: Path, tokens_server: Server) -> None:
    admin = configured("flags", home, tokens_server.url, "admin-token")
    alice = configured("env", home, tokens_server.url, "alice-token")
    name = unique()
    made = admin.json("image", "create", "--name", name, "--is-public", "True", "--protected",
                      "True", "--owner", "p-carol", "--min-disk", "3")  # fmt: skip
    assert (made["is_public"], made["is_protected"], made["owner"]) == (True, True, "p-carol")
    assert made["min_disk"] == 3
    assert alice.values("image", "list", "--name", name, "-c", "id") == [made["id"]]
    assert alice.values("image", "list", "--name", name, "--owner", "p-bob") == []
    assert "HTTP 403" in alice.fails("image", "create", "--name", name, "--is-public", "yes")
    assert "HTTP 403" in admin.fails("image", "delete", made["id"])
    admin.ok("image", "update", made["id"], "--protected", "False")
    assert len(admin.values("image", "list", "--all-tenants", "--name", name)) == 1
    admin.ok("image", "delete", made["id"])


def test_wrong_checksum_leaves_no_image(local: Cli, payload: Path) -> None:
    name = unique()
    message = local.fails("image", "create", "--name", name, "--disk-format", "raw",
                          "--container-format", "bare", "--file", str(payload),
                          "--checksum", "0" * 32)  # fmt: skip
    assert "HTTP 400" in message
    assert local.values("image", "list", "--name", name) == []


@pytest.fixture(scope="module")
def sources_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("cli-sources"), "--allow-source-network", "127.0.0.1/32"
    )
    yield srv
    srv.stop()


def test_copy_from_and_location(home: Path, sources_server: Server, server: Server,
                                payload: Path) -> None:  # fmt: skip
    source = Cli(home, extra_env={"OS_IMAGE_URL": server.url})
    original = source.json("image", "create", "--name", unique(), "--disk-format", "raw",
                           "--container-format", "bare", "--file", str(payload))  # fmt: skip
    url = f"{server.url}/v1/images/{original['id']}"
    cli = Cli(home, prefix=["--os-image-url", sources_server.url])
    copied = cli.json("image", "create", "--name", unique(), "--disk-format", "raw",
                      "--container-format", "bare", "--copy-from", url, "--wait")  # fmt: skip
    assert copied["status"] == "active"
    assert copied["checksum"] == original["checksum"]
    located = cli.json("image", "create", "--name", unique(), "--disk-format", "raw",
                       "--container-format", "bare", "--location", url)  # fmt: skip
    assert located["status"] == "active"
    assert cli.ok("image", "download", located["id"]).stdout == payload.read_bytes()
    assert "one source" in cli.fails("image", "create", "--location", url, "--file", "-")


def test_progress_bars_on_request(local: Cli, payload: Path, tmp_path: Path) -> None:
    name = unique()
    done = local.ok("image", "create", "--name", name, "--disk-format", "raw",
                    "--container-format", "bare", "--file", str(payload), "--progress")  # fmt: skip
    assert b"upload disk.raw" in done.stderr
    quiet = local.ok("image", "download", name, "--file", str(tmp_path / "o"))
    assert quiet.stderr == b""  # not a terminal: no bar unless asked
    loud = local.ok("image", "download", name, "--file", str(tmp_path / "o"), "--progress")
    assert f"download {name}".encode() in loud.stderr


def test_keystone_settings_from_os_variables(home: Path, tokens_server: Server) -> None:
    from tests.e2e.test_proxy import fake_keystone

    with fake_keystone(tokens_server.url) as auth_url:
        env = {
            "OS_AUTH_URL": auth_url, "OS_USERNAME": "alice", "OS_PASSWORD": "good",
            "OS_PROJECT_NAME": "alice", "OS_USER_DOMAIN_NAME": "Default",
            "OS_PROJECT_DOMAIN_NAME": "Default", "OS_IDENTITY_API_VERSION": "3",
            "OS_REGION_NAME": "R2", "OS_INTERFACE": "internal",
        }  # fmt: skip
        cli = Cli(home, extra_env=env)
        created = cli.json("image", "create", "--name", unique())
        assert created["owner"] == "p-alice"
        cli.ok("member", "add", created["id"], "p-alice")
        shared = cli.json("image", "shared")  # the member defaults to the token's project
        assert {"image_id": created["id"], "member_id": "p-alice", "can_share": False} in shared
        refused = Cli(home, extra_env={**env, "OS_PASSWORD": "bad"}).fails("image", "list")
        assert f"keystone at {auth_url} refused the credentials" in refused
        assert "password from OS_PASSWORD" in refused
        assert "bad" not in refused  # the password itself is never shown
        lost = Cli(home, extra_env={**env, "OS_REGION_NAME": "R9"}).fails("image", "list")
        assert "no internal image endpoint in region R9" in lost
