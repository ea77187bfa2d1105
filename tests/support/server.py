"""Run a real `osimage serve` process on a free loopback port for tests and benchmarks."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.backends import Backend, provision, selected_backend

# Identities for `--auth tokens`: token -> context. Tests refer to them by token.
TOKENS: dict[str, dict[str, object]] = {
    "admin-token": {"user_id": "u-admin", "project_id": "p-admin", "roles": ["admin"]},
    "alice-token": {"user_id": "u-alice", "project_id": "p-alice", "roles": ["member"]},
    "bob-token": {"user_id": "u-bob", "project_id": "p-bob", "roles": ["member"]},
    "carol-token": {"user_id": "u-carol", "project_id": "p-carol", "roles": ["member"]},
    "noproject-token": {"user_id": "u-nobody", "project_id": None, "roles": ["member"]},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_answer(
    port: int,
    path: str,
    *,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    until: int | None = 200,
    connect_timeout: float = 1.0,
    pause: float = 0.05,
) -> int | None:
    """GET `path` on 127.0.0.1:`port` until it answers `until` (with `until=None`, any
    status); return that status.

    Returns None when `timeout` seconds pass first or `proc` has exited (see its
    `returncode`). Sleeps `pause` after each refused or broken connection.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return None
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=connect_timeout)
        try:
            conn.request("GET", path)
            status = conn.getresponse().status
            if until is None or status == until:
                return status
        except (OSError, http.client.HTTPException):
            time.sleep(pause)
        finally:
            conn.close()
    return None


@dataclass
class Server:
    """One `osimage serve` process; `url` is its root, e.g. http://127.0.0.1:PORT."""

    data_dir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # run by close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v1"

    def start(self, timeout: float = 30.0) -> Server:
        if not self.port:
            self.port = free_port()
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-server.log"
        cmd = [
            sys.executable,
            "-m",
            "osimage",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        if wait_for_answer(self.port, "/versions", timeout=timeout, proc=self.proc) == 200:
            return self
        if self.proc.poll() is not None:
            raise RuntimeError(f"osimage serve exited early:\n{self.log()}")
        self.stop()
        raise RuntimeError(f"osimage serve did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        """Stop, then remove what the server was given (its own database, container)."""
        self.stop()
        while self.cleanups:
            self.cleanups.pop()()

    def kill(self) -> None:
        """SIGKILL: no cleanup code in the server runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> Server:
        self.stop()
        return self.start()


def tokens_file(directory: Path) -> Path:
    path = directory / "tokens.json"
    path.write_text(json.dumps(TOKENS))
    return path


def start_server(
    base: Path,
    *args: str,
    auth: str = "noauth",
    backend: Backend | None = None,
    environ: Mapping[str, str] | None = None,
    **env: str,
) -> Server:
    """Start a server with its own data dir under `base`; `auth` is noauth or tokens.

    `backend` (default: `OSIMAGE_TEST_BACKEND`, see tests.support.backends) gives the
    server a fresh PostgreSQL database and/or Swift container or S3 bucket unless `args`
    choose a database or store; `close()` removes them again. `environ` and `env` are
    extra environment variables for the server (`environ` for a ready-made mapping).
    """
    base.mkdir(parents=True, exist_ok=True)
    env = {**(environ or {}), **env}
    extra = list(args)
    if auth == "tokens":
        extra += ["--auth", "tokens", "--tokens-file", str(tokens_file(base))]
    given = provision(backend or selected_backend(), extra, env)
    server = Server(
        data_dir=base / "data",
        args=extra + given.args,
        env={**given.env, **env},
        cleanups=given.cleanups,
    )
    try:
        return server.start()
    except BaseException:
        server.close()
        raise
