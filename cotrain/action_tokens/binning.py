"""Uniform binning tokens (RT-2 / OpenVLA style): one id per value, `bins` equal bins on [-1, 1].

After quantile normalisation and clipping (io.py), value x gets bin floor((x + 1) / 2 * bins),
capped at bins - 1, and decodes to the bin's centre, so the round-trip error is at most 1 / bins in
normalised units (half a bin width). Ids are laid out time-major: id t * D + d is step t of
dimension d, H * D ids per chunk. Decoding repairs malformed sequences and counts them: ids outside
0 .. bins - 1 read as 0.0 (the middle of the normalised range), and the value vector is padded with
0.0 or truncated to H * D.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cotrain.action_tokens.io import TOKENIZER_KINDS, DecodeStats, QuantileNormalizer, TokenizerConfig, fit_values
from cotrain.errors import ConfigError

DEFAULT_BINS = 256


class BinningTokenizer:
    """Uniform bins per dimension; `config.vocab_size` is the number of bins."""

    def __init__(self, config: TokenizerConfig) -> None:
        self.config = config
        self.normalizer = QuantileNormalizer(config.norm)
        self.bins = config.vocab_size

    def encode_normalized(self, values: np.ndarray) -> np.ndarray:
        if np.shape(values) != (self.config.horizon, self.config.action_dim):
            raise ConfigError(f"chunk has shape {np.shape(values)}; this tokenizer takes [{self.config.horizon}, "
                              f"{self.config.action_dim}]")
        x = np.clip(np.asarray(values, np.float64), -1.0, 1.0)
        ids = np.floor((x + 1.0) / 2.0 * self.bins).astype(np.int64)
        return np.minimum(ids, self.bins - 1).reshape(-1).astype(np.int32)

    def encode(self, chunk: np.ndarray) -> np.ndarray:
        return self.encode_normalized(self.normalizer.normalize(chunk))

    def decode_normalized(self, ids: Sequence[int] | np.ndarray, stats: DecodeStats | None = None) -> np.ndarray:
        ids_arr = np.asarray(ids, np.int64).reshape(-1)
        bad = (ids_arr < 0) | (ids_arr >= self.bins)
        values = np.where(bad, 0.0, -1.0 + (ids_arr + 0.5) * 2.0 / self.bins)
        h, d = self.config.horizon, self.config.action_dim
        return fit_values(values, h * d, int(bad.sum()), stats).reshape(h, d)

    def decode(self, ids: Sequence[int] | np.ndarray, stats: DecodeStats | None = None) -> np.ndarray:
        return self.normalizer.denormalize(self.decode_normalized(ids, stats))

    def save_files(self, directory: Path) -> None:
        """Everything a binning tokenizer needs is in config.json."""


class _BinsKind:
    """Registered as kind "bins"."""

    def fit(self, chunks: np.ndarray, config: TokenizerConfig) -> BinningTokenizer:
        # Uniform bins need no data beyond the normalisation stats already in `config`.
        return BinningTokenizer(config.model_copy(update={"scale": None, "min_token": None, "max_token": None}))

    def load(self, directory: Path, config: TokenizerConfig) -> BinningTokenizer:
        return BinningTokenizer(config)


TOKENIZER_KINDS.add("bins", _BinsKind())
