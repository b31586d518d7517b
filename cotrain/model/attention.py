"""The attention-mask layout of prefix (images + text) and suffix (state + noisy actions).

big_vision style: every token carries an `ar` flag; with c = cumsum(ar) over the whole sequence,
token i may attend token j iff c[j] <= c[i] and both are valid. Our flags:

    prefix: image tokens (ar 0) | prompt tokens (ar 0) | response tokens (ar 1 each) | padding (invalid)
    suffix: state token (ar 1)  | action token 0 (ar 1) | action tokens 1..H-1 (ar 0)

which gives: images and prompt attend each other bidirectionally; response tokens (text targets and
discrete action tokens) are causal over the prompt; the prefix never attends the suffix (every
suffix c is larger); the state token attends the prefix and itself; action tokens attend the prefix,
the state and each other (bidirectionally). One rule is added on top of cumsum: suffix tokens never
attend *response* tokens, so the flow expert cannot read the answer or the discrete tokens of the
same chunk it denoises (pi0.5 / knowledge-insulation layout).

Positions are cumsum(valid) - 1 over the concatenated sequence, shared by both streams (RoPE is
relative, so the origin does not matter). Masked scores use a finite negative (0.7 * dtype min, as
openpi's -2.38e38) rather than -inf, so a fully masked padding row gives finite values instead of
NaN on kernels that do not special-case it.
"""

from __future__ import annotations

import torch

__all__ = ["additive_mask", "attention_mask", "positions"]


def attention_mask(prefix_valid: torch.Tensor, prefix_ar: torch.Tensor, prefix_response: torch.Tensor,
                   suffix_valid: torch.Tensor, suffix_ar: torch.Tensor) -> torch.Tensor:
    """Boolean [B, P+S, P+S] mask, True where query i may attend key j (see module docstring).

    Args:
        prefix_valid, prefix_response: bool [B, P]; prefix_ar: int [B, P].
        suffix_valid: bool [B, S]; suffix_ar: int [B, S].
    """
    valid = torch.cat([prefix_valid, suffix_valid], dim=1)
    ar = torch.cat([prefix_ar, suffix_ar], dim=1).long()
    c = torch.cumsum(ar, dim=1)
    allowed = c[:, None, :] <= c[:, :, None]
    allowed = allowed & valid[:, None, :] & valid[:, :, None]
    b, p, s = prefix_valid.shape[0], prefix_valid.shape[1], suffix_valid.shape[1]
    is_suffix = torch.cat([torch.zeros(p, dtype=torch.bool), torch.ones(s, dtype=torch.bool)]).to(valid.device)
    response = torch.cat([prefix_response, torch.zeros(b, s, dtype=torch.bool, device=valid.device)], dim=1)
    return allowed & ~(is_suffix[None, :, None] & response[:, None, :])


def positions(valid: torch.Tensor) -> torch.Tensor:
    """RoPE positions [B, N] = cumsum(valid) - 1 (invalid tokens repeat their predecessor's, never < 0)."""
    return (torch.cumsum(valid.long(), dim=1) - 1).clamp(min=0)


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, Q, K] bool -> [B, 1, Q, K] additive float mask of `dtype` (0 where allowed)."""
    neg = torch.finfo(dtype).min * 0.7
    return torch.where(mask, torch.zeros((), dtype=dtype, device=mask.device),
                       torch.full((), neg, dtype=dtype, device=mask.device))[:, None]
