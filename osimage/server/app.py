"""`create_app(settings)`: the one composition root of the service.

The app is raw ASGI. Its lifespan opens the database, the blob store and the
authenticator (and closes them), renews upload leases, and runs the scrubber with
delayed delete; every HTTP request gets a request id, one log line, and errors rendered
by `osimage.server.errors`.
"""

from __future__ import annotations

import gc
import itertools
import logging
import time
import uuid
from collections.abc import Mapping
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import anyio

from osimage.server import sources
from osimage.server.api.call import Call
from osimage.server.api.http import (
    Message,
    Receive,
    ResponseAborted,
    Scope,
    Send,
    describe_failure,
    header,
    refuse_ambiguous_framing,
    reply,
)
from osimage.server.api.routes import dispatch
from osimage.server.api.v2 import routes as v2_routes
from osimage.server.api.versions import (
    MEDIA_PREFIX,
    V1_TOKENS,
    send_v1_version,
    send_versions,
    v2_tokens,
)
from osimage.server.auth import Authenticator, Unauthorized, open_authenticator
from osimage.server.cache import start_cache, sweep_cache
from osimage.server.db.engine import close_engine, migrate, open_engine
from osimage.server.downloads import Downloads
from osimage.server.errors import ApiError, HeaderTooLarge, ServiceUnavailable, render
from osimage.server.errors import Unauthorized as NotAuthenticated
from osimage.server.ingest import Ingest
from osimage.server.logs import access
from osimage.server.operations import endpoints
from osimage.server.operations.healthcheck import HealthCheck
from osimage.server.operations.metrics import Metrics, forget_dead_workers, multiprocess_dir
from osimage.server.operations.notifications import open_notifier, redacted
from osimage.server.operations.policy import Policy
from osimage.server.protections import Protections
from osimage.server.service import ImageService
from osimage.server.settings import Settings
from osimage.server.sharing import Sharing
from osimage.server.stores.registry import open_store
from osimage.server.upkeep import Upkeep, scrub, sweep, sweep_imports, sweep_imports_forever
from osimage.server.v2 import ImagesV2

log = logging.getLogger("osimage.server")

MAX_REQUEST_ID_LENGTH = 64
# Request ids: a random per-process prefix and a counter, in the form of a UUID
# (cheaper than uuid4() per request, and as unique).
_ID_PREFIX = f"req-{str(uuid.uuid4())[:24]}"
_ID_SEQUENCE = itertools.count(int.from_bytes(uuid.uuid4().bytes[:6], "big"))


def new_request_id() -> str:
    """A fresh `req-<uuid>` request id."""
    return f"{_ID_PREFIX}{next(_ID_SEQUENCE) & 0xFFFF_FFFF_FFFF:012x}"


async def prepare(settings: Settings) -> None:
    """Bring the database to the current schema and sweep what a crash left behind.

    Without delayed delete, images still `pending_delete` from a run with it are
    scrubbed here; with it, the scrubber of each process does that.
    """
    engine = open_engine(settings.database)
    store = open_store(settings.store, settings.store_options)
    try:
        await migrate(engine)
        await sweep(engine, store, node=settings.node_id, lease=settings.upload_lease)
        await sweep_imports(engine, node=settings.node_id, lease=settings.upload_lease)
        if not settings.delayed_delete:
            await scrub(engine, store)
        if settings.cache_dir is not None:
            sweep_cache(settings.cache_dir)  # partial cache fills a crash left
    finally:
        await store.aclose()
        await close_engine(engine)


