"""JSON Lines input (LeRobot v2.1 metadata, LBM manifests, segment annotations): one reader, one error wording."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cotrain.errors import DataError


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for every non-blank line; bad JSON or a non-object is a DataError."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, f"line {n}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(path, f"line {n}: expected a JSON object, got {type(row).__name__}")
            yield n, row
