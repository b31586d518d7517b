"""The tokenizer directory, the contract every tokenizer kind meets, and reading chunks to fit on.

A tokenizer directory is self-contained and needs no network: `config.json` (kind, horizon, action
dims, vocabulary size, FAST scale and token offset, and the normalisation statistics) plus the
kind's own files (`tokenizer.json` for FAST, a `tokenizers` BPE). Every kind maps a chunk [H, D] in
the dataset's units to int ids and back; values are normalised first with the stored quantiles,
q01 -> -1 and q99 -> +1, clipped to [-1, 1] (openpi's quantile normalisation, plus the clip that the
binning needs). Dimensions with q01 == q99 are constant: they normalise to 0 and decode to q01.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cotrain.atomic import write_text_atomic
from cotrain.errors import ConfigError, DataError
from cotrain.registry import Registry

CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


class NormSpec(BaseModel):
    """Per-dimension quantiles mapped to -1 and +1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    q01: list[float]
    q99: list[float]


class TokenizerConfig(BaseModel):
    """`config.json` of a tokenizer directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = FORMAT_VERSION
    kind: str
    horizon: int = Field(ge=1)
    action_dim: int = Field(ge=1)
    vocab_size: int = Field(ge=2, description="ids are 0 .. vocab_size - 1")
    norm: NormSpec
    action_names: list[str] = Field(default_factory=list)
    scale: float | None = Field(None, description="FAST: DCT coefficients are multiplied by this, then rounded")
    min_token: int | None = Field(None, description="FAST: the integer coefficient stored as character 0")
    max_token: int | None = Field(None, description="FAST: the largest integer coefficient")
    fitted_on: list[dict[str, Any]] = Field(default_factory=list, description="dataset names and chunk counts")


@dataclass
class DecodeStats:
    """Counts of relaxed decodes: a malformed sequence is repaired and counted, never zeroed silently.

    Args:
        sequences: sequences decoded.
        relaxed: sequences that needed any repair below.
        padded: sequences with fewer values than H * D (padded with zeros in normalised/DCT space).
        truncated: sequences with more values than H * D (the tail is dropped).
        invalid_tokens: ids outside the vocabulary, or values outside the valid range (replaced by 0).
    """

    sequences: int = 0
    relaxed: int = 0
    padded: int = 0
    truncated: int = 0
    invalid_tokens: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    def record(self, *, padded: bool, truncated: bool, invalid: int) -> None:
        self.sequences += 1
        self.padded += padded
        self.truncated += truncated
        self.invalid_tokens += invalid
        self.relaxed += bool(padded or truncated or invalid)


def fit_values(values: np.ndarray, size: int, invalid: int, stats: DecodeStats | None) -> np.ndarray:
    """Pad with zeros or truncate a decoded value vector to `size`, and count the repairs in `stats`."""
    n = len(values)
    if stats is not None:
        stats.record(padded=n < size, truncated=n > size, invalid=invalid)
    if n == size:
        return values
    return np.concatenate([values, np.zeros(size - n, values.dtype)]) if n < size else values[:size]


class QuantileNormalizer:
    """Quantile normalisation to [-1, 1] with clipping, and its inverse."""

    def __init__(self, norm: NormSpec) -> None:
        self.q01 = np.asarray(norm.q01, np.float64)
        self.q99 = np.asarray(norm.q99, np.float64)
        self.span = self.q99 - self.q01
        self.constant = self.span <= 1e-12

    def normalize(self, chunk: np.ndarray, *, clip: bool = True) -> np.ndarray:
        span = np.where(self.constant, 1.0, self.span)
        out = np.where(self.constant, 0.0, 2.0 * (np.asarray(chunk, np.float64) - self.q01) / span - 1.0)
        return np.clip(out, -1.0, 1.0) if clip else out

    def denormalize(self, values: np.ndarray) -> np.ndarray:
        return np.where(self.constant, self.q01, (np.asarray(values, np.float64) + 1.0) / 2.0 * self.span + self.q01)


class ActionTokenizer(Protocol):
    """What every tokenizer kind implements; chunks are [H, D] in the dataset's units."""

    config: TokenizerConfig

    def encode(self, chunk: np.ndarray) -> np.ndarray: ...

    def decode(self, ids: Sequence[int] | np.ndarray, stats: DecodeStats | None = None) -> np.ndarray: ...

    def encode_normalized(self, values: np.ndarray) -> np.ndarray: ...

    def decode_normalized(self, ids: Sequence[int] | np.ndarray, stats: DecodeStats | None = None) -> np.ndarray: ...

    def save_files(self, directory: Path) -> None: ...


class TokenizerKind(Protocol):
    """A registered kind: fit from normalised chunks, or load from a directory."""

    def fit(self, chunks: np.ndarray, config: TokenizerConfig) -> ActionTokenizer: ...

    def load(self, directory: Path, config: TokenizerConfig) -> ActionTokenizer: ...


TOKENIZER_KINDS: Registry[TokenizerKind] = Registry("tokenizers")


def get_kind(name: str) -> TokenizerKind:
    """The registered tokenizer kind `name`."""
    import cotrain.action_tokens.binning  # noqa: F401  (built-in kinds register on import)
    import cotrain.action_tokens.fast  # noqa: F401

    return TOKENIZER_KINDS.get(name)


