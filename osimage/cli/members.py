"""`osimage member ...`: list, add and delete the projects an image is shared with."""

from __future__ import annotations

import click

from osimage.cli.output import output_options, print_list, print_record
from osimage.cli.state import CliState


def _image_id(state: CliState, ref: str) -> str:
    found = state.find_image(ref)
    assert found.id is not None
    return found.id


@click.group()
def member() -> None:
    """Share images with other projects (v1 members)."""


@member.command("list")
@click.argument("image_ref", metavar="IMAGE")
@output_options
@click.pass_context
def list_members(
    ctx: click.Context, image_ref: str, fmt: str, columns: tuple[str, ...], human_readable: bool
) -> None:
    """List the projects IMAGE (an id or a name) is shared with."""
    state = CliState.of(ctx)
    entries = state.proxy.members(_image_id(state, image_ref))
    rows = [e.to_dict() for e in entries]
    print_list(rows, ("image_id", "member_id", "can_share"), fmt, columns)


@member.command("add")
@click.argument("image_ref", metavar="IMAGE")
@click.argument("member_id", metavar="MEMBER")
@click.option("--can-share", is_flag=True, help="Let the member share the image further.")
@output_options
@click.pass_context
def add_member(
    ctx: click.Context,
    image_ref: str,
    member_id: str,
    can_share: bool,
    fmt: str,
    columns: tuple[str, ...],
    human_readable: bool,
) -> None:
    """Share IMAGE with project MEMBER (or change its --can-share)."""
    state = CliState.of(ctx)
    added = state.proxy.add_member(_image_id(state, image_ref), member_id, can_share)
    print_record(added.to_dict(), fmt, columns)


@member.command("delete")
@click.argument("image_ref", metavar="IMAGE")
@click.argument("member_id", metavar="MEMBER")
@click.pass_context
def delete_member(ctx: click.Context, image_ref: str, member_id: str) -> None:
    """Stop sharing IMAGE with project MEMBER."""
    state = CliState.of(ctx)
    state.proxy.remove_member(_image_id(state, image_ref), member_id, ignore_missing=False)
