"""`osimage policy`: the service's policy rules (issue 15). Imports the server lazily."""

from __future__ import annotations

import click


@click.group()
def policy() -> None:
    """The image service's policy rules (oslo.policy, Glance's rule names)."""


@policy.command()
def defaults() -> None:
    """Print the default rules as an oslo.policy YAML file, to start a --policy-file from."""
    from osimage.server.operations.policy import defaults_yaml

    click.echo(defaults_yaml(), nl=False)
