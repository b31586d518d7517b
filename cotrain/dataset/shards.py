"""WebDataset tar shards: a deterministic writer, a sequential reader and a member index.

Determinism: every member gets mtime 0, mode 0644, uid/gid 0 and empty owner names, and members of a
sample are written consecutively in sorted extension order, so the same samples give the same bytes.
Safety: keys and extensions are validated on write and on read; members that would unpickle
(`.pyd`, `.pickle`, ...) are refused, and decoding uses explicit per-extension decoders only.
"""

from __future__ import annotations

import io
import json
import math
import re
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from cotrain.dataset import keys, shard_scan
from cotrain.errors import DataError

SHARD_PATTERN = "shard-{index:06d}.tar"


# A GNU-format header with every field cotrain writes fixed (mode 0644, uid/gid 0, mtime 0, no
# owner names): tarfile builds the same 512 bytes through TarInfo copies and generic field encoders,
# which cost about 10% of a video conversion. Byte equality with tarfile is tested.
_HEAD_MODE = b"0000644\0" + b"0000000\0" * 2
_HEAD_TAIL = b"0" + b"\0" * 100 + b"ustar  \0" + b"\0" * (64 + 16 + 167)  # devmajor/minor empty for files


def _fast_header(name: str, size: int) -> bytes | None:
    raw = name.encode("utf-8")
    if len(raw) > 100 or size >= 8**11:
        return None
    head = raw.ljust(100, b"\0") + _HEAD_MODE + b"%011o\0" % size + b"00000000000\0"
    checksum = sum(head) + 8 * 32 + sum(_HEAD_TAIL)
    return head + b"%06o\0 " % checksum + _HEAD_TAIL


def shard_name(index: int) -> str:
    """The file name of shard `index`."""
    return SHARD_PATTERN.format(index=index)


def encode_npy(array: np.ndarray) -> bytes:
    """An array as .npy bytes (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


# .npy headers as np.save writes them for cotrain's arrays (format 1.0, a plain numeric dtype, C order).
# np.load parses every header with ast.literal_eval, which took a quarter of the loader's time per
# sample (three small arrays each); these are parsed with one regex, anything else goes to np.load.
_NPY_MAGIC = b"\x93NUMPY\x01\x00"
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<|][biuf][1248])', 'fortran_order': False, 'shape': \(((?:\d+, )*\d*,?)\), \} *\n"
)


def decode_npy(data: bytes) -> np.ndarray:
    """A .npy member as a writable array; never unpickles (object arrays are refused)."""
    if data[:8] == _NPY_MAGIC:
        end = 10 + int.from_bytes(data[8:10], "little")
        match = _NPY_HEADER.fullmatch(data, 10, end)
        if match:
            shape = tuple(int(d) for d in match.group(2).split(b",") if d.strip())
            dtype = np.dtype(match.group(1).decode())
            count = math.prod(shape)
            if len(data) - end == count * dtype.itemsize:
                array: np.ndarray = np.frombuffer(data, dtype, count, end).reshape(shape).copy()
                return array
    problem = npy_problem(data)
    if problem:
        raise ValueError(problem)
    loaded: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    return loaded


def npy_problem(data: bytes) -> str | None:
    """What makes `data` unloadable as a plain .npy array, in the data's terms, or None.

    numpy's own messages for these cases advise loading with `allow_pickle`, which is exactly what a
    reader of untrusted shards must not do; these say what is wrong with the bytes instead.
    """
    if not data.startswith(b"\x93NUMPY"):
        return f"not an npy array (starts with {data[:8]!r}, not the npy magic)"
    fh = io.BytesIO(data)
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version not in ((1, 0), (2, 0)):
            return None  # version 3 (UTF-8 field names): np.load decides
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _fortran, dtype = read(fh)
    except (ValueError, EOFError, SyntaxError) as exc:
        return f"damaged npy header ({exc})"
    if dtype.hasobject:
        return f"an npy array of Python objects (dtype {dtype}), which cotrain never unpickles; expected numbers"
    need = math.prod(shape) * dtype.itemsize
    have = len(data) - fh.tell()
    if have != need:
        return f"npy array of shape {shape} {dtype} needs {need} data bytes, has {have} (truncated or damaged)"
    return None


def encode_json(obj: Any) -> bytes:
    """An object as compact, key-sorted UTF-8 JSON (NaN rejected)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def check_member(key: str, ext: str, where: str) -> None:
    """Raise a DataError when a sample key or member extension is invalid."""
    if not keys.is_valid_key(key):
        raise DataError(where, f"invalid sample key {key!r}: use letters, digits, '_' or '-' (no dots)")
    _check_ext(key, ext, where)


def _check_ext(key: str, ext: str, where: str) -> None:
    first = ext.split(".")[-1].lower()
    if not ext or "/" in ext or first in keys.FORBIDDEN_EXTS:
        raise DataError(where, f"refused member extension {ext!r} of sample {key!r}", key=ext)


