"""Normalisation maps for state and actions, from a source's manifest stats (never pooled across embodiments):
- quantile: x -> 2 (x - q01) / max(q99 - q01, floor) - 1, clipped to [-clip, clip];
- mean_std: x -> (x - mean) / max(std, floor), clipped likewise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cotrain.dataset.manifest import DimStats
from cotrain.errors import ConfigError


@dataclass(frozen=True)
class StatsNormalizer:
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
        out: np.ndarray = y.astype(np.float32)
        return out

    def inverse(self, y: np.ndarray) -> np.ndarray:
        x: np.ndarray = ((y + self.shift) / self.scale + self.offset).astype(np.float32)
        return x


def build_normalizer(stats: DimStats | None, kind: str, floor: float, clip: float, what: str) -> StatsNormalizer | None:
    """The normalizer of one stats kind, or None when there are no stats."""
    if stats is None:
        return None
    if kind == "quantile":
        lo, hi = np.asarray(stats.q01, np.float64), np.asarray(stats.q99, np.float64)
        return StatsNormalizer(lo, 2.0 / np.maximum(hi - lo, floor), 1.0, clip)
    if kind == "mean_std":
        mean, std = np.asarray(stats.mean, np.float64), np.asarray(stats.std, np.float64)
        return StatsNormalizer(mean, 1.0 / np.maximum(std, floor), 0.0, clip)
    raise ConfigError(f"unknown normalization {kind!r}; valid: quantile, mean_std")