def save_tokenizer(tokenizer: ActionTokenizer, directory: str | Path, *, overwrite: bool = False) -> Path:
    """Write `config.json` and the kind's files into `directory` (new, empty, or a tokenizer with overwrite)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--out {directory} exists and is not a directory")
    existing = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    if existing and not overwrite:
        raise ConfigError(f"--out {directory} is not empty ({', '.join(existing[:3])}); pass --overwrite to replace it")
    if existing and CONFIG_NAME not in existing:
        raise ConfigError(f"--out {directory} holds files that are not a tokenizer; choose an empty or new folder")
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_files(directory)
    write_text_atomic(directory / CONFIG_NAME, json.dumps(tokenizer.config.model_dump(mode="json"), indent=1,
                                                          sort_keys=True) + "\n")
    return directory


def load_config(directory: str | Path) -> TokenizerConfig:
    """The tokenizer config in `directory`."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise DataError(directory, f"no {CONFIG_NAME}: not a tokenizer directory "
                                   "(make one with `cotrain tokenizer fit`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"unreadable tokenizer config: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        got = raw.get("format_version") if isinstance(raw, dict) else None
        raise DataError(path, f"unknown tokenizer format_version {got!r}; this cotrain reads {FORMAT_VERSION}")
    try:
        config = TokenizerConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DataError(path, f"field {'.'.join(str(p) for p in err['loc'])!r}: {err['msg']}") from None
    if len(config.norm.q01) != config.action_dim or len(config.norm.q99) != config.action_dim:
        raise DataError(path, f"norm has {len(config.norm.q01)}/{len(config.norm.q99)} values for "
                              f"action_dim {config.action_dim}", key="norm")
    return config


def load_tokenizer(directory: str | Path) -> ActionTokenizer:
    """Load a tokenizer directory written by `save_tokenizer` (no network access)."""
    config = load_config(directory)
    return get_kind(config.kind).load(Path(directory), config)


@dataclass(frozen=True)
class ChunkSource:
    """Action chunks of several datasets, and the normalisation merged over them.

    Args:
        dirs: the dataset directories.
        names: their manifest names.
        horizon: H taken from each chunk (the first H steps).
        action_dim: D, equal in every dataset.
        norm: per dimension, the smallest q01 and the largest q99 over the datasets, so no dataset's
            central 98 % is clipped.
        action_names: the first dataset's action names.
        counts: chunks (samples) per dataset.
    """

    dirs: tuple[Path, ...]
    names: tuple[str, ...]
    horizon: int
    action_dim: int
    norm: NormSpec
    action_names: tuple[str, ...]
    counts: tuple[int, ...]

    def iter_chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(dataset position, [H, D] float32 chunk) for every sample, in shard order."""
        from cotrain.dataset.sequential import Dataset
        from cotrain.dataset.shards import decode_npy

        for pos, root in enumerate(self.dirs):
            for raw in Dataset.open(root).iter_raw():
                where = f"{root / raw['__shard__']}"
                if "actions.npy" not in raw:
                    raise DataError(where, "sample has no actions.npy", key=raw["__key__"])
                chunk = decode_npy(raw["actions.npy"])
                if chunk.ndim != 2 or chunk.shape[0] < self.horizon or chunk.shape[1] != self.action_dim:
                    raise DataError(where, f"actions.npy has shape {chunk.shape}; expected [>={self.horizon}, "
                                           f"{self.action_dim}]", key=f"{raw['__key__']}.actions.npy")
                yield pos, chunk[: self.horizon].astype(np.float32)


def open_chunk_source(dirs: Sequence[str | Path], horizon: int | None = None) -> ChunkSource:
    """Check the datasets agree on action dims and horizon, and merge their action quantiles."""
    from cotrain.dataset.sequential import Dataset

    if not dirs:
        raise ConfigError("give at least one dataset folder")
    datasets = [Dataset.open(d) for d in dirs]
    dims, horizons = set(), []
    q01, q99 = [], []
    for ds in datasets:
        m = ds.manifest
        stats = m.stats.actions
        if stats is None or not m.horizon:
            raise DataError(ds.root, f"dataset {m.name!r} (modality {m.modality}) has no action chunks or no action "
                                     "stats; tokenizers need a robot or human-video dataset")
        dims.add(len(stats.q01))
        horizons.append(m.horizon)
        q01.append(stats.q01)
        q99.append(stats.q99)
    if len(dims) > 1:
        raise DataError(datasets[1].root, f"action dimensions differ between datasets: {sorted(dims)}")
    h = horizon or horizons[0]
    if horizon is None and len(set(horizons)) > 1:
        raise ConfigError(f"the datasets have different horizons {horizons}; pass --horizon N "
                          f"(at most {min(horizons)})")
    if h > min(horizons):
        raise ConfigError(f"--horizon {h} exceeds a dataset's stored chunk length {min(horizons)}")
    norm = NormSpec(q01=[float(v) for v in np.min(q01, axis=0)], q99=[float(v) for v in np.max(q99, axis=0)])
    return ChunkSource(tuple(d.root for d in datasets), tuple(d.manifest.name for d in datasets), h, dims.pop(), norm,
                       tuple(datasets[0].manifest.action_names), tuple(d.manifest.num_samples for d in datasets))
