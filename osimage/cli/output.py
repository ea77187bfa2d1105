"""How client commands print: a table for people, ``-f json|yaml|value`` for scripts.

`-f value` prints bare values: one line per value for a single record, one line per
row (values separated by spaces) for a list; ``-c`` picks columns.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import click

FORMATS: Final = ("table", "json", "yaml", "value")
_UNITS: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size: int | None) -> str | None:
    """``1536`` -> ``1.5KiB``; None stays None."""
    if size is None:
        return None
    value = float(size)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``-f/--format``, ``-c/--column`` and ``--human-readable`` to a command."""
    func = click.option("--human-readable", is_flag=True, help="Show sizes as KiB, MiB, GiB ...")(
        func
    )
    func = click.option(
        "-c",
        "--column",
        "columns",
        multiple=True,
        metavar="NAME",
        help="Show only this column (repeatable).",
    )(func)
    return click.option(
        "-f",
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format.",
    )(func)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}='{v}'" for k, v in sorted(value.items()))
    return str(value)


def _select(record: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    if not columns:
        return dict(record)
    unknown = [c for c in columns if c not in record]
    if unknown:
        known = ", ".join(record)
        raise click.UsageError(f"no column {', '.join(unknown)}; columns are: {known}")
    return {c: record[c] for c in columns}


def _dump(data: Any, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
    else:
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), nl=False)


def _console() -> Any:
    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    return Console(width=100_000, no_color=True, highlight=False)


def _print_unshrunk(table: Any) -> None:
    """Print a list table at its natural width, wider than the terminal if need be: a row
    that wraps still reads better than columns squeezed to nothing."""
    from rich.console import Console
    from rich.measure import Measurement

    console = _console()
    needed = Measurement.get(console, console.options.update_width(100_000), table).maximum
    if needed > console.width:
        console = Console(width=needed, force_terminal=console.is_terminal)
    console.print(table)


def _box() -> Any:
    from rich import box

    return box.HEAVY_HEAD if sys.stdout.isatty() else box.ASCII


def _title(key: str) -> str:
    return key.replace("_", " ").title().replace("Id", "ID")


def print_list(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str, chosen: Sequence[str]
) -> None:
    """Print records as a table, JSON/YAML list, or bare values (one row per line)."""
    shown = list(chosen) if chosen else list(columns)
    if chosen and rows:
        _select(rows[0], chosen)
    elif chosen:
        unknown = [c for c in chosen if c not in columns]
        if unknown:
            raise click.UsageError(f"no column {', '.join(unknown)}; columns are: {columns}")
    records = [{c: row.get(c) for c in shown} for row in rows]
    if fmt in {"json", "yaml"}:
        _dump(records, fmt)
    elif fmt == "value":
        for record in records:
            click.echo(" ".join(_text(v) for v in record.values()))
    else:
        from rich.table import Table

        table = Table(box=_box())
        for column in shown:
            table.add_column(_title(column), no_wrap=True)
        for record in records:
            table.add_row(*(_text(v) for v in record.values()))
        _print_unshrunk(table)


def print_record(record: Mapping[str, Any], fmt: str, chosen: Sequence[str]) -> None:
    """Print one record: a Field/Value table, a JSON/YAML object, or one value per line.

    In the table and in ``value`` output, ``properties`` become ``Property 'key'`` rows.
    """
    selected = _select(record, chosen)
    if fmt in {"json", "yaml"}:
        _dump(selected, fmt)
        return
    flat: dict[str, Any] = {}
    for key, value in selected.items():
        if key == "properties" and isinstance(value, dict):
            for prop, prop_value in sorted(value.items()):
                flat[f"Property '{prop}'"] = prop_value
        else:
            flat[key] = value
    if fmt == "value":
        for value in flat.values():
            click.echo(_text(value))
        return
    from rich.table import Table

    table = Table(box=_box())
    table.add_column("Field", no_wrap=True)
    table.add_column("Value", overflow="fold")
    for key, value in flat.items():
        table.add_row(key, _text(value))
    _console().print(table)
