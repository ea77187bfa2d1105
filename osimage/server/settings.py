"""The service's settings: one table of rows, each readable as ``--<name>`` or ``OSIMAGE_<NAME>``.

Each row holds its default; `Settings` holds the parsed values and hands components
groups of them (`Limits`, `KeystoneOptions`, `CacheOptions`..., `store_options`) whose
fields name their rows. This module is imported by the CLI before the server is, so it
uses the standard library (and the SDK's `wire` codec) only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

from osimage.wire import strict_flag

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

from osimage.server.auth.registry import KINDS as AUTH_KINDS  # standard library only

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK_HOSTS: Final = frozenset({"localhost", "::1"})
LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
HTTP_IMPLEMENTATIONS: Final = ("h11", "httptools")
S3_MIN_PART_SIZE: Final = 5 * 1024**2  # S3's smallest part but the last


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


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise ValueError(f"expected an integer >= {minimum}, got {value!r}")
        return number

    return parse


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
    flag = strict_flag(value)
    if flag is not None:
        return flag
    if not value.strip():
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
        "upload_min_rate",
        "1024",
        "Bytes per second an upload must average over each --body-timeout window of waiting "
        "for its data (0: no minimum); a slower upload fails as a stalled one does, with 408.",
        _non_negative,
    ),
    Setting(
        "stage_ttl",
        "86400",
        "Seconds v2 data staged for import may wait unimported (its image unchanged); then "
        "the data is removed and the image is queued again (0: staged data waits forever).",
        _seconds,
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
        "http",
        "httptools",
        "The HTTP/1.1 implementation: httptools (llhttp; about a quarter less CPU per "
        "request in all) or h11 (pure Python); both with the same limits and answers.",
        _choice(HTTP_IMPLEMENTATIONS),
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
    # Store options (docs/stores.md): a swift:// or s3:// store URL's query overrides them.
    Setting("swift_auth_url", None, "Swift store: tempauth or Keystone (ending in /v3) URL."),
    Setting(
        "swift_auth_version",
        None,
        "Swift store: 1 (tempauth) or 3 (Keystone) [default: 3 if the auth URL ends in v3].",
        _choice(("1", "3")),
    ),
    Setting("swift_user", None, "Swift store: the user (tempauth: account:user)."),
    Setting("swift_key", None, "Swift store: the user's key (never in the store URL)."),
    Setting("swift_password", None, "Swift store: the Keystone password (as --swift-key)."),
    Setting("swift_storage_url", None, "Swift store: account URL to use instead of the catalog's."),
    Setting("swift_project_name", None, "Swift store: Keystone project (auth version 3)."),
    Setting("swift_project_domain_name", "Default", "Swift store: the project's domain."),
    Setting("swift_user_domain_name", "Default", "Swift store: the user's domain."),
    Setting("swift_region", None, "Swift store: catalog region."),
    Setting("swift_interface", "public", "Swift store: catalog interface."),
    # Segments are streamed, so their size costs no memory; 1 GiB x 1000 segments ~ 1 TiB.
    Setting(
        "swift_segment_size",
        "1073741824",
        "Swift store: bytes per SLO segment (capped by the cluster's max_file_size).",
        _at_least(1),
    ),
    Setting(
        "swift_sweep_after",
        "3600",
        "Swift store: seconds an upload's newest segment must be idle before the sweep removes it.",
        _at_least(0),
    ),
    Setting("s3_endpoint", None, "S3 store: endpoint URL (Ceph RGW, MinIO...); unset: AWS."),
    Setting("s3_region", None, "S3 store: region."),
    Setting("s3_profile", None, "S3 store: ~/.aws profile for credentials."),
    Setting(
        "s3_addressing_style",
        None,
        "S3 store: auto, path or virtual [default: path with an endpoint, else auto].",
        _choice(("auto", "path", "virtual")),
    ),
    Setting(
        "s3_part_size",
        "8388608",
        "S3 store: bytes per multipart part (at least 5 MiB); one part per upload is buffered.",
        _at_least(S3_MIN_PART_SIZE),
    ),
    Setting(
        "s3_sweep_after",
        "86400",
        "S3 store: seconds after which an unfinished multipart upload is aborted by the sweep.",
        _at_least(0),
    ),
)


_ROWS: Final = {row.name: row for row in SETTINGS}
_Group = TypeVar("_Group", bound="DataclassInstance")


def default(name: str) -> Any:
    """The parsed default of the row `name`; None (or ``()``) where it is computed or unset."""
    row = _ROWS[name]
    if row.default is None:
        return () if row.multiple else None
    return row.parse(row.default)


def _row(name: str, *, secret: bool = False) -> Any:
    """A group's field that holds the row `name` and defaults to that row's default."""
    return field(default=default(name), repr=not secret, metadata={"row": name})


def _group(cls: type[_Group], settings: Settings) -> _Group:
    return cls(**{item.name: getattr(settings, item.metadata["row"]) for item in fields(cls)})


class _Grouped(Generic[_Group]):
    """A `Settings` attribute that reads one group (`Limits`, `CacheOptions`, ...) off its rows."""

    def __init__(self, cls: type[_Group]) -> None:
        self._cls = cls

    def __get__(self, settings: Settings, owner: type[Settings]) -> _Group:
        return _group(self._cls, settings)


@dataclass(frozen=True)
class Limits:
    """The limits group: what one request, image, project or copy may hold."""

    image_size_cap: int = _row("image_size_cap")
    property_quota: int = _row("property_quota")
    member_quota: int = _row("member_quota")
    tag_quota: int = _row("tag_quota")
    api_limit_max: int = _row("api_limit_max")
    limit_param_default: int = _row("limit_param_default")
    user_storage_quota: int = _row("user_storage_quota")  # bytes per project; 0: unlimited
    query_params_max: int = _row("query_params_max")
    list_filters_max: int = _row("list_filters_max")
    json_body_max: int = _row("json_body_max")
    json_depth_max: int = _row("json_depth_max")
    body_timeout: float = _row("body_timeout")  # seconds a request body may send nothing
    upload_min_rate: int = _row("upload_min_rate")  # bytes/s averaged per body_timeout; 0: none
    stage_ttl: float = _row("stage_ttl")  # seconds staged data may wait unimported; 0: forever
    copy_max: int = _row("copy_max")  # concurrent copy-from transfers per process
    copy_max_per_project: int = _row("copy_max_per_project")
    copy_timeout: float = _row("copy_timeout")  # seconds per copy in all
    copy_min_rate: int = _row("copy_min_rate")  # bytes/s averaged per window; 0: none


@dataclass(frozen=True)
class KeystoneOptions:
    """The keystone group: where Keystone is, how the service logs in to it, and how long
    validations are kept.

    Either `username`, `password` and `project_name`, or an application credential
    (`application_credential_id` and `application_credential_secret`).
    """

    auth_url: str = field(metadata={"row": "keystone_auth_url"})
    username: str | None = _row("keystone_username")
    password: str | None = _row("keystone_password", secret=True)
    project_name: str | None = _row("keystone_project_name")
    user_domain_name: str = _row("keystone_user_domain_name")
    project_domain_name: str = _row("keystone_project_domain_name")
    application_credential_id: str | None = _row("keystone_application_credential_id")
    application_credential_secret: str | None = _row(
        "keystone_application_credential_secret", secret=True
    )
    admin_role: str = _row("admin_role")
    cache_seconds: float = _row("keystone_cache_seconds")
    cache_size: int = _row("keystone_cache_size")
    timeout: float = _row("keystone_timeout")

    @classmethod
    def from_settings(cls, settings: Settings) -> KeystoneOptions:
        if not settings.keystone_auth_url:
            raise ValueError("--auth keystone needs --keystone-auth-url")
        return _group(cls, settings)

    @property
    def identity_url(self) -> str:
        """The v3 endpoint: `auth_url` itself, or `<auth_url>/v3` when it has no path."""
        parts = urlsplit(self.auth_url.strip())
        path = parts.path.rstrip("/") or "/v3"
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@dataclass(frozen=True)
class CacheOptions:
    """The cache group: this node's image cache (`directory` None: no cache)."""

    directory: Path | None = _row("cache_dir")  # noqa: RUF009 (_row gives a field())
    size: int = _row("cache_size")
    prefetch_interval: float = _row("cache_prefetch_interval")
    prune_interval: float = _row("cache_prune_interval")


