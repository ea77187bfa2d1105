"""`osimage cache ...`: manage this API node's image cache (see docs/cache.md).

The commands work on the node's own disk, database and store, with the settings of
`osimage serve` (``--cache-dir`` etc., or their ``OSIMAGE_*`` variables); the server
modules are imported only when a command runs.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any

import click

from osimage.cli.output import human_size, output_options, print_list
from osimage.server.settings import SETTINGS, Settings, SettingsError

_OPTIONS = ("data_dir", "database", "store", "cache_dir", "cache_size")


def _settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for row in reversed([row for row in SETTINGS if row.name in _OPTIONS]):
        func = click.option(
            row.option,
            row.name,
            default=None,
            metavar=row.name.upper(),
            help=f"{row.help} (env: {row.variable})",
        )(func)
    return func


def _run(flags: dict[str, Any], action: str, image_id: str | None = None) -> Any:
    try:
        settings = Settings.load(flags, os.environ)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    if settings.cache_dir is None:
        raise click.UsageError("no cache: give --cache-dir (OSIMAGE_CACHE_DIR)")
    from osimage.server.cache.operator import run
    from osimage.server.errors import ApiError

    try:
        return run(settings, action, image_id)
    except ApiError as error:
        raise click.ClickException(error.message) from None


def _when(stamp: float) -> str:
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).isoformat(timespec="seconds")


@click.group()
def cache() -> None:
    """Manage the image cache of this API node (admin tools; see docs/cache.md)."""


@cache.command("list")
@click.option("--queued", is_flag=True, help="List the images queued for prefetch instead.")
@output_options
@_settings_options
def list_cached(
    queued: bool, fmt: str, columns: tuple[str, ...], human_readable: bool, **flags: Any
) -> None:
    """List the cached images, least recently used first (or the queued ones)."""
    if queued:
        rows = [{"image_id": image_id} for image_id in _run(flags, "queued")]
        print_list(rows, ["image_id"], fmt, columns)
        return
    rows = []
    for entry in _run(flags, "list"):
        size = human_size(entry["size"]) if human_readable else entry["size"]
        rows.append(
            {
                "image_id": entry["image_id"],
                "size": size,
                "checksum": entry["checksum"],
                "last_accessed": _when(entry["last_accessed"]),
                "last_modified": _when(entry["last_modified"]),
            }
        )
    print_list(
        rows, ["image_id", "size", "checksum", "last_accessed", "last_modified"], fmt, columns
    )


@cache.command()
@click.argument("image_id")
@_settings_options
def queue(image_id: str, **flags: Any) -> None:
    """Queue an active image for the next prefetch run."""
    _run(flags, "queue", image_id)
    click.echo(f"queued {image_id}")


@cache.command()
@click.argument("image_id", required=False)
@click.option("--all", "everything", is_flag=True, help="Delete every cached image.")
@click.option(
    "--queued",
    is_flag=True,
    help="Take the image (or, with --all, every image) off the queue instead.",
)
@_settings_options
def delete(image_id: str | None, everything: bool, queued: bool, **flags: Any) -> None:
    """Delete an image's cached copy (or, with --queued, its place in the queue)."""
    if (image_id is None) == (not everything):
        raise click.UsageError("give an IMAGE_ID or --all (not both)")
    if queued:
        count = _run(flags, "dequeue-all") if everything else _run(flags, "dequeue", image_id)
        click.echo(f"{count} dequeued")
        return
    count = _run(flags, "delete-all") if everything else _run(flags, "delete", image_id)
    click.echo(f"{count} deleted")


@cache.command()
@_settings_options
def prefetch(**flags: Any) -> None:
    """Cache every queued image now (`osimage serve` also does this periodically)."""
    done = _run(flags, "prefetch")
    click.echo(f"{len(done)} cached" + "".join(f"\n{image_id}" for image_id in done))


@cache.command()
@_settings_options
def prune(**flags: Any) -> None:
    """Drop entries of deleted or changed images, then evict down to --cache-size."""
    dropped = _run(flags, "prune")
    click.echo(f"{len(dropped)} removed" + "".join(f"\n{image_id}" for image_id in dropped))
