"""Per-sample processing in the loader: JPEG -> letterboxed image, normalised state and actions.

Normalisation uses each source's own manifest stats (never pooled across embodiments):
- quantile: x -> 2 (x - q01) / max(q99 - q01, floor) - 1, clipped to [-clip, clip];
- mean_std: x -> (x - mean) / max(std, floor), clipped likewise.
Missing stats for a source that has state or actions are an error, never a silent identity.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cotrain import keys
from cotrain.errors import ConfigError, DataError
from cotrain.manifest import DimStats, Manifest


def letterbox_jpeg(data: bytes, side: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode an image and fit it into a side x side uint8 RGB canvas, centred, keeping aspect ratio.

    `out` (optional, [side, side, 3] uint8) is drawn into and returned instead of a new canvas, so a
    caller stacking several cameras saves one 150 KB buffer and copy per image (at 224).
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (side, side))  # JPEG DCT-domain downscale: decodes big images much faster
        img = img.convert("RGB")
        w, h = img.size
        scale = side / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        if out is None:
            canvas = np.zeros((side, side, 3), np.uint8)
        else:
            canvas = out
            if (nw, nh) != (side, side):
                canvas.fill(0)
        top, left = (side - nh) // 2, (side - nw) // 2
        canvas[top: top + nh, left: left + nw] = np.asarray(img)
    return canvas


@dataclass(frozen=True)
class Normalizer:
    """Affine maps for one source: y = clip((x - offset) * scale - shift, -clip, clip)."""

    offset: np.ndarray
    scale: np.ndarray
    shift: float
    clip: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # In place on the one temporary, and minimum/maximum rather than np.clip (same values, NaN
        # included): this runs twice per sample, where np.clip's Python-level dispatch showed up.
        y = x - self.offset
        y *= self.scale
        y -= self.shift
        np.minimum(y, self.clip, out=y)
        np.maximum(y, -self.clip, out=y)
        return y.astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return ((y + self.shift) / self.scale + self.offset).astype(np.float32)


def build_normalizer(stats: DimStats | None, kind: str, floor: float, clip: float, what: str) -> Normalizer | None:
    if stats is None:
        return None
    if kind == "quantile":
        lo, hi = np.asarray(stats.q01, np.float64), np.asarray(stats.q99, np.float64)
        return Normalizer(lo, 2.0 / np.maximum(hi - lo, floor), 1.0, clip)
    if kind == "mean_std":
        mean, std = np.asarray(stats.mean, np.float64), np.asarray(stats.std, np.float64)
        return Normalizer(mean, 1.0 / np.maximum(std, floor), 0.0, clip)
    raise ConfigError(f"unknown normalization {kind!r}; valid: quantile, mean_std")


@dataclass(frozen=True)
class SampleTransform:
    """Turns one decoded sample of one source into model-ready numpy arrays and text."""

    source: int
    name: str
    manifest: Manifest
    image_size: int
    horizon: int
    loss_weight: float
    state_norm: Normalizer | None
    action_norm: Normalizer | None

    @classmethod
    def build(cls, source: int, name: str, manifest: Manifest, *, image_size: int, horizon: int, loss_weight: float,
              normalization: str, floor: float, clip: float) -> SampleTransform:
        st, ac = manifest.stats.state, manifest.stats.actions
        if manifest.state_names and st is None or manifest.action_names and ac is None:
            raise ConfigError(f"source {name!r}: manifest has state/action names but no stats; reconvert it")
        return cls(source, name, manifest, image_size, horizon, loss_weight,
                   build_normalizer(st, normalization, floor, clip, "state"),
                   build_normalizer(ac, normalization, floor, clip, "actions"))

    def __call__(self, sample: Mapping[str, Any], images: np.ndarray | None = None, *,
                 normalize: bool = True) -> dict[str, Any]:
        """The processed sample. `images` ([C, S, S, 3] uint8, e.g. one row of a batch buffer) receives
        the first C cameras, and every slot of it is written (absent cameras and spare slots zeroed),
        so a batch is decoded in place with no per-sample canvas or copy; by default a new canvas of
        all the source's cameras is returned.

        `normalize=False` leaves state and actions in raw units (float32, same shapes and padding) for
        a caller that normalises a whole batch at once (`Collator.arrays(..., normalizers=...)`): the
        same values, in a few array operations per source instead of ten per sample."""
        cams = self.manifest.cameras
        present = np.array([keys.camera_member(c) in sample for c in cams], bool)
        # Robot samples carry every camera; image-text samples may hold fewer images than the dataset's most.
        if self.manifest.modality in (keys.ROBOT, keys.HUMAN_VIDEO) and not present.all():
            missing = cams[int(np.argmin(present))]
            raise DataError(sample.get("__shard__", "?"), f"sample {sample.get('__key__')} lacks camera {missing!r}")
        if images is None:
            images = np.zeros((len(cams), self.image_size, self.image_size, 3), np.uint8)
        for i in range(len(images)):
            if i < len(cams) and present[i]:
                letterbox_jpeg(sample[keys.camera_member(cams[i])], self.image_size, out=images[i])
            else:
                images[i] = 0
        out: dict[str, Any] = {
            "images": images[: len(cams)],
            "camera_present": present,
            "source": self.source,
            "modality": self.manifest.modality,
            "embodiment": self.manifest.embodiment or "",
            "loss_weight": self.loss_weight,
            "key": sample.get("__key__", ""),
            "instruction": sample.get(keys.INSTRUCTION),
            "prompt": sample.get(keys.PROMPT),
            "target": sample.get(keys.TARGET),
            "conversation": sample.get(keys.CONVERSATION),
        }
        out.update(self._lowdim(sample, normalize))
        tokens = sample.get(keys.ACTION_TOKENS)
        out["action_tokens"] = None if tokens is None else np.asarray(tokens, np.int64)
        return out

    def _lowdim(self, sample: Mapping[str, Any], normalize: bool = True) -> dict[str, np.ndarray]:
        state = sample.get(keys.STATE)
        actions = sample.get(keys.ACTIONS)
        out = {}
        if state is not None and self.state_norm is not None:
            out["state"] = self.state_norm(np.asarray(state, np.float64)) if normalize else np.asarray(state, np.float32)
        else:
            out["state"] = np.zeros(0, np.float32)
        if actions is not None and self.action_norm is not None:
            raw = np.asarray(actions, np.float64 if normalize else np.float32)[: self.horizon]
            chunk = self.action_norm(raw) if normalize else raw
            valid = sample[keys.ACTIONS_VALID] if keys.ACTIONS_VALID in sample else np.ones(len(chunk), bool)
            valid = np.asarray(valid, bool)[: self.horizon]
            pad = self.horizon - len(chunk)
            out["actions"] = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk
            out["actions_valid"] = np.concatenate([valid, np.zeros(pad, bool)]) if pad else valid
        else:
            out["actions"] = np.zeros((self.horizon, 0), np.float32)
            out["actions_valid"] = np.zeros(self.horizon, bool)
        return out
