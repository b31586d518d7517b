"""`tf.train.Example` protobufs parsed by hand from the wire format (no TensorFlow, no generated code).

Schema (`tensorflow/core/example/{example,feature}.proto`): `Example.features = 1`,
`Features.feature = 1` is a map<string, Feature>, i.e. repeated entries `{key = 1, value = 2}`;
`Feature` is a oneof `bytes_list = 1 | float_list = 2 | int64_list = 3`, each list with `value = 1`.
Floats and int64s may be packed (one length-delimited field) or unpacked (one field per value), and
a parser must accept both; a negative int64 is a 10-byte two's-complement varint. Unknown fields are
skipped, as protobuf does. Features are returned undecoded (`RawFeature`) and decoded on demand, so
an episode's images are never copied unless a camera is converted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cotrain.errors import DataError

__all__ = ["RawFeature", "parse_example", "find_feature", "decode_bytes", "decode_floats", "decode_int64s"]

_BYTES, _FLOAT, _INT64 = "bytes", "float", "int64"
_KINDS = {1: _BYTES, 2: _FLOAT, 3: _INT64}


class _Malformed(ValueError):
    """Raised inside the wire parser; turned into a DataError that names the file and record."""


@dataclass(frozen=True)
class RawFeature:
    """One `Feature` of an Example, not yet decoded: its list kind and the list message's bytes."""

    kind: str
    body: memoryview


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of one message; varints as int, fixed and LEN as bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value
            continue
        if wire == 2:
            size, pos = _varint(buf, pos, end)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
        else:
            raise _Malformed(f"unsupported wire type {wire} (field {number})")
        if pos + size > end:
            raise _Malformed(f"field {number} runs past the end of its message")
        yield number, wire, buf[pos: pos + size]
        pos += size


def _map_entry(entry: memoryview) -> tuple[str, RawFeature | None]:
    key, feature = "", None
    for number, wire, value in _fields(entry):
        if number == 1 and wire == 2:
            key = bytes(value).decode("utf-8", errors="replace")
        elif number == 2 and wire == 2:
            feature = None
            for kind_no, kind_wire, body in _fields(value):  # type: ignore[arg-type]  # wire type 2 (length-delimited) values are bytes
                if kind_no in _KINDS and kind_wire == 2:
                    feature = RawFeature(_KINDS[kind_no], body)  # type: ignore[arg-type]  # as above
    return key, feature


def parse_example(payload: bytes, path: Path, record: int) -> dict[str, RawFeature]:
    """The feature map of a serialized `tf.train.Example` (last entry wins, as in protobuf)."""
    features: dict[str, RawFeature] = {}
    try:
        for number, wire, value in _fields(memoryview(payload)):
            if number != 1 or wire != 2:
                continue
            for entry_no, entry_wire, entry in _fields(value):  # type: ignore[arg-type]  # as above
                if entry_no == 1 and entry_wire == 2:
                    key, feature = _map_entry(entry)  # type: ignore[arg-type]  # as above
                    # An empty Feature (no list set) reads as an empty bytes list, like TF's parser.
                    features[key] = feature or RawFeature(_BYTES, memoryview(b""))
    except _Malformed as exc:
        raise DataError(path, f"record {record}: malformed tf.train.Example ({exc})") from None
    return features


