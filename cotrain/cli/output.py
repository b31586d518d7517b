"""Printing for the CLI: JSON on request, rich tables otherwise."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def print_json(obj: Any) -> None:
    """Print `obj` to stdout as one JSON document."""
    sys.stdout.write(json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def print_table(title: str, rows: Sequence[tuple[str, Any]] | Mapping[str, Any]) -> None:
    """Print name/value rows as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    items = rows.items() if isinstance(rows, Mapping) else rows
    for key, value in items:
        table.add_row(str(key), str(value))
    Console().print(table)
