"""Files named by source data, and image bytes taken from it: both checked before they are used.

Paths inside a dataset (an HF Image struct's `path`, a shard listed in a manifest) are data, not
options: a dataset must never make the converter read a file outside its own folder, whether by an
absolute path, `..` components or a symlink that points away. `inside` resolves such a path against
the source root (absolute paths too) and refuses escapes, naming the file and place that held it.

Image bytes that pass through untouched (JPEGs that need no resize) are never decoded by the
converter otherwise; `checked_image` decodes them fully, so a truncated or corrupt frame fails the
conversion (or is skipped with `--on-bad-episode skip`) instead of failing `cotrain validate` later.

Source tars are read with tarfile, which takes a tar cut short at a member boundary (or inside a
member it was not asked to read) for a complete one; `tar_damage` says what is wrong before that.
"""

from __future__ import annotations

import os
from pathlib import Path

from typing_extensions import TypedDict

from cotrain.dataset import shard_scan
from cotrain.errors import DataError
from cotrain.media.image import image_problem

_BLOCK = shard_scan.BLOCK


class FileRef(TypedDict):
    """A unit's `ref` where a unit is one file of the source (or the source file itself)."""

    file: str  # relative to the source folder, "/"-separated; "" when the source is that file


def unit_file(src: Path, ref: FileRef) -> Path:
    """The file a `FileRef` names: `src` itself when the source is a file."""
    return src / ref["file"] if ref.get("file") else src


def inside(root: Path, ref: str, *, base: Path | None = None, where: object, episode: object | None = None,
           frame: int | None = None, key: str | None = None, what: str = "path") -> Path:
    """`ref` (relative to `base`, default `root`) resolved, symlinks included; a DataError when it leaves `root`.

    Args:
        root: the source root nothing may escape.
        ref: the path as written in the data.
        base: the folder a relative `ref` is relative to (e.g. the parquet file's folder).
        where, episode, frame, key: where `ref` was found, for the error.
        what: what `ref` names, for the error ("image path", "shard").
    """
    if not ref or "\0" in ref:
        raise DataError(where, f"{what} {ref!r} is empty or invalid", episode=episode, frame=frame, key=key)
    real_root = root.resolve()
    # Absolute paths are allowed while they stay inside: HF `datasets` writes the absolute path of an
    # image it did not embed (Dataset.to_parquet), and such a file beside the parquet is the dataset's own.
    target = ((base or root) / ref).resolve()
    if target != real_root and real_root not in target.parents:
        kind = "is absolute and lies" if os.path.isabs(ref) else "leads"
        raise DataError(where, f"{what} {ref!r} {kind} outside the dataset folder {root} (resolved: {target}); "
                               "paths in a dataset must stay inside it", episode=episode, frame=frame, key=key)
    return target


def checked_image(data: bytes, *, where: object, episode: object | None = None, frame: int | None = None,
                  key: str | None = None) -> bytes:
    """`data` itself when it decodes completely; else a DataError naming the place."""
    problem = image_problem(data)
    if problem:
        raise DataError(where, problem, episode=episode, frame=frame, key=key)
    return data


def tar_damage(path: Path) -> str | None:
    """Why a tar is cut short or damaged, or None. tarfile reads a tar truncated at a member boundary,
    or inside a member it was not asked to read, as if it ended there. The header scan of
    `cotrain.dataset.shard_scan` checks checksums and that every member's data is in the file; it stops at the
    end-of-archive marker (a zero block) that every tar writer puts after the last member, so the last
    header-sized block it read must be that marker."""
    import mmap

    last = {"block": b""}
    with path.open("rb") as fh:
        end = os.fstat(fh.fileno()).st_size
        if end == 0:
            return "truncated tar: the file is empty (byte 0)"
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:

            def read(offset: int, size: int) -> bytes:
                data = mm[offset: offset + size]
                if size == _BLOCK:
                    last["block"] = data
                return data

            try:
                shard_scan.scan(read, end, str(path))
            except DataError as exc:
                return exc.problem
    if last["block"] != bytes(_BLOCK):
        return (f"truncated tar: no end-of-archive marker after the last member (the file ends at byte {end}); "
                "what followed is lost")
    return None
