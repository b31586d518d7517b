"""What an ablation study is: its configuration, its mixtures, and the per-run mixture files.

A study trains every mixture file with seeds 0..K-1. Each run gets its own copy of its mixture
(`OUT/runs/<mixture>/seed<k>/mixture.yaml`) in which
- dataset paths (and nested mixture files) are made absolute, resolved against the original YAML;
- `seed` is the run's seed (it drives the data order; the model initialisation and flow noise use it
  too, since the trainer's seed defaults to the mixture's);
- phases are rescaled to the study's `--steps N` in proportion to their declared lengths (ramps
  too), so a two-phase mixture keeps its split at any budget; without `--steps` each mixture keeps
  its own declared total.
The study's baseline is the mixture called `baseline` (or `--baseline NAME`), else the first file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from cotrain.lab.ablate.data import StudyDataConfig
from cotrain.errors import ConfigError, suggest
from cotrain.mix.spec import MixtureSpec, parse_mixture, read_yaml
from cotrain.dataset.storage import is_url

__all__ = ["STUDY_TRAIN_DEFAULTS", "AblationConfig", "StudyMixture", "find_mixtures", "load_study_mixtures",
           "materialise", "rescale_phases"]

# Trainer settings of every run unless `train_overrides` says otherwise. The tiny model is trained at a
# higher LR than the trainer's default (1e-4, meant for pretrained backbones); 160 text tokens fit the
# longest sim caption (135 bytes with the byte tokenizer) and the FAST tokens after an instruction.
STUDY_TRAIN_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "lr": 1e-3, "warmup_steps": 50, "max_text_tokens": 160, "save_every": 200, "keep_checkpoints": 1,
    "log_every": 10, "tensorboard": False, "progress": False,
})


@dataclass(frozen=True)
class AblationConfig:
    """An ablation study.

    Args:
        mixtures: mixture YAML files and/or folders (every *.yaml directly inside, sorted by name).
        out: study folder (runs, results, plots).
        seeds: seeds per mixture (0..seeds-1).
        steps: optimiser steps per run (phases rescaled); None keeps each mixture's declared total.
        model: model preset.
        episodes: closed-loop simulator episodes per run (round-robin over the four splits).
        train_episodes: further episodes on the layouts of the target robot's own training
            demonstrations (the simulator's `train` split; at most their number; 0: none), which
            tells memorising runs (they solve or reach these) from ones that cannot control at all.
        eval_samples: held-out samples per offline evaluation dataset.
        eval_seed: simulator evaluation seed (the same episodes for every run).
        eval_data: held-out datasets for the offline evaluation (default: the study folder's).
        baseline: the mixture the others are tested against (default: `baseline`, else the first).
        target_source: the source name of the target robot in every mixture (the simulator drives it).
        train_overrides: TrainConfig fields over STUDY_TRAIN_DEFAULTS (e.g. {"lr": 3e-4}).
        prepare: make the study's simulated datasets when the mixtures' datasets are missing.
        data: sizes of the simulated corpus when it is prepared.
        jobs: runs trained and evaluated at the same time, each in its own process.
        threads: torch intra-op threads per run (the tiny model gains nothing from a second thread,
            so on 2 cores `jobs=2, threads=1` halves the study's wall time).
    """

    mixtures: tuple[str, ...]
    out: str
    seeds: int = 3
    steps: int | None = None
    model: str = "tiny"
    episodes: int = 48
    train_episodes: int = 24
    eval_samples: int = 128
    eval_seed: int = 0
    eval_data: tuple[str, ...] = ()
    baseline: str | None = None
    target_source: str = "target"
    train_overrides: Mapping[str, Any] = field(default_factory=dict)
    prepare: bool = True
    data: StudyDataConfig = StudyDataConfig()
    jobs: int = 1
    threads: int = 1

    def __post_init__(self) -> None:
        checks = {"--seeds": self.seeds, "--episodes": self.episodes, "--eval-samples": self.eval_samples,
                  "--jobs": self.jobs, "--threads": self.threads}
        for flag, value in checks.items():
            if value < 1:
                raise ConfigError(f"{flag} {value}: must be at least 1")
        if self.train_episodes < 0:
            raise ConfigError(f"--train-episodes {self.train_episodes}: must be 0 (none) or more")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps {self.steps}: must be at least 1")
        if not self.mixtures:
            raise ConfigError("give at least one mixture file or folder")
        reserved = {"mixture", "out", "steps", "resume", "model", "model.preset", "seed"} & set(self.train_overrides)
        if reserved:
            raise ConfigError(f"--set {sorted(reserved)[0]}: the study sets this itself per run")

    def train_fields(self) -> dict[str, Any]:
        return {**STUDY_TRAIN_DEFAULTS, **self.train_overrides}


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


def materialise(mixture: StudyMixture, seed: int, steps: int | None) -> dict[str, Any]:
    """The run's own mixture document (see module docstring)."""
    doc = dict(mixture.raw)
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