def _packed_varints(data: memoryview) -> np.ndarray:
    b = np.frombuffer(data, dtype=np.uint8)
    ends = b < 0x80
    if b.size and not ends[-1]:
        raise _Malformed("truncated packed varint")
    if ends.all():  # bools and small ints: one byte each
        return b.astype(np.int64)
    last = np.flatnonzero(ends)
    starts = np.concatenate(([0], last[:-1] + 1))
    lengths = last - starts + 1
    if lengths.max() > 10:
        raise _Malformed("varint longer than 10 bytes")
    position = np.arange(b.size) - np.repeat(starts, lengths)
    # 7-bit groups never overlap, so adding them is OR-ing them; uint64 wraps like protobuf's decoder.
    groups = (b & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    return np.add.reduceat(groups, starts).view(np.int64)


def _decode_list(feature: RawFeature, path: Path, key: str, record: int) -> list[np.ndarray] | list[bytes]:
    chunks: list = []
    try:
        for number, wire, value in _fields(feature.body):
            if number != 1:
                continue
            if feature.kind == _BYTES and wire == 2:
                chunks.append(bytes(value))
            elif feature.kind == _FLOAT and wire in (2, 5):
                if len(value) % 4:  # type: ignore[arg-type]  # as above
                    raise _Malformed("packed floats are not a multiple of 4 bytes")
                chunks.append(np.frombuffer(value, dtype="<f4"))  # type: ignore[arg-type]  # as above
            elif feature.kind == _INT64 and wire == 2:
                chunks.append(_packed_varints(value))  # type: ignore[arg-type]  # as above
            elif feature.kind == _INT64 and wire == 0:
                chunks.append(np.array([value & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64).view(np.int64))  # type: ignore[operator]  # wire type 0 (varint) values are ints
            else:
                raise _Malformed(f"wire type {wire} in a {feature.kind} list")
    except _Malformed as exc:
        raise DataError(path, f"record {record}: malformed {feature.kind}_list ({exc})", key=key) from None
    return chunks


def _check_kind(feature: RawFeature, kind: str, path: Path, key: str, record: int) -> None:
    if feature.kind != kind and len(feature.body):
        raise DataError(path, f"record {record}: expected a {kind}_list, found a {feature.kind}_list", key=key)


def decode_bytes(feature: RawFeature, path: Path, key: str, record: int) -> list[bytes]:
    """The values of a bytes_list."""
    _check_kind(feature, _BYTES, path, key, record)
    return _decode_list(feature, path, key, record)  # type: ignore[return-value]  # a bytes-kind feature decodes to a list of bytes


def decode_floats(feature: RawFeature, path: Path, key: str, record: int) -> np.ndarray:
    """The values of a float_list as float32, packed and unpacked runs concatenated."""
    _check_kind(feature, _FLOAT, path, key, record)
    chunks = _decode_list(feature, path, key, record)
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def decode_int64s(feature: RawFeature, path: Path, key: str, record: int) -> np.ndarray:
    """The values of an int64_list (two's complement, so negative values come back negative)."""
    _check_kind(feature, _INT64, path, key, record)
    chunks = _decode_list(feature, path, key, record)
    return np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


def _read_varint(fh: BinaryIO) -> int:
    result = shift = 0
    while True:
        byte = fh.read(1)
        if not byte:
            raise _Malformed("truncated varint")
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes")


def _field_header(fh: BinaryIO, end: int) -> tuple[int, int]:
    """(field number, byte size) of the next LEN field; other wire types are skipped (size -1)."""
    tag = _read_varint(fh)
    wire = tag & 7
    if wire == 0:
        _read_varint(fh)
        return tag >> 3, -1
    if wire in (1, 5):
        fh.seek(8 if wire == 1 else 4, 1)
        return tag >> 3, -1
    if wire != 2:
        raise _Malformed(f"unsupported wire type {wire}")
    size = _read_varint(fh)
    if fh.tell() + size > end:
        raise _Malformed("a field runs past the end of its message")
    return tag >> 3, size


def _matching_entry(fh: BinaryIO, size: int, wanted: bytes) -> bytes | None:
    """The map entry that starts here if its key is `wanted`; otherwise seek past it."""
    start = fh.tell()
    head = memoryview(fh.read(min(size, 1 + 10 + len(wanted))))
    if head[:1] != b"\x0a":  # value written before key (legal, never done by TF): read it all
        fh.seek(start)
        entry = fh.read(size)
        return entry if _map_entry(memoryview(entry))[0] == wanted.decode("utf-8", "replace") else None
    length, pos = _varint(head, 1, len(head))
    if length == len(wanted) and head[pos: pos + length] == wanted:
        fh.seek(start)
        return fh.read(size)
    fh.seek(start + size)
    return None


def find_feature(fh: BinaryIO, length: int, key: str, path: Path, record: int) -> RawFeature | None:
    """Feature `key` of the Example filling the next `length` bytes of `fh`, reading only that
    feature and seeking over the others, so that listing a dataset does not read its images.
    """
    wanted = key.encode("utf-8")
    found = None
    try:
        end = fh.tell() + length
        while fh.tell() < end:
            number, size = _field_header(fh, end)
            if number != 1 or size < 0:
                fh.seek(max(size, 0), 1)
                continue
            features_end = fh.tell() + size
            while fh.tell() < features_end:
                entry_no, entry_size = _field_header(fh, features_end)
                if entry_no != 1 or entry_size < 0:
                    fh.seek(max(entry_size, 0), 1)
                    continue
                entry = _matching_entry(fh, entry_size, wanted)
                if entry is not None:
                    found = _map_entry(memoryview(entry))[1] or RawFeature(_BYTES, memoryview(b""))
    except _Malformed as exc:
        raise DataError(path, f"record {record}: malformed tf.train.Example ({exc})") from None
    return found
