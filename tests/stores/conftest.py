"""Fixtures for the store contract suite: the anyio backend and the Swift/S3 service."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_service

pytest.register_assert_rewrite("tests.stores.contract")

SERVICES = Path(
    os.environ.get("OSIMAGE_SERVICES_DIR", Path(__file__).parents[3] / "shared" / "services")
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _swift_aio_env() -> dict[str, str]:
    """The variables `swift-aio start` prints (it starts Swift only if it is not running)."""
    script = SERVICES / "swift-aio"
    if not script.exists():
        return {}
    try:
        done = subprocess.run(
            [str(script), "start"], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if done.returncode != 0:
        return {}
    env: dict[str, str] = {}
    for line in done.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            env[name] = value
    return env


@pytest.fixture(scope="session")
def swift_aio() -> dict[str, str]:
    """ST_*/AWS_* variables of a healthy loopback Swift with s3api; skips (fails in CI) if none."""
    names = (
        "ST_AUTH",
        "ST_USER",
        "ST_KEY",
        "S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    )
    env = {name: os.environ[name] for name in names if name in os.environ}
    if len(env) < len(names):
        env = _swift_aio_env()
    healthy = False
    if all(env.get(name) for name in names):
        try:
            answer = httpx.get(
                env["ST_AUTH"],
                headers={"x-auth-user": env["ST_USER"], "x-auth-key": env["ST_KEY"]},
                timeout=10,
            )
            healthy = answer.status_code == 200
        except httpx.HTTPError:
            healthy = False
    require_service(healthy, "no Swift on loopback (shared/services/swift-aio start)")
    return env
