"""The `osimage` command. `serve` imports the server lazily, so the SDK commands stay light.

The root group takes the connection options (``--os-*``); `image` and `member` hold the
client commands. `main` turns every user error into one line on stderr and exit code 1
(``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from osimage.cli.cache import cache
from osimage.cli.images import image, shared
from osimage.cli.members import member
from osimage.cli.policy import policy
from osimage.cli.serve import serve
from osimage.cli.state import CONNECTION_OPTIONS, CliState, UserError, explain


def _connection_options(func: Any) -> Any:
    for flags, dest, help_text in reversed(CONNECTION_OPTIONS):
        func = click.option(*flags, dest, default=None, help=help_text)(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="osimage")
@_connection_options
@click.option("--insecure", is_flag=True, default=None, help="Do not verify TLS certificates.")
@click.option("--debug", is_flag=True, help="Show tracebacks and HTTP requests on errors.")
@click.pass_obj
def cli(state: CliState, /, insecure: bool | None, debug: bool, **options: str | None) -> None:
    """Work with images on an OpenStack Image Service (API v1), or run one.

    \b
    Connection settings, strongest first: --os-* options, OS_* variables, then the
    cloud named by --os-cloud / OS_CLOUD in clouds.yaml. With none at all, osimage
    talks to `osimage serve` on http://127.0.0.1:9292.
    """
    state.debug = debug
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(name)s: %(message)s")
    state.options = {k: v for k, v in options.items() if v is not None}
    if insecure:
        state.options["insecure"] = True


cli.add_command(serve)
cli.add_command(cache)
cli.add_command(image)
cli.add_command(member)
cli.add_command(policy)
image.add_command(shared)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    state = CliState()
    try:
        code = cli.main(args=argv, prog_name="osimage", standalone_mode=False, obj=state)
        if isinstance(code, int) and code:
            sys.exit(code)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.exceptions.Abort:
        click.echo("osimage: interrupted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"osimage: error: {exc.format_message()}{hint}", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        click.echo(f"osimage: error: {exc.format_message()}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("osimage: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # e.g. `osimage image download x | head`: the reader left
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit-time flush cannot fail again
        sys.exit(1)
    except Exception as exc:  # every other failure becomes one readable line
        if state.debug:
            raise
        message = exc.message if isinstance(exc, UserError) else explain(exc, state)
        click.echo(f"osimage: error: {message}", err=True)
        sys.exit(1)
    finally:
        state.close()
