"""TrainConfig: everything a run needs, nested by concern, frozen and validated; stored in the run directory.

    TrainConfig   mixture, steps, out, resume, seed
      .model        preset, --init-from, --base-stats and the preset's overridable fields
      .optim        learning rate schedule, AdamW, clipping, gradient accumulation
      .data         loader workers, the bad-sample warning threshold
      .parallel     device, precision, FSDP2
      .checkpoint   cadence, how many to keep
      .logging      TensorBoard, progress bar, MFU
      .wandb        Weights & Biases
      .validation   held-out evaluation during training

The CLI is generated from this model (cli/train_cmd.py); `--set section.field=VALUE` reaches any field.
Earlier versions stored a flat config (`{"lr": ..., "save_every": ...}`): flat keys are still
accepted everywhere a TrainConfig is built and mapped by `LEGACY_KEYS`, so old run directories
resume and old scripts keep working. On `--resume` the stored config must match the new one except
for the dotted fields in `RESUMABLE_CHANGES` (logging, workers, checkpoint cadence, DDP <-> FSDP2:
checkpoints hold full state dicts either way).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

from cotrain.errors import ConfigError, DataError
from cotrain.mix.spec import MAX_SEED, MAX_STEPS  # the same bounds as the mixture's
from cotrain.model.config import ModelConfig

__all__ = ["LEGACY_KEYS", "RESUMABLE_CHANGES", "TrainConfig", "flat_fields", "load_train_config",
           "make_train_config", "nest_fields"]

_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # NaN/Inf: one-line error


def _cli(flag: str, *, path: bool = False, pairs: str | None = None) -> dict[str, Any]:
    """Field metadata: the field has its own `cotrain train` option (all others are reached with --set);
    `path`: the option takes paths; `pairs`: a mapping given as repeated items of this shape."""
    return {"cli": flag, **({"path": True} if path else {}), **({"pairs": pairs} if pairs else {})}


def _model_field(name: str, *, override: bool = True, flag: str | None = None) -> Any:
    """ModelConfig's own field (constraints, description); an override defaults to None: the preset's."""
    base = ModelConfig.model_fields[name]
    extra = {"json_schema_extra": _cli(flag)} if flag else {}
    return FieldInfo.merge_field_infos(base, **({"default": None} if override else {}), **extra)


class ModelSection(BaseModel):
    """The preset, what it is initialised from, and the ModelConfig fields a run may override."""

    model_config = _FROZEN

    preset: str = Field("tiny", description="Preset: tiny, tiny-conv, small, paligemma, paligemma2, pi0, pi05.",
                        json_schema_extra=_cli("--model"))
    init_from: str | None = Field(None, description="Local checkpoint dir: Hugging Face PaliGemma (paligemma*), "
                                  "LeRobot or openpi-PyTorch pi0/pi05 (pi0, pi05).",
                                  json_schema_extra=_cli("--init-from", path=True))
    base_stats: dict[str, str] = Field(default_factory=dict, description="SOURCE=ASSET: normalise SOURCE with the "
                                       "--init-from checkpoint's stats (openpi asset id, or 'lerobot'; repeatable).",
                                       json_schema_extra=_cli("--base-stats", pairs="SOURCE=ASSET"))
    # Settings with a value of their own (always passed to the model config) ...
    freeze: Literal["none", "vision", "backbone"] = _model_field("freeze", override=False, flag="--freeze")
    lora_rank: int = _model_field("lora_rank", override=False, flag="--lora-rank")
    activation_checkpointing: bool = _model_field("activation_checkpointing", override=False,
                                                  flag="--activation-checkpointing")
    knowledge_insulation: bool = _model_field("knowledge_insulation", override=False, flag="--knowledge-insulation")
    # ... and overrides: None keeps the preset's value (data sizes: the mixture's).
    horizon: int | None = _model_field("horizon")
    action_dim: int | None = _model_field("action_dim")
    state_dim: int | None = _model_field("state_dim")
    max_text_tokens: int | None = _model_field("max_text_tokens")
    action_vocab_size: int | None = _model_field("action_vocab_size")
    flow_steps: int | None = _model_field("flow_steps")
    flow_samples: int | None = _model_field("flow_samples")
    expert_width: int | None = _model_field("expert_width")
    expert_mlp: int | None = _model_field("expert_mlp")
    init_scheme: Literal["transformers", "fan_in"] | None = _model_field("init_scheme")
    time_beta: tuple[float, float] | None = _model_field("time_beta")
    flow_loss_weight: float | None = _model_field("flow_loss_weight")
    text_loss_weight: float | None = _model_field("text_loss_weight")
    action_token_loss_weight: float | None = _model_field("action_token_loss_weight")

    def overrides(self) -> dict[str, Any]:
        """The ModelConfig fields this section sets (None: keep the preset's)."""
        return {n: getattr(self, n) for n in type(self).model_fields if n in ModelConfig.model_fields and n != "preset"}


class OptimSection(BaseModel):
    """AdamW with linear warmup and cosine decay (train/optim.py)."""

    model_config = _FROZEN

    lr: float = Field(1e-4, gt=0, description="Peak learning rate.", json_schema_extra=_cli("--lr"))
    warmup_steps: int = Field(100, ge=0, description="Linear warmup steps.", json_schema_extra=_cli("--warmup-steps"))
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate as a fraction of the peak.")
    weight_decay: float = Field(1e-10, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    clip_grad: float = Field(1.0, gt=0, description="Gradient norm clip.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimiser step (splits the rank's batch).",
                            json_schema_extra=_cli("--grad-accum"))
    length_split: bool = Field(False, description="One process, --grad-accum 1: run a batch of very unequal text "
                               "lengths as two passes grouped by length (same gradient, less padding).",
                               json_schema_extra=_cli("--length-split"))


def cpu_bf16_pays() -> bool:
    """Whether this CPU has bf16 matrix units (Intel AMX or AVX512-BF16), where `--precision bf16` is faster."""
    import torch

    try:  # private probes: a torch without them is treated as a CPU without the units
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:
        return False


class DataSection(BaseModel):
    """The mixture loader's process settings (what it reads is the mixture YAML's)."""

    model_config = _FROZEN

    num_workers: int = Field(0, ge=0, le=1024, description="DataLoader worker processes per rank.",
                             json_schema_extra=_cli("--workers"))
    max_bad_fraction: float = Field(0.01, ge=0, le=1, description="Warn when a source's replaced (bad) samples "
                                    "pass this fraction of its draws.", json_schema_extra=_cli("--max-bad-fraction"))


class ParallelSection(BaseModel):
    model_config = _FROZEN

    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast on GPU, fp32 on CPU; bf16: autocast on either (CPU: pays with AMX).",
        json_schema_extra=_cli("--precision"))
    fsdp: bool = Field(False, description="FSDP2 (per-layer sharding) instead of DDP when distributed (torchrun).",
                       json_schema_extra=_cli("--fsdp"))


class CheckpointSection(BaseModel):
    model_config = _FROZEN

    every: int = Field(1000, ge=1, description="Checkpoint every N steps (and at the end).",
                       json_schema_extra=_cli("--save-every"))
    keep: int = Field(2, ge=1, description="Checkpoints kept (the newest).")
    enabled: bool = Field(True, description="Write checkpoints (benchmarks turn this off).")


class LoggingSection(BaseModel):
    model_config = _FROZEN

    every: int = Field(1, ge=1, description="Log metrics every N steps.")
    tensorboard: bool = True
    progress: bool = True
    peak_tflops: float | None = Field(None, gt=0, description="Accelerator peak for MFU (default: known GPUs).")


class WandbSection(BaseModel):
    model_config = _FROZEN

    mode: Literal["off", "online", "offline"] = Field("off", description="Also log to Weights & Biases.",
                                                      json_schema_extra=_cli("--wandb"))
    project: str = Field("cotrain", min_length=1, description="W&B project.",
                         json_schema_extra=_cli("--wandb-project"))
    entity: str | None = None
    run_name: str | None = Field(None, description="W&B run name (default: the run directory's name).",
                                 json_schema_extra=_cli("--wandb-run-name"))
    group: str | None = None
    tags: tuple[str, ...] = ()


class ValidationSection(BaseModel):
    model_config = _FROZEN

    every: int = Field(0, ge=0, description="Validate on held-out data every N steps (0: never).",
                       json_schema_extra=_cli("--eval-every"))
    data: tuple[str, ...] = Field((), description="Held-out dataset for --eval-every, besides the mixture's val: "
                                  "section (repeatable).", json_schema_extra=_cli("--val-data", path=True))
    max_samples: int = Field(64, ge=1, description="Evenly spaced samples scored per held-out dataset.")
    batch_size: int = Field(16, ge=1, description="Samples per validation forward pass.")


class TrainConfig(BaseModel):
    """A training run (see module docstring)."""

    model_config = _FROZEN

    mixture: str = Field(..., description="Mixture YAML.")
    steps: int = Field(..., ge=1, le=MAX_STEPS, description="Optimiser steps of the whole run.",
                       json_schema_extra=_cli("--steps"))
    out: str = Field(..., description="Run directory (checkpoints, metrics, TensorBoard).",
                     json_schema_extra=_cli("--out", path=True))
    resume: bool = Field(False, description="Continue from the run directory's latest checkpoint.",
                         json_schema_extra=_cli("--resume"))
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Default: the mixture's seed.")
    model: ModelSection = Field(default_factory=ModelSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    data: DataSection = Field(default_factory=DataSection)
    parallel: ParallelSection = Field(default_factory=ParallelSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    wandb: WandbSection = Field(default_factory=WandbSection)
    validation: ValidationSection = Field(default_factory=ValidationSection)

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        return nest_fields(data) if isinstance(data, Mapping) else data

    @model_validator(mode="after")
    def _combinations(self) -> TrainConfig:
        if self.model.lora_rank and self.model.freeze == "vision":
            raise ValueError("--lora-rank already freezes the vision tower and the backbone's base weights; "
                             "drop --freeze vision")
        if self.parallel.fsdp and self.model.lora_rank:
            raise ValueError("--fsdp with --lora-rank is not supported; LoRA runs fit with DDP")
        if self.validation.data and not self.validation.every:
            raise ValueError("--val-data is only read with --eval-every N; pass both")
        return self


# Flat keys of the configs earlier versions stored (and scripts pass) -> their dotted place now.
LEGACY_KEYS: Mapping[str, str] = {
    "model": "model.preset", "init_from": "model.init_from", "base_stats": "model.base_stats",
    **{k: f"model.{k}" for k in ("freeze", "lora_rank", "knowledge_insulation", "activation_checkpointing",
                                 "horizon", "action_dim", "state_dim", "max_text_tokens", "action_vocab_size",
                                 "flow_steps", "expert_width", "expert_mlp", "init_scheme", "time_beta",
                                 "flow_loss_weight", "text_loss_weight", "action_token_loss_weight")},
    **{k: f"optim.{k}" for k in ("lr", "warmup_steps", "min_lr_ratio", "weight_decay", "betas", "eps", "clip_grad",
                                 "grad_accum")},
    "num_workers": "data.num_workers", "max_bad_fraction": "data.max_bad_fraction",
    "device": "parallel.device", "precision": "parallel.precision", "fsdp": "parallel.fsdp",
    "save_every": "checkpoint.every", "keep_checkpoints": "checkpoint.keep", "checkpoints": "checkpoint.enabled",
    "log_every": "logging.every", "tensorboard": "logging.tensorboard", "progress": "logging.progress",
    "peak_tflops": "logging.peak_tflops",
    "wandb": "wandb.mode", "wandb_project": "wandb.project", "wandb_entity": "wandb.entity",
    "wandb_run_name": "wandb.run_name", "wandb_group": "wandb.group", "wandb_tags": "wandb.tags",
    "eval_every": "validation.every", "val_data": "validation.data", "val_max_samples": "validation.max_samples",
    "val_batch_size": "validation.batch_size",
}

# What may differ between the stored config and the resumed one (the flat version's set, moved).
RESUMABLE_CHANGES = frozenset({"resume", "out", "data.num_workers", "data.max_bad_fraction", "parallel.fsdp",
                               "checkpoint.every", "checkpoint.keep", "checkpoint.enabled",
                               "logging.every", "logging.tensorboard", "logging.progress",
                               # watching never changes what is trained (validation is tested not to)
                               "validation.every", "validation.data", "validation.max_samples",
                               "validation.batch_size", "wandb.mode", "wandb.project", "wandb.entity",
                               "wandb.run_name", "wandb.group", "wandb.tags"})


def nest_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Nested TrainConfig input from nested, dotted (`optim.lr`) or legacy flat (`lr`) keys; later keys win."""
    sections = {"model", "optim", "data", "parallel", "checkpoint", "logging", "wandb", "validation"}
    out: dict[str, Any] = {}
    for key, value in fields.items():
        is_section = key in sections and isinstance(value, (Mapping, BaseModel))
        path = LEGACY_KEYS[key] if key in LEGACY_KEYS and not is_section else key
        *parents, leaf = path.split(".")
        node = out
        for i, part in enumerate(parents):
            child = node.get(part, {})
            if isinstance(child, BaseModel):
                child = child.model_dump()
            if not isinstance(child, dict):
                raise ValueError(f"{key}: {'.'.join(parents[:i + 1])} is not a section")
            node[part] = child = dict(child)
            node = child
        if isinstance(value, BaseModel) and isinstance(node.get(leaf), dict):
            value = value.model_dump()
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict) and leaf in sections and not parents:
            node[leaf] = {**node[leaf], **value}
        else:
            node[leaf] = value
    return out


def flat_fields(cfg: TrainConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Dotted key -> JSON value of every leaf field (what `--resume` compares)."""
    data = cfg.model_dump(mode="json") if isinstance(cfg, TrainConfig) else cfg
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and key != "base_stats":  # (a field whose value is a mapping)
            out.update({f"{key}.{k}": v for k, v in flat_fields(value).items()})
        else:
            out[key] = value
    return out


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where + ': ' if where else ''}{msg}"


def make_train_config(**fields: Any) -> TrainConfig:
    """TrainConfig from keyword fields (nested, dotted via **{...}, or legacy flat), pydantic errors turned
    into one-line ConfigErrors."""
    try:
        return TrainConfig.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(f"train config: {_one_line(exc)}") from None


def load_train_config(path: str | Path) -> TrainConfig:
    """A run's stored `train_config.json`, nested or written flat by an earlier version."""
    from cotrain.train.checkpoint import read_json

    raw = read_json(Path(path))
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        raise DataError(path, f"not a train configuration ({_one_line(exc)})") from None
