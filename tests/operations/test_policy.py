"""`--policy-file` through a real server: an operator's Glance-style rules change answers.

Without a policy file the whole suite runs unchanged (the defaults allow what osimage
allowed before); here each rule an operator writes turns exactly the requests it names,
for exactly the callers it names, into 403.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.api_client import Api, meta, unique
from tests.support.server import TOKENS, Server, start_server

pytestmark = pytest.mark.e2e

DATA = b"policy test image data"
# dave shares alice's project but carries a role the operator forbids downloads to
IDENTITIES = {
    **TOKENS,
    "dave-token": {
        "user_id": "u-dave",
        "project_id": "p-alice",
        "roles": ["member", "no-download"],
    },
}
GLANCE_STYLE = """\
# as in an operator's Glance policy.yaml
"context_is_admin": "role:admin"
"delete_image": "role:admin"
"download_image": "not role:no-download"
"publicize_image": "role:admin"
"""


def _tokens_server(base: Path, *args: str) -> Server:
    base.mkdir(parents=True, exist_ok=True)
    tokens = base / "identities.json"
    tokens.write_text(json.dumps(IDENTITIES))
    return start_server(base, "--auth", "tokens", "--tokens-file", str(tokens), *args)


@pytest.fixture(scope="module")
def policed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("policed")
    policy = base / "policy.yaml"
    policy.write_text(GLANCE_STYLE)
    srv = _tokens_server(base, "--policy-file", str(policy))
    yield srv
    srv.close()


def clients(srv: Server) -> dict[str, Api]:
    return {name: Api(srv.url, f"{name}-token") for name in ("admin", "alice", "bob", "dave")}


def test_glance_style_policy_forbids_exactly_what_it_names(policed: Server) -> None:
    as_ = clients(policed)
    image = as_["alice"].upload(DATA, name=unique("policed"))
    image_id = image["id"]

    # download_image: the no-download role is refused, everyone else who sees it is not
    assert as_["alice"].get(image_id).body == DATA
    assert as_["admin"].get(image_id).body == DATA
    refused = as_["dave"].get(image_id)
    assert refused.status == 403, refused
    assert "download_image" in refused.text
    assert as_["dave"].head(image_id).status == 200  # get_image is still allowed
    assert as_["bob"].get(image_id).status == 404  # not visible: visibility comes first

    # publicize_image: as before, only an admin
    assert as_["alice"].update(image_id, meta(is_public=True)).status == 403
    # delete_image: the owner may no longer delete, an admin may
    assert as_["alice"].delete(image_id).status == 403
    assert as_["alice"].head(image_id).status == 200  # still there
    assert as_["admin"].delete(image_id).status == 200
    assert as_["alice"].head(image_id).status == 404


def test_same_requests_without_a_policy_file(tmp_path: Path) -> None:
    """The control: the very same calls succeed on a server with the defaults."""
    srv = _tokens_server(tmp_path / "plain")
    try:
        as_ = clients(srv)
        image_id = as_["alice"].upload(DATA, name=unique("plain"))["id"]
        assert as_["dave"].get(image_id).body == DATA
        assert as_["alice"].update(image_id, meta(is_public=True)).status == 403
        assert as_["alice"].delete(image_id).status == 200
    finally:
        srv.close()


def test_forbidding_a_rule_to_everyone_in_noauth(tmp_path: Path) -> None:
    """`"!"` refuses even an admin: noauth callers (all admins) can no longer add images."""
    policy = tmp_path / "policy.yaml"
    policy.write_text('"add_image": "!"\n"get_images": "@"\n')
    srv = start_server(tmp_path / "noauth", "--policy-file", str(policy))
    try:
        api = Api(srv.url)
        refused = api.create(meta(name=unique("nope")))
        assert refused.status == 403, refused
        assert api.list().status == 200
        assert api.list().images == []
    finally:
        srv.close()


def test_member_rules(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('"add_member": "role:admin"\n"get_members": "project_id:%(owner)s"\n')
    srv = _tokens_server(tmp_path / "members", "--policy-file", str(policy))
    try:
        as_ = clients(srv)
        image_id = as_["alice"].reserve(name=unique("shared"))["id"]
        path = f"/v1/images/{image_id}/members/p-bob"
        assert as_["alice"].request("PUT", path, body=b"").status == 403
        assert as_["admin"].request("PUT", path, body=b"").status == 204
        assert as_["alice"].members(image_id).status == 200  # owner's project
        assert as_["admin"].members(image_id).status == 403  # the rule names the owner only
    finally:
        srv.close()


def test_policy_defaults_command_prints_a_file_that_works(tmp_path: Path) -> None:
    """`osimage policy defaults` is valid oslo.policy YAML with every Glance rule name."""
    printed = subprocess.run(
        [sys.executable, "-m", "osimage", "policy", "defaults"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rules = yaml.safe_load(printed)
    for name in (
        "context_is_admin", "default", "add_image", "get_image", "get_images", "modify_image",
        "delete_image", "publicize_image", "communitize_image", "download_image",
        "upload_image", "copy_from", "set_image_location", "add_member", "get_member",
        "get_members", "modify_member", "delete_member", "deactivate", "reactivate",
    ):  # fmt: skip
        assert name in rules, name
    assert rules["publicize_image"] == "rule:context_is_admin"
    # used as a policy file, the defaults behave like no policy file at all
    (tmp_path / "defaults.yaml").write_text(printed)
    srv = _tokens_server(tmp_path / "srv", "--policy-file", str(tmp_path / "defaults.yaml"))
    try:
        as_ = clients(srv)
        image_id = as_["alice"].upload(DATA, name=unique("defaults"))["id"]
        assert as_["dave"].get(image_id).body == DATA
        assert as_["alice"].update(image_id, meta(is_public=True)).status == 403
        assert as_["admin"].update(image_id, meta(is_public=True)).status == 200
        assert as_["alice"].delete(image_id).status == 200
    finally:
        srv.close()


def test_a_broken_policy_file_stops_the_server_naming_it(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('"delete_image": "role:admin\n  - [unclosed\n')
    cmd = [sys.executable, "-m", "osimage", "serve", "--port", "0", "--data-dir", str(tmp_path)]
    done = subprocess.run(
        [*cmd, "--policy-file", str(policy)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert str(policy) in done.stderr


def test_an_edited_policy_file_applies_without_a_restart(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('"delete_image": "role:admin"\n')
    srv = _tokens_server(tmp_path / "srv", "--policy-file", str(policy))
    try:
        alice = Api(srv.url, "alice-token")
        image_id = alice.reserve(name=unique("edited"))["id"]
        assert alice.delete(image_id).status == 403
        policy.write_text('"delete_image": ""\n')
        stat = policy.stat()
        os.utime(policy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later mtime
        assert alice.delete(image_id).status == 200
    finally:
        srv.close()