class App:
    """The ASGI application; all of its state lives on the instance."""

    def __init__(self, settings: Settings, *, prepared: bool = False) -> None:
        self.settings = settings
        self.prepared = prepared
        self._service: ImageService | None = None
        self._sharing: Sharing | None = None
        self._v2: ImagesV2 | None = None  # stateless between calls: built once (issue 12)
        self._authenticator: Authenticator | None = None
        self._health: HealthCheck | None = None  # operations (issue 15)
        self._metrics: Metrics | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        async with AsyncExitStack() as stack:
            try:
                await self._open(stack)
            except ValueError as exc:  # a setting that cannot work: say which, no traceback
                log.error("cannot start: %s", exc)
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            except Exception as exc:
                log.exception("startup failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            # What start-up built lives as long as the process: out of the collector's
            # way, so its periodic passes do not walk it (issue 14); garbage first.
            gc.collect()
            gc.freeze()
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})

    async def _open(self, stack: AsyncExitStack) -> None:
        settings = self.settings
        if not self.prepared:
            await prepare(settings)
        engine = open_engine(settings.database)
        stack.push_async_callback(close_engine, engine)
        store = open_store(settings.store, settings.store_options)
        stack.push_async_callback(store.aclose)
        authenticator = open_authenticator(
            settings.auth,
            tokens_file=settings.tokens_file,
            admin_role=settings.admin_role,
            settings=settings,
        )
        stack.push_async_callback(authenticator.aclose)
        tasks = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tasks.cancel_scope.cancel)  # background copies stop (and clean up) first
        policy = sources.SourcePolicy(allowed_networks=settings.allow_source_network)
        operations = self._open_operations(stack, engine, store, authenticator)
        protections = None
        if settings.property_protection_file is not None:
            protections = Protections.load(settings.property_protection_file)
        notifier, metrics = operations["notifier"], operations["metrics"]
        ingest = Ingest(
            engine,
            store,
            limits=settings.limits,
            source_policy=policy,
            tasks=tasks,
            notifier=notifier,
            node=settings.node_id,
            metrics=metrics,
        )
        cache = start_cache(settings.cache, engine, store, tasks)
        downloads = Downloads(
            store, source_policy=policy, notifier=notifier, metrics=metrics, cache=cache
        )
        self._service = ImageService(
            ingest,
            downloads,
            delayed_delete=settings.delayed_delete,
            protections=protections,
            policy=operations["policy"],
        )
        upkeep = Upkeep(
            engine,
            store,
            uploading=self._service.ingest.uploading,
            node=settings.node_id,
            upload_lease=settings.upload_lease,
        )
        tasks.start_soon(upkeep.renew_leases_forever, settings.upload_lease / 3)
        lease = settings.upload_lease
        tasks.start_soon(partial(sweep_imports_forever, engine, lease=lease, interval=lease / 3))
        if settings.stage_ttl:
            tasks.start_soon(upkeep.expire_stages_forever, settings.stage_ttl)
        if settings.delayed_delete:
            tasks.start_soon(upkeep.scrub_forever, settings.scrub_interval)
        self._sharing = Sharing(self._service)
        self._v2 = ImagesV2(self._service)
        self._authenticator = authenticator
        stack.callback(self._forget)

    def _forget(self) -> None:
        self._service = self._sharing = self._authenticator = None
        self._v2 = None
        self._health = None

    def _open_operations(
        self, stack: AsyncExitStack, engine: Any, store: Any, authenticator: Authenticator
    ) -> dict[str, Any]:
        """Health check, metrics, policy and notifier (issue 15); the service's share."""
        settings = self.settings
        directory = multiprocess_dir()
        if directory is not None:
            forget_dead_workers(directory)
        metrics = self._metrics = Metrics(multiprocess_dir=directory)
        if hasattr(authenticator, "on_cache_lookup"):
            authenticator.on_cache_lookup = metrics.token_lookup
        self._health = HealthCheck.from_options(engine, store, settings.healthcheck)
        notifications = settings.notifications
        notifier = open_notifier(
            notifications,
            on_drop=metrics.notification_dropped,
            on_sent=metrics.notification_sent,
        )
        stack.callback(notifier.close)
        if notifications.transport_url:
            log.info(
                "notifications: to %s, topic %s",
                redacted(notifications.transport_url),
                notifications.topic,
            )
        return {
            "policy": Policy(settings.policy_file),
            "notifier": notifier,
            "metrics": metrics,
        }

    def _request_id(self, headers: Mapping[str, str]) -> str:
        supplied = headers.get("x-openstack-request-id")
        if supplied is None or self.settings.auth == "noauth":
            return new_request_id()
        supplied = supplied.strip()
        if len(supplied) > MAX_REQUEST_ID_LENGTH:
            raise HeaderTooLarge(
                f"x-openstack-request-id is longer than {MAX_REQUEST_ID_LENGTH} characters"
            )
        return supplied if supplied.startswith("req-") else f"req-{supplied}"

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 0
        request_id = ""
        counted = False

        def count() -> None:
            nonlocal counted
            if self._metrics is not None and not counted:
                counted = True
                seconds = time.perf_counter() - started
                self._metrics.request(scope["path"], scope["method"], status, seconds)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-openstack-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            elif not message.get("more_body", False):
                count()  # before the client can see the end: a scrape after it counts it
            await send(message)

        failure = ""  # why the request failed unexpectedly: its one log line says so
        try:
            try:
                # the request's headers, decoded once for every reader (last one wins)
                headers = {
                    bytes(name).decode("latin-1").lower(): bytes(value).decode("latin-1")
                    for name, value in scope.get("headers", ())
                }
                request_id = self._request_id(headers)
                refuse_ambiguous_framing(headers)
                await self._dispatch(scope, receive, send_with_id, headers)
            except ApiError as error:
                request_id = request_id or new_request_id()  # the supplied one was refused
                if status:
                    failure = f"failed after the response started: {error.message}"
                    raise ResponseAborted from None
                await _send_error_or_abort(scope, send_with_id, error)
            except ResponseAborted:
                failure = failure or "aborted"
                raise
            except Exception as exc:
                request_id = request_id or new_request_id()
                if self._metrics is not None and endpoints.is_database_error(exc):
                    self._metrics.database_errors.inc()
                failure = describe_failure(exc)
                log.debug("%s traceback", request_id, exc_info=True)
                if status:
                    raise ResponseAborted from None
                message = f"The server failed to answer (request {request_id})."
                await _send_error_or_abort(scope, send_with_id, ApiError(message))
        finally:
            count()
            elapsed = (time.perf_counter() - started) * 1000
            if failure:
                line = (request_id, scope["method"], scope["path"], status or "-")
                log.error("%s %s %s %s %.1fms %s", *line, elapsed, failure)
            else:
                access.write(request_id, scope["method"], scope["path"], status, elapsed)

    async def _dispatch(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        path: str = scope["path"]
        if path in endpoints.PATHS:  # before authentication and version routing
            await self._operations(scope, send, path)
            return
        cache = self.settings.cache_dir is not None  # the cache API's versions (v2.14, 2.16)
        v2 = v2_tokens(cache=cache)
        segments = path.split("/")
        first = segments[1] if len(segments) > 1 else ""
        accept = headers.get("accept", "")
        if accept.lower().startswith(MEDIA_PREFIX):
            token = accept[len(MEDIA_PREFIX) :].split(",")[0].split(";")[0].strip().lower()
            if token not in V1_TOKENS and token not in v2:
                await send_versions(scope, send, 300, cache=cache)
                return
            if first not in V1_TOKENS and first not in v2:
                segments = ["", token, *segments[1:]]
                first = token
        if first == "versions":
            await send_versions(scope, send, 200, cache=cache)
            return
        if first in v2:
            rest = "/" + "/".join(segments[2:])
            await self._v1(scope, receive, send, headers, rest, v2=True)
            return
        if first not in V1_TOKENS:
            await send_versions(scope, send, 300, cache=cache)
            return
        rest = "/" + "/".join(segments[2:]) if len(segments) > 2 else ""
        if rest == "" and scope["method"] in {"GET", "HEAD"}:
            await send_v1_version(scope, send, cache=cache)
            return
        await self._v1(scope, receive, send, headers, rest)

    async def _operations(self, scope: Scope, send: Send, path: str) -> None:
        if self._health is None or self._metrics is None or self._authenticator is None:
            raise ServiceUnavailable("The service is not running.")
        if path == endpoints.HEALTHCHECK:
            await endpoints.healthcheck(scope, send, self._health, self._authenticator)
        else:
            await endpoints.metrics(
                scope,
                send,
                self._metrics,
                self._authenticator,
                self.settings.metrics,
                engine=self._health.engine,
            )

    async def _v1(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        rest: str,
        *,
        v2: bool = False,
    ) -> None:
        """An authenticated call to the v1 routes (or, with `v2`, to the v2 routes)."""
        if self._service is None or self._sharing is None or self._authenticator is None:
            raise ServiceUnavailable("The service is not running.")
        try:
            context = await self._authenticator.authenticate(headers)
        except Unauthorized as error:
            raise NotAuthenticated(str(error)) from None
        call = Call(scope, receive, send, context, self._service, self._sharing, headers)
        if v2:
            if self._v2 is None:
                raise ServiceUnavailable("The service is not running.")
            await v2_routes.dispatch(call, self._v2, rest)
            return
        await dispatch(call, rest)


async def _send_error_or_abort(scope: Scope, send: Send, error: ApiError) -> None:
    try:
        await _send_error(scope, send, error)
    except Exception:  # the connection broke under the answer (e.g. an h11 state error)
        raise ResponseAborted from None


async def _send_error(scope: Scope, send: Send, error: ApiError) -> None:
    head = scope["method"] == "HEAD"
    content_type, body = render(error, accept=header(scope, "accept") or "", head=head)
    headers = list(error.headers.items())
    if head:
        headers.append(("content-length", "0"))
    await reply(send, error.status_code, body, content_type=content_type, headers=headers)


def create_app(settings: Settings, *, prepared: bool = False) -> App:
    """Build the service for `settings`; nothing is opened until the ASGI lifespan starts.

    With `prepared`, migrations and the crash sweep are assumed done (worker processes).
    """
    return App(settings, prepared=prepared)
