"""Which database and store a test server runs on, and the throwaway resources behind them.

`OSIMAGE_TEST_BACKEND` selects them for every server `start_server` makes, e.g.
`postgres+swift`, `sqlite+s3`, `postgres` (file store) or `swift` (SQLite); unset means
`sqlite+file`, the embedded default. Each server then gets its own PostgreSQL database and
its own Swift container or S3 bucket, removed when the server is closed (or, at the
latest, when the test process exits).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shlex
import subprocess
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest

from osimage.server.stores.swift import SEGMENTS_SUFFIX

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BACKEND_VARIABLE = "OSIMAGE_TEST_BACKEND"
DATABASES = ("sqlite", "postgres")
STORES = ("file", "swift", "s3")
# The PostgreSQL that tests use: trust auth on loopback, as on CI's machines.
POSTGRES_ADMIN_URL = os.environ.get(
    "OSIMAGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SERVICES = Path(
    os.environ.get("OSIMAGE_SERVICES_DIR", Path(__file__).parents[3] / "shared" / "services")
)
SWIFT_VARIABLES = ("ST_AUTH", "ST_USER", "ST_KEY")
S3_VARIABLES = ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclass(frozen=True)
class Backend:
    database: str = "sqlite"
    store: str = "file"

    @property
    def name(self) -> str:
        return f"{self.database}+{self.store}"

    @property
    def is_default(self) -> bool:
        return self == Backend()


def parse_backend(text: str) -> Backend:
    """`postgres+swift`, `s3`, `postgres`, ... -> Backend; raises ValueError naming the part."""
    database, store = "sqlite", "file"
    for part in filter(None, (word.strip().lower() for word in text.split("+"))):
        if part in ("postgresql", "postgres", "pg"):
            database = "postgres"
        elif part in DATABASES:
            database = part
        elif part in STORES:
            store = part
        else:
            raise ValueError(
                f"{BACKEND_VARIABLE}: unknown part {part!r} in {text!r} "
                f"(databases: {', '.join(DATABASES)}; stores: {', '.join(STORES)})"
            )
    return Backend(database, store)


def selected_backend() -> Backend:
    return parse_backend(os.environ.get(BACKEND_VARIABLE, ""))


def require_service(available: bool, reason: str) -> None:
    """Skip a test whose backing service is absent; in CI an absent service fails the run."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"required service missing in CI: {reason}")
    pytest.skip(reason)


# -- cleanup -------------------------------------------------------------------------------

_pending: dict[str, Callable[[], None]] = {}
_pending_lock = threading.Lock()


def _remember(key: str, cleanup: Callable[[], None]) -> Callable[[], None]:
    """Register `cleanup` to run at exit; the returned callable runs it now (once)."""
    with _pending_lock:
        _pending[key] = cleanup

    def run_once() -> None:
        with _pending_lock:
            action = _pending.pop(key, None)
        if action is not None:
            action()

    return run_once


@atexit.register
def _clean_up_everything() -> None:
    while _pending:
        _key, action = _pending.popitem()
        with contextlib.suppress(Exception):  # best effort at exit: they are throwaway
            action()


# -- PostgreSQL ----------------------------------------------------------------------------


def _run(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine in a thread of its own, so callers may already be in an event loop."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        async def main() -> Any:
            return await make()

        try:
            outcome["value"] = asyncio.run(main())
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="osimage-test-admin")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _admin_dsn() -> str:
    return POSTGRES_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_admin_dsn(), timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@cache
def postgres_available() -> bool:
    """Whether the test PostgreSQL answers and asyncpg (the `postgres` extra) is installed."""
    try:
        import asyncpg

        del asyncpg
    except ImportError:
        return False
    try:
        _run(lambda: _admin("SELECT 1"))
    except Exception:
        return False
    return True


def postgres_url(database: str, *, password: str | None = None) -> str:
    """The `--database` URL of `database` on the test PostgreSQL."""
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    if password is not None:
        scheme, _, rest = base.partition("://")
        user, _, host = rest.rpartition("@")
        base = f"{scheme}://{user.partition(':')[0]}:{password}@{host}"
    return f"{base}/{database}"


def postgres_rows(database: str, query: str) -> list[tuple[Any, ...]]:
    """Run `query` in `database` on the test PostgreSQL and return its rows."""
    import asyncpg

    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(postgres_url(database), timeout=10)
        try:
            return [tuple(record) for record in await conn.fetch(query)]
        finally:
            await conn.close()

    rows: list[tuple[Any, ...]] = _run(fetch)
    return rows


