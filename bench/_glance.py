"""Glance as a peer for the benchmarks: installed from PyPI into a venv of its own, run
under uWSGI the way its docs deploy the Image API v2, with SQLite and a file store.

`install_glance` keeps the venv under a work directory for the next run; `GlanceServer`
writes a minimal configuration, runs ``glance-manage db_sync`` and starts uWSGI on a free
loopback port; `copy_catalogue` gives it the same images as an osimage database. Anything
that stops Glance from installing or starting raises `Skip` with the reason.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from tests.support.server import free_port, wait_for_answer

GLANCE_SPEC = "glance==33.0.0"
# uWSGI builds from source (needs a C compiler); pyuwsgi is the same server as wheels
UWSGI_SPECS = ("uwsgi==2.0.31", "pyuwsgi==2.0.30.post1")


class Skip(Exception):
    """Glance cannot be installed or started here; the reason is the message."""


# -- installing Glance ------------------------------------------------------------------


@dataclass
class GlanceInstall:
    venv: Path
    glance: str  # the version installed
    server: str  # e.g. "uwsgi 2.0.31"
    seconds: float  # how long the install took (when it was done)
    cached: bool

    @property
    def label(self) -> str:
        return f"Glance {self.glance} ({self.server})"


def _run_logged(
    what: str, cmd: list[str], log: Path, timeout: float, env: dict[str, str] | None = None
) -> int:
    """Run `cmd` in its own process group, output appended to `log`; on timeout kill the
    whole group (pip's build children too) and raise Skip saying `what` timed out."""
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise Skip(f"{what} did not finish within {timeout:.0f} s (log: {log})") from None
        except BaseException:
            _kill_group(proc)
            raise


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM then SIGKILL to the process group `proc` leads (it was started with
    start_new_session, so the group is exactly it and its children)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait()


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _failure(what: str, log: Path, *, kept: bool = True) -> Skip:
    """Skip with pip's (or any tool's) last ERROR line, else the log's last line; name
    the log if it is `kept` (not in a temporary directory)."""
    text = _tail(log, 40).splitlines()
    errors = [line for line in text if "ERROR" in line]
    why = (errors or text or ["no output"])[-1].strip()
    return Skip(f"{what} failed: {why[:300]}" + (f" (log: {log})" if kept else ""))


def install_glance(work: Path, spec: str, timeout: float) -> GlanceInstall:
    """The venv under `work` with `spec` and a uWSGI, installed now unless an earlier run
    left a complete one for the same spec and Python."""
    venv = work / f"venv-py{sys.version_info.major}.{sys.version_info.minor}"
    marker = venv / "osimage-bench.json"
    if marker.exists():
        about = json.loads(marker.read_text())
        if about.get("spec") == spec and (venv / "bin" / "uwsgi").exists():
            return GlanceInstall(venv, about["glance"], about["server"], about["seconds"], True)
    shutil.rmtree(venv, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "install.log"
    log.write_text("")
    print(f"installing {spec} and uWSGI into {venv} (log: {log}) ...", flush=True)
    started = time.perf_counter()
    deadline = started + timeout
    try:
        if _run_logged("python -m venv", [sys.executable, "-m", "venv", str(venv)], log, 120):
            raise _failure("python -m venv", log)
        pip = [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--retries",
            "2",
            "--timeout",
            "60",
        ]
        left = max(1.0, deadline - time.perf_counter())
        if _run_logged(f"pip install {spec}", [*pip, spec], log, left) != 0:
            raise _failure(f"pip install {spec}", log)
        server = ""
        for candidate in UWSGI_SPECS:
            left = max(1.0, deadline - time.perf_counter())
            if _run_logged(f"pip install {candidate}", [*pip, candidate], log, left) == 0:
                server = candidate.replace("==", " ")
                break
        if not server or not (venv / "bin" / "uwsgi").exists():
            raise _failure(f"pip install {' or '.join(UWSGI_SPECS)}", log)
        check = "import glance.common.wsgi_app, importlib.metadata as m; print(m.version('glance'))"
        python = str(venv / "bin" / "python")
        if _run_logged("importing glance", [python, "-c", check], log, 120) != 0:
            raise _failure("importing glance in its venv", log)
        version = _tail(log, 1).strip()
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    about = {
        "spec": spec,
        "glance": version,
        "server": server,
        "seconds": round(seconds, 1),
        "python": sys.version.split()[0],
    }
    marker.write_text(json.dumps(about, indent=2))
    print(f"installed Glance {about['glance']} and {server} in {seconds:.0f} s", flush=True)
    return GlanceInstall(venv, about["glance"], server, seconds, False)


# -- running Glance -----------------------------------------------------------------------


def _die_with_parent() -> Callable[[], None]:
    """For `preexec_fn`: the child gets SIGTERM when the benchmark dies, however it dies
    (PR_SET_PDEATHSIG). The library is loaded here, in the parent, so the child only calls."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)


def _glance_conf(base: Path) -> str:
    return f"""[DEFAULT]
enabled_backends = fs:file
use_stderr = true
[database]
connection = sqlite:///{base / "glance.sqlite"}
[paste_deploy]
config_file = {base / "etc" / "glance-api-paste.ini"}
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = {base / "images"}/
[os_glance_staging_store]
filesystem_store_datadir = {base / "staging"}/
[os_glance_tasks_store]
filesystem_store_datadir = {base / "tasks"}/
[oslo_policy]
# noauth: the paste pipeline gives every request an admin context with no project,
# which the new secure-RBAC defaults refuse; the legacy defaults let it through
enforce_new_defaults = false
enforce_scope = false
"""


def _uwsgi_ini(venv: Path, port: int) -> str:
    # Glance's httpd/glance-api-uwsgi.ini, one process, on our loopback port
    return f"""[uwsgi]
socket-timeout = 10
http-auto-chunked = true
http-chunked-input = true
http-raw-body = true
lazy-apps = true
add-header = Connection: close
buffer-size = 65535
thunder-lock = true
enable-threads = true
exit-on-reload = true
die-on-term = true
master = true
processes = 1
http-socket = 127.0.0.1:{port}
module = glance.wsgi.api:application
home = {venv}
"""


class GlanceServer:
    """glance-api under uWSGI with SQLite and a file store in `base`."""

    def __init__(self, install: GlanceInstall, base: Path) -> None:
        self.install = install
        self.base = base
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = base / "uwsgi.log"
        for sub in ("etc", "images", "staging", "tasks"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        paste = install.venv / "etc" / "glance" / "glance-api-paste.ini"
        if not paste.exists():
            raise Skip(f"the glance package installed no {paste.name}")
        shutil.copy(paste, base / "etc" / paste.name)
        (base / "etc" / "glance-api.conf").write_text(_glance_conf(base))
        self.env = {**os.environ, "OS_GLANCE_CONFIG_DIR": str(base / "etc")}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.base / "glance.sqlite"

    def db_sync(self) -> None:
        manage = self.install.venv / "bin" / "glance-manage"
        cmd = [str(manage), "--config-dir", str(self.base / "etc"), "db_sync"]
        if _run_logged("glance-manage db_sync", cmd, self.base / "db_sync.log", 300, self.env):
            raise _failure("glance-manage db_sync", self.base / "db_sync.log", kept=False)

    def start(self, timeout: float = 120) -> None:
        self.port = free_port()
        ini = self.base / "uwsgi.ini"
        ini.write_text(_uwsgi_ini(self.install.venv, self.port))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.install.venv / "bin" / "uwsgi"), "--ini", str(ini)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        status = wait_for_answer(
            self.port, "/v2/images?limit=1", timeout=timeout, proc=self.proc, until=None,
            connect_timeout=5, pause=0.2,
        )  # fmt: skip
        if status == 200:
            return
        if status is not None:
            raise Skip(f"GET /v2/images answered {status}:\n{_tail(self.log)}")
        if self.proc.poll() is not None:
            raise Skip(f"uWSGI exited with {self.proc.returncode}:\n{_tail(self.log)}")
        raise Skip(f"Glance did not answer within {timeout:.0f} s:\n{_tail(self.log)}")

    def stored(self, image_id: str) -> Path:
        """The file Glance's file store keeps an image's data in."""
        return self.base / "images" / image_id

    def stop(self) -> None:
        if self.proc is not None:
            _kill_group(self.proc)


def copy_catalogue(source: Path, target: Path) -> int:
    """Copy osimage's images and their properties, row for row, into Glance's tables."""
    columns = (
        "id, name, size, status, created_at, updated_at, deleted_at, deleted, "
        "disk_format, container_format, checksum, owner, min_disk, min_ram, protected, "
        "virtual_size, visibility, os_hidden, os_hash_algo, os_hash_value"
    )
    marks = ", ".join("?" * len(columns.split(",")))
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        rows = src.execute(f"SELECT {columns} FROM images WHERE deleted = 0").fetchall()
        dst.executemany(f"INSERT INTO images ({columns}) VALUES ({marks})", rows)
        props = src.execute(
            "SELECT p.image_id, p.key, p.value, i.created_at FROM image_properties p "
            "JOIN images i ON i.id = p.image_id WHERE i.deleted = 0"
        ).fetchall()
        dst.executemany(
            "INSERT INTO image_properties (image_id, name, value, created_at, deleted) "
            "VALUES (?, ?, ?, ?, 0)",
            props,
        )
    src.close()
    dst.close()
    return len(rows)
