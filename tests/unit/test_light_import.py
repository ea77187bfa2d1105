"""The SDK stays light: importing it pulls in no server dependency, and its surface is pinned."""

from __future__ import annotations

import json
import subprocess
import sys

import osimage

SERVER_ONLY = ("starlette", "sqlalchemy", "uvicorn", "anyio", "httpx", "aiosqlite", "alembic")


def loaded_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return {name.split(".")[0] for name in json.loads(out)}


def test_sdk_imports_no_server_dependency():
    loaded = loaded_after("import osimage\nimport osimage.image.v1.image")
    assert "osimage" in loaded
    assert loaded.isdisjoint(SERVER_ONLY), sorted(loaded & set(SERVER_ONLY))


def test_image_module_needs_no_http_stack_at_import():
    loaded = loaded_after("import osimage.image.v1.image")
    assert loaded.isdisjoint({*SERVER_ONLY, "requests", "keystoneauth1", "yaml"})


def test_public_surface_is_pinned():
    assert sorted(osimage.__all__) == ["Connection", "__version__", "connect", "exceptions"]
    for name in osimage.__all__:
        assert getattr(osimage, name) is not None


def test_cli_imports_no_operations_library():
    """`osimage --help` and `osimage policy` load oslo.* and prometheus only when run."""
    loaded = loaded_after("import osimage.cli")
    heavy = {"oslo_policy", "oslo_config", "oslo_messaging", "prometheus_client", "kombu"}
    assert "osimage" in loaded
    assert loaded.isdisjoint(heavy | set(SERVER_ONLY)), sorted(loaded & (heavy | set(SERVER_ONLY)))
