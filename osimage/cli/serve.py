"""`osimage serve`: run the image service. Options come from the settings table.

The server's dependencies (sqlalchemy, uvicorn, anyio) are imported inside the
command, so `osimage --help` and the SDK stay light.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from osimage.server.settings import SETTINGS, Setting, Settings, SettingsError


def _option(row: Setting) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    default = f" [default: {row.default}]" if row.default is not None and not row.flag else ""
    help_text = f"{row.help}{default} (env: {row.variable})"
    if row.flag:
        return click.option(row.option, row.name, is_flag=True, default=None, help=help_text)
    return click.option(
        row.option,
        row.name,
        default=None,
        multiple=row.multiple,
        metavar=row.name.upper(),
        help=help_text,
    )


def _with_settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for row in reversed(SETTINGS):
        func = _option(row)(func)
    return func


@click.command()
@_with_settings_options
def serve(**flags: Any) -> None:
    """Run the image service (Image API v1) until SIGTERM or Ctrl-C."""
    try:
        settings = Settings.load(flags, os.environ)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    from osimage.server.runner import run

    run(settings)
