"""FSDP2 sharding of the VLA: one unit per MoT block (both streams of layer i), per SigLIP layer, and the root.

Wrapping each (backbone layer i, expert layer i) pair as one unit is what makes FSDP work for this
architecture: the shared attention reads both streams' weights inside `MoTBlock.forward`, so the
unit's pre-forward all-gather covers everything the layer touches (lerobot PR #3767 failed because
its loop reached into sub-modules whose hooks never fired). Parameters stay fp32 (the optimizer's
master copy); with bf16 the all-gathered compute copy is bf16 and gradients reduce in fp32.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["apply_fsdp", "vision_layers"]


def vision_layers(model: nn.Module) -> list[nn.Module]:
    """The SigLIP encoder layers (the ModuleList named `encoder.layers` inside the vision tower)."""
    tower: nn.Module = model.vision_tower  # type: ignore[assignment]  # nn.Module types attributes Tensor | Module
    for name, module in tower.named_modules():
        if name.endswith("encoder.layers") and isinstance(module, nn.ModuleList):
            return list(module)
    return []


def apply_fsdp(model: nn.Module, amp: torch.dtype | None) -> nn.Module:
    """Shard `model` in place with FSDP2 (`fully_shard`); needs an initialised process group."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=amp, reduce_dtype=torch.float32) if amp else MixedPrecisionPolicy()
    for layer in vision_layers(model):
        fully_shard(layer, mp_policy=policy)
    for block in model.blocks:  # type: ignore[union-attr]  # nn.Module types attributes Tensor | Module
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model
