"""`osimage image ...`: list, show, create, update, delete, download and shared.

Flags follow ``glance image-*`` (API v1). Images are named by id or by name. Only click and
the codec's tables (`osimage.wire`) are imported at startup; the SDK, rich and YAML load
when a command runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Final

import click

from osimage.cli.output import human_size, output_options, print_list, print_record
from osimage.cli.state import CliState, UserError
from osimage.wire import CONTAINER_FORMATS, DISK_FORMATS

if TYPE_CHECKING:
    from osimage.image.v1.image import Image

RECORD_FIELDS: Final = (
    "id", "name", "status", "size", "checksum", "disk_format", "container_format",
    "min_disk", "min_ram", "owner", "is_public", "is_protected", "created_at",
    "updated_at", "properties",
)  # fmt: skip
LIST_COLUMNS: Final = ("id", "name", "disk_format", "container_format", "size", "status")
LONG_COLUMNS: Final = (
    *LIST_COLUMNS, "owner", "is_public", "is_protected", "checksum", "min_disk", "min_ram",
    "created_at", "updated_at",
)  # fmt: skip


class _KeyValue(click.ParamType):  # type: ignore[type-arg]
    name = "KEY=VALUE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        key, sep, text = str(value).partition("=")
        if not sep or not key:
            self.fail(f"expected KEY=VALUE, got {value!r}", param, ctx)
        return key, text


KEY_VALUE: Final = _KeyValue()


def image_record(image: Image, human: bool = False) -> dict[str, Any]:
    """An image as a plain dict with the CLI's field names."""
    record = {name: getattr(image, name) for name in RECORD_FIELDS}
    record["properties"] = dict(image.properties or {})
    if human:
        record["size"] = human_size(record["size"])
    return record


