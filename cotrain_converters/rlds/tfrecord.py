"""TFRecord files read without TensorFlow: CRC-32C, record framing, gzip.

Framing (tensorflow `core/lib/io/record_writer.cc`): a file is a sequence of records
`u64 LE length | u32 masked_crc32c(length bytes) | payload | u32 masked_crc32c(payload)`, where
`masked(c) = ((c >> 15) | (c << 17)) + 0xA282EAD8 mod 2**32` and the CRC is CRC-32C (Castagnoli,
reflected polynomial 0x82F63B78). Files may be gzip-compressed as a whole (detected by magic bytes).
The payloads are `tf.train.Example` protobufs, parsed in `tf_example.py`.

CRC-32C comes from `google_crc32c` (its C extension: GB/s; benchmarks/tfrecord_crc_bench.py measures
it against the numpy lane-parallel version this module used before). Its wheels cover the platforms
torch ships for (benchmarks/README.md); elsewhere it falls back to its own pure-Python CRC with a
RuntimeWarning (correct, 1-4 MB/s).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import google_crc32c

from cotrain.errors import DataError

__all__ = ["RecordRef", "crc32c", "masked_crc32c", "is_gzip", "open_tfrecord", "scan_records", "read_record",
           "iter_records"]

_MASK_DELTA = 0xA282EAD8
_HEADER = 12  # u64 length + u32 length CRC


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, e.g. 0xE3069283 for b"123456789"."""
    return int(google_crc32c.value(data))


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 bits, add 0xA282EAD8 (mod 2**32)."""
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + _MASK_DELTA) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------- framing


@dataclass(frozen=True)
class RecordRef:
    """Where record `index` of a file starts (offset of its header, in uncompressed bytes)."""

    index: int
    offset: int
    length: int


def is_gzip(path: Path) -> bool:
    """Gzip magic bytes, unless the file is a valid raw TFRecord that happens to start with them."""
    with open(path, "rb") as fh:
        head = fh.read(_HEADER)
    if head[:3] != b"\x1f\x8b\x08":
        return False
    return len(head) < _HEADER or masked_crc32c(head[:8]) != struct.unpack("<I", head[8:12])[0]


def open_tfrecord(path: Path) -> BinaryIO:
    """The file's uncompressed byte stream."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # type: ignore[return-value]  # GzipFile and the raw file both read as BinaryIO


def _read(fh: BinaryIO, n: int, path: Path, index: int) -> bytes:
    try:
        return fh.read(n)
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(path, f"record {index}: corrupt or truncated gzip stream ({exc})") from None


def _skip(fh: BinaryIO, n: int, path: Path, index: int) -> int:
    """Advance by up to n bytes; returns how many bytes were really there."""
    if isinstance(fh, gzip.GzipFile):
        done = 0
        while done < n:
            chunk = _read(fh, min(n - done, 1 << 22), path, index)
            if not chunk:
                break
            done += len(chunk)
        return done
    start = fh.tell()
    end = fh.seek(0, 2)
    return fh.seek(min(start + n, end)) - start


def _header(fh: BinaryIO, path: Path, index: int) -> int | None:
    """Read and check one record header; returns the payload length, None at a clean end of file."""
    head = _read(fh, _HEADER, path, index)
    if not head:
        return None
    if len(head) < _HEADER:
        raise DataError(path, f"record {index}: truncated record header ({len(head)} of {_HEADER} bytes)")
    (length,) = struct.unpack("<Q", head[:8])
    (stored,) = struct.unpack("<I", head[8:])
    if masked_crc32c(head[:8]) != stored:
        raise DataError(path, f"record {index}: corrupt record length (length CRC mismatch); the file is damaged")
    return length


def scan_records(path: Path) -> tuple[list[RecordRef], DataError | None]:
    """Every record's position (headers checked, payloads skipped), and the framing error that
    stopped the scan, if any: nothing after a damaged header can be located.
    """
    refs: list[RecordRef] = []
    offset = 0
    try:
        with open_tfrecord(path) as fh:
            while (length := _header(fh, path, len(refs))) is not None:
                if _skip(fh, length + 4, path, len(refs)) < length + 4:
                    raise DataError(path, f"record {len(refs)}: truncated record (file ends inside its "
                                          f"{length}-byte payload or its CRC)")
                refs.append(RecordRef(len(refs), offset, length))
                offset += _HEADER + length + 4
    except DataError as exc:
        return refs, exc
    return refs, None


def read_record(fh: BinaryIO, path: Path, ref: RecordRef) -> bytes:
    """One record's payload with both CRCs verified; `fh` comes from `open_tfrecord`."""
    try:
        if isinstance(fh, gzip.GzipFile) and fh.tell() > ref.offset:
            fh.seek(0)  # gzip streams only seek forward cheaply
        fh.seek(ref.offset)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(path, f"record {ref.index}: corrupt or truncated gzip stream ({exc})") from None
    length = _header(fh, path, ref.index)
    if length is None or length != ref.length:
        raise DataError(path, f"record {ref.index}: file changed since it was listed")
    payload = _read(fh, length + 4, path, ref.index)
    if len(payload) < length + 4:
        raise DataError(path, f"record {ref.index}: truncated record payload")
    body, (stored,) = payload[:length], struct.unpack("<I", payload[length:])
    if masked_crc32c(body) != stored:
        raise DataError(path, f"record {ref.index}: corrupt payload (payload CRC mismatch)")
    return body


def iter_records(path: Path) -> Iterator[bytes]:
    """All payloads of a file in order, CRC-checked."""
    refs, error = scan_records(path)
    with open_tfrecord(path) as fh:
        for ref in refs:
            yield read_record(fh, path, ref)
    if error is not None:
        raise error
