"""Discrete action tokens: fit a tokenizer on datasets' action chunks, save it, evaluate round trips.

Kinds: `fast` (DCT + byte-level BPE, fast.py) and `bins` (256 uniform bins per value, binning.py);
more can register under the `cotrain.action_tokens` entry point. A tokenizer directory (io.py) holds
everything needed to encode and decode, including the normalisation statistics, and loads offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotrain.action_tokens.io import (
    TOKENIZER_KINDS,
    ActionTokenizer,
    DecodeStats,
    QuantileNormalizer,
    TokenizerConfig,
    get_kind,
    load_tokenizer,
    open_chunk_source,
    save_tokenizer,
)
from cotrain.errors import ConfigError, DataError

__all__ = [
    "TOKENIZER_KINDS",
    "ActionTokenizer",
    "DecodeStats",
    "QuantileNormalizer",
    "TokenizerConfig",
    "evaluate_tokenizer",
    "fit_tokenizer",
    "get_kind",
    "load_tokenizer",
    "save_tokenizer",
]

DEFAULT_VOCAB = {"fast": 1024, "bins": 256}
DEFAULT_MAX_CHUNKS = 100_000


def _selected(total: int, max_chunks: int | None) -> set[int] | None:
    """Evenly spaced sample positions when there are more chunks than `max_chunks` (None: all)."""
    if max_chunks is None or total <= max_chunks:
        return None
    return set(np.linspace(0, total - 1, max_chunks).round().astype(np.int64).tolist())


def fit_tokenizer(datasets: Sequence[str | Path], out: str | Path, *, kind: str = "fast", vocab_size: int | None = None,
                  scale: float = 10.0, horizon: int | None = None, max_chunks: int | None = DEFAULT_MAX_CHUNKS,
                  overwrite: bool = False) -> dict[str, Any]:
    """Fit a tokenizer of `kind` on the action chunks of `datasets` and save it to `out`.

    FAST trains its BPE on at most `max_chunks` chunks, evenly spaced over all samples; the binning
    tokenizer needs only the datasets' action quantiles.
    """
    impl = get_kind(kind)
    if scale <= 0:
        raise ConfigError(f"--scale {scale}: must be positive")
    source = open_chunk_source(datasets, horizon)
    chunks = np.zeros((0, source.horizon, source.action_dim), np.float32)
    per_dataset = [0] * len(source.dirs)
    if kind != "bins":
        chunks, per_dataset = _read_normalized(source, max_chunks)
    config = TokenizerConfig(
        kind=kind, horizon=source.horizon, action_dim=source.action_dim,
        vocab_size=vocab_size or DEFAULT_VOCAB.get(kind, 1024), norm=source.norm,
        action_names=list(source.action_names), scale=scale if kind == "fast" else None,
        fitted_on=[{"name": n, "chunks": c} for n, c in zip(source.names, per_dataset)],
    )
    tokenizer = impl.fit(chunks, config)
    save_tokenizer(tokenizer, out, overwrite=overwrite)
    counts = [len(tokenizer.encode_normalized(c)) for c in chunks]
    cfg = tokenizer.config
    return {"out": str(out), "kind": cfg.kind, "vocab_size": cfg.vocab_size, "horizon": cfg.horizon,
            "action_dim": cfg.action_dim, "chunks": int(len(chunks)), "scale": cfg.scale,
            "min_token": cfg.min_token, "max_token": cfg.max_token,
            "mean_tokens_per_chunk": round(float(np.mean(counts)), 3) if counts else None}


def _read_normalized(source: Any, max_chunks: int | None) -> tuple[np.ndarray, list[int]]:
    norm = QuantileNormalizer(source.norm)
    keep = _selected(sum(source.counts), max_chunks)
    out, per_dataset = [], [0] * len(source.dirs)
    for i, (pos, chunk) in enumerate(source.iter_chunks()):
        if keep is None or i in keep:
            out.append(norm.normalize(chunk).astype(np.float32))
            per_dataset[pos] += 1
    if not out:
        raise DataError(source.dirs[0], "no action chunks to fit on")
    return np.stack(out), per_dataset


def evaluate_tokenizer(directory: str | Path, datasets: Sequence[str | Path]) -> dict[str, Any]:
    """Round-trip every chunk of `datasets`: reconstruction error and tokens per chunk.

    Errors are reported twice: `normalized` compares the decoded chunk with the clipped normalised
    input (the tokenizer's own error); `original` compares it, in the dataset's units, with the raw
    chunk, so it also includes clipping at q01/q99 (`clipped_fraction` says how often that happens).
    """
    tokenizer = load_tokenizer(directory)
    cfg = tokenizer.config
    source = open_chunk_source(datasets, cfg.horizon)
    if source.action_dim != cfg.action_dim:
        raise DataError(source.dirs[0], f"actions have {source.action_dim} dimensions; the tokenizer takes "
                                        f"{cfg.action_dim}")
    norm = QuantileNormalizer(cfg.norm)
    stats = DecodeStats()
    counts: list[int] = []
    sq_norm = sq_orig = 0.0
    max_norm = max_orig = 0.0
    clipped = 0
    for _, chunk in source.iter_chunks():
        raw = norm.normalize(chunk, clip=False)
        values = np.clip(raw, -1.0, 1.0)
        ids = tokenizer.encode_normalized(values)
        rec = tokenizer.decode_normalized(ids, stats)
        orig = norm.denormalize(rec) - chunk
        counts.append(len(ids))
        sq_norm += float(np.square(rec - values).sum())
        sq_orig += float(np.square(orig).sum())
        max_norm = max(max_norm, float(np.abs(rec - values).max()))
        max_orig = max(max_orig, float(np.abs(orig).max()))
        clipped += int((raw != values).sum())
    if not counts:
        raise DataError(source.dirs[0], "no action chunks to evaluate")
    values_total = len(counts) * cfg.horizon * cfg.action_dim
    c = np.asarray(counts, np.float64)
    return {
        "tokenizer": str(directory), "kind": cfg.kind, "vocab_size": cfg.vocab_size, "chunks": len(counts),
        "values_per_chunk": cfg.horizon * cfg.action_dim,
        "tokens_per_chunk": {"mean": float(c.mean()), "p50": float(np.percentile(c, 50)),
                             "p95": float(np.percentile(c, 95)), "max": int(c.max()), "min": int(c.min())},
        "compression": round(cfg.horizon * cfg.action_dim / float(c.mean()), 4),
        "normalized": {"mse": sq_norm / values_total, "max_abs": max_norm},
        "original": {"mse": sq_orig / values_total, "max_abs": max_orig},
        "clipped_fraction": clipped / values_total,
        "decode": stats.to_json(),
    }
