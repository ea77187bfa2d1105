"""What every client command shares: the connection options, the lazily built Connection,
and `explain`, which turns an exception into one line that says what to do next."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import click

    from osimage.connection import Connection
    from osimage.image.v1._proxy import Proxy
    from osimage.image.v1.image import Image

CONNECTION_OPTIONS: Final[tuple[tuple[tuple[str, ...], str, str], ...]] = (
    (("--os-cloud",), "cloud", "Cloud to use from clouds.yaml (env: OS_CLOUD)."),
    (("--os-auth-type",), "auth_type", "Auth plugin: password, token, v3applicationcredential, "
     "admin_token, none ... (env: OS_AUTH_TYPE; inferred when absent)."),
    (("--os-auth-url",), "auth_url", "Keystone URL (env: OS_AUTH_URL)."),
    (("--os-username",), "username", "User name (env: OS_USERNAME)."),
    (("--os-password",), "password", "Password (env: OS_PASSWORD)."),
    (("--os-project-name",), "project_name", "Project name (env: OS_PROJECT_NAME)."),
    (("--os-project-id",), "project_id", "Project id (env: OS_PROJECT_ID)."),
    (("--os-user-domain-name",), "user_domain_name", "User domain (env: OS_USER_DOMAIN_NAME)."),
    (("--os-project-domain-name",), "project_domain_name",
     "Project domain (env: OS_PROJECT_DOMAIN_NAME)."),
    (("--os-application-credential-id",), "application_credential_id",
     "Application credential id (env: OS_APPLICATION_CREDENTIAL_ID)."),
    (("--os-application-credential-secret",), "application_credential_secret",
     "Application credential secret (env: OS_APPLICATION_CREDENTIAL_SECRET)."),
    (("--os-token", "--os-auth-token"), "token", "Token (env: OS_TOKEN)."),
    (("--os-endpoint",), "endpoint",
     "Server URL to use with --os-token, or alone for no auth (env: OS_ENDPOINT)."),
    (("--os-image-url",), "image_endpoint_override",
     "Image endpoint, overriding the catalog (env: OS_IMAGE_URL, OS_IMAGE_ENDPOINT_OVERRIDE)."),
    (("--os-region-name",), "region_name", "Region (env: OS_REGION_NAME)."),
    (("--os-interface",), "interface", "Catalog interface: public, internal, admin "
     "(env: OS_INTERFACE)."),
    (("--os-identity-api-version",), "identity_api_version",
     "Keystone API version, 2 or 3 (env: OS_IDENTITY_API_VERSION)."),
    (("--os-cacert",), "cacert", "CA bundle to verify TLS with (env: OS_CACERT)."),
)  # fmt: skip
_FLAG_OF: Final = {dest: flags[0] for flags, dest, _ in CONNECTION_OPTIONS} | {
    "insecure": "--insecure"
}


class UserError(Exception):
    """A mistake the user can fix; `message` is printed as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class CliState:
    """Per-invocation state: the root options and, once needed, the Connection."""

    debug: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    _connection: Connection | None = None

    def connection(self) -> Connection:
        if self._connection is None:
            from osimage.connection import Connection

            settings = dict(self.options)
            cloud = settings.pop("cloud", None)
            self._connection = Connection(cloud, **settings)
        return self._connection

    @classmethod
    def of(cls, ctx: click.Context) -> CliState:
        """The state `main()` put in `ctx`, or a fresh one when a command runs without it
        (e.g. from click's test runner)."""
        state = ctx.find_object(cls)
        return state if state is not None else ctx.ensure_object(cls)

    @property
    def proxy(self) -> Proxy:
        return self.connection().image

    def find_image(self, name_or_id: str) -> Image:
        """The image with this id or name; a clear UserError when none or several match."""
        from osimage import exceptions

        try:
            found = self.proxy.find_image(name_or_id, ignore_missing=True)
        except exceptions.DuplicateResource:
            raise UserError(
                f"more than one image is named '{name_or_id}': name it by id "
                f"(`osimage image list --name '{name_or_id}'` shows them)"
            ) from None
        if found is None:
            raise UserError(
                f"no image has the id or name '{name_or_id}' "
                "(`osimage image list` shows the images you can see)"
            )
        return found

    def describe_auth(self) -> str:
        """The credentials in use and where each came from, with command-line flags named."""
        if self._connection is None:
            return "unknown credentials"
        return self._connection.config.describe_auth(
            lambda key: _FLAG_OF.get(key, "the command line")
        )

    def server_root(self) -> str:
        if self._connection is None:
            return "the configured server"
        endpoint = self._connection.__dict__.get("image_endpoint")
        if endpoint is None:
            endpoint = self._connection.config.fixed_endpoint
        if endpoint is None:
            return "the image endpoint from the service catalog"
        return str(endpoint).removesuffix("/v1")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def explain(exc: BaseException, state: CliState) -> str:
    """One line saying what went wrong and what to do next."""
    from keystoneauth1 import exceptions as ksa

    from osimage import exceptions
    from osimage.config import ConfigException

    root = state.server_root()
    auth_url = state._connection.config.auth.get("auth_url") if state._connection else None
    if isinstance(exc, ksa.SSLError):
        return f"TLS verification failed ({exc}): pass --os-cacert FILE, or --insecure"
    if isinstance(exc, ksa.ConnectTimeout):
        return f"timed out connecting to {root}: is the server up and reachable?"
    if isinstance(exc, ksa.ConnectFailure):
        if auth_url and auth_url in str(exc):
            return f"cannot reach keystone at {auth_url}: check --os-auth-url / OS_AUTH_URL"
        return (
            f"no image service answers at {root}: start one with `osimage serve`, or point "
            "--os-image-url / OS_IMAGE_URL (or your clouds.yaml cloud) at the right server"
        )
    if isinstance(exc, ksa.Unauthorized):
        return (
            f"keystone at {auth_url} refused the credentials ({state.describe_auth()}): "
            "check them, or pick another cloud with --os-cloud"
        )
    if isinstance(exc, ksa.EndpointNotFound | ksa.EmptyCatalog):
        return (
            f"no image endpoint in the service catalog ({exc}): pass --os-image-url or set "
            "OS_IMAGE_URL"
        )
    if isinstance(exc, ksa.ClientException):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, exceptions.HttpException):
        detail = exc.details or exc.message
        if exc.status_code == 401:
            hint = (
                "this server needs a token: pass --os-token, set OS_TOKEN, or use a cloud"
                if state._connection is not None and state._connection.config.auth_type == "none"
                else "check them, or pass others"
            )
            return (
                f"{root} refused the credentials (HTTP 401) — used {state.describe_auth()}; {hint}"
            )
        if exc.status_code == 403:
            return f"forbidden (HTTP 403): {detail}"
        if exc.status_code == 404:
            return f"not found (HTTP 404): {detail}"
        if exc.status_code == 409:
            return f"conflict (HTTP 409): {detail}"
        if exc.status_code == 400:
            return f"the server refused the request (HTTP 400): {detail}"
        return str(exc)
    if isinstance(exc, exceptions.DuplicateResource):
        return f"{exc.message}: name the image by id"
    if isinstance(exc, ConfigException):
        return f"configuration: {exc.message}"
    if isinstance(exc, exceptions.SDKException):
        return exc.message
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"
