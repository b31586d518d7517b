"""Action-token datasets: a converted robot (or human-video) dataset plus its chunks' discrete tokens.

The source is a cotrain shard dataset; a unit is one of its shards (ref = shard name). Every sample
keeps all of its members (cameras, `instruction.txt`, `state.npy`, `actions.npy`,
`actions_valid.npy`) and gains `action_tokens.npy`, int32 ids of the first H steps of its chunk
encoded with the tokenizer at `--tokenizer` (H = the tokenizer's horizon; see
docs/action_tokens.md). `meta.json` gets this dataset's name, modality `action_tokens` and the
source sample's key. Norm stats are recomputed from the stored chunks (step 0 as the frame's action),
so they equal the source's when nothing was skipped.

The tokenizer's files are hashed into the manifest (`extra.tokenizer.sha256`); replacing a
tokenizer in place under the same path needs `--overwrite` to convert again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from typing_extensions import TypedDict

from cotrain.convert.spec import Converter, ConvertOptions, DatasetInfo, Unit, UnitSink
from cotrain.dataset import keys
from cotrain.dataset.manifest import Manifest, load_manifest
from cotrain.dataset.norm_stats import EpisodeLowdim
from cotrain.dataset.shards import decode_npy, encode_json, encode_npy, iter_samples
from cotrain.errors import DataError


class TokensOptions(ConvertOptions):
    """Options of the tokens converter."""

    tokenizer: str = Field(..., description="Tokenizer directory made by `cotrain tokenizer fit`.")


def _tokenizer_sha(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@lru_cache(maxsize=2)
def _load(directory: str, sha: str) -> Any:
    from cotrain.action_tokens import load_tokenizer

    return load_tokenizer(directory)


def _tokenizer(opts: TokensOptions) -> Any:
    directory = Path(opts.tokenizer)
    if not directory.is_dir():
        raise DataError(directory, "tokenizer directory not found (make one with `cotrain tokenizer fit`)")
    return _load(str(directory.resolve()), _tokenizer_sha(directory))


def _check_source(src: Path, manifest: Manifest, tokenizer: Any) -> None:
    cfg = tokenizer.config
    if not manifest.horizon or manifest.stats.actions is None:
        raise DataError(src, f"dataset {manifest.name!r} (modality {manifest.modality}) has no action chunks to "
                             "tokenize; use a robot or human-video dataset")
    dims = len(manifest.stats.actions.mean)
    if dims != cfg.action_dim or manifest.horizon < cfg.horizon:
        raise DataError(src, f"chunks are [{manifest.horizon}, {dims}] but the tokenizer takes [{cfg.horizon}, "
                             f"{cfg.action_dim}] (needs the same action dims and a horizon of at least "
                             f"{cfg.horizon})", key=keys.ACTIONS)


class TokensRef(TypedDict):
    """A unit's `ref`: the source dataset's shard it tokenizes."""

    shard: str


def list_units(src: Path, opts: TokensOptions) -> list[Unit[TokensRef]]:
    """One unit per shard of the source cotrain dataset."""
    manifest = load_manifest(src)
    _check_source(src, manifest, _tokenizer(opts))
    return [Unit(i, s.name, s.samples, TokensRef(shard=s.name)) for i, s in enumerate(manifest.shards)]


def describe(src: Path, opts: TokensOptions, units: Sequence[Unit[TokensRef]]) -> DatasetInfo:
    """The source manifest's info with the tokenizer's description added."""
    manifest = load_manifest(src)
    cfg = _tokenizer(opts).config
    tokenizer = {"kind": cfg.kind, "vocab_size": cfg.vocab_size, "horizon": cfg.horizon, "action_dim": cfg.action_dim,
                 "sha256": _tokenizer_sha(Path(opts.tokenizer))}
    return DatasetInfo(modality=keys.ACTION_TOKENS_MODALITY, embodiment=manifest.embodiment,
                       state_names=manifest.state_names, action_names=manifest.action_names, fps=manifest.fps,
                       horizon=manifest.horizon, cameras=manifest.cameras,
                       image_size=tuple(manifest.image_size) if manifest.image_size else None,  # type: ignore[arg-type]  # manifest image sizes are [height, width]
                       extra={"source_dataset": manifest.name, "source_modality": manifest.modality,
                              "tokenizer": tokenizer})


class _EpisodeArrays:
    """Per-frame arrays of the episode being streamed, handed to the sink when it ends."""

    def __init__(self, sink: UnitSink) -> None:
        self.sink = sink
        self.episode: Any = None
        self.rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, episode: Any, state: np.ndarray, chunk: np.ndarray, valid: np.ndarray) -> None:
        if self.rows and episode != self.episode:
            self.flush()
        self.episode = episode
        self.rows.append((state.reshape(-1), chunk, valid))

    def flush(self) -> None:
        if not self.rows:
            return
        state, chunks, valid = (np.stack(col) for col in zip(*self.rows))
        self.sink.add_episode(EpisodeLowdim(state=state.astype(np.float32), actions=chunks[:, 0], valid=valid[:, 0],
                                            chunks=chunks, chunk_valid=valid))
        self.rows = []


def _arrays(raw: dict[str, bytes], where: Path, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    for member in (keys.META, keys.ACTIONS, keys.ACTIONS_VALID, keys.STATE):
        if member not in raw:
            # The ignores: a sample's __key__ is a str, which iter_samples' dict[str, bytes] type does not say.
            raise DataError(where, f"sample has no {member}", key=raw["__key__"])  # type: ignore[arg-type]  # __key__ is a str
    chunk = decode_npy(raw[keys.ACTIONS]).astype(np.float32)
    valid = decode_npy(raw[keys.ACTIONS_VALID]).astype(bool)
    if chunk.shape != shape or valid.shape != shape[:1]:
        raise DataError(where, f"actions.npy {chunk.shape} / actions_valid.npy {valid.shape}; the manifest says "
                               f"[{shape[0]}, {shape[1]}]", key=f"{raw['__key__']}.{keys.ACTIONS}")  # type: ignore[str-bytes-safe]  # __key__ is a str
    return decode_npy(raw[keys.STATE]).astype(np.float32), chunk, valid


def convert_unit(src: Path, opts: TokensOptions, unit: Unit[TokensRef], sink: UnitSink) -> None:
    """Copy one shard's samples with their action chunks tokenized."""
    tokenizer = _tokenizer(opts)
    manifest = load_manifest(src)
    shape = (int(manifest.horizon or 0), tokenizer.config.action_dim)
    path = src / unit.ref["shard"]
    name = opts.name or src.resolve().name
    episode = _EpisodeArrays(sink)
    for raw in iter_samples(path):
        state, chunk, valid = _arrays(raw, path, shape)
        meta = json.loads(raw[keys.META])
        episode.add(meta.get("episode"), state, chunk, valid)
        members = {k: v for k, v in raw.items() if not k.startswith("__")}
        members[keys.ACTION_TOKENS] = encode_npy(tokenizer.encode(chunk[: tokenizer.config.horizon]).astype(np.int32))
        members[keys.META] = encode_json({**meta, "dataset": name, "modality": keys.ACTION_TOKENS_MODALITY,
                                          "source_key": raw["__key__"]})
        sink.add(members)
    episode.flush()


CONVERTER = Converter(
    "tokens",
    "Discrete action tokens (FAST or binning) for a converted robot dataset, keeping its samples.",
    TokensOptions, list_units, describe, convert_unit,
)
