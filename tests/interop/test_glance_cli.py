"""The `glance` command (python-glanceclient, `--os-image-api-version 1`) against `osimage serve`.

Each call is a real subprocess with `--os-image-url` and `--os-auth-token`, which skips
Keystone. Its standard input is a terminal (a pty), as for a person typing: glance
reads image data from a non-terminal stdin. The `--progress` calls get a terminal on
standard output too, since glance draws its bar only there.

A noauth caller is an admin without a project, to whom v1 lists (and so glance finds by
name) only public images: in that mode the images here are made public, which admins may.
"""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.interop.helpers import Sources, Target, md5, payload, poll, unique

pytestmark = pytest.mark.e2e

GLANCE = str(Path(sys.executable).parent / "glance")
FORMATS = ["--disk-format", "raw", "--container-format", "bare"]


@dataclass
class Run:
    returncode: int
    out: str
    err: str

    def rows(self) -> list[dict[str, str]]:
        """The rows of the table glance printed, keyed by its header."""
        lines = [line for line in self.out.splitlines() if line.startswith("|")]
        cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
        if not cells:
            return []
        header, *body = cells
        return [dict(zip(header, row, strict=True)) for row in body]

    def fields(self) -> dict[str, str]:
        """An image as `image-show` / `image-create` print it: Property -> Value."""
        return {row["Property"]: row["Value"] for row in self.rows()}


def glance(
    target: Target, *args: str, tty_out: bool = False, check: bool = True, stdin: Path | None = None
) -> Run:
    return run_glance("1", target, *args, tty_out=tty_out, check=check, stdin=stdin)


def run_glance(
    api: str,
    target: Target,
    *args: str,
    token: str | None = None,
    tty_out: bool = False,
    check: bool = True,
    stdin: Path | None = None,
) -> Run:
    """`glance --os-image-api-version <api> ...` against `target` (its token unless `token`),
    standard input a terminal unless `stdin` is given; `check`: assert it succeeded."""
    cmd = [
        GLANCE, "--os-image-api-version", api,
        "--os-image-url", target.server.url, "--os-auth-token", token or target.token, *args,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["PYTHONIOENCODING"] = "utf-8"
    master, slave = pty.openpty()
    try:
        if tty_out:
            run = _on_terminal(cmd, master, slave, env)
        else:
            with stdin.open("rb") if stdin else open(slave, closefd=False) as feed:
                done = subprocess.run(
                    cmd, stdin=feed, capture_output=True, env=env, timeout=120, check=False
                )
            run = Run(done.returncode, done.stdout.decode(), done.stderr.decode())
    finally:
        os.close(master)
        if not tty_out:
            os.close(slave)
    if check:
        assert run.returncode == 0, (args, run)
    return run


def _on_terminal(cmd: list[str], master: int, slave: int, env: dict[str, str]) -> Run:
    with subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env) as proc:
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        proc.wait(timeout=120)
    out = b"".join(chunks).decode().replace("\r\n", "\n")
    return Run(proc.returncode, out, err)


def public(target: Target) -> list[str]:
    return ["--is-public", "True"] if target.admin else []


def test_image_create_file_progress_show_download_delete(target: Target, tmp_path: Path) -> None:
    data = payload(400_000, "cli-upload")
    source = tmp_path / "disk.raw"
    source.write_bytes(data)
    name = unique("cli")
    created = glance(
        target, "image-create", "--name", name, *FORMATS, *public(target),
        "--file", str(source), "--progress", "--property", "distro=debian",
        "--min-ram", "128", tty_out=True,
    )  # fmt: skip
    assert "100%" in created.out  # the progress bar reached its end
    image = created.fields()
    assert (image["name"], image["status"]) == (name, "active")
    assert (image["size"], image["checksum"]) == (str(len(data)), md5(data))
    assert (image["min_ram"], image["Property 'distro'"]) == ("128", "debian")

    shown = glance(target, "image-show", name).fields()
    assert shown["id"] == image["id"]
    assert (shown["status"], shown["size"], shown["checksum"]) == (
        "active",
        str(len(data)),
        md5(data),
    )
    assert shown["Property 'distro'"] == "debian"

    out = tmp_path / "downloaded"
    bar = glance(target, "image-download", "--file", str(out), "--progress", name, tty_out=True)
    assert "100%" in bar.out
    assert out.read_bytes() == data

    glance(target, "image-delete", name)
    after = glance(target, "image-show", image["id"], check=False)
    if target.admin:  # admins still see a deleted record
        assert (after.returncode, after.fields()["status"]) == (0, "deleted")
    else:
        assert after.returncode != 0
    missing = glance(target, "image-show", name, check=False)
    assert missing.returncode != 0
    assert f"No image with a name or ID of '{name}' exists." in missing.err


@pytest.fixture
def listed_images(target: Target, gc: Any) -> str:
    """Three active images of sizes 10/20/30 sharing the property suite=<tag>."""
    tag = unique("clilist")
    for key, disk, size in (("a", "raw", 10), ("b", "qcow2", 20), ("c", "raw", 30)):
        gc.images.create(
            name=f"{tag}-{key}", disk_format=disk, container_format="bare",
            data=io.BytesIO(payload(size, key)), properties={"suite": tag, "n": key},
            is_public=target.admin,
        )  # fmt: skip
    return tag


