"""Request authentication: the tokens file, token lookup, and the noauth context."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from osimage.server.auth import Context, Unauthorized, load_tokens, open_authenticator
from tests.support.server import TOKENS, tokens_file

pytestmark = pytest.mark.anyio


def write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.fixture
def auth(tmp_path):
    return open_authenticator("tokens", tokens_file=tokens_file(tmp_path))


async def test_noauth_is_admin_without_project():
    ctx = await open_authenticator("noauth", tokens_file=None).authenticate({})
    assert ctx == Context(user_id=None, project_id=None, roles=frozenset({"admin"}), is_admin=True)
    assert ctx.owner_id is None


async def test_noauth_ignores_any_token():
    ctx = await open_authenticator("noauth", tokens_file=None).authenticate(
        {"X-Auth-Token": "whatever"}
    )
    assert ctx.is_admin


async def test_known_token_gives_its_identity(auth):
    ctx = await auth.authenticate({"X-Auth-Token": "alice-token"})
    assert ctx == Context(
        user_id="u-alice", project_id="p-alice", roles=frozenset({"member"}), is_admin=False
    )
    assert ctx.owner_id == "p-alice"


async def test_admin_role_makes_admin(auth):
    ctx = await auth.authenticate({"x-auth-token": "admin-token"})
    assert ctx.is_admin
    assert ctx.project_id == "p-admin"


async def test_project_may_be_null(auth):
    ctx = await auth.authenticate({"X-Auth-Token": "noproject-token"})
    assert ctx.project_id is None
    assert ctx.owner_id is None
    assert ctx.user_id == "u-nobody"


@pytest.mark.parametrize("name", ["X-Auth-Token", "x-auth-token", "X-AUTH-TOKEN", "x-Auth-token"])
async def test_header_name_is_case_insensitive(auth, name):
    ctx = await auth.authenticate({"Content-Type": "application/octet-stream", name: "bob-token"})
    assert ctx.user_id == "u-bob"


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-Auth-Token": ""}, {"X-Auth-Token": "nobody-token"}, {"X-Auth-Tokens": "bob-token"}],
)
async def test_missing_or_unknown_token_is_unauthorized(auth, headers):
    with pytest.raises(Unauthorized) as raised:
        await auth.authenticate(headers)
    for value in headers.values():
        if value:
            assert value not in str(raised.value)


async def test_unknown_token_message_does_not_echo_it(auth):
    secret = "s3cr3t-value-that-must-not-leak"
    with pytest.raises(Unauthorized) as raised:
        await auth.authenticate({"X-Auth-Token": secret})
    assert secret not in str(raised.value)
    assert secret not in repr(raised.value)


async def test_percent_encoded_token_is_decoded(tmp_path):
    # python-glanceclient quotes token values keeping only `=`, `+` and `/` intact.
    token = "gAAAA:b/c+d=e%f&g?"
    auth = open_authenticator(
        "tokens",
        tokens_file=write(tmp_path, {token: {"user_id": "u", "roles": ["member"]}}),
    )
    encoded = quote(token, safe="=+/")
    assert encoded != token
    assert (await auth.authenticate({"X-Auth-Token": encoded})).user_id == "u"


async def test_raw_token_with_percent_still_matches(tmp_path):
    # Queens-era clients send the token verbatim; `%41` must not be decoded to `A` first.
    auth = open_authenticator(
        "tokens",
        tokens_file=write(tmp_path, {"a%41": {"user_id": "raw"}, "aA": {"user_id": "decoded"}}),
    )
    assert (await auth.authenticate({"X-Auth-Token": "a%41"})).user_id == "raw"
    assert (await auth.authenticate({"X-Auth-Token": "a%2541"})).user_id == "raw"
    assert (await auth.authenticate({"X-Auth-Token": "aA"})).user_id == "decoded"


@pytest.mark.parametrize(
    ("role", "admin_role", "is_admin"),
    [
        ("admin", "admin", True),
        ("Admin", "admin", True),
        ("ADMIN", "Admin", True),
        ("cloud-admin", "cloud-admin", True),
        ("admin", "cloud-admin", False),
        ("administrator", "admin", False),
        ("member", "admin", False),
    ],
)
def test_admin_role_compare_is_case_insensitive(tmp_path, role, admin_role, is_admin):
    path = write(tmp_path, {"t": {"user_id": "u", "project_id": "p", "roles": [role, "reader"]}})
    ctx = load_tokens(path, admin_role=admin_role)["t"]
    assert ctx.is_admin is is_admin
    assert ctx.roles == frozenset({role, "reader"})


def test_the_harness_tokens_load(tmp_path):
    contexts = load_tokens(tokens_file(tmp_path))
    assert set(contexts) == set(TOKENS)
    assert [t for t, c in contexts.items() if c.is_admin] == ["admin-token"]


def test_missing_keys_default_to_null_and_no_roles(tmp_path):
    ctx = load_tokens(write(tmp_path, {"t": {}}))["t"]
    assert ctx == Context(user_id=None, project_id=None, roles=frozenset(), is_admin=False)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ([], "expected a JSON object"),
        ({"t": "u-alice"}, "entry #1: expected an object"),
        ({"ok": {}, "t": {"user_id": "u", "project": "p"}}, "entry #2: unknown key 'project'"),
        ({"t": {"user_id": 7}}, "entry #1: user_id: expected a non-empty string or null, got 7"),
        ({"t": {"project_id": ""}}, "entry #1: project_id: expected a non-empty string"),
        ({"t": {"roles": "admin"}}, "entry #1: roles: expected a list of non-empty strings"),
        ({"t": {"roles": ["admin", 1]}}, "entry #1: roles: expected a list"),
        ({"t": {"roles": [""]}}, "entry #1: roles: expected a list"),
        ({"": {}}, "entry #1: a token must be non-empty"),
        ({"two words": {}}, "entry #1: a token must be non-empty printable ASCII"),
        ({"tab\there": {}}, "entry #1: a token must be"),
        ({"jeton-é": {}}, "entry #1: a token must be"),
    ],
)
def test_bad_tokens_file_names_file_and_entry(tmp_path, content, expected):
    path = write(tmp_path, content)
    with pytest.raises(ValueError, match="tokens file") as raised:
        open_authenticator("tokens", tokens_file=path)
    message = str(raised.value)
    assert str(path) in message
    assert expected in message


def test_bad_entry_error_does_not_show_the_token(tmp_path):
    path = write(tmp_path, {"very-secret-token": {"user_id": 5}})
    with pytest.raises(ValueError, match="entry #1") as raised:
        load_tokens(path)
    assert "very-secret-token" not in str(raised.value)


def test_missing_tokens_file(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(ValueError, match="cannot read it") as raised:
        open_authenticator("tokens", tokens_file=path)
    assert str(path) in str(raised.value)


def test_tokens_mode_needs_a_file():
    with pytest.raises(ValueError, match="needs a tokens file"):
        open_authenticator("tokens", tokens_file=None)


def test_keystone_needs_the_settings():
    with pytest.raises(ValueError, match="keystone' needs the server settings"):
        open_authenticator("keystone", tokens_file=None)


def test_unknown_kind_lists_the_choices():
    with pytest.raises(ValueError, match="noauth, tokens, keystone, got 'ldap'"):
        open_authenticator("ldap", tokens_file=None)


async def test_aclose_is_harmless(auth):
    await auth.aclose()
    await open_authenticator("noauth", tokens_file=None).aclose()
