"""The `glance` command with `--os-image-api-version 2` against `osimage serve`.

Each call is a real subprocess (`--os-image-url` + `--os-auth-token`, no Keystone), run
the way tests/interop/test_glance_cli.py runs the v1 commands: standard input is a
terminal, and `--progress` calls get a terminal on standard output too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.interop.helpers import Sources, Target, md5, payload, poll, unique
from tests.interop.test_glance_cli import Run, run_glance

pytestmark = pytest.mark.e2e

FORMATS = ["--disk-format", "raw", "--container-format", "bare"]


def glance(
    target: Target, *args: str, token: str | None = None, tty_out: bool = False, check: bool = True
) -> Run:
    return run_glance("2", target, *args, token=token, tty_out=tty_out, check=check)


def show(target: Target, image_id: str) -> dict[str, str]:
    return glance(target, "image-show", image_id).fields()


def settled(target: Target, image_id: str, what: str) -> dict[str, str]:
    fields: dict[str, str] = poll(
        lambda: show(target, image_id),
        lambda i: i["status"] in {"active", "killed", "queued"},
        what,
    )
    return fields


def test_create_file_progress_show_download(target: Target, tmp_path: Path) -> None:
    data = payload(400_000, "cli2-create")
    source = tmp_path / "disk.raw"
    source.write_bytes(data)
    name = unique("cli2")
    created = glance(
        target, "image-create", "--name", name, *FORMATS, "--file", str(source),
        "--progress", "--property", "distro=debian", "--min-ram", "128", tty_out=True,
    )  # fmt: skip
    assert "100%" in created.out  # the progress bar reached its end
    image = created.fields()
    assert (image["name"], image["status"]) == (name, "active")
    assert (image["size"], image["checksum"], image["distro"]) == (
        str(len(data)),
        md5(data),
        "debian",
    )
    assert (image["min_ram"], image["visibility"], image["os_hash_algo"]) == (
        "128",
        "shared",
        "sha512",
    )

    assert show(target, image["id"])["checksum"] == md5(data)
    out = tmp_path / "downloaded"
    bar = glance(target, "image-download", "--file", str(out), "--progress", image["id"],
                 tty_out=True)  # fmt: skip
    assert "100%" in bar.out
    assert out.read_bytes() == data
    listed = glance(target, "image-list", "--property-filter", f"name={name}").rows()
    assert [row["ID"] for row in listed] == [image["id"]]


def test_create_then_upload_with_progress(target: Target, tmp_path: Path) -> None:
    data = payload(250_000, "cli2-upload")
    source = tmp_path / "disk.raw"
    source.write_bytes(data)
    image = glance(target, "image-create", "--name", unique("cli2-up"), *FORMATS).fields()
    assert (image["status"], image["size"]) == ("queued", "None")
    up = glance(target, "image-upload", "--file", str(source), "--progress", image["id"],
                tty_out=True)  # fmt: skip
    assert "100%" in up.out
    got = show(target, image["id"])
    assert (got["status"], got["size"], got["checksum"]) == ("active", str(len(data)), md5(data))


def test_image_download_of_an_image_without_data(target: Target, tmp_path: Path) -> None:
    image = glance(target, "image-create", "--name", unique("cli2-nodata"), *FORMATS).fields()
    run = glance(target, "image-download", "--file", str(tmp_path / "x"), image["id"], check=False)
    assert (run.returncode, run.err) == (1, f"Image {image['id']} has no data.\n")


def test_image_update_property_add_and_remove(target: Target) -> None:
    image = glance(
        target, "image-create", "--name", unique("cli2-upd"), *FORMATS,
        "--property", "a=1", "--property", "b=2",
    ).fields()  # fmt: skip
    assert (image["a"], image["b"]) == ("1", "2")
    updated = glance(
        target, "image-update", image["id"], "--property", "a=one", "--property", "c=3",
        "--remove-property", "b", "--min-disk", "4",
    ).fields()  # fmt: skip
    assert (updated["a"], updated["c"], updated["min_disk"]) == ("one", "3", "4")
    assert "b" not in updated
    assert "b" not in show(target, image["id"])


def test_tags(target: Target) -> None:
    image = glance(target, "image-create", "--name", unique("cli2-tag"), *FORMATS).fields()
    glance(target, "image-tag-update", image["id"], "red")
    glance(target, "image-tag-update", image["id"], "blue")
    assert sorted(eval_list(show(target, image["id"])["tags"])) == ["blue", "red"]
    glance(target, "image-tag-delete", image["id"], "red")
    assert eval_list(show(target, image["id"])["tags"]) == ["blue"]
    missing = glance(target, "image-tag-delete", image["id"], "red", check=False)
    assert missing.returncode != 0


def eval_list(cell: str) -> list[str]:
    """glance prints a list cell as JSON: `["a", "b"]`."""
    items: list[str] = json.loads(cell)
    return items


def test_members(target: Target) -> None:
    image = glance(target, "image-create", "--name", unique("cli2-mem"), *FORMATS).fields()
    created = glance(target, "member-create", image["id"], "p-bob").rows()
    assert [(r["Image ID"], r["Member ID"], r["Status"]) for r in created] == [
        (image["id"], "p-bob", "pending")
    ]
    member_token = "bob-token" if target.mode == "tokens" else None
    glance(target, "member-update", image["id"], "p-bob", "accepted", token=member_token)
    listed = glance(target, "member-list", "--image-id", image["id"]).rows()
    assert [(r["Member ID"], r["Status"]) for r in listed] == [("p-bob", "accepted")]
    glance(target, "member-delete", image["id"], "p-bob")
    assert glance(target, "member-list", "--image-id", image["id"]).rows() == []


def test_stage_and_import_glance_direct(target: Target, tmp_path: Path) -> None:
    data = payload(150_000, "cli2-stage")
    source = tmp_path / "disk.raw"
    source.write_bytes(data)
    image = glance(target, "image-create", "--name", unique("cli2-stage"), *FORMATS).fields()
    glance(target, "image-stage", "--file", str(source), image["id"])
    assert show(target, image["id"])["status"] == "uploading"
    glance(target, "image-import", "--import-method", "glance-direct", image["id"])
    done = settled(target, image["id"], "glance-direct import")
    assert (done["status"], done["checksum"]) == ("active", md5(data))


def test_import_web_download(target: Target, sources: Sources) -> None:
    data = payload(60_000, "cli2-web")
    name = unique("cli2-web")
    uri = sources.add(name, data)
    image = glance(target, "image-create", "--name", name, *FORMATS).fields()
    glance(target, "image-import", "--import-method", "web-download", "--uri", uri, image["id"])
    done = settled(target, image["id"], "web-download import")
    assert (done["status"], done["checksum"]) == ("active", md5(data))


def test_deactivate_reactivate_delete(target: Target, tmp_path: Path) -> None:
    source = tmp_path / "disk.raw"
    source.write_bytes(b"deactivated data")
    image = glance(
        target, "image-create", "--name", unique("cli2-deact"), *FORMATS, "--file", str(source)
    ).fields()
    glance(target, "image-deactivate", image["id"])
    assert show(target, image["id"])["status"] == "deactivated"
    glance(target, "image-reactivate", image["id"])
    assert show(target, image["id"])["status"] == "active"
    glance(target, "image-delete", image["id"])
    gone = glance(target, "image-show", image["id"], check=False)
    assert gone.returncode != 0
    assert "404" in gone.err or "No image with" in gone.err