def test_image_list_with_filters(target: Target, listed_images: str) -> None:
    tag = listed_images

    def names(*args: str) -> list[str]:
        run = glance(target, "image-list", "--property-filter", f"suite={tag}", *args)
        return [row["Name"][-1] for row in run.rows()]

    rows = glance(target, "image-list", "--property-filter", f"suite={tag}").rows()
    assert [(r["Name"][-1], r["Disk Format"], r["Container Format"], r["Size"], r["Status"])
            for r in rows] == [
        ("a", "raw", "bare", "10", "active"),  # glance sorts by name by default
        ("b", "qcow2", "bare", "20", "active"),
        ("c", "raw", "bare", "30", "active"),
    ]  # fmt: skip
    assert names("--disk-format", "raw", "--size-min", "20") == ["c"]
    assert names("--name", f"{tag}-b") == ["b"]
    assert names("--property-filter", "n=a", "--size-max", "20") == ["a"]
    since = ("--changes-since", "2000-01-01T00:00:00", "--is-public", "True")
    assert names("--container-format", "bare", "--status", "active", *since) == ["a", "b", "c"]
    assert names("--owner", target.project or "", "--all-tenants") == ["a", "b", "c"]
    assert names("--sort-key", "size", "--sort-dir", "desc", "--page-size", "1") == [
        "c", "b", "a",
    ]  # fmt: skip


def test_image_reserve_then_update_with_file(target: Target, tmp_path: Path) -> None:
    name = unique("cli-reserve")
    reserved = glance(target, "image-create", "--name", name, *FORMATS, *public(target)).fields()
    assert (reserved["status"], reserved["size"]) == ("queued", "0")
    data = payload(90_000, "cli-reserve")
    source = tmp_path / "later.raw"
    source.write_bytes(data)
    run = glance(target, "image-update", name, "--file", str(source), "--progress", tty_out=True)
    assert "100%" in run.out
    assert (run.fields()["status"], run.fields()["checksum"]) == ("active", md5(data))
    refused = glance(target, "image-update", name, "--file", str(source), check=False)
    assert refused.returncode != 0
    assert "Unable to upload image data to an image which is active." in refused.err


def test_image_update_properties(target: Target) -> None:
    name = unique("cli-props")
    glance(target, "image-create", "--name", name, *FORMATS, *public(target),
           "--property", "a=1", "--property", "b=2")  # fmt: skip
    merged = glance(target, "image-update", name, "--property", "c=3").fields()
    props = {k: v for k, v in merged.items() if k.startswith("Property")}
    assert props == {"Property 'a'": "1", "Property 'b'": "2", "Property 'c'": "3"}
    purged = glance(target, "image-update", name, "--property", "a=9", "--purge-props").fields()
    assert {k: v for k, v in purged.items() if k.startswith("Property")} == {"Property 'a'": "9"}
    renamed = glance(target, "image-update", name, "--name", name + "-2", "--min-disk", "3")
    assert (renamed.fields()["name"], renamed.fields()["min_disk"]) == (name + "-2", "3")
    shown = glance(target, "image-show", name + "-2").fields()
    assert (shown["Property 'a'"], shown["min_disk"]) == ("9", "3")


def test_members(target: Target) -> None:
    name = unique("cli-share")
    image_id = glance(target, "image-create", "--name", name, *FORMATS, *public(target)).fields()[
        "id"
    ]
    glance(target, "member-create", name, "p-bob", "--can-share")
    glance(target, "member-create", name, "p-carol")
    rows = glance(target, "member-list", "--image-id", image_id).rows()
    # glance prints a false can_share as an empty cell
    assert {(r["Image ID"], r["Member ID"], r["Can Share"]) for r in rows} == {
        (image_id, "p-bob", "True"),
        (image_id, "p-carol", ""),
    }
    by_tenant = glance(target, "member-list", "--tenant-id", "p-carol").rows()
    assert (image_id, "p-carol", "") in {
        (r["Image ID"], r["Member ID"], r["Can Share"]) for r in by_tenant
    }
    glance(target, "member-delete", name, "p-bob")
    rows = glance(target, "member-list", "--image-id", image_id).rows()
    assert [(r["Member ID"], r["Can Share"]) for r in rows] == [("p-carol", "")]


def test_non_ascii_name(target: Target) -> None:
    """The name arrives intact (create and list print JSON answers); `image-show` prints
    HEAD headers, which glance shows as latin-1 mojibake (see docs/compat.md)."""
    name = unique("Grüße ✓")
    created = glance(target, "image-create", "--name", name, *FORMATS, *public(target),
                     "--property", "note=välue")  # fmt: skip
    assert (created.fields()["name"], created.fields()["Property 'note'"]) == (name, "välue")
    rows = glance(target, "image-list", "--name", name).rows()
    assert [r["Name"] for r in rows] == [name]


def test_image_create_from_stdin_location_and_copy_from(
    target: Target, gc: Any, sources: Sources, tmp_path: Path
) -> None:
    data = payload(50_000, "cli-sources")
    piped = tmp_path / "piped.raw"
    piped.write_bytes(data)
    name = unique("cli-stdin")
    from_stdin = glance(target, "image-create", "--name", name, *FORMATS, stdin=piped).fields()
    assert (from_stdin["status"], from_stdin["checksum"]) == ("active", md5(data))

    url = sources.add(unique("cli-src"), data)
    located = glance(target, "image-create", "--name", unique("cli-loc"), *FORMATS,
                     "--location", url).fields()  # fmt: skip
    assert (located["status"], located["size"]) == ("active", str(len(data)))
    copied = glance(target, "image-create", "--name", unique("cli-copy"), *FORMATS,
                    "--copy-from", url).fields()  # fmt: skip
    done = poll(
        lambda: gc.images.get(copied["id"]), lambda i: i.status in {"active", "killed"}, "copy"
    )
    assert (done.status, done.checksum) == ("active", md5(data))
    for image_id in (from_stdin["id"], located["id"], copied["id"]):
        assert b"".join(gc.images.data(image_id, do_checksum=False)) == data
