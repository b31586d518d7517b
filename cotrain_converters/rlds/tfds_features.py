"""TFDS `features.json`: what each flattened Example key holds, and how to decode it per step.

`features.json` is the JSON form of TFDS's `FeaturesDict` proto (tensorflow/datasets
`core/proto/feature.proto`): a node has `featuresDict.features` (children), `sequence.feature`
(the RLDS `steps` Dataset), `tensor {shape.dimensions, dtype, encoding}`, `image {shape, dtype,
encodingFormat}`, `text {}` or `classLabel`. Dimensions are strings, -1 = unknown.

Serialisation (tensorflow/datasets `core/example_serializer.py`): one Example per episode, keys are
the nested names joined with '/', and the step axis is concatenated: floats become a float_list of
T * prod(shape) (float64 is narrowed to float32 by TFDS itself), integers and bools an int64_list,
strings, text and encoded images a bytes_list of T. Tensors with `encoding: bytes|zlib` are one
bytes entry per step holding the raw little-endian array (zlib-compressed for zlib).
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cotrain.errors import DataError
from cotrain_converters.rlds.tf_example import RawFeature, decode_bytes, decode_floats, decode_int64s

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
INT_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
STRING_DTYPES = ("string", "str", "bytes", "object")
TENSOR_ENCODINGS = ("", "none", "bytes", "zlib")
IMAGE_ENCODINGS = ("", "jpeg", "png")
_RAW_DTYPES = INT_DTYPES + ("float16", "float32", "float64")  # numpy can read these from raw bytes


@dataclass(frozen=True)
class FeatureSpec:
    """One leaf of features.json.

    Args:
        key: flattened Example key, e.g. `steps/observation/image`.
        kind: tensor, image, text, class_label, or the name of an unsupported kind (video, ...).
        dtype: numpy dtype name, or `string`.
        shape: per-step shape for step features, -1 where unknown.
        encoding: tensor encoding (none|bytes|zlib) or image encodingFormat (jpeg|png|'').

    """

    key: str
    kind: str
    dtype: str = "string"
    shape: tuple[int, ...] = ()
    encoding: str = ""

    @property
    def is_rgb_image(self) -> bool:
        """An 8-bit colour image, i.e. a camera (depth maps are uint16/float32 or single-channel)."""
        return self.kind == "image" and self.dtype == "uint8" and self.shape[-1:] in ((3,), (-1,))

    @property
    def dims(self) -> int:
        """Values per step when flattened (state/action width)."""
        return math.prod(self.shape)


def _shape(node: dict, key: str, path: Path) -> tuple[int, ...]:
    dims = (node.get("shape") or {}).get("dimensions") or []
    try:
        return tuple(int(d) for d in dims)
    except (TypeError, ValueError):
        raise DataError(path, f"feature {key!r}: bad shape {dims!r}", key=key) from None


def _leaf(node: dict, key: str, path: Path) -> FeatureSpec:
    if "tensor" in node:
        t = node["tensor"] or {}
        return FeatureSpec(key, "tensor", str(t.get("dtype", "")), _shape(t, key, path), str(t.get("encoding", "")))
    if "image" in node:
        i = node["image"] or {}
        return FeatureSpec(key, "image", str(i.get("dtype", "uint8")), _shape(i, key, path),
                           str(i.get("encodingFormat", "")))
    if "text" in node:
        return FeatureSpec(key, "text")
    if "classLabel" in node:
        return FeatureSpec(key, "class_label", "int64")
    kinds = [k for k in node if k not in ("pythonClassName", "description", "valueRange")]
    return FeatureSpec(key, kinds[0] if kinds else "unknown")


def _walk(node: object, key: str, in_steps: bool, out: dict[str, FeatureSpec], path: Path) -> None:
    if not isinstance(node, dict):
        raise DataError(path, f"feature {key!r} is not a JSON object", key=key)
    if "featuresDict" in node:
        for name, child in ((node["featuresDict"] or {}).get("features") or {}).items():
            _walk(child, f"{key}/{name}" if key else name, in_steps, out, path)
    elif "sequence" in node and key == "steps" and not in_steps:
        _walk((node["sequence"] or {}).get("feature"), key, True, out, path)
    elif "sequence" in node:
        out[key] = FeatureSpec(key, "sequence")  # ragged values inside a step: not supported
    else:
        out[key] = _leaf(node, key, path)


def load_features(path: Path) -> dict[str, FeatureSpec]:
    """Flattened leaves of features.json; a DataError names the file when it is not TFDS's layout."""
    try:
        root = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"unreadable features.json: {exc}") from None
    if not isinstance(root, dict) or "featuresDict" not in root:
        raise DataError(path, "not a TFDS FeaturesDict (expected a top-level 'featuresDict'; "
                              "features.json from TFDS < 4.5 is not supported)")
    out: dict[str, FeatureSpec] = {}
    _walk(root, "", False, out, path)
    if "steps/is_first" not in out:
        raise DataError(path, "no 'steps' Dataset with 'is_first': not an RLDS dataset", key="steps/is_first")
    return out


