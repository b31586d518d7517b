"""Where each member of a tar lies: a header scan ~10x cheaper than `tarfile`, with the same answers.

The mixture loader indexes every shard it reads once per process, and `tarfile.TarInfo.frombuf`
parses a dozen fields per header (measured: 149 us per 6-member sample, a third of what the loader
spends per sample on a first pass over a dataset). This scan reads only what locating data needs:
name, size, type, and the extended headers that override them:

- POSIX ustar (name + prefix), pax `x` records (`path`, `size`; written by tarfile's default format,
  e.g. for float mtimes, so webdataset's TarWriter emits one per member), GNU `L` long names and
  base-256 sizes;
- checksums are verified, and a member whose data runs past the end of the file is an error, where
  tarfile would stop quietly or fail later.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable
from typing import BinaryIO, cast

import numpy as np

from cotrain.errors import DataError

BLOCK = 512
_ZERO = bytes(BLOCK)
# name, size, type flag, magic, prefix: the only header fields that locating data needs
_HEADER = struct.Struct("100s24x12s20x1s100x6s82x155s12x")
_FILE_TYPES = (b"0", b"\x00", b"7")  # regular file (old and new style), contiguous file
_SKIPPED_TYPES = (b"1", b"2", b"3", b"4", b"5", b"6", b"g", b"K", b"V", b"N", b"S", b"D", b"M")


Read = Callable[[int, int], bytes]  # (offset, size) -> bytes


def scan_file(fh: BinaryIO, where: str) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of each regular file member of the tar open in `fh`, in order."""

    def read(offset: int, size: int) -> bytes:
        fh.seek(offset)
        return fh.read(size)

    return scan(read, fh.seek(0, os.SEEK_END), where)


def scan_path(path: str | os.PathLike[str]) -> list[tuple[str, int, int]]:
    """As `scan_file`, through a memory map: no system call per header."""
    with open(path, "rb") as fh:
        end = os.fstat(fh.fileno()).st_size
        if end == 0:
            return []
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return scan(lambda offset, size: mm[offset: offset + size], end, str(path))


def scan(read: Read, end: int, where: str) -> list[tuple[str, int, int]]:
    """The members of a tar of `end` bytes that `read` returns parts of.

    Headers are walked first and their checksums verified together (numpy) afterwards, also when
    the walk fails: a damaged header explains a later error (a garbled size, a "truncation") best.
    """
    members: list[tuple[str, int, int]] = []
    headers: list[tuple[int, bytes]] = []
    try:
        _walk(read, end, where, members, headers)
    except DataError:
        _verify(headers, end, where)
        raise
    _verify(headers, end, where)
    return members


def _walk(read: Read, end: int, where: str, members: list[tuple[str, int, int]],
          headers: list[tuple[int, bytes]]) -> None:
    offset: int = 0
    pending: dict[str, object] = {}
    while offset + BLOCK <= end:
        header = read(offset, BLOCK)
        if header == _ZERO:
            return  # end-of-archive marker
        headers.append((offset, header))
        name, size_field, kind, magic, prefix = _HEADER.unpack(header)
        size = int(cast("int | str | None", pending.get("size")) or _number(size_field, offset, where))
        data = offset + BLOCK
        if data + size > end:
            raise DataError(where, f"truncated tar: member at byte {offset} needs {size} bytes of data, "
                                   f"the file ends {end - data} bytes after its header")
        if kind == b"x":  # applies to the next member
            pending = _pax(read(data, size), offset, where)
        elif kind == b"L":
            pending = {"path": read(data, size).rstrip(b"\x00").decode("utf-8", "surrogateescape")}
        elif kind in _FILE_TYPES:
            members.append((str(pending.get("path") or _name(name, magic, prefix)), data, size))
            pending = {}
        elif kind in _SKIPPED_TYPES:
            pending = {}
        else:
            raise DataError(where, f"tar member at byte {offset} has unknown type {kind!r}")
        offset = data + -(-size // BLOCK) * BLOCK
    if offset < end:
        raise DataError(where, f"truncated tar: {end - offset} bytes at byte {offset} are less than a header")


def _verify(headers: list[tuple[int, bytes]], end: int, where: str) -> None:
    """Each header's checksum: the sum of its bytes with the 8-byte checksum field counted as spaces."""
    if not headers:
        return
    blocks = np.frombuffer(b"".join(h for _, h in headers), np.uint8).reshape(len(headers), BLOCK)
    sums = blocks.sum(axis=1, dtype=np.int64) - blocks[:, 148:156].sum(axis=1, dtype=np.int64) + 8 * 0x20
    bad = np.flatnonzero(sums != np.array([_stored_sum(h) for _, h in headers], np.int64))
    if bad.size:
        offset = headers[int(bad[0])][0]
        raise DataError(
            where, f"unreadable member header at byte {offset}; the last {end - offset} bytes were not read"
        )


def _stored_sum(header: bytes) -> int:
    text = header[148:156].split(b"\x00", 1)[0].strip()
    return int(text, 8) if text.isdigit() else -1


def _number(field: bytes, offset: int, where: str) -> int:
    if field[0] == 0x80:  # GNU base-256, for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise DataError(where, f"tar header at byte {offset} has a size field {field!r} that is not octal") from None


def _name(name: bytes, magic: bytes, prefix: bytes) -> str:
    name = name.split(b"\x00", 1)[0]
    if magic == b"ustar\x00":  # POSIX ustar may split a long name into prefix/name; GNU's "ustar  " may not
        prefix = prefix.split(b"\x00", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "surrogateescape")


def _pax(records: bytes, offset: int, where: str) -> dict[str, object]:
    """The `path` and `size` of a pax extended header ("<len> <key>=<value>\\n" records)."""
    out: dict[str, object] = {}
    pos = 0
    while pos < len(records) and records[pos] != 0:
        space = records.find(b" ", pos)
        length = int(records[pos:space]) if space > pos and records[pos:space].isdigit() else 0
        if length <= 0 or pos + length > len(records):
            raise DataError(where, f"tar pax header at byte {offset} is malformed at record byte {pos}")
        key, _, value = records[space + 1: pos + length - 1].partition(b"=")
        if key == b"path":
            out["path"] = value.decode("utf-8", "surrogateescape")
        elif key == b"size":
            out["size"] = int(value)
        pos += length
    return out
