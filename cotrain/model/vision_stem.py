"""Front ends for the random-init vision tower: a convolutional patch stem and a fixed 2-D position grid.

Why: a SigLIP tower trained from scratch embeds each 8 x 8 patch with one linear map and learns its
positions from nothing; at the `tiny` preset's sizes the policy then never learns where the object
its instruction names is (docs/ablation.md, "What makes a from-scratch VLA look"). A stack of
stride-2 convolutions sees neighbouring pixels at every scale and a sine-cosine grid gives every
patch its row and column from the first step; the simulator's behaviour-cloning reference
(benchmarks/sim_bc_reference.py) uses both. `VisionSpec.stem = "conv"` and
`VisionSpec.positions = "sincos"` select them; pretrained towers are never changed.

The stem replaces SigLIP's `patch_embedding` module in place, so the tower's own forward (patch
embedding, then the position table, then its layers) is unchanged and checkpoints keep their keys.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

__all__ = ["ConvPatchStem", "apply_vision_front_end", "init_sincos_positions", "sincos_grid"]

_CHANNELS = (16, 32, 64, 128)  # hidden channels of the stages before the last (128 beyond the fourth)


class ConvPatchStem(nn.Module):
    """log2(patch) stride-2 3 x 3 convolutions with GELU between: [B, 3, S, S] -> [B, width, S/p, S/p]."""

    def __init__(self, width: int, patch_size: int) -> None:
        super().__init__()
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(f"a conv stem needs a power-of-two patch size >= 2, got {patch_size}")
        stages = patch_size.bit_length() - 1
        channels = [*(_CHANNELS[min(i, len(_CHANNELS) - 1)] for i in range(stages - 1)), width]
        layers: list[nn.Module] = []
        previous = 3
        for i, out in enumerate(channels):
            layers.append(nn.Conv2d(previous, out, 3, stride=2, padding=1))
            if i < len(channels) - 1:
                layers.append(nn.GELU())
            previous = out
        self.net = nn.Sequential(*layers)

    @property
    def weight(self) -> torch.Tensor:
        """The last convolution's weight: SigLIP reads `patch_embedding.weight.dtype` to cast pixels."""
        last = cast(nn.Conv2d, self.net[-1])  # built last in __init__: always the final convolution
        return last.weight

    def forward(self, pixels_b3ss: torch.Tensor) -> torch.Tensor:
        return self.net(pixels_b3ss)


def sincos_grid(side: int, width: int) -> torch.Tensor:
    """[side * side, width] row-major patch positions: sin and cos of the column, then of the row.

    A quarter of the width per (axis, sin/cos); frequencies 1 / 100^(i / (width / 4)), so the
    slowest ones vary once across a grid of up to ~600 patches per side. Width must divide by 4.
    """
    if width % 4:
        raise ValueError(f"a sine-cosine position grid needs a width divisible by 4, got {width}")
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    quarter = width // 4
    freqs = 1.0 / 100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    angles = [axis.reshape(-1, 1).float() * freqs for axis in (cols, rows)]
    return torch.cat([f(a) for a in angles for f in (torch.sin, torch.cos)], dim=1)


def _embeddings(vision_tower: nn.Module) -> Any:
    tower = getattr(vision_tower, "vision_model", vision_tower)
    return tower.embeddings


def apply_vision_front_end(vision_tower: nn.Module, stem: str) -> None:
    """Swap in the conv stem when `stem == "conv"` (structure only; weights are initialised later)."""
    if stem == "patch":
        return
    emb = _embeddings(vision_tower)
    old = emb.patch_embedding
    emb.patch_embedding = ConvPatchStem(int(old.out_channels), int(old.kernel_size[0]))


@torch.no_grad()
def init_sincos_positions(vision_tower: nn.Module) -> None:
    """Overwrite the tower's position table with `sincos_grid` (it stays trainable, as tested)."""
    table = _embeddings(vision_tower).position_embedding
    patches, width = table.weight.shape
    side = round(patches ** 0.5)
    if side * side != patches:
        raise ValueError(f"position table of {patches} patches is not a square grid")
    table.weight.copy_(sincos_grid(side, width).to(table.weight.dtype))
