"""The wire format of openpi's policy protocol: msgpack with numpy arrays in msgpack-numpy's array form.

An array travels as a map `{b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str,
b"shape": [...]}` and a numpy scalar as `{b"__npgeneric__": True, b"data": item, b"dtype": ...}`:
the form `openpi_client.msgpack_numpy` writes and reads (openpi-client 0.1.2). Nothing here ever
unpickles: object, void and complex dtypes are refused both ways (the client refuses them too), and
a decoded array's byte count is checked against its shape before numpy sees it, so a malformed
frame is a one-line `DataError`, not a numpy traceback.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from cotrain.errors import DataError

__all__ = ["MAX_MESSAGE_BYTES", "pack", "unpack"]

# Largest frame either side accepts: eight 1080p RGB cameras fit (50 MB); openpi sets no limit at all.
MAX_MESSAGE_BYTES = 64 * 2**20

# Kinds an observation or action may carry: bool, ints, floats, bytes and unicode strings.
_ALLOWED_KINDS = frozenset("biufSU")
_ALLOWED = "bool, int, uint, float, bytes or str"
_WHERE = "message"


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in _ALLOWED_KINDS:
        raise TypeError(f"cannot send a numpy array of dtype {obj.dtype}; arrays are {_ALLOWED}")
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        return {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": arr.dtype.str, b"shape": list(arr.shape)}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send an object of type {type(obj).__name__}")


def _dtype(raw: Any) -> np.dtype:
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        dtype = np.dtype(str(text))
    except TypeError:
        raise DataError(_WHERE, f"unknown array dtype {text!r}") from None
    if dtype.kind not in _ALLOWED_KINDS:
        raise DataError(_WHERE, f"array dtype {dtype} is not allowed; arrays are {_ALLOWED}")
    return dtype


def _decode(obj: dict[Any, Any]) -> Any:
    if b"__ndarray__" in obj:
        dtype, shape, data = _dtype(obj.get(b"dtype")), obj.get(b"shape"), obj.get(b"data")
        if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise DataError(_WHERE, f"array shape {shape!r} is not a list of non-negative ints")
        if not isinstance(data, bytes) or len(data) != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            size = len(data) if isinstance(data, bytes) else type(data).__name__
            raise DataError(_WHERE, f"array data ({size} bytes) does not fit shape {list(shape)} of {dtype}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b"__npgeneric__" in obj:
        return _dtype(obj.get(b"dtype")).type(obj.get(b"data"))
    return obj


def pack(obj: Any) -> bytes:
    """msgpack bytes of `obj` (dicts, lists, str, numbers, numpy arrays and scalars)."""
    return msgpack.packb(obj, default=_encode)


def unpack(data: bytes) -> Any:
    """The object in one msgpack-numpy frame; a DataError for anything that is not one."""
    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except DataError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DataError(_WHERE, f"not a msgpack-numpy frame ({type(exc).__name__}: {exc})") from None
