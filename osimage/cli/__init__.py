"""The `osimage` command. `serve` imports the server lazily, so the SDK commands stay light."""

from __future__ import annotations

import click

from osimage.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="osimage")
def cli() -> None:
    """Work with images on an OpenStack Image Service (API v1), or run one."""


cli.add_command(serve)


def main() -> None:
    """Entry point of the console script."""
    cli()
