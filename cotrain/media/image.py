"""Image resize and JPEG coding shared by every converter.

Images are stored as JPEG in the shards. A resize bound keeps the aspect ratio (the loader pads to
the model's square later), so no converter distorts geometry that a policy might rely on.
"""

from __future__ import annotations

import io

import numpy as np

from cotrain.errors import ConfigError

DEFAULT_JPEG_QUALITY = 90


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'224' -> (224, 224); '180x320' -> (180, 320) as (height, width); None stays None."""
    if text is None or text == "":
        return None
    parts = text.lower().split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--image-size {text!r}: expected N or HxW, e.g. 224 or 180x320") from None
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or min(nums) <= 0:
        raise ConfigError(f"--image-size {text!r}: expected N or HxW with positive integers")
    return nums[0], nums[1]


def fit_size(height: int, width: int, bound: tuple[int, int] | None) -> tuple[int, int]:
    """The largest (h, w) within `bound` with the source aspect ratio; the source size if no bound."""
    if bound is None:
        return height, width
    scale = min(bound[0] / height, bound[1] / width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize(image_hwc: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize an HxWxC image to `size_hw` (unchanged when it already has that size)."""
    if image_hwc.shape[:2] == size_hw:
        return image_hwc
    from PIL import Image

    pil = Image.fromarray(image_hwc)
    return np.asarray(pil.resize((size_hw[1], size_hw[0]), Image.Resampling.BILINEAR))


def encode_jpeg(image_hwc: np.ndarray, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """Encode an HxWxC uint8 image as JPEG."""
    from PIL import Image

    if image_hwc.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {image_hwc.dtype}")
    if image_hwc.ndim == 2:
        image_hwc = np.repeat(image_hwc[..., None], 3, axis=2)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image_hwc[..., :3])).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """Any PIL-readable encoding -> [H, W, 3] uint8 RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def is_jpeg(data: bytes | bytearray) -> bool:
    """Whether the bytes start with a JPEG marker."""
    return data[:3] == b"\xff\xd8\xff"


def to_jpeg(image: np.ndarray | bytes, bound: tuple[int, int] | None, quality: int) -> bytes:
    """Bring one frame (array, or encoded bytes) to a JPEG within `bound`.

    Already-JPEG bytes that need no resize pass through untouched: re-encoding would only lose
    quality and time.
    """
    if isinstance(image, (bytes, bytearray)):
        if bound is None and is_jpeg(image):
            return bytes(image)
        image = decode_image(bytes(image))
    size = fit_size(image.shape[0], image.shape[1], bound)
    return encode_jpeg(resize(image, size), quality)


def image_problem(data: bytes) -> str | None:
    """Why encoded image bytes do not decode completely, or None when they do.

    Converters pass JPEGs through untouched, so nothing else would ever decode them before training;
    a full decode (not PIL's header-only `verify`) is what catches truncated and corrupt entropy
    data, the same check `cotrain validate` applies to the written shards.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        return f"undecodable image ({len(data)} bytes): {exc}"
    return None
