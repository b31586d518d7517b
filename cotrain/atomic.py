"""Atomic file writes: write beside the target under a temporary name, fsync, rename.

A reader (or a resumed run) therefore sees either nothing or the complete file under the final
name, whatever moment the writer was killed at.

A write that fails (a full disk, a quota, a file-size limit, a read-only folder) raises `WriteError`:
one line naming the file being written and why, after the temporary file is removed. Only errors of
the write itself are turned into it: the caller's own OSErrors inside the `with` block (reading a
source file, say) pass through unchanged, so a broken input is never reported as a full disk.
"""

from __future__ import annotations

import errno
import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cotrain.errors import CotrainError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["RESUME_HINT", "TMP_SUFFIX", "WriteError", "atomic_open", "errno_of", "write_bytes_atomic", "write_error",
           "write_text_atomic", "writing"]

TMP_SUFFIX = ".tmp"

# The errors that mean "no room": freeing space (or raising the limit) and running again fixes them.
_NO_ROOM = {
    errno.ENOSPC: "the disk is full",
    getattr(errno, "EDQUOT", -1): "the disk quota is exceeded",
    errno.EFBIG: "the file exceeds the file system's or this process's file-size limit",
}
RESUME_HINT = "free some space and run the same command again (finished work is kept)"


class WriteError(CotrainError):
    """A file could not be written; the message names it and the reason (one line)."""


def write_error(path: object, exc: OSError, hint: str = RESUME_HINT) -> WriteError:
    """The one-line error for `exc`, raised while writing `path`."""
    code = errno.errorcode.get(exc.errno or 0, "")
    if exc.errno in _NO_ROOM:
        return WriteError(f"cannot write {path}: {_NO_ROOM[exc.errno]} ({code}); {hint}")
    reason = exc.strerror or str(exc)
    return WriteError(f"cannot write {path}: {reason}" + (f" ({code})" if code else ""))


def errno_of(message: str) -> int | None:
    """The errno inside a Rust I/O error's text ("... (os error 28)"), as safetensors reports them."""
    match = re.search(r"os error (\d+)", message)
    return int(match.group(1)) if match else None


@contextmanager
def writing(path: object, hint: str = RESUME_HINT) -> Iterator[None]:
    """Turn an OSError of a non-atomic write (mkdir, a copy, a library's own saver) into WriteError."""
    try:
        yield
    except OSError as exc:
        raise write_error(path, exc, hint) from None


class _NamedFileIO(io.FileIO):
    """A raw file whose write errors name the final target (the temp name would mislead the user)."""

    target: str = ""
    hint: str = RESUME_HINT

    def write(self, data: ReadableBuffer, /) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            raise write_error(self.target, exc, self.hint) from None


@contextmanager
def atomic_open(path: Path, hint: str = RESUME_HINT) -> Iterator[BinaryIO]:
    """Open `path + .tmp` for writing; on success fsync and rename it to `path`, else remove it."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with writing(path, hint):
            raw = _NamedFileIO(tmp, "wb")
        raw.target, raw.hint = str(path), hint
        with io.BufferedWriter(raw) as fh:
            yield fh
            with writing(path, hint):
                fh.flush()
                os.fsync(fh.fileno())
        with writing(path, hint):
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes, hint: str = RESUME_HINT) -> None:
    """Write `data` to `path` atomically (see atomic_open)."""
    with atomic_open(path, hint) as fh:
        fh.write(data)


def write_text_atomic(path: Path, text: str, hint: str = RESUME_HINT) -> None:
    """Write `text` as UTF-8 to `path` atomically (see atomic_open)."""
    write_bytes_atomic(path, text.encode("utf-8"), hint)
