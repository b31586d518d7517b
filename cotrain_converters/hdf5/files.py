"""Opening HDF5 sources (ALOHA, robomimic, EgoDex) with one error wording for unreadable files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cotrain.errors import DataError


def one_line(exc: BaseException) -> str:
    """h5py messages span lines; errors must stay one line."""
    return " ".join(str(exc).split())


def open_hdf5(path: Path) -> Any:
    """`h5py.File(path, "r")`, or a DataError naming the file when it is unreadable or truncated."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(path, f"unreadable or truncated HDF5 file: {one_line(exc)}") from None