@dataclass(frozen=True)
class HealthOptions:
    """The healthcheck group: drain file, how long a probe's result holds, probe timeout."""

    disable_file: Path | None = _row("healthcheck_disable_file")  # noqa: RUF009
    cache_seconds: float = _row("healthcheck_cache_seconds")
    timeout: float = _row("healthcheck_timeout")


@dataclass(frozen=True)
class MetricsOptions:
    """The metrics group: who may read /metrics and how long its parts are reused."""

    access: str = _row("metrics_access")
    cache_seconds: float = _row("metrics_cache_seconds")
    render_seconds: float = _row("metrics_render_seconds")


@dataclass(frozen=True)
class NotificationOptions:
    """The notifications group (`transport_url` None: no notifications)."""

    transport_url: str | None = _row("notification_transport_url", secret=True)
    topic: str = _row("notification_topic")
    queue_size: int = _row("notification_queue_size")


@dataclass(frozen=True)
class Settings:
    """The parsed settings, one attribute per row (defaults live in the rows only).

    Build with `Settings.load`. Components take a group (`limits`, `keystone`, `cache`)
    rather than single rows.
    """

    host: str
    port: int
    data_dir: Path
    database: str = field(repr=False)
    store: str
    auth: str
    tokens_file: Path | None
    admin_role: str
    keystone_auth_url: str | None
    keystone_username: str | None
    keystone_password: str | None = field(repr=False)
    keystone_project_name: str | None
    keystone_user_domain_name: str
    keystone_project_domain_name: str
    keystone_application_credential_id: str | None
    keystone_application_credential_secret: str | None = field(repr=False)
    keystone_cache_seconds: float
    keystone_cache_size: int
    keystone_timeout: float
    image_size_cap: int
    property_quota: int
    member_quota: int
    tag_quota: int
    user_storage_quota: int
    delayed_delete: bool
    scrub_interval: float
    node_id: str
    upload_lease: float
    body_timeout: float
    upload_min_rate: int
    stage_ttl: float
    copy_max: int
    copy_max_per_project: int
    copy_timeout: float
    copy_min_rate: int
    property_protection_file: Path | None
    cache_dir: Path | None
    cache_size: int
    cache_prefetch_interval: float
    cache_prune_interval: float
    api_limit_max: int
    limit_param_default: int
    query_params_max: int
    list_filters_max: int
    json_body_max: int
    json_depth_max: int
    workers: int
    max_connections: int
    header_timeout: float
    keep_alive_timeout: float
    max_header_bytes: int
    http: str
    allow_source_network: tuple[Network, ...]
    insecure_noauth: bool
    policy_file: Path | None
    healthcheck_disable_file: Path | None
    healthcheck_cache_seconds: float
    healthcheck_timeout: float
    metrics_access: str
    metrics_cache_seconds: float
    metrics_render_seconds: float
    notification_transport_url: str | None = field(repr=False)
    notification_topic: str
    notification_queue_size: int
    log_level: str
    swift_auth_url: str | None
    swift_auth_version: str | None
    swift_user: str | None
    swift_key: str | None = field(repr=False)
    swift_password: str | None = field(repr=False)
    swift_storage_url: str | None
    swift_project_name: str | None
    swift_project_domain_name: str
    swift_user_domain_name: str
    swift_region: str | None
    swift_interface: str
    swift_segment_size: int
    swift_sweep_after: int
    s3_endpoint: str | None
    s3_region: str | None
    s3_profile: str | None
    s3_addressing_style: str | None
    s3_part_size: int
    s3_sweep_after: int

    @property
    def store_options(self) -> dict[str, Any]:
        """The `<scheme>_*` rows of the configured store, by option name (unset ones left out)."""
        return store_options(urlsplit(self.store).scheme, self)

    limits = _Grouped(Limits)
    cache = _Grouped(CacheOptions)
    healthcheck = _Grouped(HealthOptions)
    metrics = _Grouped(MetricsOptions)
    notifications = _Grouped(NotificationOptions)

    @property
    def keystone(self) -> KeystoneOptions:
        """Raises ValueError without a Keystone URL."""
        return KeystoneOptions.from_settings(self)

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


def store_options(scheme: str, values: Settings | Mapping[str, str]) -> dict[str, Any]:
    """The options of a `scheme` store (swift, s3), by option name, from its `<scheme>_*` rows.

    `values` is `Settings` (resolved from flags, variables and defaults) or an environment
    (variables and defaults only). Unset options are left out.
    """
    prefix = f"{scheme.lower()}_"
    options: dict[str, Any] = {}
    for row in SETTINGS:
        if not row.name.startswith(prefix):
            continue
        if isinstance(values, Settings):
            value = getattr(values, row.name)
        elif row.variable in values:
            value = _parse_text(row, values[row.variable], row.variable)
        else:
            value = default(row.name)
        if value is not None and value != "":
            options[row.name[len(prefix) :]] = value
    return options


def parse_store_option(scheme: str, option: str, text: str) -> Any:
    """Parse a store URL's query option as its row does. Raises KeyError for an unknown
    option, ValueError (saying what was expected) for a bad value."""
    return _ROWS[f"{scheme.lower()}_{option}"].parse(text)


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
