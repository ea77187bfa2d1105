"""Pure parts of the operations package: route templates, policy defaults, payloads."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from osimage.server.auth import NOAUTH_CONTEXT, Context
from osimage.server.operations.metrics import route_of
from osimage.server.operations.notifications import isotime, redacted
from osimage.server.operations.policy import ACTIONS, DEFAULTS, Policy, defaults_yaml

IMAGE = "9f2c1b7e-3a4d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/images", ("v1", "/v1/images")),
        ("/v1/images/detail", ("v1", "/v1/images/detail")),
        (f"/v1/images/{IMAGE}", ("v1", "/v1/images/{id}")),
        (f"/v1.1/images/{IMAGE}/members/p-bob", ("v1", "/v1/images/{id}/members/{id}")),
        ("/v1/shared-images/p-bob", ("v1", "/v1/shared-images/{id}")),
        (f"/v2/images/{IMAGE}/file", ("v2", "/v2/images/{id}/file")),
        ("/images", ("none", "/images")),
        ("/", ("none", "/")),
        ("/healthcheck", ("none", "/healthcheck")),
        ("/a/b/c/d/e/f/g/h", ("none", "other")),
        ("/%00weird'path", ("none", "/{id}")),
    ],
)
def test_route_labels_are_templates(path: str, expected: tuple[str, str]) -> None:
    assert route_of(path) == expected


def test_every_glance_action_has_a_default() -> None:
    assert {
        "add_image", "get_image", "get_images", "modify_image", "delete_image",
        "publicize_image", "communitize_image", "download_image", "upload_image",
        "copy_from", "set_image_location", "add_member", "get_member", "get_members",
        "modify_member", "delete_member", "deactivate", "reactivate",
        "cache_list", "cache_delete", "cache_image",
    } == ACTIONS  # fmt: skip
    printed = yaml.safe_load(defaults_yaml())
    assert printed == {rule.name: rule.check for rule in DEFAULTS}


def test_defaults_gate_only_publicizing_and_the_cache() -> None:
    policy = Policy()
    member = Context(user_id="u", project_id="p", roles=frozenset({"member"}), is_admin=False)
    admin = Context(user_id="a", project_id="q", roles=frozenset({"admin"}), is_admin=True)
    admins_only = {"publicize_image", "cache_list", "cache_delete", "cache_image"}
    for action in ACTIONS - admins_only:
        assert policy.allowed(member, action, {"owner": "other"}), action
    for action in admins_only:
        assert not policy.allowed(member, action), action
        assert policy.allowed(admin, action), action
        assert policy.allowed(NOAUTH_CONTEXT, action), action


def test_a_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        Policy(tmp_path / "absent.yaml")


def test_glance_style_rules_use_target_and_credentials(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text('"modify_image": "role:admin or project_id:%(owner)s"\n')
    policy = Policy(path)
    owner = Context(user_id="u", project_id="p", roles=frozenset({"member"}), is_admin=False)
    assert policy.allowed(owner, "modify_image", {"owner": "p"})
    assert not policy.allowed(owner, "modify_image", {"owner": "someone-else"})


def test_payload_time_and_redaction() -> None:
    when = datetime(2026, 12, 3, 5, 28, 35, 123456, tzinfo=UTC)
    assert isotime(when) == "2026-12-03T05:28:35Z"
    assert redacted("rabbit://guest:secret@127.0.0.1:5672/") == "rabbit://guest:***@127.0.0.1:5672/"
    assert redacted("kafka://broker:9092") == "kafka://broker:9092"


def test_dead_workers_live_gauges_are_forgotten_but_their_counts_kept(tmp_path: Path) -> None:
    """A worker process that wrote samples and exited: its live gauge goes, its counter stays."""
    import os
    import subprocess
    import sys

    from osimage.server.operations.metrics import forget_dead_workers

    code = (
        "import os\n"
        "from osimage.server.operations.metrics import Metrics\n"
        "m = Metrics(multiprocess_dir=os.environ['PROMETHEUS_MULTIPROC_DIR'])\n"
        "m.transfers.labels('upload').inc()\n"
        "m.uploaded.inc(5)\n"
        "print(os.getpid())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    pid = int(
        subprocess.run(
            [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
        ).stdout
    )
    assert (tmp_path / f"gauge_livesum_{pid}.db").exists()
    assert forget_dead_workers(str(tmp_path)) == [pid]
    assert not (tmp_path / f"gauge_livesum_{pid}.db").exists()
    assert (tmp_path / f"counter_{pid}.db").exists()
    assert forget_dead_workers(str(tmp_path)) == []
