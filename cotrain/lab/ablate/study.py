"""What an ablation study trains: its mixtures and the per-run mixture files (settings: config.py).

A study trains every mixture file with seeds 0..K-1. Each run gets its own copy of its mixture
(`OUT/runs/<mixture>/seed<k>/mixture.yaml`) in which
- dataset paths (and nested mixture files) are made absolute, resolved against the original YAML;
- `seed` is the run's seed (it drives the data order; the model initialisation and flow noise use it
  too, since the trainer's seed defaults to the mixture's);
- phases are rescaled to the study's `--steps N` in proportion to their declared lengths (ramps
  too), so a two-phase mixture keeps its split at any budget; without `--steps` each mixture keeps
  its own declared total;
- `batch_size` is the study's `--batch-size B` when given (each mixture's own otherwise).
The study's baseline is the mixture called `baseline` (or `--baseline NAME`), else the first file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cotrain.dataset.storage import is_url
from cotrain.errors import ConfigError, suggest
from cotrain.lab.ablate.config import STUDY_TRAIN_DEFAULTS, AblationConfig
from cotrain.mix.spec import MixtureSpec, parse_mixture, read_yaml

__all__ = ["STUDY_TRAIN_DEFAULTS", "AblationConfig", "StudyMixture", "find_mixtures", "load_study_mixtures",
           "materialise", "rescale_phases"]


@dataclass(frozen=True)
class StudyMixture:
    """One mixture file of the study."""

    name: str
    path: Path
    spec: MixtureSpec
    raw: dict[str, Any]

    @property
    def declared_steps(self) -> int:
        return sum(p.steps for p in self.spec.phases)


def find_mixtures(items: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders expand to their *.yaml files (not recursive), sorted by name."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.yaml") if p.is_file())
            if not found:
                raise ConfigError(f"{path}: folder holds no *.yaml mixture files")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise ConfigError(f"mixture {path} not found (give YAML files or folders of them)")
    return list(dict.fromkeys(p.resolve() for p in out))


def load_study_mixtures(cfg: AblationConfig) -> tuple[list[StudyMixture], StudyMixture]:
    """The study's mixtures (unique names) and its baseline."""
    mixtures = []
    for path in find_mixtures(cfg.mixtures):
        raw = read_yaml(path)
        mixtures.append(StudyMixture("", path, parse_mixture(raw, str(path)), raw))
    mixtures = [StudyMixture(m.spec.name, m.path, m.spec, m.raw) for m in mixtures]
    names = [m.name for m in mixtures]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        files = [str(m.path) for m in mixtures if m.name == dupes[0]]
        raise ConfigError(f"two mixtures are called {dupes[0]!r} ({', '.join(files)}); names identify runs")
    for m in mixtures:
        if cfg.target_source not in m.spec.sources:
            raise ConfigError(f"{m.path}: no source called {cfg.target_source!r} (the target robot the simulator "
                              f"evaluates{suggest(cfg.target_source, list(m.spec.sources))}); sources: "
                              f"{', '.join(m.spec.sources)}")
    wanted = cfg.baseline or ("baseline" if "baseline" in names else names[0])
    if wanted not in names:
        raise ConfigError(f"--baseline {wanted!r}: no such mixture{suggest(wanted, names)}; "
                          f"mixtures: {', '.join(names)}")
    return mixtures, mixtures[names.index(wanted)]


def rescale_phases(phases: Sequence[Mapping[str, Any]], steps: int) -> list[dict[str, Any]]:
    """Phases with lengths (and ramps) scaled to `steps` in total; rounding goes to the last phase."""
    total = sum(int(p["steps"]) for p in phases)
    if steps == total:
        return [dict(p) for p in phases]
    if steps < len(phases):
        raise ConfigError(f"--steps {steps}: fewer steps than the mixture has phases ({len(phases)})")
    out, used = [], 0
    for i, phase in enumerate(phases):
        n = steps - used if i == len(phases) - 1 else max(1, round(steps * int(phase["steps"]) / total))
        n = min(n, steps - used - (len(phases) - 1 - i))  # leave at least one step per later phase
        used += n
        new = {**phase, "steps": n}
        if phase.get("ramp_steps"):
            new["ramp_steps"] = min(n, math.ceil(int(phase["ramp_steps"]) * steps / total))
        out.append(new)
    return out


def _absolute(base: Path, value: str) -> str:
    return value if is_url(value) or Path(value).is_absolute() else str((base / value).resolve())


def materialise(mixture: StudyMixture, seed: int, steps: int | None, batch_size: int | None = None) -> dict[str, Any]:
    """The run's own mixture document (see module docstring)."""
    doc = dict(mixture.raw)
    if batch_size is not None:
        doc["batch_size"] = batch_size
    base = mixture.path.parent
    sources = {}
    for name, src in doc["sources"].items():
        src = dict(src)
        for key in ("path", "mixture"):
            if src.get(key) is not None:
                src[key] = _absolute(base, str(src[key]))
        sources[name] = src
    doc["sources"] = sources
    doc["seed"] = seed
    doc["phases"] = rescale_phases(doc["phases"], steps or mixture.declared_steps)
    parse_mixture(doc, f"{mixture.path} (seed {seed})")  # still a valid mixture
    return doc


def dump_yaml(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=None, width=120)


def dataset_paths(doc: Mapping[str, Any]) -> list[Path]:
    """Local dataset folders a materialised mixture names (nested mixtures are checked by the trainer)."""
    return [Path(s["path"]) for s in doc["sources"].values() if s.get("path") and not is_url(s["path"])]
