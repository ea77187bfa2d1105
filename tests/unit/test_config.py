"""Connection configuration: explicit arguments > OS_* variables > clouds.yaml (+ secure.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from osimage.config import (
    LOCAL_ENDPOINT,
    CloudConfig,
    ConfigException,
    resolve_config,
    versioned_endpoint,
)
from osimage.connection import Connection


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    (path / ".config" / "openstack").mkdir(parents=True)
    return path


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def write_clouds(directory: Path, clouds: dict[str, Any], name: str = "clouds.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump({"clouds": clouds}))
    return path


def resolve(home: Path, cwd: Path, env: dict[str, str] | None = None, **kwargs: Any) -> CloudConfig:
    return resolve_config(environ={"HOME": str(home), **(env or {})}, cwd=cwd, **kwargs)


def test_nothing_configured_means_the_local_server_without_auth(home, cwd):
    config = resolve(home, cwd)
    assert config.auth_type == "none"
    assert config.fixed_endpoint == LOCAL_ENDPOINT + "/v1"
    assert config.origins["endpoint"] == "default"
    assert config.origins["auth_type"] == "default"
    assert config.cloud is None


def test_os_variables_give_a_bare_endpoint_and_token(home, cwd):
    config = resolve(home, cwd, {"OS_ENDPOINT": "http://127.0.0.1:5000/", "OS_TOKEN": "tok"})
    assert config.auth_type == "admin_token"
    assert dict(config.auth) == {"endpoint": "http://127.0.0.1:5000/", "token": "tok"}
    assert config.fixed_endpoint == "http://127.0.0.1:5000/v1"
    assert config.origins["token"] == "OS_TOKEN"
    assert config.origins["auth_type"] == "inferred"


def test_other_clients_variables_are_ignored(home, cwd):
    env = {"OS_IMAGE_API_VERSION": "1", "OS_COMPUTE_API_VERSION": "2.1", "OS_CLOUD_NAME": "x"}
    config = resolve(home, cwd, env)
    assert config.auth_type == "none"
    assert dict(config.auth) == {"endpoint": LOCAL_ENDPOINT}
    assert config.origins["auth_type"] == "default"


def test_glanceclient_variable_names_are_understood(home, cwd):
    env = {"OS_AUTH_TOKEN": "tok", "OS_IMAGE_URL": "http://127.0.0.1:1/v1/"}
    config = resolve(home, cwd, env, auth_type="admin_token")
    assert config.auth["token"] == "tok"
    assert config.fixed_endpoint == "http://127.0.0.1:1/v1"
    assert config.origins["image_endpoint_override"] == "OS_IMAGE_URL"


def test_arguments_beat_variables(home, cwd):
    env = {"OS_ENDPOINT": "http://127.0.0.1:1", "OS_TOKEN": "from-env"}
    config = resolve(home, cwd, env, token="from-arg")
    assert config.auth["token"] == "from-arg"
    assert config.origins["token"] == "argument"
    assert config.auth["endpoint"] == "http://127.0.0.1:1"
    assert config.origins["endpoint"] == "OS_ENDPOINT"


def test_variables_beat_clouds_yaml_and_secure_yaml_is_merged(home, cwd):
    user_dir = home / ".config" / "openstack"
    clouds = write_clouds(
        user_dir,
        {"dev": {"auth_type": "admin_token", "auth": {"endpoint": "http://127.0.0.1:2"},
                 "region_name": "RegionOne"}},
    )  # fmt: skip
    secure = write_clouds(user_dir, {"dev": {"auth": {"token": "secret"}}}, "secure.yaml")
    config = resolve(home, cwd, {"OS_CLOUD": "dev", "OS_REGION_NAME": "RegionTwo"})
    assert config.cloud == "dev"
    assert config.auth_type == "admin_token"
    assert config.auth["token"] == "secret"
    assert str(secure) in config.origins["token"]
    assert str(clouds) in config.origins["endpoint"]
    assert config.region_name == "RegionTwo"
    assert config.origins["region_name"] == "OS_REGION_NAME"
    assert config.files == (str(clouds), str(secure))


def test_cloud_argument_beats_os_cloud(home, cwd):
    write_clouds(
        home / ".config" / "openstack",
        {
            "a": {"auth_type": "none", "auth": {"endpoint": "http://127.0.0.1:3"}},
            "b": {"auth_type": "none", "auth": {"endpoint": "http://127.0.0.1:4"}},
        },
    )
    config = resolve(home, cwd, {"OS_CLOUD": "a"}, cloud="b")
    assert config.cloud == "b"
    assert config.fixed_endpoint == "http://127.0.0.1:4/v1"


def test_search_path_order_cwd_then_user_dir(home, cwd):
    write_clouds(home / ".config" / "openstack", {"x": {"auth": {"endpoint": "http://h:1"}}})
    write_clouds(cwd, {"x": {"auth": {"endpoint": "http://h:2"}}})
    assert resolve(home, cwd, cloud="x").auth["endpoint"] == "http://h:2"


def test_xdg_config_home_and_explicit_file(home, cwd, tmp_path):
    xdg = tmp_path / "xdg"
    write_clouds(xdg / "openstack", {"x": {"auth": {"endpoint": "http://h:5"}}})
    env = {"XDG_CONFIG_HOME": str(xdg)}
    assert resolve(home, cwd, env, cloud="x").auth["endpoint"] == "http://h:5"
    other = write_clouds(tmp_path / "elsewhere", {"x": {"auth": {"endpoint": "http://h:6"}}})
    env["OS_CLIENT_CONFIG_FILE"] = str(other)
    assert resolve(home, cwd, env, cloud="x").auth["endpoint"] == "http://h:6"


def test_image_endpoint_override_in_clouds_yaml(home, cwd):
    write_clouds(
        home / ".config" / "openstack",
        {"x": {"auth_type": "admin_token", "auth": {"token": "t"},
               "image_endpoint_override": "http://127.0.0.1:7/"}},
    )  # fmt: skip
    config = resolve(home, cwd, cloud="x")
    assert config.fixed_endpoint == "http://127.0.0.1:7/v1"
    session = Connection(config=config).session
    assert session.get_auth_headers() == {"X-Auth-Token": "t"}


def test_unknown_cloud_is_a_clear_error(home, cwd):
    with pytest.raises(ConfigException, match="cloud 'ghost' \\(from OS_CLOUD\\) is not defined"):
        resolve(home, cwd, {"OS_CLOUD": "ghost"})
    write_clouds(cwd, {"real": {}})
    with pytest.raises(ConfigException, match=r"clouds\.yaml"):
        resolve(home, cwd, cloud="ghost")


def test_clouds_yaml_is_ignored_unless_a_cloud_is_named(home, cwd):
    write_clouds(cwd, {"x": {"auth_type": "admin_token", "auth": {"token": "t"}}})
    assert resolve(home, cwd).auth_type == "none"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"auth_url": "http://k/v3", "username": "u", "password": "p"}, "password"),
        ({"auth_url": "http://k/v3", "token": "t"}, "token"),
        (
            {"auth_url": "http://k/v3", "application_credential_id": "i",
             "application_credential_secret": "s"},
            "v3applicationcredential",
        ),
        ({"auth_url": "http://k", "username": "u", "password": "p",
          "identity_api_version": "3"}, "v3password"),
        ({"auth_url": "http://k", "token": "t", "identity_api_version": "2.0"}, "v2token"),
        ({"token": "t", "endpoint": "http://h"}, "admin_token"),
        ({"endpoint": "http://h"}, "none"),
    ],
)  # fmt: skip
def test_auth_type_is_inferred_from_what_is_given(home, cwd, settings, expected):
    assert resolve(home, cwd, **settings).auth_type == expected


def test_a_token_given_higher_up_overrides_a_lower_auth_type(home, cwd):
    write_clouds(
        cwd,
        {"k": {"auth_type": "password", "auth": {"auth_url": "http://k/v3", "username": "u"}}},
    )
    assert resolve(home, cwd, cloud="k").auth_type == "password"
    config = resolve(home, cwd, cloud="k", token="t", endpoint="http://127.0.0.1:8")
    assert config.auth_type == "token"  # auth_url is still there: keystone token auth
    config = resolve(home, cwd, {"OS_PASSWORD": "p"}, cloud="k")
    assert config.auth_type == "password"  # a password from the environment keeps it
    assert config.origins["password"] == "OS_PASSWORD"


def test_describe_auth_names_sources_and_hides_secrets(home, cwd):
    config = resolve(
        home, cwd, {"OS_TOKEN": "very-secret"}, endpoint="http://127.0.0.1:9", password="pw!"
    )
    text = config.describe_auth()
    assert "very-secret" not in text
    assert "pw!" not in text
    assert "token from OS_TOKEN" in text
    assert "endpoint http://127.0.0.1:9 from argument" in text
    assert "very-secret" not in repr(config)
    labelled = config.describe_auth(lambda key: f"--os-{key}")
    assert "endpoint http://127.0.0.1:9 from --os-endpoint" in labelled


def test_tls_settings(home, cwd):
    assert resolve(home, cwd, {"OS_INSECURE": "true"}).verify is False
    assert resolve(home, cwd, {"OS_INSECURE": "Y"}).verify is False  # the codec's words
    assert resolve(home, cwd, {"OS_INSECURE": "off"}).verify is True
    assert resolve(home, cwd, {"OS_CACERT": "/ca.pem"}).verify == "/ca.pem"
    with pytest.raises(ConfigException, match=r"OS_INSECURE.*'maybe'"):
        resolve(home, cwd, {"OS_INSECURE": "maybe"})
    config = resolve(home, cwd, cert="/c.pem", key="/k.pem")
    assert config.cert == ("/c.pem", "/k.pem")


def test_incomplete_auth_says_what_to_set(home, cwd):
    config = resolve(
        home, cwd, auth_type="v3password", username="u", password="p", user_domain_name="d"
    )
    with pytest.raises(ConfigException, match="auth_url \\(OS_AUTH_URL\\)"):
        Connection(config=config)
    with pytest.raises(ConfigException, match="unknown auth_type 'bogus'"):
        Connection(config=resolve(home, cwd, auth_type="bogus"))


def test_anonymous_connections_send_no_token(home, cwd):
    conn = Connection(config=resolve(home, cwd, endpoint="http://127.0.0.1:1"))
    assert conn.session.get_auth_headers() == {}
    assert conn.image_endpoint == "http://127.0.0.1:1/v1"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://h:9292", "http://h:9292/v1"),
        ("http://h:9292/", "http://h:9292/v1"),
        ("http://h:9292/v1/", "http://h:9292/v1"),
        ("http://h/image/v1.0", "http://h/image/v1.0"),
        ("http://h/image/v2", "http://h/image/v1"),
        ("http://h/image", "http://h/image/v1"),
    ],
)
def test_versioned_endpoint(given, expected):
    assert versioned_endpoint(given) == expected
