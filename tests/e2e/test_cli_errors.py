"""`osimage` failures: exit code 1, one line saying what to do next; --debug shows tracebacks."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_cli import OSIMAGE, Cli, clean_env, default_sigint, write_clouds
from tests.support.server import Server, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def test_no_server_suggests_osimage_serve(home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    message = Cli(home, prefix=["--os-image-url", url]).fails("image", "list")
    assert f"no image service answers at {url}" in message
    assert "osimage serve" in message


def test_debug_shows_the_traceback(home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = Cli(home, prefix=["--debug", "--os-image-url", url]).run("image", "list")
    assert done.returncode == 1
    assert b"Traceback" in done.stderr
    assert b"ConnectFailure" in done.stderr


def test_401_names_the_credentials_and_their_source(home: Path, tokens_server: Server) -> None:
    url = tokens_server.url
    message = Cli(home, prefix=["--os-endpoint", url]).fails("image", "list")
    assert "HTTP 401" in message
    assert "endpoint " + url + " from --os-endpoint" in message
    assert "needs a token" in message
    from_env = Cli(home, extra_env={"OS_ENDPOINT": url, "OS_TOKEN": "stale"})
    message = from_env.fails("image", "list")
    assert "token from OS_TOKEN" in message
    assert "stale" not in message
    flagged = Cli(home, prefix=["--os-endpoint", url, "--os-token", "stale"])
    assert "token from --os-token" in flagged.fails("image", "show", "x")
    clouds = write_clouds(
        home, {"bad": {"auth_type": "admin_token", "auth": {"endpoint": url, "token": "stale"}}}
    )
    message = Cli(home, extra_env={"OS_CLOUD": "bad"}).fails("member", "list", "x")
    assert f"token from {clouds} (cloud 'bad')" in message


def test_configuration_mistakes(home: Path) -> None:
    message = Cli(home, extra_env={"OS_CLOUD": "ghost"}).fails("image", "list")
    assert "cloud 'ghost' (from OS_CLOUD) is not defined" in message
    message = Cli(home, prefix=["--os-auth-type", "password"]).fails("image", "list")
    assert "auth_url (OS_AUTH_URL)" in message


def test_user_errors_are_one_line_with_exit_code_1(
    home: Path, server: Server, tmp_path: Path
) -> None:
    cli = Cli(home, extra_env={"OS_IMAGE_URL": server.url})
    assert "no image has the id or name 'ghost-image'" in cli.fails("image", "show", "ghost-image")
    assert "No such option" in cli.fails("image", "list", "--bogus")
    assert "osimage image list --help" in cli.fails("image", "list", "--bogus")
    assert "No such command" in cli.fails("imag")
    assert "KEY=VALUE" in cli.fails("image", "create", "--property", "novalue")
    assert "nothing to update" in cli.fails("image", "update", "whatever")
    blob = tmp_path / "disk.bin"
    blob.write_bytes(b"data")
    assert "--disk-format is needed" in cli.fails("image", "create", "--file", str(blob))
    missing = tmp_path / "missing.raw"
    assert str(missing) in cli.fails("image", "create", "--file", str(missing))
    name = f"twin-{uuid.uuid4().hex[:8]}"
    cli.ok("image", "create", "--name", name)
    cli.ok("image", "create", "--name", name)
    assert "more than one image is named" in cli.fails("image", "show", name)
    queued = cli.json("image", "create", "--name", f"q-{uuid.uuid4().hex[:8]}")
    assert "only active images have data" in cli.fails("image", "download", queued["id"])
    done = cli.run("image", "delete", queued["id"], "ghost-image")  # one line per failure
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        "osimage: error: ghost-image: no image has the id or name 'ghost-image' "
        "(`osimage image list` shows the images you can see)",
        "osimage: error: 1 of 2 images were not deleted",
    ]
    assert cli.values("image", "list", "--name", queued["name"]) == []


def test_shared_with_me_needs_a_project(home: Path, tokens_server: Server) -> None:
    cli = Cli(home, prefix=["--os-endpoint", tokens_server.url, "--os-token", "bob-token"])
    assert "--member" in cli.fails("image", "shared")


def test_member_errors(home: Path, server: Server) -> None:
    cli = Cli(home, extra_env={"OS_IMAGE_URL": server.url})
    image = cli.json("image", "create", "--name", f"m-{uuid.uuid4().hex[:8]}")
    assert "HTTP 404" in cli.fails("member", "delete", image["id"], "p-nobody")


def test_the_cli_imports_neither_the_server_nor_openstacksdk(home: Path, server: Server) -> None:
    script = (
        "import sys\n"
        "from osimage.cli import main\n"
        "try:\n"
        "    main(['--os-image-url', sys.argv[1], 'image', 'list', '-f', 'json'])\n"
        "except SystemExit as done:\n"
        "    assert not done.code, done.code\n"
        "heavy = ('starlette', 'sqlalchemy', 'uvicorn', 'anyio', 'httpx', 'openstack',\n"
        "         'osimage.server.app', 'alembic', 'aiosqlite')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, server.url],
        env=clean_env(home),
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.decode().splitlines()[-1] == "[]"


def test_ctrl_c_during_an_upload_deletes_the_reserved_image(home: Path, server: Server) -> None:
    from osimage.connection import Connection

    name = f"interrupted-{uuid.uuid4().hex[:8]}"
    cli = Cli(home, extra_env={"OS_IMAGE_URL": server.url})
    proc = subprocess.Popen(
        [str(OSIMAGE), "image", "create", "--name", name, "--disk-format", "raw",
         "--container-format", "bare", "--file", "-"],
        env=cli.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )  # fmt: skip
    assert proc.stdin is not None
    with Connection(endpoint=server.url, environ={}) as conn:
        every = {"name": name, "changes_since": "2000-01-01T00:00:00"}
        while not [i for i in conn.image.images(**every) if i.status == "saving"]:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            proc.stdin.write(b"x" * 65536)  # keep the upload going until the server sees it
            proc.stdin.flush()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert err.decode().strip() == "osimage: interrupted"
        assert [i.status for i in conn.image.images(**every)] == ["deleted"]
