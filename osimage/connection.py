"""Connection: a keystoneauth1 session and the image proxy (``conn.image``) for one cloud.

Settings are resolved by `osimage.config` (explicit arguments > ``OS_*`` variables >
``clouds.yaml``); `Connection` turns the resolved `CloudConfig` into a session and an
Adapter on the image endpoint.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from osimage.config import (
    LOCAL_ENDPOINT,
    CloudConfig,
    ConfigException,
    resolve_config,
    versioned_endpoint,
)

if TYPE_CHECKING:
    from keystoneauth1.adapter import Adapter
    from keystoneauth1.plugin import BaseAuthPlugin
    from keystoneauth1.session import Session

    from osimage.image.v1._proxy import Proxy

__all__ = [
    "LOCAL_ENDPOINT",
    "CloudConfig",
    "ConfigException",
    "Connection",
    "build_session",
    "connect",
    "resolve_config",
    "versioned_endpoint",
]


def _auth_plugin(config: CloudConfig) -> BaseAuthPlugin:
    from keystoneauth1 import exceptions as ksa_exceptions
    from keystoneauth1 import loading

    if config.auth_type == "none":
        return _anonymous_plugin(config.auth.get("endpoint") or config.fixed_endpoint)
    try:
        loader: loading.BaseLoader[Any] = loading.get_plugin_loader(config.auth_type)
    except ksa_exceptions.NoMatchingPlugin:
        known = ", ".join(sorted(loading.get_available_plugin_names()))
        raise ConfigException(
            f"unknown auth_type {config.auth_type!r} ({config.origins.get('auth_type')}); "
            f"known: {known}"
        ) from None
    dests = {opt.dest for opt in loader.get_options()}
    options: dict[str, Any] = {k: v for k, v in config.auth.items() if k in dests}
    if "endpoint" in dests and "endpoint" not in options and config.fixed_endpoint:
        options["endpoint"] = config.image_endpoint_override
    try:
        return loader.load_from_options(**options)  # type: ignore[no-any-return]
    except ksa_exceptions.MissingRequiredOptions as exc:
        missing = [opt.dest for opt in exc.options]
        hints = ", ".join(f"{name} (OS_{name.upper()})" for name in missing)
        raise ConfigException(f"auth_type {config.auth_type} needs {hints}") from None
    except (TypeError, ValueError, ksa_exceptions.OptionError) as exc:
        raise ConfigException(f"auth_type {config.auth_type}: {exc}") from None


def _anonymous_plugin(endpoint: str | None) -> BaseAuthPlugin:
    """keystoneauth1's ``none`` sends ``X-Auth-Token: notused``; this one sends no token."""
    from keystoneauth1.noauth import NoAuth

    class Anonymous(NoAuth):
        def get_headers(self, session: Session) -> dict[str, str]:
            return {}

    return Anonymous(endpoint=endpoint)


def _image_adapter(session: Session, config: CloudConfig, endpoint: str) -> Adapter:
    """An Adapter on the image endpoint that never resends a streamed body.

    keystoneauth1 answers a 401 by logging in again and resending the request. A body
    that is a file or an iterator has been used up by then, so the resend would carry
    no data (and v1 would make an empty image of it). Such a request is sent only once:
    first a small authenticated GET makes sure the token is still accepted (renewing a
    revoked one), and should the upload itself still get a 401, the token is dropped so
    that the next request logs in again, and the 401 reaches the caller.
    """
    import requests
    from keystoneauth1.adapter import Adapter
    from keystoneauth1.identity.base import BaseIdentityPlugin

    class ImageAdapter(Adapter):
        def request(self, url: str, method: str, **kwargs: Any) -> requests.Response:
            data = kwargs.get("data")
            if data is None or isinstance(data, bytes | bytearray | memoryview | str):
                return super().request(url, method, **kwargs)
            if isinstance(self.session.auth, BaseIdentityPlugin):  # it can log in again
                super().request("/images", "GET", params={"limit": 1}, raise_exc=False).close()
            response = super().request(url, method, **{**kwargs, "allow_reauth": False})
            if response.status_code == requests.codes.unauthorized:
                self.session.invalidate()
            return response

    return ImageAdapter(
        session,
        service_type="image",
        interface=config.interface,
        region_name=config.region_name,
        endpoint_override=endpoint,
    )


def build_session(config: CloudConfig) -> Session:
    """A keystoneauth1 session authenticating as `config` says (no request is sent yet)."""
    from keystoneauth1.session import Session

    from osimage import __version__

    return Session(
        auth=_auth_plugin(config),
        verify=config.verify,
        cert=config.cert,
        timeout=config.timeout,
        app_name="osimage",
        app_version=__version__,
    )


class Connection:
    """A configured link to one image service; ``conn.image`` holds the image methods.

    Arguments are those of `resolve_config` (``cloud``, ``auth_type``, ``auth_url``,
    ``username``, ``password``, ``project_name``, ``token``, ``endpoint``,
    ``image_endpoint_override``, ``region_name``, ``interface`` ...), or pass a resolved
    ``config`` and, optionally, an existing keystoneauth1 ``session``. Building a
    Connection sends nothing; the first use of ``conn.image`` may authenticate to find
    the image endpoint in the service catalog.
    """

    def __init__(
        self,
        cloud: str | None = None,
        *,
        config: CloudConfig | None = None,
        session: Session | None = None,
        **settings: Any,
    ) -> None:
        if config is not None and (cloud is not None or settings):
            raise ConfigException("pass either config= or settings, not both")
        self.config = config if config is not None else resolve_config(cloud, **settings)
        self.session = session if session is not None else build_session(self.config)

    @cached_property
    def image_endpoint(self) -> str:
        """The image service's v1 root (``.../v1``), from configuration or the catalog."""
        fixed = self.config.fixed_endpoint
        if fixed is not None:
            return fixed
        from keystoneauth1.exceptions import EndpointNotFound

        try:
            found = self.session.get_endpoint(
                service_type="image",
                interface=self.config.interface,
                region_name=self.config.region_name,
            )
        except EndpointNotFound:
            found = None
        if not found:
            region = f" in region {self.config.region_name}" if self.config.region_name else ""
            raise ConfigException(
                f"the service catalog lists no {self.config.interface} image "
                f"endpoint{region}; set image_endpoint_override (OS_IMAGE_ENDPOINT_OVERRIDE)"
            )
        return versioned_endpoint(str(found))

    @cached_property
    def adapter(self) -> Adapter:
        """The keystoneauth1 Adapter that resources use as their ``session``."""
        return _image_adapter(self.session, self.config, self.image_endpoint)

    @cached_property
    def image(self) -> Proxy:
        """The image service methods: ``conn.image.images()``, ``create_image`` ..."""
        from osimage.image.v1._proxy import Proxy

        anonymous = self.config.auth_type == "none"
        return Proxy(self.adapter, list_defaults={"is_public": "none"} if anonymous else None)

    def close(self) -> None:
        """Close the HTTP connections held by the session."""
        self.session.session.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(cloud: str | None = None, **settings: Any) -> Connection:
    """Open a `Connection`; the arguments are those of `resolve_config`."""
    return Connection(cloud, **settings)
