"""FAST action tokens: DCT over the horizon, scaled and rounded coefficients, then byte-level BPE.

Encoding a chunk [H, D] (after quantile normalisation to [-1, 1], see io.py):
1. per dimension, the orthonormal DCT-II along time (`scipy.fft.dct(x, axis=0, norm="ortho")`,
   computed here as a fixed [H, H] matrix product with numpy, so scipy is not needed);
2. coefficients times `scale` (default 10), rounded to integers (half to even, like `np.around`);
3. flattened low frequency first, dimensions interleaved: value k * D + d is frequency k of
   dimension d (FAST's row-major flatten of the [H, D] coefficient matrix), so the DC terms of all
   dimensions come first;
4. each integer minus `min_token` becomes one character (chr), and the string is split by a
   byte-level BPE trained with the `tokenizers` library on the fitted chunks.

`min_token` is -ceil(scale * sqrt(H)) rather than the minimum seen while fitting: an orthonormal
coefficient of a chunk with |x| <= 1 is at most ||x||_2 <= sqrt(H) in size, so every clipped chunk
encodes without clamping, and the characters stay in 0 .. 2 * ceil(scale * sqrt(H)). The BPE's
initial alphabet is all 256 byte symbols, so any string is encodable (no unknown token to drop).
Decoding inverts each step; a malformed id sequence is repaired and counted (`DecodeStats`): ids
outside the vocabulary and characters outside the range read as coefficient 0, and the coefficient
vector is padded with zeros (the missing high frequencies) or truncated to H * D.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from cotrain.action_tokens.io import TOKENIZER_KINDS, DecodeStats, QuantileNormalizer, TokenizerConfig, fit_values
from cotrain.atomic import write_text_atomic
from cotrain.errors import ConfigError, DataError

TOKENIZER_FILE = "tokenizer.json"
BYTE_ALPHABET = 256


@lru_cache(maxsize=16)
def dct_matrix(n: int) -> np.ndarray:
    """[n, n] orthonormal DCT-II matrix B: coefficients = B @ x, and x = B.T @ coefficients."""
    k = np.arange(n)[:, None]
    t = np.arange(n)[None, :]
    basis = np.cos(np.pi * k * (2 * t + 1) / (2 * n)) * math.sqrt(2.0 / n)
    basis[0] /= math.sqrt(2.0)
    basis.setflags(write=False)
    return basis


def coefficient_bound(horizon: int, scale: float) -> int:
    """The largest |rounded coefficient| of any chunk with values in [-1, 1]."""
    return int(math.ceil(scale * math.sqrt(horizon)))


class FastTokenizer:
    """A fitted FAST tokenizer.

    Args:
        config: its configuration (kind "fast", with scale, min_token and max_token set).
        bpe: the `tokenizers.Tokenizer` (byte-level BPE).
    """

    def __init__(self, config: TokenizerConfig, bpe: Any) -> None:
        self.config = config
        self.bpe = bpe
        self.normalizer = QuantileNormalizer(config.norm)
        self._scale = float(config.scale or 0.0)
        self._min = int(config.min_token or 0)
        self._range = int(config.max_token or 0) - self._min

    def coefficients(self, values: np.ndarray) -> np.ndarray:
        """[H, D] normalised values -> [H * D] integer coefficients, low frequency first."""
        coeff = dct_matrix(self.config.horizon) @ np.asarray(values, np.float64)
        return np.rint(coeff * self._scale).astype(np.int64).reshape(-1)

    def text(self, values: np.ndarray) -> str:
        ints = np.clip(self.coefficients(values) - self._min, 0, self._range)
        return "".join(map(chr, ints.tolist()))

    def encode_normalized(self, values: np.ndarray) -> np.ndarray:
        _check_shape(values, self.config)
        return np.asarray(self.bpe.encode(self.text(values)).ids, np.int32)

    def encode(self, chunk: np.ndarray) -> np.ndarray:
        return self.encode_normalized(self.normalizer.normalize(chunk))

    def decode_normalized(self, ids: Sequence[int] | np.ndarray, stats: DecodeStats | None = None) -> np.ndarray:
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        valid = [i for i in ids if 0 <= i < self.config.vocab_size]
        chars = np.array([ord(c) for c in self.bpe.decode(valid, skip_special_tokens=False)], np.int64)
        bad = (chars < 0) | (chars > self._range)  # e.g. U+FFFD from a split multi-byte character
        invalid = len(ids) - len(valid) + int(bad.sum())
        coeff = np.where(bad, 0, chars + self._min).astype(np.float64)
        h, d = self.config.horizon, self.config.action_dim
        coeff = fit_values(coeff, h * d, invalid, stats)
        return dct_matrix(h).T @ (coeff.reshape(h, d) / self._scale)

    def decode(self, ids: Sequence[int] | np.ndarray, stats: DecodeStats | None = None) -> np.ndarray:
        return self.normalizer.denormalize(self.decode_normalized(ids, stats))

    def save_files(self, directory: Path) -> None:
        write_text_atomic(directory / TOKENIZER_FILE, self.bpe.to_str(pretty=True) + "\n")


def _check_shape(values: np.ndarray, config: TokenizerConfig) -> None:
    if np.shape(values) != (config.horizon, config.action_dim):
        raise ConfigError(f"chunk has shape {np.shape(values)}; this tokenizer takes [{config.horizon}, "
                          f"{config.action_dim}]")


def _new_bpe() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    bpe = Tokenizer(models.BPE())
    # No regex split: merges may span the whole coefficient string (GPT-2's split would stop them at
    # character-class boundaries of the arbitrary code points used here).
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    return bpe


class _FastKind:
    """Registered as kind "fast"."""

    def fit(self, chunks: np.ndarray, config: TokenizerConfig) -> FastTokenizer:
        """Train the BPE on [N, H, D] normalised chunks; `config.vocab_size` is the requested size."""
        from tokenizers import pre_tokenizers, trainers

        if config.vocab_size <= BYTE_ALPHABET:
            raise ConfigError(f"--vocab-size {config.vocab_size}: must exceed {BYTE_ALPHABET} (the byte alphabet)")
        scale = float(config.scale or 10.0)
        bound = coefficient_bound(config.horizon, scale)
        base = config.model_copy(update={"scale": scale, "min_token": -bound, "max_token": bound})
        tokenizer = FastTokenizer(base, _new_bpe())
        trainer = trainers.BpeTrainer(vocab_size=config.vocab_size, min_frequency=2, show_progress=False,
                                      special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())

        def texts() -> Iterator[str]:
            for values in chunks:
                yield tokenizer.text(values)

        tokenizer.bpe.train_from_iterator(texts(), trainer=trainer, length=len(chunks))
        actual = tokenizer.bpe.get_vocab_size(with_added_tokens=True)
        return FastTokenizer(base.model_copy(update={"vocab_size": actual}), tokenizer.bpe)

    def load(self, directory: Path, config: TokenizerConfig) -> FastTokenizer:
        from tokenizers import Tokenizer

        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise DataError(directory, f"FAST tokenizer directory without {TOKENIZER_FILE}")
        if config.scale is None or config.min_token is None or config.max_token is None:
            raise DataError(directory / "config.json", "FAST config needs scale, min_token and max_token")
        try:
            bpe = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust library raises plain Exception subclasses on bad JSON
            raise DataError(path, f"unreadable tokenizer: {exc}") from None
        if bpe.get_vocab_size(with_added_tokens=True) != config.vocab_size:
            raise DataError(path, f"vocabulary has {bpe.get_vocab_size()} ids but config.json says "
                                  f"{config.vocab_size}", key="vocab_size")
        return FastTokenizer(config, bpe)


TOKENIZER_KINDS.add("fast", _FastKind())
