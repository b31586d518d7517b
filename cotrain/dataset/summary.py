"""Summarise a converted dataset from its manifest alone: what `cotrain inspect` shows.

Only `manifest.json` is read, never a shard, so inspecting a multi-terabyte dataset takes as long
as parsing one small JSON file (also at an object-storage URL: one small GET). Whether the shards
actually match the manifest is `validate`'s job.
Sizes come from the manifest's shard entries (bytes as written), not from the file system.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotrain.dataset.manifest import DimStats, Manifest
from cotrain.dataset.storage import StorageOptions, read_manifest

__all__ = ["DatasetSummary", "STAT_COLUMNS", "StatRow", "stat_rows", "summarise"]

# The per-dimension columns of the human-readable table; the JSON carries every stored statistic.
STAT_COLUMNS = ("mean", "std", "min", "max", "q01", "q99")


@dataclass(frozen=True)
class StatRow:
    """One dimension of a stats table: its name and the values of `STAT_COLUMNS`."""

    name: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class DatasetSummary:
    """What a dataset holds, as recorded in its manifest.

    Args:
        root: the dataset directory or URL.
        manifest: its parsed manifest.
    """

    root: str
    manifest: Manifest

    @property
    def num_bytes(self) -> int:
        return sum(s.bytes for s in self.manifest.shards)

    def dimensions(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "state_dim": len(m.state_names),
            "state_names": list(m.state_names),
            "action_dim": len(m.action_names),
            "action_names": list(m.action_names),
            "horizon": m.horizon,
            "fps": m.fps,
            "cameras": list(m.cameras),
            "image_size": list(m.image_size) if m.image_size else None,
        }

    def to_json(self) -> dict[str, Any]:
        """Every fact of the manifest except the per-shard list (counts and total bytes instead)."""
        m = self.manifest
        return {
            "root": str(self.root),
            "name": m.name,
            "schema_version": m.schema_version,
            "modality": m.modality,
            "embodiment": m.embodiment,
            "episodes": m.num_episodes,
            "samples": m.num_samples,
            "shards": len(m.shards),
            "bytes": self.num_bytes,
            "dimensions": self.dimensions(),
            "stats": m.stats.model_dump(mode="json"),
            "skipped_episodes": [s.model_dump(mode="json") for s in m.skipped_episodes],
            "extra": dict(m.extra),
            "provenance": m.provenance.model_dump(mode="json"),
        }


def summarise(root: str | Path, storage_options: StorageOptions | None = None) -> DatasetSummary:
    """Read `ROOT/manifest.json` (DataError when missing or invalid) and nothing else; `root` may be
    an fsspec URL (s3://, gs://, ...)."""
    return DatasetSummary(root=str(root), manifest=read_manifest(root, storage_options))


def stat_rows(stats: DimStats | None, names: Sequence[str]) -> list[StatRow]:
    """One row per dimension; dimensions without a name (a manifest written by hand) get `dim <i>`."""
    if stats is None:
        return []
    columns = [getattr(stats, c) for c in STAT_COLUMNS]
    return [
        StatRow(name=names[i] if i < len(names) else f"dim {i}", values=tuple(col[i] for col in columns))
        for i in range(len(stats.mean))
    ]
