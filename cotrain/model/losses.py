"""Per-sample losses, so one batch can mix robot, human-video, vision-language and action-token samples.

Each sample i gets up to three terms, each a mean over that sample's own positions only:
- flow_i: squared error of the predicted velocity over the steps where `actions_valid` and the
  dimensions where `action_mask` are true (padded steps and dimensions never count; openpi averages
  over padding, LeRobot/GR00T/OpenTau mask it: we mask);
- text_i: next-token cross-entropy at the sample's target positions (captions, answers, annotations);
- action_tokens_i: cross-entropy at its discrete action-token positions.
A sample without a term has count 0 there and contributes nothing to it.

The step loss is  sum_i loss_weight_i * (w_flow flow_i + w_text text_i + w_tok action_tokens_i) / N
with N the number of samples on this rank in the optimiser step (micro-batches included), so each
sample weighs the same and the mixture's proportions (and per-source `loss_weight`) set how much
each modality contributes; DDP's gradient averaging then makes it the mean over the global batch.
"""

from __future__ import annotations

from typing import TypedDict

import torch
from torch.nn import functional as F

__all__ = ["TERMS", "LossTerms", "combine_losses", "masked_flow_loss", "per_sample_ce", "per_sample_total"]

TERMS = ("flow", "text", "action_tokens")


class LossTerms(TypedDict):
    """The model's per-sample terms for a batch, [B] each: a term's mean over the sample's own positions
    and `<term>_count`, the number of positions it averaged (0: the sample has no such term)."""

    flow: torch.Tensor
    flow_count: torch.Tensor
    text: torch.Tensor
    text_count: torch.Tensor
    action_tokens: torch.Tensor
    action_tokens_count: torch.Tensor


def masked_flow_loss(pred: torch.Tensor, target: torch.Tensor, actions_valid: torch.Tensor,
                     action_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean squared error over valid (step, dim) cells: ([B] loss, [B] cell count)."""
    mask = (actions_valid[:, :, None] & action_mask[:, None, :]).to(pred.dtype)
    sq = torch.square(pred - target) * mask
    count = mask.sum(dim=(1, 2))
    return sq.sum(dim=(1, 2)) / count.clamp(min=1.0), count


def per_sample_ce(logits: torch.Tensor, targets: torch.Tensor, sample: torch.Tensor, batch: int,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean CE per sample over the positions it owns: logits [N, V], targets [N], sample [N] in [0, B)."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    total = torch.zeros(batch, dtype=ce.dtype, device=ce.device).index_add(0, sample, ce)
    count = torch.zeros(batch, dtype=ce.dtype, device=ce.device).index_add(0, sample, torch.ones_like(ce))
    return total / count.clamp(min=1.0), count


def per_sample_total(terms: LossTerms, weights: dict[str, float]) -> torch.Tensor:
    """[B] weighted sum of the per-sample terms (a missing term is 0 for that sample already)."""
    # Summed from zero in TERMS order, as the metrics' sum does, so both give the same floats.
    return (torch.zeros_like(terms["flow"]) + weights["flow"] * terms["flow"] + weights["text"] * terms["text"]
            + weights["action_tokens"] * terms["action_tokens"])


def combine_losses(terms: LossTerms, loss_weight: torch.Tensor, weights: dict[str, float],
                   samples_per_step: int) -> torch.Tensor:
    """The scalar to backpropagate for this micro-batch (see module docstring)."""
    return (loss_weight.to(terms["flow"].dtype) * per_sample_total(terms, weights)).sum() / samples_per_step
