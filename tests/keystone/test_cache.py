"""The pieces of keystone auth that need no Keystone: cache, token parsing, settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from osimage.server.auth import Context
from osimage.server.auth.keystone import (
    Refusal,
    ValidationCache,
    cache_ttl,
    context_from_token,
    digest,
)
from osimage.server.settings import KeystoneOptions, Settings, SettingsError

ALICE = Context(user_id="u1", project_id="p1", roles=frozenset({"member"}), is_admin=False)
SERVICE = {
    "OSIMAGE_AUTH": "keystone",
    "OSIMAGE_KEYSTONE_AUTH_URL": "http://127.0.0.1:1/v3",
    "OSIMAGE_KEYSTONE_USERNAME": "image",
    "OSIMAGE_KEYSTONE_PASSWORD": "image-secret",
    "OSIMAGE_KEYSTONE_PROJECT_NAME": "service",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cache_entry_lives_for_its_ttl_only():
    clock = Clock()
    cache = ValidationCache(10, clock=clock)
    cache.put(b"k", ALICE, 5)
    clock.now += 4.9
    assert cache.get(b"k") == ALICE
    clock.now += 0.1
    assert cache.get(b"k") is None
    assert len(cache) == 0


def test_cache_is_bounded_and_evicts_least_recently_used():
    cache = ValidationCache(3, clock=Clock())
    for key in (b"a", b"b", b"c"):
        cache.put(key, ALICE, 60)
    assert cache.get(b"a") == ALICE  # a is now the most recently used
    cache.put(b"d", ALICE, 60)
    assert len(cache) == 3
    assert cache.get(b"b") is None
    assert [cache.get(k) for k in (b"a", b"c", b"d")] == [ALICE, ALICE, ALICE]


def test_cache_keeps_nothing_for_a_non_positive_ttl():
    cache = ValidationCache(3, clock=Clock())
    cache.put(b"k", Refusal("no"), 60)
    cache.put(b"k", ALICE, 0)  # replaces, then drops: no stale outcome survives
    assert cache.get(b"k") is None


def test_digest_is_not_the_token():
    token = "gAAAAABnotarealtoken"
    key = digest(token)
    assert len(key) == 32
    assert token.encode() not in key
    assert digest(token) == key != digest(token + "x")


def test_ttl_never_passes_the_token_expiry():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert cache_ttl(now + timedelta(hours=1), 60, now) == 60
    assert cache_ttl(now + timedelta(seconds=7), 60, now) == 7
    assert cache_ttl(now - timedelta(seconds=1), 60, now) < 0
    assert cache_ttl(None, 60, now) == 60


def keystone_body(**token: object) -> dict[str, object]:
    base: dict[str, object] = {
        "user": {"id": "u1", "name": "alice", "domain": {"id": "default"}},
        "project": {"id": "p1", "name": "p-alice", "domain": {"id": "default"}},
        "roles": [{"id": "r1", "name": "member"}, {"id": "r2", "name": "reader"}],
        "expires_at": "2026-11-27T09:00:00.000000Z",
        "methods": ["password"],
    }
    base.update(token)
    return {"token": base}


def test_context_from_a_project_token():
    context, expires = context_from_token(keystone_body(), "admin")
    assert context == Context(
        user_id="u1", project_id="p1", roles=frozenset({"member", "reader"}), is_admin=False
    )
    assert expires == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("role", ["admin", "Admin", "ADMIN"])
def test_admin_role_is_matched_without_case(role):
    context, _ = context_from_token(keystone_body(roles=[{"id": "r", "name": role}]), "admin")
    assert context.is_admin


def test_admin_role_is_configurable():
    body = keystone_body(roles=[{"id": "r", "name": "admin"}])
    assert not context_from_token(body, "cloud-admin")[0].is_admin
    body = keystone_body(roles=[{"id": "r", "name": "cloud-admin"}])
    assert context_from_token(body, "Cloud-Admin")[0].is_admin


def test_unscoped_or_domain_token_has_no_project():
    body = keystone_body()
    del body["token"]["project"]  # type: ignore[attr-defined]
    del body["token"]["roles"]  # type: ignore[attr-defined]
    context, _ = context_from_token(body, "admin")
    assert context.project_id is None
    assert context.roles == frozenset()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"token": "x"},
        {"token": {"project": {"id": "p"}}},
        keystone_body(user={"name": "no id"}),
        keystone_body(project={"name": "no id"}),
        keystone_body(roles=[{"id": "no name"}]),
        [],
    ],
)
def test_unusable_validation_answer_is_refused(body):
    with pytest.raises(ValueError, match="validation answer"):
        context_from_token(body, "admin")


def test_settings_give_keystone_options_and_hide_secrets():
    settings = Settings.load(
        {"keystone_cache_seconds": "2.5"}, {**SERVICE, "OSIMAGE_ADMIN_ROLE": "cloud-admin"}
    )
    options = KeystoneOptions.from_settings(settings)
    assert options.cache_seconds == 2.5
    assert options.admin_role == "cloud-admin"
    assert options.username == "image"
    assert options.user_domain_name == "Default"
    assert "image-secret" not in repr(settings)
    assert "image-secret" not in repr(options)
    # worker processes receive the settings as variables and must parse them back
    assert Settings.load({}, settings.environment()) == settings


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        ("OSIMAGE_KEYSTONE_AUTH_URL", "--keystone-auth-url"),
        ("OSIMAGE_KEYSTONE_PASSWORD", "--keystone-password"),
        ("OSIMAGE_KEYSTONE_PROJECT_NAME", "--keystone-project-name"),
    ],
)
def test_keystone_auth_needs_url_and_credentials(drop, named):
    environ = {k: v for k, v in SERVICE.items() if k != drop}
    with pytest.raises(SettingsError, match=named):
        Settings.load({}, environ)


def test_an_application_credential_replaces_user_and_password():
    environ = {
        "OSIMAGE_AUTH": "keystone",
        "OSIMAGE_KEYSTONE_AUTH_URL": "http://127.0.0.1:1/v3",
        "OSIMAGE_KEYSTONE_APPLICATION_CREDENTIAL_ID": "ac1",
    }
    with pytest.raises(SettingsError, match="secret"):
        Settings.load({}, environ)
    environ["OSIMAGE_KEYSTONE_APPLICATION_CREDENTIAL_SECRET"] = "s3cret"
    options = KeystoneOptions.from_settings(Settings.load({}, environ))
    assert options.application_credential_id == "ac1"
    assert "s3cret" not in repr(options)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://k:5000/v3", "http://k:5000/v3"),
        ("http://k:5000/v3/", "http://k:5000/v3"),
        ("http://k:5000", "http://k:5000/v3"),
        ("https://k/identity/v3", "https://k/identity/v3"),
    ],
)
def test_identity_url(value, expected):
    assert KeystoneOptions(auth_url=value).identity_url == expected


@pytest.mark.parametrize(
    ("name", "value"),
    [("OSIMAGE_KEYSTONE_CACHE_SECONDS", "-1"), ("OSIMAGE_KEYSTONE_CACHE_SIZE", "0")],
)
def test_bad_cache_setting_names_its_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.load({}, {**SERVICE, name: value})
