"""Mixture-of-transformers layers: two streams with separate weights, one attention over both.

A `MoTBlock` holds layer i of the backbone (stream 0, the prefix: images + text) and layer i of the
action expert (stream 1, the suffix: state + actions). Each stream applies its own RMSNorm and
Q/K/V projections; the queries, keys and values are concatenated along the sequence, RoPE'd with
the shared positions and attended in ONE softmax; the result is split back and each stream applies
its own output projection, residual and MLP. The block is called as a module (never by reaching into
its sub-layers from outside), so FSDP2 and activation checkpointing can wrap it as one unit (the
failure mode of lerobot PR #3767 was a shared loop that bypassed the per-layer hooks).

Layers are the stock transformers `GemmaDecoderLayer` / `Gemma2DecoderLayer` (PaliGemma / PaliGemma 2),
so pretrained weights load untouched. Gemma 2 differs by post-attention / pre- and post-feed-forward
norms and tanh soft-capping of attention logits (which needs the eager path; SDPA cannot soft-cap).

Modes of `MoTBlock.forward`:
- prefix + suffix, joint: one attention over the concatenation with the full mask (training);
- prefix + suffix, insulated: the prefix attends itself; the suffix attends [detached prefix K/V,
  suffix K/V] (knowledge insulation). Values equal the joint mode, since the prefix never attends
  the suffix; only the gradient path differs;
- prefix only: returns the prefix K/V for the cache (inference);
- suffix only: attends [cached prefix K/V, suffix K/V] (each Euler step at inference);
- prefix + suffix with K flow draws per sample (`flow_samples`): the suffix batch is K x the prefix's;
  the prefix attends itself once and each suffix row attends [its sample's prefix K/V, its own K/V].
  Values equal K joint passes, and the gradient flows into the prefix from all K.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from torch.nn import functional as F

from cotrain.model.adarms import apply_norm
from cotrain.model.attention import additive_mask

if TYPE_CHECKING:  # typing only: the layers are built by transformers (factory.py / backbone.py)
    from transformers.models.gemma.modeling_gemma import GemmaDecoderLayer
    from transformers.models.gemma2.modeling_gemma2 import Gemma2DecoderLayer

    # Either stock decoder layer; the expert's norms may be swapped for AdaRMSNorm (install_adaptive_norms).
    DecoderLayer = GemmaDecoderLayer | Gemma2DecoderLayer

__all__ = ["Masks", "MoTBlock", "attend"]

KV = tuple[torch.Tensor, torch.Tensor]
_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)
Rope = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Masks:
    """Boolean masks of one forward, converted to additive masks once per dtype (not once per layer)."""

    full: torch.Tensor | None = None  # [B, P+S, P+S]
    prefix: torch.Tensor | None = None  # [B, P, P]
    suffix: torch.Tensor | None = None  # [B, S, P+S]
    _cache: dict[tuple[str, torch.dtype], torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_full(cls, full: torch.Tensor, prefix_len: int) -> Masks:
        return cls(full=full, prefix=full[:, :prefix_len, :prefix_len], suffix=full[:, prefix_len:, :])

    def additive(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        key = (name, dtype)
        if key not in self._cache:
            mask = getattr(self, name)
            if mask is None:
                raise ValueError(f"mask {name!r} was not built for this forward")
            self._cache[key] = additive_mask(mask, dtype)
        return self._cache[key]


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    b, h, n, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, n, d).reshape(b, h * n_rep, n, d)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scaling: float,
           softcap: float | None) -> torch.Tensor:
    """[B, Hq, Q, D] x [B, Hkv, K, D] -> [B, Hq, Q, D]; `mask` is additive [B, 1, Q, K]."""
    n_rep = q.shape[1] // k.shape[1]
    # CPU bf16: torch's fused CPU attention kernel is ~4x slower in bf16 than in fp32 at these sizes
    # (benchmarks/sim_step_bench.py), while two bf16 matmuls and an fp32 softmax run on the matrix units.
    cpu_bf16 = q.device.type == "cpu" and q.dtype == torch.bfloat16
    if softcap is None and not cpu_bf16:
        if _GQA:  # grouped-query attention without materialising repeated K/V (torch >= 2.5)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling, enable_gqa=n_rep > 1)
        k, v = _repeat_kv(k, n_rep), _repeat_kv(v, n_rep)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
    k, v = _repeat_kv(k, n_rep), _repeat_kv(v, n_rep)
    if softcap is None:  # scale the queries, not the [Q, K] scores: fewer elements
        scores = torch.matmul(q * scaling, k.transpose(2, 3)) + mask
    else:
        scores = torch.tanh(torch.matmul(q, k.transpose(2, 3)) * (scaling / softcap)) * softcap + mask
    # bf16 probabilities on CPU as in fused attention kernels (the kernel accumulates in fp32); a round
    # trip through an fp32 [B, H, Q, K] tensor would cost as much as the matmuls
    if cpu_bf16:
        return torch.matmul(torch.softmax(scores, dim=-1), v)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, v)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _qkv(layer: DecoderLayer, x: torch.Tensor, rope: Rope,
         cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    attn = layer.self_attn
    b, n, _ = x.shape
    h, gate = apply_norm(layer.input_layernorm, x, cond)
    shape = (b, n, -1, attn.head_dim)
    q = attn.q_proj(h).view(shape).transpose(1, 2)
    k = attn.k_proj(h).view(shape).transpose(1, 2)
    v = attn.v_proj(h).view(shape).transpose(1, 2)
    cos, sin = rope[0][:, None].to(q.dtype), rope[1][:, None].to(q.dtype)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin, v, gate


def _gated(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return x + y if gate is None else x + y * gate


def _finish(layer: DecoderLayer, x: torch.Tensor, attn_out: torch.Tensor, gate: torch.Tensor | None,
            cond: torch.Tensor | None) -> torch.Tensor:
    b, _, n, _ = attn_out.shape
    out = layer.self_attn.o_proj(attn_out.transpose(1, 2).reshape(b, n, -1))
    if hasattr(layer, "pre_feedforward_layernorm"):  # Gemma 2 ordering
        g2 = cast("Gemma2DecoderLayer", layer)  # only Gemma 2 layers have the feed-forward norms
        h = x + g2.post_attention_layernorm(out)
        return h + g2.post_feedforward_layernorm(g2.mlp(g2.pre_feedforward_layernorm(h)))
    h = _gated(x, out, gate)
    normed, gate2 = apply_norm(layer.post_attention_layernorm, h, cond)
    return _gated(h, layer.mlp(normed), gate2)


def _context(k: torch.Tensor, v: torch.Tensor, insulate: bool, repeat: int) -> KV:
    """The prefix K/V the suffix attends to: detached under knowledge insulation, each row repeated
    `repeat` times when the suffix carries several flow draws per sample."""
    if insulate:
        k, v = k.detach(), v.detach()
    if repeat > 1:
        k, v = k.repeat_interleave(repeat, 0), v.repeat_interleave(repeat, 0)
    return k, v


class MoTBlock(nn.Module):
    """Layer i of both streams (see module docstring).

    Args:
        backbone_layer: the PaliGemma text layer i (stream 0).
        expert_layer: the action expert's layer i (stream 1); same heads, KV heads and head_dim.
    """

    backbone: DecoderLayer
    expert: DecoderLayer

    def __init__(self, backbone_layer: DecoderLayer, expert_layer: DecoderLayer) -> None:
        super().__init__()
        self.backbone = backbone_layer
        self.expert = expert_layer
        attn = backbone_layer.self_attn
        self.scaling = float(attn.scaling)
        self.softcap = getattr(attn, "attn_logit_softcapping", None)

    def forward(self, prefix: torch.Tensor | None, suffix: torch.Tensor | None, rope_prefix: Rope | None,
                rope_suffix: Rope | None, masks: Masks, past: KV | None = None,
                insulate: bool = False, cond: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor | None, torch.Tensor | None, KV | None]:
        """Returns (prefix out, suffix out, prefix (k, v) after RoPE in prefix-only mode, for the cache).

        `cond` [B, w_expert] is the pi0.5 time condition of the expert's adaptive norms (None for pi0).
        """
        # mypy cannot tie the Optional locals below to the checks that set them: every ignore in this method
        # is on a use guarded by the same `prefix` / `suffix` (or `past`) check as the assignment it needs.
        qp = kp = vp = qs = ks = vs = gp = gs = None
        if prefix is not None:  # callers pass a stream's RoPE with the stream
            qp, kp, vp, gp = _qkv(self.backbone, prefix, rope_prefix, None)  # type: ignore[arg-type]  # see above
        if suffix is not None:
            qs, ks, vs, gs = _qkv(self.expert, suffix, rope_suffix, cond)  # type: ignore[arg-type]  # see above
        out_p = out_s = None
        # K flow draws per sample: the suffix batch is K x the prefix's (rows b*K + k, see VLA.forward)
        repeat = 1 if prefix is None or suffix is None else suffix.shape[0] // prefix.shape[0]
        if prefix is not None and suffix is not None and not insulate and repeat == 1:
            q, k, v = torch.cat([qp, qs], 2), torch.cat([kp, ks], 2), torch.cat([vp, vs], 2)  # type: ignore[list-item]  # both set
            joint = attend(q, k, v, masks.additive("full", q.dtype), self.scaling, self.softcap)
            out_p, out_s = joint[:, :, : prefix.shape[1]], joint[:, :, prefix.shape[1]:]
        else:
            if prefix is not None:
                mask_p = masks.additive("prefix", qp.dtype)  # type: ignore[union-attr]  # prefix given
                out_p = attend(qp, kp, vp, mask_p, self.scaling, self.softcap)  # type: ignore[arg-type]  # prefix given
            if suffix is not None:
                ctx_k, ctx_v = _context(kp, vp, insulate, repeat) if past is None else past  # type: ignore[arg-type]  # no cache: prefix given
                k = torch.cat([ctx_k.to(ks.dtype), ks], 2)  # type: ignore[union-attr, list-item]  # suffix given
                v = torch.cat([ctx_v.to(vs.dtype), vs], 2)  # type: ignore[union-attr, list-item]  # suffix given
                mask_s = masks.additive("suffix", qs.dtype)  # type: ignore[union-attr]  # suffix given
                out_s = attend(qs, k, v, mask_s, self.scaling, self.softcap)  # type: ignore[arg-type]  # suffix given
        new_p = _finish(self.backbone, prefix, out_p, gp, None) if prefix is not None else None  # type: ignore[arg-type]  # set with prefix
        new_s = _finish(self.expert, suffix, out_s, gs, cond) if suffix is not None else None  # type: ignore[arg-type]  # set with suffix
        # K/V only in prefix-only mode: training outputs stay non-views (FSDP2 hooks the outputs' grads)
        return new_p, new_s, ((kp, vp) if suffix is None else None)  # type: ignore[return-value]  # prefix-only: both set
