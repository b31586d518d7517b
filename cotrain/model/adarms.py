"""pi0.5's adaptive RMSNorm: the action expert's norms conditioned on the flow time.

In pi0.5 (openpi `gemma.py` RMSNorm with `cond`, LeRobot `pi05`), every norm of the action expert
(both per-layer norms and the final one) has no learned scale. A dense layer maps the time
conditioning c [B, w] to (scale, shift, gate) [B, 3w]; the norm returns
rms_norm(x) * (1 + scale) + shift, and the layer's residual becomes x + gate * y instead of x + y.
The dense weight starts at zero (openpi), so an untrained expert sees a plain RMSNorm and an
open-by-zero gate; its bias is a normal learned bias. The normalisation runs in float32 like Gemma's.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

__all__ = ["AdaRMSNorm", "apply_norm", "install_adaptive_norms"]


class AdaRMSNorm(nn.Module):
    """RMSNorm whose scale, shift and residual gate come from a conditioning vector (see module docstring)."""

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * dim)
        nn.init.zeros_(self.dense.weight)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        mod = self.dense(cond.to(self.dense.weight.dtype))
        if x.dim() == 3:
            mod = mod[:, None]
        scale, shift, gate = mod.chunk(3, dim=-1)
        return (normed * (1.0 + scale.float()) + shift.float()).to(x.dtype), gate.to(x.dtype)


def apply_norm(norm: nn.Module, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(normed x, residual gate or None): an AdaRMSNorm with its condition, any other norm as is."""
    if isinstance(norm, AdaRMSNorm):
        if cond is None:
            raise ValueError("an adaptive norm needs its time condition (pi0.5 expert)")
        return norm(x, cond)
    return norm(x), None


def install_adaptive_norms(expert: nn.Module, width: int) -> None:
    """Swap every norm of a Gemma expert model (layers and final) for an AdaRMSNorm conditioned at `width`."""
    eps = float(getattr(expert.config, "rms_norm_eps", 1e-6))
    for layer in cast(nn.ModuleList, expert.layers):  # Gemma's decoder layers (GemmaModel.layers)
        layer.input_layernorm = AdaRMSNorm(width, width, eps)
        layer.post_attention_layernorm = AdaRMSNorm(width, width, eps)
    expert.norm = AdaRMSNorm(width, width, eps)
