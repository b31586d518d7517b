"""Flow matching on action chunks, openpi convention: pure tensor functions, explicit generators.

Time runs from t = 1 (pure noise) to t = 0 (data), as in openpi and LeRobot (the reverse of the pi0
paper's notation; see ../shared/notes/vla.md section 2):

    t   = Beta(1.5, 1) * 0.999 + 0.001     (more mass near t = 1, the noisy end)
    x_t = t * noise + (1 - t) * actions
    u   = noise - actions                  (the velocity the model regresses: dx_t/dt)

Sampling integrates dx/dt = v from t = 1 to 0 with `steps` Euler steps of dt = -1/steps. Every
random draw takes a `torch.Generator`, so a run's noise is a function of its seed and step only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["euler_sample", "interpolate", "sample_time", "sinusoidal_embedding", "velocity_target"]

T_MIN = 0.001


def sample_time(batch: int, generator: torch.Generator, alpha: float = 1.5, beta: float = 1.0) -> torch.Tensor:
    """[B] float32 times in [0.001, 1]: Beta(alpha, beta) * 0.999 + 0.001, drawn from `generator`.

    torch's Beta sampler cannot take a generator. Beta(a, 1), every preset's shape, is drawn by its
    inverse CDF u^(1/a) (exact, one torch uniform per sample); other shapes by numpy's
    `Generator.beta`, seeded with one int64 drawn from `generator`, so the times stay a function of
    the generator's state.
    """
    if beta == 1.0:
        x = torch.rand(batch, generator=generator, dtype=torch.float64) ** (1.0 / alpha)
    else:
        seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
        x = torch.from_numpy(np.random.default_rng(seed).beta(alpha, beta, batch))
    return (x * (1.0 - T_MIN) + T_MIN).float()


def interpolate(actions: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t * noise + (1 - t) * actions, with t [B] broadcast over [B, H, D]."""
    tt = t.to(actions.dtype)[:, None, None]
    return tt * noise + (1.0 - tt) * actions


def velocity_target(actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """u = noise - actions: d x_t / d t for the linear path above."""
    return noise - actions


def sinusoidal_embedding(t: torch.Tensor, width: int, min_period: float = 4e-3,
                         max_period: float = 4.0) -> torch.Tensor:
    """[B] -> [B, width] sin-cos features with periods log-spaced in [min_period, max_period] (openpi)."""
    if width % 2:
        raise ValueError(f"sinusoidal embedding width must be even, got {width}")
    frac = torch.linspace(0.0, 1.0, width // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** frac
    angle = t.double()[:, None] * (2.0 * math.pi / period)[None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).float()


def euler_sample(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor,
                 steps: int) -> torch.Tensor:
    """Integrate from x_1 = noise to x_0 with `steps` Euler steps; `velocity(x_t, t[B])` gives v."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    dt = -1.0 / steps
    x = noise
    for i in range(steps):
        t = torch.full((noise.shape[0],), 1.0 + i * dt, dtype=torch.float32, device=noise.device)
        x = x + dt * velocity(x, t).to(x.dtype)
    return x
