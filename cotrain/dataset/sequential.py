"""Read a converted dataset: its manifest and its samples, in shard order.

This is the plain sequential reader used by inspection, validation, annotation and tokenizer
fitting; the mixture engine has its own random-access loader on top of the same shard functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotrain.dataset.manifest import Manifest, load_manifest
from cotrain.dataset.shards import decode_sample, iter_samples


@dataclass(frozen=True)
class Dataset:
    """A converted dataset directory.

    Args:
        root: the directory holding `manifest.json` and the shards.
        manifest: its parsed manifest.
    """

    root: Path
    manifest: Manifest

    @classmethod
    def open(cls, root: str | Path) -> Dataset:
        root = Path(root)
        return cls(root, load_manifest(root))

    def shard_paths(self) -> list[Path]:
        return [self.root / s.name for s in self.manifest.shards]

    def iter_raw(self) -> Iterator[dict[str, Any]]:
        """Raw samples (`__key__`, `__shard__` plus member bytes)."""
        for path in self.shard_paths():
            for sample in iter_samples(path):
                sample["__shard__"] = path.name  # type: ignore[assignment]  # iter_samples types members as bytes
                yield sample

    def iter_decoded(self) -> Iterator[dict[str, Any]]:
        """Samples with npy/json/txt members decoded; images stay JPEG bytes."""
        for raw in self.iter_raw():
            yield decode_sample(raw)