def check_decodable(spec: FeatureSpec, path: Path) -> None:
    """DataError (naming features.json and the key) for dtypes, encodings and kinds we cannot read."""
    if spec.kind == "tensor":
        if spec.dtype not in FLOAT_DTYPES + INT_DTYPES + STRING_DTYPES:
            raise DataError(path, f"unknown dtype {spec.dtype!r}", key=spec.key)
        if spec.encoding.lower() not in TENSOR_ENCODINGS:
            raise DataError(path, f"unknown tensor encoding {spec.encoding!r} (known: none, bytes, zlib)",
                            key=spec.key)
        if spec.encoding.lower() in ("bytes", "zlib") and spec.dtype not in _RAW_DTYPES:
            raise DataError(path, f"dtype {spec.dtype!r} cannot be {spec.encoding}-encoded", key=spec.key)
        if -1 in spec.shape and spec.encoding.lower() in ("", "none"):
            raise DataError(path, f"variable shape {list(spec.shape)} (ragged features are not supported)",
                            key=spec.key)
    elif spec.kind == "image":
        if spec.encoding.lower() not in IMAGE_ENCODINGS:
            raise DataError(path, f"unknown image encoding {spec.encoding!r} (known: jpeg, png)", key=spec.key)
    elif spec.kind not in ("text", "class_label"):
        raise DataError(path, f"feature kind {spec.kind!r} is not supported", key=spec.key)


def _mismatch(spec: FeatureSpec, got: int, steps: int, per_step: int, path: Path, record: int) -> DataError:
    return DataError(path, f"record {record}: step count mismatch: {spec.key!r} holds {got} values, expected "
                           f"{steps} steps x {per_step} (steps/is_first has {steps})", key=spec.key)


def _from_bytes(spec: FeatureSpec, items: list[bytes], path: Path, record: int) -> np.ndarray:
    dtype = np.dtype(spec.dtype).newbyteorder("<")
    rows = []
    for t, item in enumerate(items):
        raw = zlib.decompress(item) if spec.encoding.lower() == "zlib" else item
        if len(raw) != spec.dims * dtype.itemsize:
            raise DataError(path, f"record {record}: step {t} holds {len(raw)} bytes, expected "
                                  f"{spec.dims} x {dtype.itemsize}", key=spec.key)
        rows.append(np.frombuffer(raw, dtype=dtype))
    return np.stack(rows).reshape(len(items), *spec.shape) if rows else np.zeros((0, *spec.shape), dtype)


def decode_steps(spec: FeatureSpec, raw: RawFeature, steps: int, path: Path, record: int) -> np.ndarray | list[bytes]:
    """One step feature as [T, *shape] (numbers) or a list of T byte strings (text, images)."""
    if spec.kind in ("text", "image") or spec.dtype in STRING_DTYPES or spec.encoding.lower() in ("bytes", "zlib"):
        items = decode_bytes(raw, path, spec.key, record)
        per_step = 1 if spec.kind in ("text", "image") or spec.encoding.lower() in ("bytes", "zlib") else spec.dims
        if len(items) != steps * per_step:
            raise _mismatch(spec, len(items), steps, per_step, path, record)
        if spec.kind == "tensor" and spec.encoding.lower() in ("bytes", "zlib"):
            return _from_bytes(spec, items, path, record)
        return items
    if spec.dtype in FLOAT_DTYPES:
        values = decode_floats(raw, path, spec.key, record)
    else:
        values = decode_int64s(raw, path, spec.key, record)
        values = values.view(np.uint64) if spec.dtype == "uint64" else values
        values = values != 0 if spec.dtype == "bool" else values.astype(spec.dtype)
    if values.size != steps * spec.dims:
        raise _mismatch(spec, values.size, steps, spec.dims, path, record)
    return values.reshape(steps, *spec.shape)
