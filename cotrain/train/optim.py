"""AdamW with linear warmup and cosine decay; the learning rate is a pure function of the step.

    lr(s) = peak * (s + 1) / warmup                                   for s < warmup
    lr(s) = floor + (peak - floor) * (1 + cos(pi * p)) / 2,  p = (s - warmup) / (total - warmup)

with floor = peak * min_lr_ratio (openpi: 2.5e-5 -> 2.5e-6, ratio 0.1). Because it depends on the step
only, the schedule's checkpoint state is the step itself: nothing can drift on resume.
Defaults follow openpi: betas (0.9, 0.95), eps 1e-8, weight decay 1e-10, gradient clip 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

__all__ = ["CosineSchedule", "build_optimizer"]


@dataclass(frozen=True)
class CosineSchedule:
    """Warmup + cosine learning rate (see module docstring)."""

    peak: float
    warmup_steps: int
    total_steps: int
    min_lr_ratio: float

    def lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = self.peak * self.min_lr_ratio
        return floor + (self.peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


def build_optimizer(params: Iterable[torch.nn.Parameter], *, lr: float, betas: tuple[float, float], eps: float,
                    weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters."""
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("no trainable parameters")
    return torch.optim.AdamW(trainable, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
