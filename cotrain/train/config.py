"""TrainConfig: everything a run needs, frozen and validated; stored in the run directory.

The CLI builds one from flags (`cotrain train MIX.yaml --model tiny --steps 100 --out runs/x`); tests
build one directly and call `train(cfg)`. On `--resume` the stored config must match the new one
except for the fields in `RESUMABLE_CHANGES` (logging, workers, checkpoint cadence, DDP <-> FSDP2:
checkpoints hold full state dicts either way).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cotrain.errors import ConfigError
from cotrain.mix.spec import MAX_SEED, MAX_STEPS  # the same bounds as the mixture's

__all__ = ["RESUMABLE_CHANGES", "TrainConfig", "make_train_config"]

RESUMABLE_CHANGES = frozenset({"resume", "num_workers", "save_every", "keep_checkpoints", "log_every", "tensorboard",
                               "progress", "out", "checkpoints", "fsdp",
                               # watching never changes what is trained (validation is tested not to)
                               "eval_every", "val_data", "val_max_samples", "val_batch_size", "max_bad_fraction",
                               "wandb", "wandb_project", "wandb_entity", "wandb_run_name", "wandb_group", "wandb_tags"})


class TrainConfig(BaseModel):
    """A training run (see module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)  # NaN/Inf: one-line error

    mixture: str = Field(..., description="Mixture YAML.")
    model: str = Field("tiny", description="Model preset: tiny, tiny-conv, small, paligemma, paligemma2, pi0, pi05.")
    steps: int = Field(..., ge=1, le=MAX_STEPS, description="Optimiser steps of the whole run.")
    out: str = Field(..., description="Run directory.")
    resume: bool = Field(False, description="Continue from the run directory's latest checkpoint.")
    init_from: str | None = Field(None, description="Local checkpoint directory: Hugging Face PaliGemma, or a "
                                  "LeRobot / openpi-PyTorch pi0 / pi0.5 policy.")
    base_stats: dict[str, str] = Field(default_factory=dict, description="Source -> asset of the --init-from "
                                       "checkpoint whose norm stats it uses instead of its own (model/pi_stats.py).")
    freeze: Literal["none", "vision", "backbone"] = "none"
    lora_rank: int = Field(0, ge=0)
    knowledge_insulation: bool = False
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimiser step (splits the rank's batch).")
    fsdp: bool = Field(False, description="FSDP2 (per-layer sharding) instead of DDP when distributed.")
    activation_checkpointing: bool = False
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on GPU, fp32 on CPU.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    lr: float = Field(1e-4, gt=0, description="Peak learning rate.")
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(1e-10, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    clip_grad: float = Field(1.0, gt=0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Default: the mixture's seed.")
    num_workers: int = Field(0, ge=0, le=1024, description="DataLoader worker processes per rank.")
    save_every: int = Field(1000, ge=1)
    checkpoints: bool = Field(True, description="Write checkpoints (benchmarks turn this off).")
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(1, ge=1)
    tensorboard: bool = True
    progress: bool = True
    peak_tflops: float | None = Field(None, gt=0, description="Accelerator peak for MFU (default: known GPUs).")
    eval_every: int = Field(0, ge=0, description="Validate on the held-out data every N steps (0: never).")
    val_data: tuple[str, ...] = Field((), description="Held-out datasets (besides the mixture's val: section).")
    val_max_samples: int = Field(64, ge=1, description="Evenly spaced samples scored per held-out dataset.")
    val_batch_size: int = Field(16, ge=1, description="Samples per validation forward pass.")
    max_bad_fraction: float = Field(0.01, ge=0, le=1, description="Warn once when a source's bad (replaced) "
                                    "samples exceed this fraction of its draws.")
    wandb: Literal["off", "online", "offline"] = Field("off", description="Also log to Weights & Biases.")
    wandb_project: str = Field("cotrain", min_length=1)
    wandb_entity: str | None = None
    wandb_run_name: str | None = Field(None, description="Default: the run directory's name.")
    wandb_group: str | None = None
    wandb_tags: tuple[str, ...] = ()
    horizon: int | None = Field(None, ge=1)
    action_dim: int | None = Field(None, ge=1)
    state_dim: int | None = Field(None, ge=1)
    max_text_tokens: int | None = Field(None, ge=4, le=65_536, description="Text tokens per sample (default: "
                                        "sized from the mixture's longest text, at least the preset's).")
    action_vocab_size: int | None = Field(None, ge=0)
    flow_steps: int | None = Field(None, ge=1)
    expert_width: int | None = Field(None, ge=8, description="Action expert width (default: the preset's).")
    expert_mlp: int | None = Field(None, ge=8, description="Action expert MLP size (default: the preset's).")
    init_scheme: Literal["transformers", "fan_in"] | None = Field(
        None, description="Random init of random-init presets (default: the preset's; docs/training.md).")
    time_beta: tuple[float, float] | None = Field(
        None, description="Beta(a, b) of the flow-matching time, t = 1 the noisy end (default: the preset's).")
    flow_loss_weight: float | None = Field(None, ge=0)
    text_loss_weight: float | None = Field(None, ge=0)
    action_token_loss_weight: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _combinations(self) -> TrainConfig:
        if self.lora_rank and self.freeze == "vision":
            raise ValueError("--lora-rank already freezes the vision tower and the backbone's base weights; "
                             "drop --freeze vision")
        if self.fsdp and self.lora_rank:
            raise ValueError("--fsdp with --lora-rank is not supported; LoRA runs fit with DDP")
        if self.val_data and not self.eval_every:
            raise ValueError("--val-data is only read with --eval-every N; pass both")
        return self

    def model_overrides(self) -> dict[str, Any]:
        """Fields that override the preset's ModelConfig (None: keep the preset's)."""
        names = ("horizon", "action_dim", "state_dim", "max_text_tokens", "action_vocab_size", "flow_steps",
                 "expert_width", "expert_mlp", "init_scheme", "time_beta", "flow_loss_weight", "text_loss_weight",
                 "action_token_loss_weight")
        out = {n: getattr(self, n) for n in names}
        out.update(freeze=self.freeze, lora_rank=self.lora_rank, knowledge_insulation=self.knowledge_insulation,
                   activation_checkpointing=self.activation_checkpointing)
        return out


def make_train_config(**fields: Any) -> TrainConfig:
    """TrainConfig from keyword fields, pydantic errors turned into one-line ConfigErrors."""
    try:
        return TrainConfig(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"train config: {where + ': ' if where else ''}{msg}") from None
