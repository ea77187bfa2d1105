"""The settings table: precedence, error messages, and that every row is documented."""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from osimage.server.settings import SETTINGS, Limits, Settings, SettingsError
from osimage.server.stores.registry import open_store
from osimage.server.stores.swift import SwiftStore

DOCS = Path(__file__).parents[2] / "docs" / "server.md"


def test_flag_beats_environment_beats_default(tmp_path: Path) -> None:
    env = {"OSIMAGE_PORT": "1234", "OSIMAGE_MEMBER_QUOTA": "7", "OSIMAGE_DATA_DIR": str(tmp_path)}
    settings = Settings.load({"port": "4321"}, env)
    assert settings.port == 4321
    assert settings.member_quota == 7
    assert settings.property_quota == 128
    assert settings.database == f"sqlite+aiosqlite:///{tmp_path / 'osimage.db'}"
    assert settings.store == (tmp_path / "images").as_uri()


def test_repeatable_networks_from_flags_and_environment() -> None:
    from_env = Settings.load({}, {"OSIMAGE_ALLOW_SOURCE_NETWORK": "10.0.0.0/8, 192.168.1.0/24"})
    assert from_env.allow_source_network == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.0/24"),
    )
    from_flags = Settings.load({"allow_source_network": ("::1/128",)}, {})
    assert from_flags.allow_source_network == (ipaddress.ip_network("::1/128"),)
    assert Settings.load({}, from_flags.environment()) == from_flags


@pytest.mark.parametrize(
    ("flags", "env", "names"),
    [
        ({"port": "http"}, {}, "--port"),
        ({}, {"OSIMAGE_IMAGE_SIZE_CAP": "-1"}, "OSIMAGE_IMAGE_SIZE_CAP"),
        ({}, {"OSIMAGE_AUTH": "kerberos"}, "OSIMAGE_AUTH"),
        ({"allow_source_network": ("not-a-net",)}, {}, "--allow-source-network"),
    ],
)
def test_bad_values_name_their_source(
    flags: dict[str, object], env: dict[str, str], names: str
) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.load(flags, env)


def test_noauth_refuses_a_public_address_unless_told() -> None:
    with pytest.raises(SettingsError, match="insecure-noauth"):
        Settings.load({"host": "0.0.0.0"}, {})
    assert Settings.load({"host": "0.0.0.0", "insecure_noauth": True}, {}).host == "0.0.0.0"
    assert Settings.load({"host": "::1"}, {}).host == "::1"
    with pytest.raises(SettingsError, match="tokens-file"):
        Settings.load({"auth": "tokens"}, {})


def test_every_setting_is_in_the_docs_and_in_serve_help() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    help_text = subprocess.run(
        [sys.executable, "-m", "osimage", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    squashed = "".join(help_text.split())  # click wraps long words across lines
    for row in SETTINGS:
        assert f"`{row.option}`" in docs, row.name
        assert f"`{row.variable}`" in docs, row.name
        assert row.option in help_text, row.name
        assert row.variable in squashed, row.name


def test_serve_refuses_a_bad_setting_without_a_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "osimage", "serve", "--data-dir", str(tmp_path), "--port", "x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "--port" in done.stderr
    assert "Traceback" not in done.stderr


def test_settings_and_their_groups_take_each_default_from_its_row() -> None:
    assert [item.name for item in fields(Settings)] == [row.name for row in SETTINGS]
    loaded = Settings.load({"keystone_auth_url": "http://127.0.0.1:5000/v3"}, {})
    for group in (
        loaded.limits,
        loaded.keystone,
        loaded.cache,
        loaded.healthcheck,
        loaded.metrics,
        loaded.notifications,
    ):
        for item in fields(group):
            row = item.metadata["row"]
            assert getattr(group, item.name) == getattr(loaded, row), row
            if item.default is not MISSING:  # the group's own default is the row's
                assert item.default == getattr(loaded, row), row


def test_groups_carry_what_was_set() -> None:
    settings = Settings.load(
        {"member_quota": "7", "keystone_cache_seconds": "2.5"},
        {"OSIMAGE_KEYSTONE_AUTH_URL": "http://127.0.0.1:5000", "OSIMAGE_CACHE_SIZE": "1MB"},
    )
    assert settings.limits == Limits(member_quota=7)
    assert settings.keystone.cache_seconds == 2.5
    assert settings.keystone.identity_url == "http://127.0.0.1:5000/v3"
    assert settings.cache.size == 1024 * 1024


def test_store_options_are_settings_and_the_store_url_wins() -> None:
    settings = Settings.load(
        {"store": "swift://images?segment_size=7000", "swift_user": "u"},
        {
            "OSIMAGE_SWIFT_AUTH_URL": "http://127.0.0.1:1/auth/v1.0",
            "OSIMAGE_SWIFT_KEY": "secret",
            "OSIMAGE_SWIFT_SEGMENT_SIZE": "5000",
            "OSIMAGE_SWIFT_SWEEP_AFTER": "60",
        },
    )
    assert "secret" not in repr(settings)
    store = open_store(settings.store, settings.store_options)
    try:
        assert isinstance(store, SwiftStore)
        config = store.config
        assert (config.user, config.key, config.segment_size, config.sweep_after) == (
            "u",
            "secret",
            7000,
            60,
        )
    finally:
        asyncio.run(store.aclose())
    with pytest.raises(SettingsError, match="OSIMAGE_S3_PART_SIZE"):
        Settings.load({}, {"OSIMAGE_S3_PART_SIZE": "1024"})