def create_database() -> tuple[str, Callable[[], None]]:
    """A new empty database: its name, and a callable that drops it."""
    name = f"osimage_test_{uuid.uuid4().hex[:16]}"
    _run(lambda: _admin(f'CREATE DATABASE "{name}"'))
    drop = _remember(
        f"pg:{name}", lambda: _run(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    )
    return name, drop


# -- Swift and S3 (shared/services/swift-aio) ----------------------------------------------


@cache
def swift_aio_env() -> dict[str, str]:
    """ST_* and AWS_* variables of the loopback Swift (with s3api); {} if there is none."""
    names = SWIFT_VARIABLES + S3_VARIABLES
    env = {name: os.environ[name] for name in names if os.environ.get(name)}
    if len(env) < len(names):
        env = _started_swift_aio()
    if not all(env.get(name) for name in names):
        return {}
    try:
        answer = httpx.get(
            env["ST_AUTH"],
            headers={"x-auth-user": env["ST_USER"], "x-auth-key": env["ST_KEY"]},
            timeout=10,
        )
    except httpx.HTTPError:
        return {}
    return env if answer.status_code == 200 else {}


def _started_swift_aio() -> dict[str, str]:
    script = SERVICES / "swift-aio"
    if not script.exists():
        return {}
    try:
        done = subprocess.run(
            [str(script), "start"], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    env: dict[str, str] = {}
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            env[key] = value
    return env


@dataclass
class StoreSpace:
    """A throwaway container or bucket: the `--store` URL, the server's env, and cleanup."""

    url: str
    env: dict[str, str] = field(default_factory=dict)
    drop: Callable[[], None] = lambda: None


def store_space(kind: str, **options: str) -> StoreSpace:
    """A new Swift container or S3 bucket on swift-aio (created by the server on first use)."""
    env = swift_aio_env()
    name = f"osimage-backend-{uuid.uuid4().hex[:12]}"
    query = "&".join(f"{key}={value}" for key, value in options.items())
    if kind == "swift":
        server_env = {
            "OSIMAGE_SWIFT_AUTH_URL": env["ST_AUTH"],
            "OSIMAGE_SWIFT_USER": env["ST_USER"],
            "OSIMAGE_SWIFT_KEY": env["ST_KEY"],
        }
        url = f"swift://{name}" + (f"?{query}" if query else "")
        drop = _remember(f"swift:{name}", lambda: _drop_swift(env, name))
    elif kind == "s3":
        server_env = {
            "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
        }
        url = f"s3://{name}?endpoint={env['S3_ENDPOINT_URL']}&region=us-east-1"
        url += f"&{query}" if query else ""
        drop = _remember(f"s3:{name}", lambda: _drop_s3(env, name))
    else:
        raise ValueError(f"no throwaway space for store {kind!r}")
    return StoreSpace(url, server_env, drop)


def _swift_listing(client: httpx.Client, url: str) -> Iterator[str]:
    marker = ""
    while True:
        answer = client.get(url, params={"format": "json", "marker": marker})
        if answer.status_code == 404:
            return
        entries = answer.json()
        if not entries:
            return
        for entry in entries:
            yield entry["name"]
        marker = entries[-1]["name"]


def _drop_swift(env: dict[str, str], name: str) -> None:
    auth = httpx.get(
        env["ST_AUTH"], headers={"x-auth-user": env["ST_USER"], "x-auth-key": env["ST_KEY"]}
    )
    storage = auth.headers["x-storage-url"]
    with httpx.Client(headers={"x-auth-token": auth.headers["x-auth-token"]}) as client:
        for container in (name, name + SEGMENTS_SUFFIX):
            for entry in list(_swift_listing(client, f"{storage}/{container}")):
                client.delete(f"{storage}/{container}/{entry}")
            client.delete(f"{storage}/{container}")


def s3_client(env: Mapping[str, str]) -> Any:
    """A plain boto3 client of swift-aio's s3api (`env`: `swift_aio_env()`), to look at or
    clean up what a test's server stored."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(
            s3={"addressing_style": "path"},
            # swift's s3api does not know the newer default checksums
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _drop_s3(env: dict[str, str], name: str) -> None:
    client = s3_client(env)
    try:
        for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for entry in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=entry["Key"])
        client.delete_bucket(Bucket=name)
    except client.exceptions.NoSuchBucket:
        pass
    finally:
        client.close()


# -- what a server gets --------------------------------------------------------------------


@dataclass
class Provision:
    """Arguments and variables to add to a server's command, and how to undo them."""

    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cleanups: list[Callable[[], None]] = field(default_factory=list)


def provision(backend: Backend, args: list[str], env: dict[str, str]) -> Provision:
    """What `backend` adds to a server started with `args` and `env`.

    A caller that already chose `--database` or `--store` keeps its choice. A service
    that is absent skips the test (fails it in CI).
    """
    given = set(args) | {name.lower() for name in env}
    extra = Provision()
    if backend.database == "postgres" and not {"--database", "osimage_database"} & given:
        require_service(
            postgres_available(), f"no PostgreSQL at {POSTGRES_ADMIN_URL} (or no asyncpg)"
        )
        name, drop = create_database()
        extra.args += ["--database", postgres_url(name)]
        extra.cleanups.append(drop)
    if backend.store != "file" and not {"--store", "osimage_store"} & given:
        require_service(
            bool(swift_aio_env()), "no Swift/S3 on loopback (shared/services/swift-aio start)"
        )
        space = store_space(backend.store)
        extra.args += ["--store", space.url]
        extra.env.update(space.env)
        extra.cleanups.append(space.drop)
    return extra
