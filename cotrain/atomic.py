"""Atomic file writes: write beside the target under a temporary name, fsync, rename.

A reader (or a resumed run) therefore sees either nothing or the complete file under the final
name, whatever moment the writer was killed at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TMP_SUFFIX = ".tmp"


@contextmanager
def atomic_open(path: Path) -> Iterator[BinaryIO]:
    """Open `path + .tmp` for writing; on success fsync and rename it to `path`, else remove it."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))