def _metadata_options(func: Any) -> Any:
    """The metadata flags shared by create and update (glance image-create/update)."""
    options = [
        click.option("--name", help="Image name."),
        click.option("--disk-format", help=f"{', '.join(DISK_FORMATS)}."),
        click.option("--container-format", help=f"{', '.join(CONTAINER_FORMATS)}."),
        click.option("--owner", help="Owning project (admins only)."),
        click.option("--size", type=click.IntRange(min=0), help="Size of the data in bytes."),
        click.option("--min-disk", type=click.IntRange(min=0), help="Minimum disk (GB)."),
        click.option("--min-ram", type=click.IntRange(min=0), help="Minimum RAM (MB)."),
        click.option("--location", help="Register data that stays at this URL."),
        click.option("--copy-from", help="Have the server copy the data from this URL."),
        click.option("--file", "file", type=click.Path(dir_okay=False, allow_dash=True),
                     help="Upload data from this file; '-' reads standard input."),
        click.option("--checksum", help="MD5 of the data; the server refuses data that differs."),
        click.option("--is-public", type=click.BOOL, metavar="[True|False]",
                     help="Make the image public (admins only)."),
        click.option("--protected", "--is-protected", "protected", type=click.BOOL,
                     metavar="[True|False]", help="Forbid deleting the image."),
        click.option("--property", "properties", type=KEY_VALUE, multiple=True,
                     help="Custom property KEY=VALUE (repeatable)."),
        click.option("--progress/--no-progress", default=None,
                     help="Show a progress bar [default: when stderr is a terminal]."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def _metadata(
    options: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, str], str | None, bool | None]:
    """What the `_metadata_options` flags gave: the image's fields (by attribute name),
    its custom properties, --file and --progress."""
    names = {
        "name": "name", "disk_format": "disk_format", "container_format": "container_format",
        "owner": "owner", "size": "size", "min_disk": "min_disk", "min_ram": "min_ram",
        "location": "location", "copy_from": "copy_from", "checksum": "checksum",
        "is_public": "is_public", "protected": "is_protected",
    }  # fmt: skip
    fields = {attr: options[opt] for opt, attr in names.items() if options.get(opt) is not None}
    return fields, dict(options["properties"]), options["file"], options["progress"]


class _Source:
    """Image data from a file or standard input, read in chunks with progress."""

    def __init__(self, path: str, stack: ExitStack, progress: bool | None) -> None:
        from osimage.cli import progress as bars

        if path == "-":
            if sys.stdin.isatty():
                raise UserError("--file - reads image data from standard input: pipe it in")
            self.handle = sys.stdin.buffer
            self.size: int | None = None
            label = "stdin"
        else:
            try:
                self.handle = stack.enter_context(open(path, "rb"))  # noqa: SIM115
            except OSError as exc:
                raise UserError(f"cannot read {path}: {exc.strerror}") from None
            self.size = os.fstat(self.handle.fileno()).st_size
            label = os.path.basename(path)
        self.advance = stack.enter_context(
            bars.bar(f"upload {label}", self.size, bars.wanted(progress))
        )

    def chunks(self) -> Iterator[bytes]:
        from osimage.cli import progress as bars

        return bars.chunks(self.handle, self.advance)


@click.group()
def image() -> None:
    """List, show, create, update, delete and download images."""


@image.command("list")
@click.option("--name", help="Only images with this exact name.")
@click.option("--status", help="Only images in this status (queued, active, ...).")
@click.option("--container-format", help="Only images with this container format.")
@click.option("--disk-format", help="Only images with this disk format.")
@click.option("--size-min", type=click.IntRange(min=0), help="Only images at least this big.")
@click.option("--size-max", type=click.IntRange(min=0), help="Only images at most this big.")
@click.option(
    "--property-filter",
    "--property",
    "property_filter",
    type=KEY_VALUE,
    multiple=True,
    help="Only images with property KEY=VALUE (repeatable).",
)
@click.option(
    "--is-public",
    type=click.BOOL,
    metavar="[True|False]",
    help="Admins: only public (True) or only private (False) images.",
)
@click.option("--owner", help="Only images owned by this project (filtered here).")
@click.option("--all-tenants", is_flag=True, help="Admins: images of every project.")
@click.option("--changes-since", help="Only images changed after this ISO 8601 time.")
@click.option(
    "--sort-key",
    type=click.Choice(
        [
            "name",
            "status",
            "container_format",
            "disk_format",
            "size",
            "id",
            "created_at",
            "updated_at",
        ]
    ),
    help="Sort by.",
)
@click.option("--sort-dir", type=click.Choice(["asc", "desc"]), help="Sort direction.")
@click.option("--limit", type=click.IntRange(min=0), help="Show at most this many images.")
@click.option("--page-size", type=click.IntRange(min=1), help="Images per request.")
@click.option("--long", "long_", is_flag=True, help="Show more columns.")
@output_options
@click.pass_context
def list_images(
    ctx: click.Context,
    /,
    property_filter: tuple[tuple[str, str], ...],
    is_public: bool | None,
    owner: str | None,
    all_tenants: bool,
    limit: int | None,
    page_size: int | None,
    long_: bool,
    fmt: str,
    columns: tuple[str, ...],
    human_readable: bool,
    **filters: Any,
) -> None:
    """List the images you can see, newest first."""
    state = CliState.of(ctx)
    query: dict[str, Any] = {k: v for k, v in filters.items() if v is not None}
    if property_filter:
        query["properties"] = dict(property_filter)
    if all_tenants:
        query["is_public"] = "none"
    elif is_public is not None:
        query["is_public"] = is_public
    if page_size is not None:
        query["limit"] = page_size
    found = state.proxy.images(max_items=None if owner else limit, **query)
    rows = []
    for img in found:
        if owner is not None and img.owner != owner:
            continue
        rows.append(image_record(img, human_readable))
        if limit is not None and len(rows) >= limit:
            break
    print_list(rows, LONG_COLUMNS if long_ else LIST_COLUMNS, fmt, columns)


@image.command("show")
@click.argument("image_ref", metavar="IMAGE")
@output_options
@click.pass_context
def show_image(
    ctx: click.Context, image_ref: str, fmt: str, columns: tuple[str, ...], human_readable: bool
) -> None:
    """Show an image's metadata (IMAGE is an id or a name)."""
    state = CliState.of(ctx)
    found = state.find_image(image_ref)
    if found.status is None or found.created_at is None:
        found = state.proxy.get_image(found)
    print_record(image_record(found, human_readable), fmt, columns)


@image.command("create")
@click.option("--id", "image_id", help="Image id (a UUID) to use instead of a generated one.")
@_metadata_options
@click.option(
    "--skip-identical",
    is_flag=True,
    help="Reuse an active image with the same name and checksums instead.",
)
@click.option("--wait", is_flag=True, help="With --copy-from: wait until the image is active.")
@output_options
@click.pass_context
def create_image(
    ctx: click.Context,
    /,
    image_id: str | None,
    skip_identical: bool,
    wait: bool,
    fmt: str,
    columns: tuple[str, ...],
    human_readable: bool,
    **options: Any,
) -> None:
    """Create an image: reserve it, upload --file, or register --location / --copy-from."""
    state = CliState.of(ctx)
    fields, props, file, progress = _metadata(options)
    if image_id is not None:
        fields["id"] = image_id
    if file is not None and ("location" in fields or "copy_from" in fields):
        raise UserError("give one source: --file, --location or --copy-from")
    if "location" in fields and "copy_from" in fields:
        raise UserError("give one source: --location or --copy-from, not both")
    proxy = state.proxy
    if file is None:
        created = proxy.reserve_image(**fields, properties=props)
        if wait and created.status != "active":
            created = proxy.wait_for_status(created, "active", failures=["killed"], wait=None)
        print_record(image_record(created, human_readable), fmt, columns)
        return
    if "disk_format" not in fields:
        from osimage.image.v1._proxy import guess_disk_format

        guessed = guess_disk_format(file) if file != "-" else None
        if guessed is None:
            raise UserError(f"--disk-format is needed ({', '.join(DISK_FORMATS)})")
        fields["disk_format"] = guessed
    with ExitStack() as stack:
        source = _Source(file, stack, progress)
        name = fields.pop("name", None)
        md5 = fields.pop("checksum", None)
        if source.size is not None and "size" not in fields:
            fields["size"] = source.size
        created = proxy.create_image(
            name,
            data=source.chunks(),
            disk_format=fields.pop("disk_format", None),
            container_format=fields.pop("container_format", None),
            md5=md5,
            allow_duplicates=not skip_identical,
            properties=props,
            **fields,
        )
    print_record(image_record(created, human_readable), fmt, columns)


@image.command("update")
@click.argument("image_ref", metavar="IMAGE")
@_metadata_options
@click.option(
    "--purge-props", is_flag=True, help="Remove every custom property not given with --property."
)
@output_options
@click.pass_context
def update_image(
    ctx: click.Context,
    /,
    image_ref: str,
    purge_props: bool,
    fmt: str,
    columns: tuple[str, ...],
    human_readable: bool,
    **options: Any,
) -> None:
    """Change an image's metadata, or upload --file into a queued image."""
    state = CliState.of(ctx)
    fields, properties, file, progress = _metadata(options)
    if not fields and not properties and not purge_props and file is None:
        raise UserError("nothing to update: give at least one option (see --help)")
    found = state.find_image(image_ref)
    assert found.id is not None
    proxy = state.proxy
    updated = found
    if fields or properties or purge_props:
        if properties or purge_props:
            fields["properties"] = properties
        updated = proxy.update_image(found.id, purge_props=purge_props, **fields)
    if file is not None:
        if updated.status not in (None, "queued"):
            raise UserError(
                f"image {found.id} is {updated.status}: data can only be uploaded to a queued "
                "image (`osimage image create --file` makes a new one)"
            )
        with ExitStack() as stack:
            source = _Source(file, stack, progress)
            updated = proxy.upload_image_data(found.id, source.chunks())
    print_record(image_record(updated, human_readable), fmt, columns)


@image.command("delete")
@click.argument("image_refs", metavar="IMAGE...", nargs=-1, required=True)
@click.pass_context
def delete_image(ctx: click.Context, image_refs: tuple[str, ...]) -> None:
    """Delete images (each IMAGE an id or a name)."""
    from osimage.cli.state import explain

    state = CliState.of(ctx)
    failed = 0
    for ref in image_refs:
        try:
            found = state.find_image(ref)
            state.proxy.delete_image(found, ignore_missing=False)
        except Exception as exc:
            if state.debug or len(image_refs) == 1:
                raise
            message = exc.message if isinstance(exc, UserError) else explain(exc, state)
            click.echo(f"osimage: error: {ref}: {message}", err=True)
            failed += 1
    if failed:
        raise UserError(f"{failed} of {len(image_refs)} images were not deleted")


@image.command("download")
@click.argument("image_ref", metavar="IMAGE")
@click.option(
    "--file",
    "file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Write the data here (written beside, renamed when verified); '-' or none: "
    "standard output.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar [default: when stderr is a terminal].",
)
@click.pass_context
def download_image(
    ctx: click.Context, image_ref: str, file: str | None, progress: bool | None
) -> None:
    """Download an image's data, verified against its checksum."""
    from osimage import transfer
    from osimage.cli import progress as bars

    state = CliState.of(ctx)
    to_stdout = file in (None, "-")
    if to_stdout and sys.stdout.isatty():
        raise UserError("refusing to write image data to a terminal: pass --file PATH or redirect")
    found = state.find_image(image_ref)
    if found.status not in (None, "active"):
        raise UserError(f"image {found.id} is {found.status}: only active images have data")
    with ExitStack() as stack:
        data = stack.enter_context(state.proxy.download_image(found, stream=True))
        advance = stack.enter_context(
            bars.bar(f"download {found.name or found.id}", found.size, bars.wanted(progress))
        )
        if to_stdout:
            out = sys.stdout.buffer
            for chunk in data:
                out.write(chunk)
                if advance is not None:
                    advance(len(chunk))
            out.flush()
            return
        assert file is not None
        with transfer.replacing(file) as handle:
            for chunk in data:
                handle.write(chunk)
                if advance is not None:
                    advance(len(chunk))


@click.command("shared")
@click.option("--member", help="Project the images are shared with [default: yours].")
@output_options
@click.pass_context
def shared(
    ctx: click.Context,
    member: str | None,
    fmt: str,
    columns: tuple[str, ...],
    human_readable: bool,
) -> None:
    """List the images shared with a project (by default, with yours)."""
    from osimage import exceptions

    state = CliState.of(ctx)
    try:
        entries = state.proxy.shared_images(member)
    except exceptions.InvalidRequest:
        if member is not None:
            raise
        raise UserError("these credentials name no project: pass --member PROJECT_ID") from None
    rows = [e.to_dict() for e in entries]
    print_list(rows, ("image_id", "member_id", "can_share"), fmt, columns)
