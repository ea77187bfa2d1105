"""The same operations through python-glanceclient, osimage's SDK and osimage's CLI leave
the same metadata and the same data on the server.

The server's own answer is the judge: a raw HEAD, decoded by the shared wire codec,
compared field by field (ids, names and timestamps aside), and the downloaded bytes.
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

import pytest

import osimage
from tests.interop.helpers import Target, head_metadata, md5, payload, unique

pytestmark = pytest.mark.e2e

OSIMAGE = str(Path(sys.executable).parent / "osimage")
VARYING = {"id", "name", "created_at", "updated_at"}
OWNER_SPECIFIED = "owner_specified.openstack."
PROPERTIES = {"distro": "débian ✓", "note": "100% a%20b", "plain": "x"}


@pytest.fixture
def sdk(target: Target) -> Iterator[Any]:
    """osimage's SDK, configured by arguments only (no OS_* variables, no clouds.yaml)."""
    auth = {} if target.admin else {"token": target.token}
    conn = osimage.connect(endpoint=target.server.url, environ={}, **auth)
    yield conn
    conn.close()


def cli(target: Target, *args: str) -> Any:
    """Run `osimage` (the project's CLI) against the target; returns its JSON output."""
    auth = [] if target.admin else ["--os-token", target.token]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    done = subprocess.run(
        [OSIMAGE, "--os-endpoint", target.server.url, *auth, *args],
        capture_output=True, env=env, timeout=120, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, (args, done.stdout.decode(), done.stderr.decode())
    out = done.stdout.decode()
    return json.loads(out) if out.strip() else None


def state(target: Target, image_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the server holds for an image: fields (ids, names, times aside), properties."""
    meta = head_metadata(target.server.url, image_id, None if target.admin else target.token)
    return {k: v for k, v in meta.fields.items() if k not in VARYING}, meta.properties


def same_state(target: Target, ids: dict[str, str], ignore: str = "\0") -> dict[str, Any]:
    """Assert that the images hold the same state (properties starting with `ignore` aside)."""
    states = {}
    for client, image_id in ids.items():
        fields, properties = state(target, image_id)
        states[client] = (fields, {k: v for k, v in properties.items() if not k.startswith(ignore)})
    first = states["glanceclient"]
    for client, seen in states.items():
        assert seen == first, (client, seen, first)
    return first[0]


def test_create_with_data(target: Target, gc: Any, sdk: Any, tmp_path: Path) -> None:
    data = payload(200_000, "side-create")
    source = tmp_path / "disk.qcow2"
    source.write_bytes(data)
    name = unique("Grüße ✓")
    fields = {"disk_format": "qcow2", "container_format": "bare", "min_disk": 1, "min_ram": 128}

    with source.open("rb") as handle:
        by_gc = gc.images.create(name=name, data=handle, properties=PROPERTIES, **fields)
    with source.open("rb") as handle:
        by_sdk = sdk.image.upload_image(name=name, data=handle, properties=PROPERTIES, **fields)
    by_cli = cli(
        target, "image", "create", "--name", name, "--file", str(source), "-f", "json",
        "--disk-format", "qcow2", "--container-format", "bare",
        "--min-disk", "1", "--min-ram", "128",
        *[arg for key, value in PROPERTIES.items() for arg in ("--property", f"{key}={value}")],
    )  # fmt: skip
    ids = {"glanceclient": by_gc.id, "sdk": by_sdk.id, "cli": by_cli["id"]}

    # osimage's CLI, like openstacksdk's create_image, also records the checksums it
    # computed as owner_specified.openstack.* properties: the one expected difference
    extra = state(target, by_cli["id"])[1]
    assert extra.pop("owner_specified.openstack.md5") == md5(data)
    assert extra.pop("owner_specified.openstack.sha256") == hashlib.sha256(data).hexdigest()
    assert extra.pop("owner_specified.openstack.object") == f"images/{name}"
    held = same_state(target, ids, ignore=OWNER_SPECIFIED)
    assert (held["status"], held["size"], held["checksum"]) == ("active", len(data), md5(data))
    assert state(target, by_gc.id)[1] == PROPERTIES
    assert {sdk.image.get_image(i).name for i in ids.values()} == {name}

    for image_id in ids.values():
        assert b"".join(gc.images.data(image_id)) == data
        out = tmp_path / f"{image_id}.sdk"
        sdk.image.download_image(image_id, output=out)
        assert out.read_bytes() == data
    cli(target, "image", "download", by_gc.id, "--file", str(tmp_path / "by-cli"))
    assert (tmp_path / "by-cli").read_bytes() == data


@pytest.fixture
def reserved(target: Target, gc: Any) -> dict[str, str]:
    """Three identical queued images (props a=1, b=2), one per client under test."""
    name = unique("side")
    return {
        client: gc.images.create(
            name=name, disk_format="raw", container_format="bare", properties={"a": "1", "b": "2"}
        ).id
        for client in ("glanceclient", "sdk", "cli")
    }


def test_update_merge_then_purge(
    target: Target, gc: Any, sdk: Any, reserved: dict[str, str]
) -> None:
    gc.images.update(reserved["glanceclient"], min_ram=256, properties={"c": "ü"})
    sdk.image.update_image(reserved["sdk"], min_ram=256, properties={"c": "ü"})
    cli(target, "image", "update", reserved["cli"], "--min-ram", "256", "--property", "c=ü",
        "-f", "json")  # fmt: skip
    same_state(target, reserved)
    assert state(target, reserved["sdk"])[1] == {"a": "1", "b": "2", "c": "ü"}

    gc.images.update(reserved["glanceclient"], properties={"a": "9"}, purge_props=True)
    sdk.image.update_image(reserved["sdk"], properties={"a": "9"}, purge_props=True)
    cli(target, "image", "update", reserved["cli"], "--property", "a=9", "--purge-props",
        "-f", "json")  # fmt: skip
    held = same_state(target, reserved)
    assert held["min_ram"] == 256
    assert state(target, reserved["cli"])[1] == {"a": "9"}


def test_reserve_then_upload(
    target: Target, gc: Any, sdk: Any, reserved: dict[str, str], tmp_path: Path
) -> None:
    data = payload(120_000, "side-upload")
    source = tmp_path / "later.raw"
    source.write_bytes(data)
    gc.images.update(reserved["glanceclient"], data=io.BytesIO(data))
    sdk.image.upload_image_data(reserved["sdk"], filename=str(source))
    cli(target, "image", "update", reserved["cli"], "--file", str(source), "-f", "json")
    held = same_state(target, reserved)
    assert (held["status"], held["size"], held["checksum"]) == ("active", len(data), md5(data))
    for image_id in reserved.values():
        assert b"".join(gc.images.data(image_id)) == data


def test_members(target: Target, gc: Any, sdk: Any, reserved: dict[str, str]) -> None:
    gc.image_members.create(reserved["glanceclient"], "p-bob", can_share=True)
    gc.image_members.create(reserved["glanceclient"], "p-carol")
    sdk.image.add_member(reserved["sdk"], "p-bob", can_share=True)
    sdk.image.add_member(reserved["sdk"], "p-carol")
    cli(target, "member", "add", reserved["cli"], "p-bob", "--can-share", "-f", "json")
    cli(target, "member", "add", reserved["cli"], "p-carol", "-f", "json")

    def members() -> dict[str, dict[str, bool]]:
        return {
            client: {m.member_id: m.can_share for m in gc.image_members.list(image=image_id)}
            for client, image_id in reserved.items()
        }

    assert members() == {c: {"p-bob": True, "p-carol": False} for c in reserved}
    gc.image_members.delete(reserved["glanceclient"], "p-bob")
    sdk.image.remove_member(reserved["sdk"], "p-bob")
    cli(target, "member", "delete", reserved["cli"], "p-bob")
    assert members() == {c: {"p-carol": False} for c in reserved}


def test_sdk_reads_back_literal_percent_escapes(target: Target, gc: Any, sdk: Any) -> None:
    made = gc.images.create(name=unique("a%20b"), properties={"note": "100% a%20b"})
    assert (gc.images.get(made.id).name, gc.images.get(made.id).properties) == (
        made.name, {"note": "100% a%20b"},
    )  # fmt: skip
    got = sdk.image.get_image(made.id)
    assert (got.name, got.properties) == (made.name, {"note": "100% a%20b"})
