"""Connection settings: explicit arguments > ``OS_*`` variables > ``clouds.yaml``.

`resolve_config` reads the environment and the config files once and returns a frozen
`CloudConfig` that remembers where every value came from. This is the only SDK module
that reads ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from osimage.exceptions import SDKException

LOCAL_ENDPOINT: Final = "http://127.0.0.1:9292"
"""Where a Connection with no configuration at all looks: `osimage serve`'s default."""

_TOP_LEVEL: Final = frozenset(
    {
        "auth_type",
        "region_name",
        "interface",
        "cacert",
        "cert",
        "key",
        "insecure",
        "verify",
        "image_endpoint_override",
        "identity_api_version",
        "api_timeout",
    }
)
_SECRETS: Final = frozenset(
    {"password", "token", "application_credential_secret", "passcode", "client_secret"}
)
# Variables whose name does not follow OS_<setting>; anything else OS_FOO sets `foo`.
_ENV_ALIASES: Final = {
    "OS_AUTH_TOKEN": "token",
    "OS_URL": "endpoint",
    "OS_IMAGE_URL": "image_endpoint_override",
    "OS_ENDPOINT_TYPE": "interface",
    "OS_TENANT_NAME": "project_name",
    "OS_TENANT_ID": "project_id",
}
_ENV_IGNORED: Final = frozenset(
    {"OS_CLOUD", "OS_CLIENT_CONFIG_FILE", "OS_CLIENT_SECURE_FILE", "OS_CLOUD_NAME"}
)
_ALIASES: Final = {"tenant_name": "project_name", "tenant_id": "project_id"}


class ConfigException(SDKException):
    """The configuration is incomplete or contradictory; the message says what to set."""


@dataclass(frozen=True)
class CloudConfig:
    """Resolved settings of one connection, and where each came from.

    `auth` holds the auth plugin's options (secrets included, so it is left out of the
    repr); `origins` maps each setting name (``auth_type``, ``token``, ``endpoint`` ...)
    to a human description of its source: ``argument``, ``OS_TOKEN``, ``clouds.yaml
    <path> (cloud 'x')``, ``inferred`` or ``default``.
    """

    cloud: str | None
    auth_type: str
    auth: Mapping[str, str] = field(repr=False)
    image_endpoint_override: str | None
    region_name: str | None
    interface: str
    verify: bool | str
    cert: str | tuple[str, str] | None
    timeout: float | None
    origins: Mapping[str, str]
    files: tuple[str, ...] = ()

    @property
    def fixed_endpoint(self) -> str | None:
        """The image endpoint known without a service catalog, normalised to ``.../v1``."""
        url = self.image_endpoint_override
        if url is None and self.auth_type in {"none", "admin_token"}:
            url = self.auth.get("endpoint")
        return versioned_endpoint(url) if url else None

    def describe_auth(self, argument_label: Callable[[str], str] | None = None) -> str:
        """One line naming the credentials in use and their sources, never a secret.

        `argument_label(key)` names the source of a value given as an argument (the CLI
        passes its option names); by default it is ``argument``.
        """

        def origin(key: str, default: str = "unknown") -> str:
            found = self.origins.get(key, default)
            if found == "argument" and argument_label is not None:
                return argument_label(key)
            return found

        parts = [f"auth_type {self.auth_type} ({origin('auth_type', 'default')})"]
        if self.cloud:
            parts.append(f"cloud '{self.cloud}' ({origin('cloud', 'argument')})")
        for key in sorted(self.auth):
            if key in _SECRETS:
                parts.append(f"{key} from {origin(key)}")
            else:
                parts.append(f"{key} {self.auth[key]} from {origin(key)}")
        return ", ".join(parts)


def versioned_endpoint(url: str) -> str:
    """An image endpoint ending in ``/v1``: ``http://h:9292`` and ``http://h:9292/v1/`` agree."""
    base = url.rstrip("/")
    last = base.rsplit("/", 1)[-1]
    if last in {"v1", "v1.0", "v1.1"}:
        return base
    if last.startswith("v2"):
        base = base.rsplit("/", 1)[0]
    return base + "/v1"


