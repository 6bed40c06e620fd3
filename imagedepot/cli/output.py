"""How the CLI shows what it lists: aligned tables with a header row for people, JSON for
scripts (`--json`), and byte counts a person can read. One module so every listing looks
the same, whether it comes from the API or from the data dir."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")

BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """`headers` over `rows`, each column as wide as its widest cell, two spaces apart; a
    cell of None shows as `-`. The header comes even with no rows, so an empty listing still
    says what it would hold."""
    cells = [[str(header) for header in headers]]
    cells += [["-" if cell is None else str(cell) for cell in row] for row in rows]
    widths = [max(len(line[column]) for line in cells) for column in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    click.echo(table(headers, rows))


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2))


def human_bytes(count: int | None) -> str | None:
    """1536 -> `1.5 KiB`; None (not known yet) stays None."""
    if count is None:
        return None
    size = float(count)
    for unit in BYTE_UNITS:
        if size < 1024 or unit == BYTE_UNITS[-1]:
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def short_time(moment: datetime | None) -> str | None:
    """A moment as a table shows it: UTC to the second (`2025-01-31 12:00:00Z`)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
