"""Load a mixture file into flat, resolved form: manifests read, nested groups expanded, weights final.

Relative dataset paths are relative to the YAML file that names them. A nested mixture must be
single-phase; its members become `group/member` sources sharing the group's weight in proportion to
the inner weights (multiplied down, like Energon's nested blends). `balance: a` multiplies a source's
weight by (its samples / the largest source's samples) ** a, as in GR00T's len^alpha weighting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cotrain.dataset.manifest import MANIFEST_NAME, Manifest, reading_problem
from cotrain.dataset.storage import StorageOptions, is_url, join, read_manifest
from cotrain.errors import ConfigError, CotrainError
from cotrain.mix.spec import MixtureSpec, SourceSpec, parse_mixture, read_yaml


@dataclass(frozen=True)
class ResolvedSource:
    """A flat source of the mixture with its manifest."""

    name: str
    url: str
    manifest: Manifest
    loss_weight: float
    max_epochs: float | None
    on_max_epochs: str
    balance: float | None
    storage_options: StorageOptions | None = None  # how to reach `url` on object storage

    @property
    def num_samples(self) -> int:
        return self.manifest.num_samples


@dataclass(frozen=True)
class ResolvedPhase:
    """A phase with its weights resolved to one float per source."""

    name: str
    steps: int
    ramp_steps: int
    weights: tuple[float, ...]  # per flat source, normalised to sum 1


@dataclass(frozen=True)
class ValSource:
    """A held-out dataset of the mixture's `val:` section, its path resolved against the YAML's folder."""

    name: str
    url: str


@dataclass(frozen=True)
class Mixture:
    """A mixture ready for the sampler: flat sources and per-phase weight vectors."""

    spec: MixtureSpec
    path: str
    sources: tuple[ResolvedSource, ...]
    phases: tuple[ResolvedPhase, ...]
    val: tuple[ValSource, ...] = ()

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sources]

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.phases)


def _resolve_path(base: Path, value: str) -> str:
    if is_url(value) or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


def _flatten(
    spec: MixtureSpec, base: Path, where: str, stack: tuple[str, ...]
) -> list[tuple[str, SourceSpec, str, dict[str, float]]]:
    """(flat name, spec, resolved url, {outer source name: share}) for every leaf."""
    out = []
    for name, src in spec.sources.items():
        if src.path is not None:
            out.append((name, src, _resolve_path(base, src.path), {name: 1.0}))
            continue
        inner_path = Path(_resolve_path(base, src.mixture or ""))
        if str(inner_path) in stack:
            raise ConfigError(f"{where}: sources.{name}: mixture includes itself ({' -> '.join(stack)})")
        inner = parse_mixture(read_yaml(inner_path), str(inner_path))
        if len(inner.phases) != 1:
            raise ConfigError(
                f"{inner_path}: a mixture included as a group must have exactly one phase, has {len(inner.phases)}"
            )
        shares = inner.phases[0].weights
        total = sum(shares.values())
        for leaf, leaf_spec, url, _ in _flatten(inner, inner_path.parent, str(inner_path), (*stack, str(inner_path))):
            top = leaf.split("/")[0]
            weight = shares.get(top, 0.0) / total
            merged = leaf_spec.model_copy(update={"loss_weight": leaf_spec.loss_weight * src.loss_weight})
            out.append((f"{name}/{leaf}", merged, url, {name: weight}))
    return out


def load_mixture(path: str | Path) -> Mixture:
    """Read, validate and resolve a mixture YAML (manifests included); raises ConfigError/DataError."""
    path = Path(path)
    spec = parse_mixture(read_yaml(path), str(path))
    return resolve(spec, path.parent, str(path))


def resolve(spec: MixtureSpec, base: Path, where: str) -> Mixture:
    """Resolve a mixture spec: nested mixtures flattened, sources opened, weights resolved."""
    leaves = _flatten(spec, base, where, (where,))
    sources = []
    for name, src, url, _ in leaves:
        try:
            manifest = read_manifest(url, src.storage_options)
        except CotrainError as exc:
            raise ConfigError(f"{where}: sources.{name.split('/')[0]}: {exc}") from None
        if manifest.num_samples == 0:
            raise ConfigError(f"{where}: sources.{name}: dataset {url} has no samples")
        if (problem := reading_problem(manifest)) is not None:
            raise ConfigError(f"{where}: sources.{name}: {join(url, MANIFEST_NAME)}: {problem}; "
                              f"run `cotrain validate {url}`")
        sources.append(ResolvedSource(name, url, manifest, src.loss_weight, src.max_epochs, src.on_max_epochs,
                                      src.balance, src.storage_options))
    largest = max(s.num_samples for s in sources)
    phases = []
    for i, phase in enumerate(spec.phases):
        raw = np.array([
            phase.weights.get(outer, 0.0) * share * _balance(src, largest)
            for (name, _, _, shares), src in zip(leaves, sources) for outer, share in shares.items()
        ])
        if raw.sum() <= 0:
            raise ConfigError(f"{where}: phases[{i}] ({phase.name}): every source has weight 0")
        phases.append(
            ResolvedPhase(phase.name, phase.steps, phase.ramp_steps, tuple(float(w) for w in raw / raw.sum()))
        )
    return Mixture(spec, where, tuple(sources), tuple(phases), resolve_val(spec, base))


def resolve_val(spec: MixtureSpec, base: Path) -> tuple[ValSource, ...]:
    """The `val:` datasets with their paths resolved (read when training starts, not here)."""
    return tuple(ValSource(name, _resolve_path(base, v.path)) for name, v in spec.val.items())


def _balance(src: ResolvedSource, largest: int) -> float:
    return 1.0 if src.balance is None else (src.num_samples / largest) ** src.balance
