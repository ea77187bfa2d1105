"""The two operator endpoints, answered before authentication and version routing.

``/healthcheck`` (oslo.middleware's shape) and ``/metrics`` (Prometheus text format).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import anyio

from osimage.server.api.http import Scope, Send, header, reply
from osimage.server.auth import Authenticator, Context, Unauthorized
from osimage.server.errors import Forbidden, MethodNotAllowed, NotFound
from osimage.server.errors import Unauthorized as NotAuthenticated
from osimage.server.operations import healthcheck as health
from osimage.server.operations.metrics import CONTENT_TYPE, Metrics
from osimage.server.settings import is_loopback

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from osimage.server.settings import MetricsOptions

HEALTHCHECK: Final = "/healthcheck"
METRICS: Final = "/metrics"
PATHS: Final = frozenset({HEALTHCHECK, METRICS})
_READ: Final = frozenset({"GET", "HEAD"})


def _headers(scope: Scope) -> dict[str, str]:
    return {
        bytes(name).decode("latin-1").lower(): bytes(value).decode("latin-1")
        for name, value in scope.get("headers", ())
    }


async def _caller(scope: Scope, authenticator: Authenticator) -> Context:
    try:
        return await authenticator.authenticate(_headers(scope))
    except Unauthorized as error:
        raise NotAuthenticated(str(error)) from None


async def healthcheck(
    scope: Scope, send: Send, check: health.HealthCheck, authenticator: Authenticator
) -> None:
    """200 ``OK`` or 503 with the reasons; JSON on ``Accept: application/json``, with
    each check's details for an admin (a caller that sends no token gets no details)."""
    if scope["method"] not in _READ:
        raise MethodNotAllowed(headers={"allow": "GET, HEAD"})
    reasons = await check.reasons()
    json_wanted = "application/json" in (header(scope, "accept") or "")
    detailed = False
    if json_wanted:
        try:
            detailed = (await authenticator.authenticate(_headers(scope))).is_admin
        except Unauthorized:
            detailed = False
    content_type, body = health.body(reasons, json_wanted=json_wanted, detailed=detailed)
    status = 200 if all(reason.healthy for reason in reasons) else 503
    head = scope["method"] == "HEAD"
    await reply(send, status, body, content_type=content_type, head=head)


async def metrics(
    scope: Scope,
    send: Send,
    exported: Metrics,
    authenticator: Authenticator,
    options: MetricsOptions,
    *,
    engine: AsyncEngine,
) -> None:
    """The Prometheus exposition, for the callers `options.access` admits (off: 404)."""
    access = options.access
    if access == "off":
        raise NotFound("The resource could not be found.")
    if scope["method"] not in _READ:
        raise MethodNotAllowed(headers={"allow": "GET, HEAD"})
    if access == "loopback":
        client = scope.get("client")
        if client is None or not is_loopback(str(client[0])):
            raise Forbidden("Metrics are only served to clients on this host.")
    elif not (await _caller(scope, authenticator)).is_admin:
        raise Forbidden("Metrics are only served to admins.")
    await exported.refresh_images(engine, options.cache_seconds)
    body = exported.rendered(options.render_seconds)
    if body is None:
        # in a thread: rendering takes milliseconds (and reads every worker's files under
        # --workers) that the event loop's other requests should not wait for
        body = await anyio.to_thread.run_sync(exported.render, options.render_seconds)
    await reply(send, 200, body, content_type=CONTENT_TYPE, head=scope["method"] == "HEAD")


def is_database_error(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is the database driver's."""
    from sqlalchemy.exc import DBAPIError

    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, DBAPIError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