def config_dirs(environ: Mapping[str, str], cwd: Path) -> list[Path]:
    """Where clouds.yaml and secure.yaml are looked for, first match winning."""
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    user = Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "openstack"
    return [cwd, user, Path("/etc/openstack")]


def _find_file(
    environ: Mapping[str, str], cwd: Path, variable: str, names: tuple[str, ...]
) -> Path | None:
    explicit = environ.get(variable)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigException(f"{variable} names {path}, which is not a file")
        return path
    for directory in config_dirs(environ, cwd):
        for name in names:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        with path.open(encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigException(f"cannot read {path}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigException(f"{path}: expected a mapping at the top level")
    return data


@dataclass
class _Layer:
    """Settings from one source, flattened: auth options and top-level settings side by side."""

    values: dict[str, str] = field(default_factory=dict)
    auth_keys: set[str] = field(default_factory=set)
    origins: dict[str, str] = field(default_factory=dict)

    def put(self, key: str, value: object, origin: str, *, auth: bool | None = None) -> None:
        if value is None:
            return
        key = _ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
        self.values[key] = value if isinstance(value, str) else _scalar(key, value, origin)
        if auth if auth is not None else key not in _TOP_LEVEL:
            self.auth_keys.add(key)
        self.origins[key] = origin


def _scalar(key: str, value: object, origin: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise ConfigException(f"{key} in {origin}: expected a single value, got {value!r}")


def _cloud_layer(
    name: str, clouds_file: Path | None, secure_file: Path | None, origin_of_name: str
) -> _Layer:
    layer = _Layer()
    found = False
    for path in (clouds_file, secure_file):
        if path is None:
            continue
        clouds = _read_yaml(path).get("clouds") or {}
        entry = clouds.get(name) if isinstance(clouds, dict) else None
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise ConfigException(f"{path}: cloud '{name}' is not a mapping")
        found = True
        origin = f"{path} (cloud '{name}')"
        for key, value in entry.items():
            if key == "auth":
                if not isinstance(value, dict):
                    raise ConfigException(f"{path}: clouds.{name}.auth is not a mapping")
                for auth_key, auth_value in value.items():
                    layer.put(str(auth_key), auth_value, origin, auth=True)
            elif key in _TOP_LEVEL or key in {"endpoint", "token"}:
                layer.put(str(key), value, origin)
    if not found:
        where = str(clouds_file) if clouds_file else "no clouds.yaml was found"
        raise ConfigException(
            f"cloud '{name}' (from {origin_of_name}) is not defined: {where}; add it under "
            "'clouds:' in clouds.yaml, or unset OS_CLOUD"
        )
    return layer


def _env_layer(environ: Mapping[str, str]) -> _Layer:
    layer = _Layer()
    for variable, value in environ.items():
        if not variable.startswith("OS_") or variable in _ENV_IGNORED or value == "":
            continue
        key = _ENV_ALIASES.get(variable, variable[3:].lower())
        if key.endswith("_api_version") and key not in _TOP_LEVEL:
            continue  # OS_COMPUTE_API_VERSION & co. belong to other clients
        layer.put(key, value, variable)
    return layer


def _infer_auth_type(values: Mapping[str, str]) -> str:
    if values.get("auth_url"):
        if values.get("application_credential_secret"):
            return "v3applicationcredential"
        return "token" if values.get("token") else "password"
    if values.get("token"):
        return "admin_token"
    return "none"


def _versioned_plugin(auth_type: str, identity_api_version: str | None) -> str:
    if not identity_api_version or auth_type not in {"password", "token"}:
        return auth_type
    major = identity_api_version.strip().lstrip("v").split(".")[0]
    return f"v{major}{auth_type}" if major in {"2", "3"} else auth_type


def _flag(key: str, value: str, origin: str) -> bool:
    from osimage.wire import strict_flag  # the codec's words; loaded only for these flags

    found = strict_flag(value)
    if found is not None:
        return found
    raise ConfigException(f"{key} from {origin}: expected true or false, got {value!r}")


def resolve_config(
    cloud: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    auth: Mapping[str, Any] | None = None,
    **settings: Any,
) -> CloudConfig:
    """Resolve settings: explicit arguments > ``OS_*`` variables > ``clouds.yaml``.

    `settings` take top-level names (``auth_type``, ``region_name``, ``interface``,
    ``image_endpoint_override``, ``insecure``, ``cacert``, ...) and auth options
    (``auth_url``, ``username``, ``token``, ``endpoint`` ...); `auth` is an alternative
    mapping of auth options. A cloud is read from clouds.yaml (secure.yaml merged over
    it) only when named by `cloud` or ``OS_CLOUD``. With nothing configured the result
    points at ``http://127.0.0.1:9292`` with no auth. `environ` and `cwd` default to the
    process's. Raises `ConfigException` with a message saying what to set.
    """
    env = os.environ if environ is None else environ
    here = Path.cwd() if cwd is None else cwd

    arguments = _Layer()
    for key, value in (auth or {}).items():
        arguments.put(key, value, "argument", auth=True)
    for key, value in settings.items():
        arguments.put(key, value, "argument")
    environment = _env_layer(env)

    cloud_origin = "argument" if cloud else "OS_CLOUD"
    cloud_name = cloud or env.get("OS_CLOUD") or None
    layers = [arguments, environment]
    files: list[str] = []
    if cloud_name:
        clouds_file = _find_file(env, here, "OS_CLIENT_CONFIG_FILE", ("clouds.yaml", "clouds.yml"))
        secure_file = _find_file(env, here, "OS_CLIENT_SECURE_FILE", ("secure.yaml", "secure.yml"))
        files = [str(p) for p in (clouds_file, secure_file) if p is not None]
        layers.append(_cloud_layer(cloud_name, clouds_file, secure_file, cloud_origin))

    values: dict[str, str] = {}
    origins: dict[str, str] = {}
    auth_keys: set[str] = set()
    for layer in reversed(layers):  # lowest precedence first; later layers overwrite
        values.update(layer.values)
        origins.update(layer.origins)
        auth_keys |= layer.auth_keys
    if cloud_name:
        origins["cloud"] = cloud_origin

    # An explicit auth_type holds unless a higher layer brings its own token.
    auth_type_layer = next((i for i, lay in enumerate(layers) if "auth_type" in lay.values), None)
    token_layer = next((i for i, lay in enumerate(layers) if "token" in lay.values), None)
    if auth_type_layer is not None and not (
        token_layer is not None and token_layer < auth_type_layer
    ):
        auth_type = values["auth_type"]
    else:
        auth_type = _infer_auth_type(values)
        origins["auth_type"] = "inferred" if auth_keys else "default"
    auth_type = _versioned_plugin(auth_type, values.get("identity_api_version"))

    auth_values = {key: values[key] for key in sorted(auth_keys)}
    if (
        auth_type == "none"
        and "endpoint" not in auth_values
        and ("image_endpoint_override" not in values)
    ):
        auth_values["endpoint"] = LOCAL_ENDPOINT
        origins["endpoint"] = "default"

    verify: bool | str = True
    if "cacert" in values:
        verify = values["cacert"]
    if "verify" in values:
        verify = _flag("verify", values["verify"], origins["verify"]) and verify
    if "insecure" in values and _flag("insecure", values["insecure"], origins["insecure"]):
        verify = False
    cert: str | tuple[str, str] | None = values.get("cert")
    if "cert" in values and "key" in values:
        cert = (values["cert"], values["key"])
    timeout: float | None = None
    if "api_timeout" in values:
        try:
            timeout = float(values["api_timeout"])
        except ValueError:
            raise ConfigException(
                f"api_timeout from {origins['api_timeout']}: expected seconds, "
                f"got {values['api_timeout']!r}"
            ) from None

    return CloudConfig(
        cloud=cloud_name,
        auth_type=auth_type,
        auth=MappingProxyType(auth_values),
        image_endpoint_override=values.get("image_endpoint_override"),
        region_name=values.get("region_name"),
        interface=values.get("interface", "public"),
        verify=verify,
        cert=cert,
        timeout=timeout,
        origins=MappingProxyType(origins),
        files=tuple(files),
    )
