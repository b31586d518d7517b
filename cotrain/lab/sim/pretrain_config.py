"""Settings of `cotrain sim pretrain` (pretrain.py); pydantic only, so `cotrain --help` stays light."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from cotrain.errors import ConfigError

__all__ = ["DEFAULT_MIX", "SHIPPED_BACKBONE", "SHIPPED_NAME", "PretrainConfig", "resolve_backbone"]

# The shipped checkpoint (made by `cotrain sim pretrain`, recipe in its config.json) and the name that
# selects it wherever a study or the demo takes `--init-from`.
SHIPPED_NAME = "sim-paligemma"
SHIPPED_BACKBONE = Path(__file__).resolve().parent / "assets" / SHIPPED_NAME

# Share of each pretraining sample kind (pretrain_data.KINDS: instruction, point, gripper, question):
# pointing dominates because it is what a policy needs and the slowest to learn.
DEFAULT_MIX = (0.35, 0.3, 0.2, 0.15)


class PretrainConfig(BaseModel):
    """Settings of one pretraining run (the defaults are the shipped checkpoint's recipe)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: str = Field("tiny-conv", description="Random-init model preset whose backbone is trained.")
    steps: int = Field(4000, ge=1, le=10_000_000, description="Optimiser steps.")
    batch_size: int = Field(32, ge=1, le=65_536, description="Samples per step (drawn fresh every step).")
    lr: float = Field(2e-3, gt=0, le=1.0, description="Peak learning rate (warm-up, then cosine).")
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    patch_loss_weight: float = Field(3.0, ge=0, description="Weight of the per-patch point target.")
    patch_sigma: float = Field(0.07, gt=0, description="Width of the point target's bump (table units).")
    image_size: int = Field(64, ge=32, le=4096)
    verbs: tuple[str, ...] = ("pick", "push", "place")
    mix: tuple[float, float, float, float] = DEFAULT_MIX
    seed: int = Field(0, ge=0, lt=2**63, description="Seed of the network's init and of the data.")
    threads: int = Field(1, ge=1, description="Torch threads.")
    eval_every: int = Field(500, ge=1, description="Steps between held-out pointing evaluations.")
    eval_samples: int = Field(192, ge=1, description="Held-out samples of each pointing evaluation.")


def resolve_backbone(value: str | Path | None) -> str | None:
    """`--init-from` of a study or the demo: 'sim-paligemma' (the shipped checkpoint), 'none' (random
    init) or a checkpoint directory."""
    if value is None or str(value) == "none":
        return None
    if str(value) == SHIPPED_NAME:
        if not (SHIPPED_BACKBONE / "model.safetensors").is_file():
            raise ConfigError(f"the shipped backbone is missing from {SHIPPED_BACKBONE}; regenerate it with "
                              f"`cotrain sim pretrain {SHIPPED_BACKBONE}` or pass --init-from none")
        return str(SHIPPED_BACKBONE)
    return str(value)
