"""Which rows of a rank's batch go through each forward pass of one optimiser step.

`grad_accum` K splits the batch into K equal micro-batches, as before. With `length_split`, a
single-process run whose batch mixes short and long texts (a robot instruction of ~25 byte tokens
beside a caption of ~140) is instead run as two micro-batches grouped by text length: padding to the
longest text of the whole batch would make every row pay for the caption. Per-sample losses do not
depend on padding (padding is masked out of attention and loss) nor on which micro-batch a sample
is in (noise and flow times are drawn per sample), so the gradient is the same up to float
summation order. Multi-process runs keep K equal micro-batches: every rank must run the same number
of forward passes (FSDP2 gathers parameters in each).
"""

from __future__ import annotations

import torch

__all__ = ["SPLIT_GAIN", "micro_batches"]

# Split only when the two groups need at most this fraction of the padded token rows of one pass:
# a second pass has its own fixed cost (Python, kernel launches), so small savings do not pay.
SPLIT_GAIN = 0.8


def _length_split(text_lengths: torch.Tensor, fixed_tokens: int) -> list[torch.Tensor] | None:
    """Rows of the two length groups (stable order within each), or None when one pass is cheaper."""
    lengths = text_lengths.tolist()
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])  # stable: ties keep batch order
    ranked = [lengths[i] for i in order]
    n = len(ranked)
    one_pass = n * (fixed_tokens + ranked[-1])
    best, cut = one_pass, 0
    for k in range(1, n):
        cost = k * (fixed_tokens + ranked[k - 1]) + (n - k) * (fixed_tokens + ranked[-1])
        if cost < best:
            best, cut = cost, k
    if cut == 0 or best > SPLIT_GAIN * one_pass:
        return None
    short, long = sorted(order[:cut]), sorted(order[cut:])
    return [torch.tensor(short, dtype=torch.long), torch.tensor(long, dtype=torch.long)]


def micro_batches(text_lengths: torch.Tensor, grad_accum: int, length_split: bool,
                  fixed_tokens: int) -> list[torch.Tensor]:
    """Row indices of each forward pass; their concatenation covers every row once.

    `text_lengths` [B] counts each row's real text tokens; `fixed_tokens` is what every row has besides
    its text (image tokens, state and action tokens); `length_split` applies only with `grad_accum` 1.
    """
    b = int(text_lengths.shape[0])
    if length_split and grad_accum == 1 and b > 1:
        groups = _length_split(text_lengths, fixed_tokens)
        if groups is not None:
            return groups
    micro = b // grad_accum
    return [torch.arange(k * micro, (k + 1) * micro) for k in range(grad_accum)]
