"""The service's settings: one table of rows, each readable as ``--<name>`` or ``OSIMAGE_<NAME>``.

This module is imported by the CLI before the server is, so it uses the standard library only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from osimage.server.auth.registry import KINDS as AUTH_KINDS  # standard library only

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK_HOSTS: Final = frozenset({"localhost", "::1"})
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")


class SettingsError(ValueError):
    """A setting has a bad value; the message names the flag or variable it came from."""


def _text(value: str) -> str:
    return value


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"expected a port number 0-65535, got {value!r}")
    return number


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return number


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError(f"expected a non-negative number of seconds, got {value!r}")
    return number


def _quota(value: str) -> int:
    return int(value)  # negative means unlimited


def _positive_seconds(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"expected a positive number of seconds, got {value!r}")
    return number


_STORAGE_UNITS: Final = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _storage_size(value: str) -> int:
    """Bytes from ``<digits>[B|KB|MB|GB|TB]`` (binary multiples, as Glance reads them)."""
    text = value.strip()
    digits = text.rstrip("BKMGT")
    unit = text[len(digits) :]
    if not digits.isdigit() or unit not in _STORAGE_UNITS:
        raise ValueError(f"expected a size such as 500, 500B, 10MB or 2TB, got {value!r}")
    return int(digits) * _STORAGE_UNITS[unit]


def _path(value: str) -> Path:
    return Path(value).expanduser()


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return value.lower()

    return parse


def _network(value: str) -> Network:
    return ipaddress.ip_network(value.strip(), strict=False)


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class Setting:
    """One row: its name, its default as text (None: computed or unset), and its help."""

    name: str
    default: str | None
    help: str
    parse: Callable[[str], Any] = _text
    multiple: bool = False  # repeatable flag; comma-separated in the environment
    flag: bool = False  # a switch without a value

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def variable(self) -> str:
        return "OSIMAGE_" + self.name.upper()


SETTINGS: Final = (
    Setting("host", "127.0.0.1", "Address to listen on."),
    Setting("port", "9292", "TCP port to listen on (0 picks a free one).", _port),
    Setting(
        "data_dir", "~/.local/share/osimage", "Directory for the embedded database and images."
    ),
    Setting(
        "database",
        None,
        "Metadata database URL: sqlite:///<file> or postgresql://user:password@host/db "
        "(the postgres extra) [default: sqlite+aiosqlite:///<data_dir>/osimage.db].",
    ),
    Setting("store", None, "Where image data lives, as a URL [default: file://<data_dir>/images]."),
    Setting(
        "auth",
        "noauth",
        "How callers are identified: noauth, tokens or keystone.",
        _choice(AUTH_KINDS),
    ),
    Setting("tokens_file", None, "JSON file mapping tokens to identities (with --auth tokens)."),
    Setting("admin_role", "admin", "The role that makes a caller an admin (tokens, keystone)."),
    Setting("keystone_auth_url", None, "Keystone v3 URL, e.g. http://keystone:5000/v3."),
    Setting("keystone_username", None, "The service's own Keystone user."),
    Setting("keystone_password", None, "That user's password (prefer the variable to the flag)."),
    Setting("keystone_project_name", None, "The project the service's user logs in to."),
    Setting("keystone_user_domain_name", "Default", "Domain of the service's user."),
    Setting("keystone_project_domain_name", "Default", "Domain of the service's project."),
    Setting(
        "keystone_application_credential_id",
        None,
        "Log in with this application credential instead of user and password.",
    ),
    Setting("keystone_application_credential_secret", None, "The application credential's secret."),
    Setting(
        "keystone_cache_seconds",
        "60",
        "Seconds a token validation is reused (never past the token's expiry); a revoked "
        "token keeps working this long. 0: ask Keystone on every request.",
        _seconds,
    ),
    Setting("keystone_cache_size", "10000", "Most token validations kept in memory.", _positive),
    Setting(
        "keystone_timeout", "10", "Seconds to wait for Keystone before answering 503.", _seconds
    ),
    Setting("image_size_cap", "1099511627776", "Largest image accepted, in bytes.", _non_negative),
    Setting(
        "property_quota", "128", "Most custom properties per image (negative: unlimited).", _quota
    ),
    Setting("member_quota", "128", "Most members per image (negative: unlimited).", _quota),
    Setting("tag_quota", "128", "Most tags per image, v2 (negative: unlimited).", _quota),
    Setting(
        "user_storage_quota",
        "0",
        "Most image data one project may store: bytes, or a number with a B, KB, MB, GB "
        "or TB suffix (1 KB = 1024 B). 0: unlimited.",
        _storage_size,
    ),
    Setting(
        "delayed_delete",
        "false",
        "DELETE moves an image with stored data to pending_delete; the scrubber removes "
        "the data later.",
        _flag,
        flag=True,
    ),
    Setting(
        "scrub_interval",
        "300",
        "Seconds between runs of the scrubber, which deletes the data of pending_delete images.",
        _positive_seconds,
    ),
    Setting(
        "node_id",
        None,
        "Names this osimage serve instance (all its workers) in the upload leases of a "
        "shared database; unique per host [default: <hostname>:<hash of the data dir>, "
        "the same whatever the port, so a restart kills its own interrupted uploads].",
    ),
    Setting(
        "upload_lease",
        "300",
        "Seconds an upload's lease lasts unrenewed (renewed every third of it); after "
        "that any instance kills the upload as stranded.",
        _positive_seconds,
    ),
    Setting(
        "body_timeout",
        "60",
        "Seconds a request body (an upload) may send nothing; then the request fails with "
        "408, the upload's image is killed and its partial data removed.",
        _positive_seconds,
    ),
    Setting(
        "copy_max",
        "10",
        "Most copy-from transfers one server process runs at once; beyond it a new copy "
        "is refused with 503.",
        _positive,
    ),
    Setting(
        "copy_max_per_project",
        "3",
        "Most copy-from transfers of one project a server process runs at once; beyond it "
        "that project's new copies are refused with 429.",
        _positive,
    ),
    Setting(
        "copy_timeout",
        "3600",
        "Seconds a copy-from transfer may take in all; then its image is killed.",
        _positive_seconds,
    ),
    Setting(
        "copy_min_rate",
        "1024",
        "Bytes per second a copy-from source must average over each 30 s window "
        "(0: no minimum); a slower copy is killed.",
        _non_negative,
    ),
    Setting(
        "property_protection_file",
        None,
        "INI file of role rules per property key (create, read, update, delete); "
        "unset: properties are not protected.",
        _path,
    ),
    Setting(
        "cache_dir",
        None,
        "Directory of this node's image cache (see docs/cache.md); unset: no cache.",
        _path,
    ),
    Setting(
        "cache_size",
        "10GB",
        "Most image data the cache keeps: bytes, or a number with a B, KB, MB, GB or TB "
        "suffix; least recently used entries are evicted past it.",
        _storage_size,
    ),
    Setting(
        "cache_prefetch_interval",
        "300",
        "Seconds between runs of the prefetcher, which caches the queued images (0: never).",
        _seconds,
    ),
    Setting(
        "cache_prune_interval",
        "600",
        "Seconds between runs of the pruner, which drops entries of deleted or changed "
        "images and evicts down to --cache-size (0: never).",
        _seconds,
    ),
    Setting("api_limit_max", "1000", "Largest page a list call returns.", _positive),
    Setting("limit_param_default", "25", "Page size of a list call without limit.", _positive),
    Setting(
        "query_params_max",
        "100",
        "Most query parameters a request may carry; more is a 400.",
        _positive,
    ),
    Setting(
        "list_filters_max",
        "50",
        "Most filters (field and property-<key> filters) one list call may give; more is a 400.",
        _positive,
    ),
    Setting(
        "json_body_max",
        "1048576",
        "Largest JSON request body (member routes), in bytes; larger is a 413.",
        _positive,
    ),
    Setting(
        "json_depth_max",
        "32",
        "Deepest nesting of arrays and objects in a JSON request body; deeper is a 400.",
        _positive,
    ),
    Setting("workers", "1", "Number of server processes.", _positive),
    Setting(
        "max_connections",
        "4096",
        "Most open client connections per server process; more are answered 503 and "
        "closed at once. The open file limit is raised to fit (or this lowered to fit it).",
        _positive,
    ),
    Setting(
        "header_timeout",
        "20",
        "Seconds a client has to send a complete request line and headers, from when it "
        "connects or starts its next request; then the connection is closed (408).",
        _positive_seconds,
    ),
    Setting(
        "keep_alive_timeout",
        "5",
        "Seconds an idle connection is kept open after a response, waiting for the next request.",
        _positive_seconds,
    ),
    Setting(
        "max_header_bytes",
        "65536",
        "Most bytes of request line and headers buffered for one request; more is answered 431.",
        _positive,
    ),
    Setting(
        "allow_source_network",
        None,
        "A network (CIDR) that location and copy-from URLs may point into, though it is "
        "private or loopback. Repeatable.",
        _network,
        multiple=True,
    ),
    Setting(
        "insecure_noauth",
        "false",
        "Allow --auth noauth on an address other than loopback.",
        _flag,
        flag=True,
    ),
    Setting(
        "policy_file",
        None,
        "oslo.policy YAML (or JSON) file of rules with Glance's names (add_image, "
        "delete_image, download_image...); unset: the defaults (osimage policy defaults).",
        _path,
    ),
    Setting(
        "healthcheck_disable_file",
        None,
        "While this file exists, GET /healthcheck answers 503 (drain the node).",
        _path,
    ),
    Setting(
        "healthcheck_cache_seconds",
        "5",
        "Seconds a health check's database and store probe result is reused.",
        _seconds,
    ),
    Setting(
        "healthcheck_timeout",
        "5",
        "Seconds a database or store probe may take before the node counts as unhealthy.",
        _positive_seconds,
    ),
    Setting(
        "metrics_access",
        "loopback",
        "Who may read GET /metrics: off, loopback (clients on this host) or admin (an "
        "admin's token).",
        _choice(("off", "loopback", "admin")),
    ),
    Setting(
        "metrics_cache_seconds",
        "30",
        "Seconds the images-by-status count of /metrics is reused.",
        _seconds,
    ),
    Setting(
        "metrics_render_seconds",
        "1",
        "Seconds a rendered /metrics answer is reused by later scrapes (0: render each).",
        _seconds,
    ),
    Setting(
        "notification_transport_url",
        None,
        "oslo.messaging transport for notifications, e.g. rabbit://user:pass@host:5672/; "
        "unset: no notifications.",
    ),
    Setting("notification_topic", "notifications", "Topic the notifications are sent to."),
    Setting(
        "notification_queue_size",
        "1000",
        "Most notifications waiting to be sent; past that they are dropped (and counted).",
        _positive,
    ),
    Setting("log_level", "info", "Logging threshold.", _choice(LOG_LEVELS)),
)


@dataclass(frozen=True)
class Settings:
    """The parsed settings. Build with `Settings.load`."""

    host: str = "127.0.0.1"
    port: int = 9292
    data_dir: Path = Path("~/.local/share/osimage")
    database: str = field(default="", repr=False)  # a URL may carry a password
    store: str = ""
    auth: str = "noauth"
    tokens_file: Path | None = None
    admin_role: str = "admin"
    keystone_auth_url: str | None = None
    keystone_username: str | None = None
    keystone_password: str | None = field(default=None, repr=False)
    keystone_project_name: str | None = None
    keystone_user_domain_name: str = "Default"
    keystone_project_domain_name: str = "Default"
    keystone_application_credential_id: str | None = None
    keystone_application_credential_secret: str | None = field(default=None, repr=False)
    keystone_cache_seconds: float = 60.0
    keystone_cache_size: int = 10000
    keystone_timeout: float = 10.0
    image_size_cap: int = 1099511627776
    property_quota: int = 128
    member_quota: int = 128
    tag_quota: int = 128
    user_storage_quota: int = 0
    delayed_delete: bool = False
    scrub_interval: float = 300.0
    node_id: str = ""
    upload_lease: float = 300.0
    body_timeout: float = 60.0
    copy_max: int = 10
    copy_max_per_project: int = 3
    copy_timeout: float = 3600.0
    copy_min_rate: int = 1024
    property_protection_file: Path | None = None
    cache_dir: Path | None = None
    cache_size: int = 10 * 1024**3
    cache_prefetch_interval: float = 300.0
    cache_prune_interval: float = 600.0
    api_limit_max: int = 1000
    limit_param_default: int = 25
    query_params_max: int = 100
    list_filters_max: int = 50
    json_body_max: int = 1048576
    json_depth_max: int = 32
    workers: int = 1
    max_connections: int = 4096
    header_timeout: float = 20.0
    keep_alive_timeout: float = 5.0
    max_header_bytes: int = 65536
    allow_source_network: tuple[Network, ...] = ()
    insecure_noauth: bool = False
    policy_file: Path | None = None
    healthcheck_disable_file: Path | None = None
    healthcheck_cache_seconds: float = 5.0
    healthcheck_timeout: float = 5.0
    metrics_access: str = "loopback"
    metrics_cache_seconds: float = 30.0
    metrics_render_seconds: float = 1.0
    notification_transport_url: str | None = field(default=None, repr=False)
    notification_topic: str = "notifications"
    notification_queue_size: int = 1000
    log_level: str = "info"

    @classmethod
    def load(
        cls, flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Resolve every row: flag beats variable beats default. Raises `SettingsError`.

        `flags` maps row names to what the command line gave (None or an empty tuple:
        not given); values may be text or already parsed.
        """
        flags = flags or {}
        environ = environ or {}
        values: dict[str, Any] = {}
        for row in SETTINGS:
            given = flags.get(row.name)
            if given is not None and given != () and not (row.flag and given is False):
                values[row.name] = _parse_given(row, given, row.option)
            elif row.variable in environ:
                values[row.name] = _parse_text(row, environ[row.variable], row.variable)
            elif row.default is not None:
                values[row.name] = _parse_text(row, row.default, "default")
            else:
                values[row.name] = () if row.multiple else None
        data_dir = Path(values["data_dir"]).expanduser()
        values["data_dir"] = data_dir
        if not values["database"]:
            values["database"] = f"sqlite+aiosqlite:///{data_dir / 'osimage.db'}"
        if not values["store"]:
            values["store"] = (data_dir / "images").resolve().as_uri()
        if not values["node_id"]:
            values["node_id"] = default_node_id(data_dir)
        if values["tokens_file"] is not None:
            values["tokens_file"] = Path(values["tokens_file"]).expanduser()
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse combinations that are unsafe or cannot work."""
        if self.auth == "tokens" and self.tokens_file is None:
            raise SettingsError("--auth tokens needs --tokens-file (OSIMAGE_TOKENS_FILE)")
        if self.auth == "keystone":
            self._check_keystone()
        if self.auth == "noauth" and not self.insecure_noauth and not is_loopback(self.host):
            raise SettingsError(
                f"--auth noauth makes every caller an admin; refusing to listen on {self.host!r}"
                " (use a loopback address, another --auth, or --insecure-noauth)"
            )
        if self.limit_param_default > self.api_limit_max:
            raise SettingsError("--limit-param-default must not exceed --api-limit-max")

    def _check_keystone(self) -> None:
        if not self.keystone_auth_url:
            raise SettingsError(
                "--auth keystone needs --keystone-auth-url (OSIMAGE_KEYSTONE_AUTH_URL)"
            )
        if not self.keystone_auth_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"--keystone-auth-url: expected an http(s) URL, got {self.keystone_auth_url!r}"
            )
        if self.keystone_application_credential_id:
            if not self.keystone_application_credential_secret:
                raise SettingsError(
                    "--keystone-application-credential-id needs"
                    " --keystone-application-credential-secret"
                    " (OSIMAGE_KEYSTONE_APPLICATION_CREDENTIAL_SECRET)"
                )
            return
        for name in ("keystone_username", "keystone_password", "keystone_project_name"):
            if not getattr(self, name):
                raise SettingsError(
                    f"--auth keystone needs --{name.replace('_', '-')} (OSIMAGE_{name.upper()})"
                    " or an application credential"
                )

    def environment(self) -> dict[str, str]:
        """These settings as ``OSIMAGE_*`` variables (how worker processes receive them)."""
        env: dict[str, str] = {}
        for row in SETTINGS:
            value = getattr(self, row.name)
            if value is None:
                continue
            if row.multiple:
                env[row.variable] = ",".join(str(item) for item in value)
            elif isinstance(value, bool):
                env[row.variable] = "true" if value else "false"
            else:
                env[row.variable] = str(value)
        return env


def default_node_id(data_dir: Path) -> str:
    """`<hostname>:<12 hex digits naming the data dir>`: stable across restarts and ports."""
    where = str(data_dir.expanduser().resolve())
    return f"{socket.gethostname()}:{hashlib.sha256(where.encode()).hexdigest()[:12]}"


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _parse_text(row: Setting, text: str, source: str) -> Any:
    if row.multiple:
        items = [item for item in text.split(",") if item.strip()]
        return tuple(_parse_one(row, item, source) for item in items)
    return _parse_one(row, text, source)


def _parse_given(row: Setting, given: Any, source: str) -> Any:
    if row.multiple:
        items = given if isinstance(given, list | tuple) else [given]
        return tuple(
            _parse_one(row, item, source) if isinstance(item, str) else item for item in items
        )
    if isinstance(given, str):
        return _parse_one(row, given, source)
    return given


def _parse_one(row: Setting, text: str, source: str) -> Any:
    try:
        return row.parse(text)
    except ValueError as exc:
        raise SettingsError(f"{source}: bad value for {row.name}: {exc}") from None