class ShardWriter:
    """Write samples into one tar file object deterministically.

    Args:
        fh: a binary file opened for writing (typically from `atomic_open`).
    """

    def __init__(self, fh: BinaryIO) -> None:
        self._tar = tarfile.open(fileobj=fh, mode="w", format=tarfile.GNU_FORMAT)
        self.samples = 0

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        for ext in sorted(members):
            check_member(key, ext, "<writer>")
            data = members[ext]
            name = f"{key}.{ext}"
            header = _fast_header(name, len(data))
            if header is None:  # long names need GNU long-name records: let tarfile write them
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                self._tar.addfile(info, io.BytesIO(data))
                continue
            pad = (-len(data)) % tarfile.BLOCKSIZE
            self._tar.fileobj.write(header + data + b"\0" * pad)
            self._tar.offset += len(header) + len(data) + pad
        self.samples += 1

    @property
    def data_bytes(self) -> int:
        """Bytes written so far, without the end-of-archive blocks (the part another tar can append)."""
        return int(self._tar.offset)

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


def concat_tars(parts: list[tuple[Path, int]], fh: BinaryIO, chunk_bytes: int = 1 << 20) -> tuple[int, str]:
    """Append the member bytes of several tars (each up to its `data_bytes`) into one tar.

    Gives exactly the bytes ShardWriter would write for the same samples (members copied verbatim,
    then two zero blocks and zero padding to a 10 KiB record), without parsing a single member.
    Returns (bytes written, sha256 hex).
    """
    import hashlib

    digest, total = hashlib.sha256(), 0

    def put(data: bytes) -> None:
        nonlocal total
        fh.write(data)
        digest.update(data)
        total += len(data)

    for path, data_bytes in parts:
        with open(path, "rb") as src:
            left = data_bytes
            while left > 0:
                data = src.read(min(chunk_bytes, left))
                if not data:
                    raise DataError(path, f"unit file ends after {data_bytes - left} of {data_bytes} bytes")
                put(data)
                left -= len(data)
    end = total + 2 * _BLOCK
    put(b"\0" * (2 * _BLOCK + (-end) % _RECORD))
    return total, digest.hexdigest()


def split_member(name: str) -> tuple[str, str]:
    """`dir/key.front.jpg` -> (`key`, `front.jpg`): split at the first dot of the basename."""
    base = name.rsplit("/", 1)[-1]
    key, _, ext = base.partition(".")
    return key, ext


_KINDS = {tarfile.SYMTYPE: "symbolic link", tarfile.LNKTYPE: "hard link", tarfile.FIFOTYPE: "FIFO",
          tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device"}


def iter_samples(source: str | Path | BinaryIO, *, where: str | None = None) -> Iterator[dict[str, bytes]]:
    """Yield raw samples `{"__key__": key, ext: bytes, ...}` of one shard in file order."""
    label = where or str(source)
    try:
        tar = (
            tarfile.open(source, mode="r|")
            if isinstance(source, (str, Path))
            else tarfile.open(fileobj=source, mode="r|")
        )
    except (OSError, tarfile.TarError) as exc:
        raise DataError(label, f"not a readable tar shard: {exc}") from None
    current: dict[str, Any] = {}
    try:
        with tar:
            for info in tar:
                if info.isdir():
                    continue
                if not info.isfile():  # a link's data is not in the shard: skipping it would drop a member
                    raise DataError(label, f"member {info.name!r} is a {_KINDS.get(info.type, 'special')} member, "
                                           "not a regular file", key=info.name)
                key, ext = split_member(info.name)
                check_member(key, ext, label)
                if current and current["__key__"] != key:
                    yield current
                    current = {}
                if not current:
                    current = {"__key__": key}
                if ext in current:
                    raise DataError(label, f"sample {key!r} has member {ext!r} twice (members not adjacent?)")
                fh = tar.extractfile(info)
                current[ext] = fh.read() if fh else b""
    except tarfile.TarError as exc:
        raise DataError(label, f"truncated or corrupt tar: {exc}") from None
    if current:
        yield current


class MemberSpan(NamedTuple):
    """Where one member's bytes lie in its shard (a tuple: millions are built when indexing)."""

    offset: int
    size: int


def index_shard(source: str | Path | BinaryIO, where: str | None = None) -> list[tuple[str, dict[str, MemberSpan]]]:
    """Per sample, where each member's bytes lie in the file: enables random access without a scan.

    `where` names the file in errors (default: the path, or the file object's name). A damaged
    header or a truncated member is a DataError (tarindex.py)."""
    out: list[tuple[str, dict[str, MemberSpan]]] = []
    if isinstance(source, (str, Path)):
        where, members = where or str(source), shard_scan.scan_path(source)
    else:
        where = where or str(getattr(source, "name", "?"))
        members = shard_scan.scan_file(source, where)
    spans: dict[str, MemberSpan] = {}
    for name, offset, size in members:
        key, ext = split_member(name)
        if not out or out[-1][0] != key:
            check_member(key, ext, where)
            spans = {}
            out.append((key, spans))
        else:
            _check_ext(key, ext, where)
        spans[ext] = MemberSpan(offset, size)
    return out


def decode_member(ext: str, data: bytes) -> Any:
    """Explicit decoders only: npy arrays, JSON, UTF-8 text; images and unknown kinds stay bytes."""
    last = ext.rsplit(".", 1)[-1].lower()
    try:
        if last == "npy":
            return decode_npy(data)
        if last == "json":
            return json.loads(data.decode("utf-8"))
        if last == "txt":
            return data.decode("utf-8")
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError too: name the member
        raise ValueError(f"member {ext}: {exc}") from None
    return data


def decode_sample(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Decode every member of a raw sample (`__` fields are kept as they are)."""
    return {k: (v if k.startswith("__") else decode_member(k, v)) for k, v in raw.items()}
