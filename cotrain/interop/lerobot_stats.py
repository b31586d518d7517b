"""Feature statistics in LeRobot's `meta/stats.json` form, computed exactly over what is exported.

LeRobot 0.4.4 (`datasets/compute_stats.py`) stores per feature `min, max, mean, std, count` and the
quantiles `q01, q10, q50, q90, q99`; numeric features have vectors of the feature's size, image
features per-channel values of pixels scaled to [0, 1] with shape (3, 1, 1). Here numeric stats use
numpy over every exported frame (population std, linear-interpolated quantiles); image stats come
from 256-bin histograms of the uint8 pixels of the frames the exporter samples, which makes their
quantiles exact (numpy's `inverted_cdf`) for those frames; LeRobot itself subsamples frames and
estimates quantiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def numeric_stats(values: np.ndarray) -> dict[str, Any]:
    """Stats of [N, D] values, as JSON-ready lists of floats (count as [N])."""
    x = values.astype(np.float64).reshape(len(values), -1)
    out: dict[str, Any] = {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
                           "std": x.std(0).tolist(), "count": [len(x)]}
    for name, q in QUANTILES.items():
        out[name] = np.quantile(x, q, axis=0).tolist()
    return out


class ImageStats:
    """Per-channel pixel histograms of one camera, accumulated frame by frame."""

    def __init__(self) -> None:
        self.hist = np.zeros((3, 256), np.int64)
        self.frames = 0

    def add(self, image_hwc: np.ndarray) -> None:
        for c in range(3):
            self.hist[c] += np.bincount(image_hwc[..., c].ravel(), minlength=256)
        self.frames += 1

    def to_json(self) -> dict[str, Any]:
        """LeRobot's image stats: values in [0, 1], each (3, 1, 1) as nested lists."""
        levels = np.arange(256, dtype=np.float64) / 255.0
        total = self.hist.sum(1, keepdims=True).astype(np.float64)
        mean = (self.hist * levels).sum(1) / total[:, 0]
        var = (self.hist * (levels[None, :] - mean[:, None]) ** 2).sum(1) / total[:, 0]
        present = self.hist > 0
        out: dict[str, Any] = {
            "min": _chw(levels[np.argmax(present, 1)]), "max": _chw(levels[255 - np.argmax(present[:, ::-1], 1)]),
            "mean": _chw(mean), "std": _chw(np.sqrt(var)), "count": [self.frames],
        }
        cdf = np.cumsum(self.hist, 1) / total
        for name, q in QUANTILES.items():
            out[name] = _chw(_hist_quantile(levels, cdf, q))
        return out


def _hist_quantile(levels: np.ndarray, cdf: np.ndarray, q: float) -> np.ndarray:
    """Per channel, the first level whose cumulative share reaches q (numpy's `inverted_cdf` quantile
    of the counted pixels)."""
    return np.asarray([levels[min(int(np.searchsorted(row, q - 1e-12, side="left")), len(levels) - 1)]
                       for row in cdf])


def _chw(values: Sequence[float] | np.ndarray) -> list[list[list[float]]]:
    return [[[float(v)]] for v in values]
