"""`manifest.json`: what a converted dataset holds, how it was made, and its norm stats.

The manifest is the only thing a reader needs besides the shards: mixtures take modality, embodiment
and stats from it, `validate` checks shards against its hashes. It is written last and atomically,
so a directory without one is an unfinished conversion, never a dataset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cotrain.errors import DataError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DimStats(_Frozen):
    """Per-dimension statistics of one array feature (lists have one entry per dimension).

    Every value must be finite: a NaN or Inf here would normalise every sample of the source to NaN."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    count: int
    mean: list[float]
    std: list[float]
    min: list[float]
    max: list[float]
    q01: list[float]
    q02: list[float]
    q98: list[float]
    q99: list[float]


class ActionStats(DimStats):
    """Action statistics over frames, plus the same per timestep of the chunk ([H][D] lists)."""

    per_timestep: dict[str, list[list[float]]] = Field(
        description="mean/std/min/max/q01/q02/q98/q99 -> [horizon][action_dim]; count -> [[n] per step]"
    )


class NormStats(_Frozen):
    """Normalisation statistics of the state and the actions."""

    state: DimStats | None = None
    actions: ActionStats | None = None


class ShardEntry(_Frozen):
    """One shard as the manifest lists it."""

    name: str
    samples: int
    bytes: int
    sha256: str
    episodes: int


class SkippedEpisode(_Frozen):
    """An episode left out by the converter, and why."""

    episode: str
    reason: str


class Provenance(_Frozen):
    """How the dataset was made: converter, arguments and source fingerprint."""

    converter: str
    arguments: dict[str, Any]
    source_fingerprint: str
    cotrain_version: str


class Manifest(_Frozen):
    """The description of one converted dataset (see docs/format.md)."""

    schema_version: int = SCHEMA_VERSION
    name: str
    modality: str
    embodiment: str | None = None
    state_names: list[str] = Field(default_factory=list)
    action_names: list[str] = Field(default_factory=list)
    fps: float | None = None
    horizon: int | None = None
    cameras: list[str] = Field(default_factory=list)
    image_size: list[int] | None = Field(default=None, description="[height, width] bound, when resized")
    num_episodes: int
    num_samples: int
    shards: list[ShardEntry]
    skipped_episodes: list[SkippedEpisode] = Field(default_factory=list)
    stats: NormStats = Field(default_factory=NormStats)
    extra: dict[str, Any] = Field(default_factory=dict, description="converter-specific facts")
    provenance: Provenance

    def dumps(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True, allow_nan=False) + "\n"


def reading_problem(manifest: Manifest) -> str | None:
    """What makes a manifest unsafe to read samples by (the loader's checks; `cotrain validate`
    reports the same facts as problems): shard names that are not plain file names inside the
    dataset folder (`../x.tar`), a shard listed twice, or sample counts that do not add up."""
    names: set[str] = set()
    for s in manifest.shards:
        if "/" in s.name or "\\" in s.name or s.name in ("", ".", "..") or "\0" in s.name:
            return f"shard name {s.name!r} is not a plain file name in the dataset folder"
        if s.name in names:
            return f"shard {s.name!r} is listed twice"
        names.add(s.name)
        if s.samples < 0:
            return f"shard {s.name!r} has {s.samples} samples"
    if (listed := sum(s.samples for s in manifest.shards)) != manifest.num_samples:
        return f"num_samples {manifest.num_samples}, but its shards hold {listed}"
    return None


def load_manifest(directory: str | Path) -> Manifest:
    """Read and validate `DIR/manifest.json`; errors name the file and the field."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(directory, f"no {MANIFEST_NAME}: not a converted dataset, or its conversion did not finish")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"unreadable manifest: {exc}") from None
    return parse_manifest(data, path)


def parse_manifest(data: bytes, path: str | Path) -> Manifest:
    """A manifest from its file's bytes (read locally or from object storage); errors name `path`."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"unreadable manifest: {exc}") from None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:
        raise DataError(path, f"unknown manifest schema_version {version!r}; this cotrain reads {SCHEMA_VERSION}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise DataError(path, f"field {field!r}: {err['msg']}") from None
