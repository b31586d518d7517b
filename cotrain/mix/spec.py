"""Mixture YAML: frozen pydantic models, unknown keys rejected, errors that name the field.

    name: vl_xemb_two_phase
    seed: 0
    batch_size: 64
    sources:
      target: {path: data/franka}
      vl:     {path: data/coco, loss_weight: 0.5}
      xemb:   {path: data/aloha, balance: 0.5}
    phases:
      - {name: pretrain, steps: 20000, weights: {target: 0.3, vl: 0.4, xemb: 0.3}}
      - {name: finetune, steps: 5000, weights: {target: 0.9, vl: 0.1}, ramp_steps: 500}
    val:                      # optional: held-out datasets for `cotrain train --eval-every N`
      franka_heldout: {path: data/franka_heldout}

Weights are relative within a phase; a source absent from a phase has weight 0. A source may instead
name another mixture file (`mixture: other.yaml`): it becomes a group whose members share the
group's weight by the inner file's (single-phase) weights; groups are flattened at load time into
`group/member` sources, so the engine below only ever sees flat sources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cotrain.dataset.storage import StorageOptions
from cotrain.errors import ConfigError, suggest

# allow_inf_nan=False: a NaN or infinite number anywhere (a weight, a loss weight) is an error that names
# the field, not a plan of NaN proportions that fails later.
_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

# Bounds on sizes, far above any real run but below where memory or integer overflow fail first (a
# 1e15-step schedule, a 1e9 batch or a 100000-pixel side would otherwise end in a traceback).
MAX_STEPS = 10_000_000  # optimiser steps of the whole schedule (pi0-scale runs take ~1e6)
MAX_BATCH = 65_536
MAX_IMAGE_SIZE = 4096
MAX_HORIZON = 1024
MAX_CAMERAS = 64
MAX_WEIGHT = 1e12
MAX_SEED = 2**63 - 1


class SourceSpec(BaseModel):
    """One source: a converted dataset (local path or fsspec URL) or a nested mixture file."""

    model_config = _FROZEN

    path: str | None = Field(None, description="Converted dataset directory or URL (s3://, gs://, file://).")
    mixture: str | None = Field(None, description="Another mixture YAML included as a group (instead of path).")
    balance: float | None = Field(
        None, ge=0, le=100, description="Multiply the phase weight by (samples / largest source's samples) ** balance."
    )
    loss_weight: float = Field(1.0, ge=0, le=MAX_WEIGHT, description="Per-sample loss weight passed to the trainer.")
    max_epochs: float | None = Field(
        None, gt=0, le=1e9, description="Warn (or stop) when this source repeats past N epochs."
    )
    on_max_epochs: Literal["warn", "stop"] = Field("warn", description="What happens past max_epochs.")
    storage_options: StorageOptions | None = Field(
        None, description="How to reach a `path` on object storage (endpoint_url, profile, anonymous, ...).")

    @model_validator(mode="after")
    def _one_kind(self) -> SourceSpec:
        if (self.path is None) == (self.mixture is None):
            raise ValueError("give exactly one of 'path' (a dataset) or 'mixture' (a nested mixture file)")
        return self

    @model_validator(mode="after")
    def _storage_with_path(self) -> SourceSpec:
        if self.storage_options is not None and self.path is None:
            raise ValueError("storage_options belong to a 'path' source; give them in the nested mixture's sources")
        return self


class PhaseSpec(BaseModel):
    """One phase of the schedule."""

    model_config = _FROZEN

    name: str
    steps: int = Field(..., ge=1, le=MAX_STEPS, description="Optimiser steps in this phase.")
    weights: dict[str, float] = Field(..., description="Relative weight per source; absent sources get 0.")
    ramp_steps: int = Field(
        0, ge=0, description="Linear ramp from the previous phase's weights over the first N steps."
    )

    @field_validator("weights")
    @classmethod
    def _non_negative(cls, weights: dict[str, float]) -> dict[str, float]:
        for name, w in weights.items():
            if not 0 <= w <= MAX_WEIGHT:
                raise ValueError(f"weight of {name!r} is {w}; weights must be numbers in [0, {MAX_WEIGHT:g}]")
        if not any(w > 0 for w in weights.values()):
            raise ValueError("at least one weight must be positive")
        return weights

    @model_validator(mode="after")
    def _ramp_fits(self) -> PhaseSpec:
        if self.ramp_steps > self.steps:
            raise ValueError(f"ramp_steps {self.ramp_steps} is longer than the phase ({self.steps} steps)")
        return self


class ValSourceSpec(BaseModel):
    """A held-out dataset scored during training (`cotrain train --eval-every N`); never sampled for training."""

    model_config = _FROZEN

    path: str = Field(..., description="Converted dataset directory, relative to this file.")


class MixtureSpec(BaseModel):
    """A declarative co-training mixture (see module docstring)."""

    model_config = _FROZEN

    name: str
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of every draw of the plan.")
    batch_size: int = Field(..., ge=1, le=MAX_BATCH, description="Global batch size (all ranks together).")
    sources: dict[str, SourceSpec]
    phases: list[PhaseSpec] = Field(..., min_length=1)
    normalization: Literal["quantile", "mean_std"] = Field("quantile", description="State/action normalisation.")
    quantile_floor: float = Field(1e-3, gt=0, le=1e6, description="Floor on q99 - q01 so constant dims do not blow up.")
    clip: float = Field(1.0, gt=0, le=1e6, description="Normalised values are clipped to [-clip, clip].")
    horizon: int | None = Field(
        None, ge=1, le=MAX_HORIZON, description="Action chunk length fed to the model (default: max of sources)."
    )
    image_size: int = Field(224, ge=8, le=MAX_IMAGE_SIZE, description="Square side images are letterboxed to.")
    max_cameras: int | None = Field(
        None, ge=1, le=MAX_CAMERAS, description="Camera slots per sample (default: max of sources)."
    )
    bad_samples: Literal["raise", "skip"] = Field("raise", description="On an undecodable sample: stop, or replace it.")
    val: dict[str, ValSourceSpec] = Field(default_factory=dict, description="Held-out datasets for --eval-every.")

    @model_validator(mode="after")
    def _phase_sources_known(self) -> MixtureSpec:
        names = list(self.sources)
        for i, phase in enumerate(self.phases):
            for src in phase.weights:
                if src not in self.sources:
                    raise ValueError(f"phases[{i}].weights: unknown source {src!r}{suggest(src, names)}; "
                                     f"sources: {', '.join(names)}")
        total = sum(p.steps for p in self.phases)
        if total > MAX_STEPS:
            raise ValueError(f"phases: {total} steps in all; the schedule takes at most {MAX_STEPS}")
        return self


def _format_error(exc: ValidationError, where: str, model: type[BaseModel]) -> ConfigError:
    # A misspelt key shows up twice (unknown key + missing field); name the misspelling, it says more.
    err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        field = str(err["loc"][-1])
        valid = _fields_at(model, err["loc"][:-1])
        msg = f"unknown field{suggest(field, valid)}; valid: {', '.join(valid)}"
    return ConfigError(f"{where}: {loc or 'mixture'}: {msg}")


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Valid field names where an unknown key was found: top level, a source, or a phase."""
    if loc[:1] == ("sources",) and loc[2:3] == ("storage_options",):
        return sorted(StorageOptions.model_fields)
    if loc[:1] == ("sources",) and len(loc) >= 2:
        return sorted(SourceSpec.model_fields)
    if loc[:1] == ("phases",) and len(loc) >= 2:
        return sorted(PhaseSpec.model_fields)
    if loc[:1] == ("val",) and len(loc) >= 2:
        return sorted(ValSourceSpec.model_fields)
    return sorted(model.model_fields)


def parse_mixture(raw: Any, where: str) -> MixtureSpec:
    """Validate a parsed mixture YAML; errors name `where`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return MixtureSpec.model_validate(raw)
    except ValidationError as exc:
        raise _format_error(exc, where, MixtureSpec) from None


def read_yaml(path: Path) -> Any:
    """The parsed YAML of `path`."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"mixture file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; expected a mixture YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); expected a mixture YAML file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: unreadable mixture file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{line} invalid YAML: {getattr(exc, 'problem', exc)}") from None
