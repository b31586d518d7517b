"""The VLA network: PaliGemma prefix (images + text) and a flow-matching action expert (state + actions).

Embeddings are computed here, not by transformers' forward, so they do not depend on its version
(vla.md section 6): text = embedding row * sqrt(width) (the factor cast to the weight dtype, as
Gemma does), images = projector(SigLIP(pixels in [-1, 1]).last_hidden_state) with no division.
tests/unit/model/test_model.py pins this against the installed transformers' own PaliGemma forward.

Suffix (pi0): one state token (`state_proj`), then H action tokens
MLP(concat(action_in_proj(x_t), sincos(t))) with swish; `action_out_proj` maps the expert's output
back to the padded action dims. Suffix (pi0.5, `arch="pi05"`): the H action tokens action_in_proj(x_t)
alone; the state is in the prompt as discrete tokens (text.py) and the time enters every expert norm
through c = swish(time_mlp_out(swish(time_mlp_in(sincos(t))))) (adarms.py). Missing cameras are
skipped by the vision tower (only present camera slots are encoded) and masked out of attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from cotrain.model.adarms import apply_norm, install_adaptive_norms
from cotrain.model.attention import attention_mask, positions
from cotrain.model.config import ResolvedModelConfig
from cotrain.model.flow_matching import euler_sample, interpolate, sinusoidal_embedding, velocity_target
from cotrain.model.inputs import ModelInputs
from cotrain.model.losses import LossTerms, masked_flow_loss, per_sample_ce
from cotrain.model.mot import KV, Masks, MoTBlock, Rope
from cotrain.model.text import KIND_ACTION, KIND_TEXT

__all__ = ["VLA", "PrefixCache"]


@dataclass
class PrefixCache:
    """Per-layer prefix keys/values (after RoPE) plus what the suffix needs to attend them."""

    kv: list[KV]
    masks: Masks
    rope_suffix: Rope
    state_valid: torch.Tensor


def _draws(x: torch.Tensor, k: int) -> torch.Tensor:
    """Each row of `x` repeated for the K flow draws of its sample (rows b*K + k); `x` itself for K = 1."""
    return x if k == 1 else x.repeat_interleave(k, 0)


class VLA(nn.Module):
    """Backbone + expert as MoT blocks, plus the action heads.

    Args:
        cfg: the run's resolved model config (data sizes known).
        vlm: a `PaliGemmaForConditionalGeneration` (its modules are taken over, not copied).
        expert: the expert text model (`GemmaModel` / `Gemma2Model`), same depth as the backbone.
    """

    def __init__(self, cfg: ResolvedModelConfig, vlm: Any, expert: Any) -> None:
        super().__init__()
        if not isinstance(cfg, ResolvedModelConfig):  # a plain ModelConfig may still hold None sizes
            raise TypeError("VLA needs a ResolvedModelConfig (ModelConfig.resolved())")
        inner, text_cfg = vlm.model, vlm.config.text_config
        self.cfg = cfg
        self.vision_tower = inner.vision_tower
        self.projector = inner.multi_modal_projector
        self.embed_tokens = inner.language_model.embed_tokens
        self.backbone_norm = inner.language_model.norm
        self.rotary = inner.language_model.rotary_emb
        tied = vlm.lm_head.weight is inner.language_model.embed_tokens.weight
        self.lm_head = None if tied else vlm.lm_head
        self.final_softcap = getattr(text_cfg, "final_logit_softcapping", None)
        self.text_width = int(text_cfg.hidden_size)
        vc = vlm.config.vision_config
        self.image_tokens = (vc.image_size // vc.patch_size) ** 2
        width = int(expert.config.hidden_size)
        self.expert_width = width
        self.pi05 = cfg.arch == "pi05"
        if self.pi05:
            install_adaptive_norms(expert, width)
        self.blocks = nn.ModuleList(MoTBlock(a, b) for a, b in zip(inner.language_model.layers, expert.layers))
        self.expert_norm = expert.norm
        if not self.pi05:
            self.state_proj = nn.Linear(cfg.state_dim, width)
        self.action_in_proj = nn.Linear(cfg.action_dim, width)
        self.time_mlp_in = nn.Linear(width if self.pi05 else 2 * width, width)
        self.time_mlp_out = nn.Linear(width, width)
        self.action_out_proj = nn.Linear(width, cfg.action_dim)

    # ---- embeddings -------------------------------------------------------------------------------
    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        weight = self.embed_tokens.weight
        scale = torch.tensor(math.sqrt(self.text_width), dtype=weight.dtype, device=weight.device)
        return F.embedding(ids, weight) * scale

    def embed_images(self, images: torch.Tensor, camera_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C*T, d] image tokens of the present cameras (zeros elsewhere) and their validity."""
        b, c = camera_mask.shape
        flat, present = images.flatten(0, 1), camera_mask.flatten()
        any_camera = bool(present.any())
        index = present.nonzero().squeeze(1) if any_camera else torch.zeros(1, dtype=torch.long, device=flat.device)
        dtype = self.projector.linear.weight.dtype
        pixels = flat[index].to(dtype) / 127.5 - 1.0
        feats = self.projector(self.vision_tower(pixel_values=pixels).last_hidden_state)
        out = feats.new_zeros(b * c, self.image_tokens, feats.shape[-1])
        if any_camera:
            out = out.index_copy(0, index, feats)
        else:  # no camera in the batch: keep the tower in the graph (DDP) with a zero contribution
            out = out + 0.0 * feats.sum()
        valid = camera_mask[:, :, None].expand(b, c, self.image_tokens).reshape(b, c * self.image_tokens)
        return out.view(b, c * self.image_tokens, -1), valid

    def embed_prefix(self, inputs: ModelInputs) -> tuple[torch.Tensor, ...]:
        img, img_valid = self.embed_images(inputs.images, inputs.camera_mask)
        txt = self.embed_text(inputs.text_ids)
        response = inputs.text_kind > 0
        zeros = torch.zeros_like(img_valid)
        emb = torch.cat([img, txt.to(img.dtype)], dim=1)
        return (emb, torch.cat([img_valid, inputs.text_valid], 1), torch.cat([zeros, response], 1).long(),
                torch.cat([zeros, response], 1))

    def suffix_layout(self, state_valid: torch.Tensor, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(valid, ar) of the suffix: pi0 [state, actions], ar 1, 1, 0...; pi0.5 [actions], ar 1, 0..."""
        b, device = state_valid.shape[0], state_valid.device
        ones = torch.ones(b, horizon, dtype=torch.bool, device=device)
        valid = ones if self.pi05 else torch.cat([state_valid[:, None], ones], 1)
        ar = torch.zeros_like(valid, dtype=torch.long)
        ar[:, : 1 if self.pi05 else 2] = 1
        return valid, ar

    def embed_suffix(self, state: torch.Tensor, state_valid: torch.Tensor, x_t: torch.Tensor,
                     t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(suffix embeddings, valid, ar, time condition of the adaptive norms or None)."""
        b, h, _ = x_t.shape
        act = self.action_in_proj(x_t.to(self.action_in_proj.weight.dtype))
        temb = sinusoidal_embedding(t, self.expert_width).to(act.dtype)
        valid, ar = self.suffix_layout(state_valid, h)
        if self.pi05:
            cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(temb))))
            return act, valid, ar, cond
        st = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None]  # bf16 weights at inference
        act = self.time_mlp_out(F.silu(self.time_mlp_in(torch.cat([act, temb[:, None].expand(b, h, -1)], dim=-1))))
        return torch.cat([st, act.to(st.dtype)], dim=1), valid, ar, None

    # ---- transformer ------------------------------------------------------------------------------
    def _rope(self, like: torch.Tensor, pos: torch.Tensor) -> Rope:
        cos, sin = self.rotary(like, pos)
        return cos, sin

    def _block(self, block: nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
        if self.cfg.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False, **kwargs)
        return block(*args, **kwargs)

    def _joint(self, inputs: ModelInputs, x_t: torch.Tensor, t: torch.Tensor,
               insulate: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (prefix hidden [B, P, d], suffix hidden [B*K, S, w]) of one pass over prefix + suffix.

        `x_t` [B*K, H, Da] and `t` [B*K] may hold K flow draws per sample (rows b*K + k): the prefix
        then runs once and every suffix row attends its own sample's prefix.
        """
        pre, pvalid, par, presp = self.embed_prefix(inputs)
        k = x_t.shape[0] // pre.shape[0]
        suf, svalid, sar, cond = self.embed_suffix(_draws(inputs.state, k), _draws(inputs.state_valid, k), x_t, t)
        p = pre.shape[1]
        full = attention_mask(pvalid, par, presp, svalid[::k], sar[::k])
        masks = Masks.from_full(full, p)
        pos = positions(torch.cat([pvalid, svalid[::k]], 1))
        rope_p, rope_s = self._rope(pre, pos[:, :p]), self._rope(pre, _draws(pos[:, p:], k))
        if k > 1:
            masks = Masks(prefix=masks.prefix, suffix=_draws(masks.suffix, k))  # type: ignore[arg-type]  # from_full sets it
        for block in self.blocks:
            pre, suf, _ = self._block(block, pre, suf, rope_p, rope_s, masks, None, insulate, cond)
        return self.backbone_norm(pre), apply_norm(self.expert_norm, suf, cond)[0]

    def velocity(self, suffix_hidden: torch.Tensor) -> torch.Tensor:
        """The action tokens' velocity [B, H, Da] from the expert's final states (the state token dropped)."""
        return self.action_out_proj(suffix_hidden[:, -self.cfg.horizon:]).float()

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        out = hidden @ weight.to(hidden.dtype).T
        if self.final_softcap:
            out = torch.tanh(out / self.final_softcap) * self.final_softcap
        return out

    def token_losses(self, hidden: torch.Tensor, inputs: ModelInputs) -> dict[str, torch.Tensor]:
        """Per-sample CE of text targets and action tokens; logits only at loss positions."""
        b, length = inputs.text_ids.shape
        offset = hidden.shape[1] - length
        rows, cols = torch.nonzero(inputs.text_kind > 0, as_tuple=True)
        logits = self.logits(hidden[rows, offset + cols - 1])
        targets, kind = inputs.text_ids[rows, cols], inputs.text_kind[rows, cols]
        out = {}
        for name, k in (("text", KIND_TEXT), ("action_tokens", KIND_ACTION)):
            sel = kind == k
            out[name], out[f"{name}_count"] = per_sample_ce(logits[sel], targets[sel], rows[sel], b)
        return out

    def forward(self, inputs: ModelInputs, noise: torch.Tensor, t: torch.Tensor) -> LossTerms:
        """Per-sample loss terms ([B] each, with `<term>_count`) for a training batch.

        `noise` [B, H, Da] and `t` [B] are one flow draw per sample; [B, K, H, Da] and [B, K] are K
        draws (`flow_samples`), whose flow losses are averaged per sample.
        """
        k = noise.shape[1] if noise.dim() == 4 else 1
        noise, t = noise.reshape(-1, *noise.shape[-2:]), t.reshape(-1)
        actions = _draws(inputs.actions, k)
        x_t = interpolate(actions, noise, t)
        hp, hs = self._joint(inputs, x_t, t, self.cfg.knowledge_insulation)
        v = self.velocity(hs)
        flow, count = masked_flow_loss(v, velocity_target(actions, noise), _draws(inputs.actions_valid, k),
                                       _draws(inputs.action_mask, k))
        flow, count = flow.view(-1, k).mean(1), count.view(-1, k)[:, 0]
        tok = self.token_losses(hp, inputs)
        return LossTerms(flow=flow, flow_count=count, text=tok["text"], text_count=tok["text_count"],
                         action_tokens=tok["action_tokens"], action_tokens_count=tok["action_tokens_count"])

    # ---- inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prefix(self, inputs: ModelInputs) -> PrefixCache:
        """Run the backbone once over the prefix; keep every layer's K/V for the Euler steps."""
        pre, pvalid, par, presp = self.embed_prefix(inputs)
        svalid, sar = self.suffix_layout(inputs.state_valid, inputs.actions.shape[1])
        p = pre.shape[1]
        masks = Masks.from_full(attention_mask(pvalid, par, presp, svalid, sar), p)
        pos = positions(torch.cat([pvalid, svalid], 1))
        rope_p = self._rope(pre, pos[:, :p])
        kvs = []
        for block in self.blocks:
            pre, _, kv = block(pre, None, rope_p, None, masks)
            kvs.append(kv)
        return PrefixCache(kvs, masks, self._rope(pre, pos[:, p:]), inputs.state_valid)

    @torch.no_grad()
    def prefix_hidden(self, inputs: ModelInputs) -> torch.Tensor:
        """Final normed backbone states [B, P, d] of the prefix alone (the suffix cannot change them)."""
        return self.prefix_forward(inputs)

    def prefix_forward(self, inputs: ModelInputs) -> torch.Tensor:
        """`prefix_hidden` with gradients: the backbone alone, as a vision-language model (pretraining)."""
        pre, pvalid, par, presp = self.embed_prefix(inputs)
        b = pre.shape[0]
        empty = torch.zeros(b, 0, dtype=torch.bool, device=pre.device)
        masks = Masks(prefix=attention_mask(pvalid, par, presp, empty, empty.long()))
        rope_p = self._rope(pre, positions(pvalid))
        for block in self.blocks:
            pre, _, _ = block(pre, None, rope_p, None, masks)
        return self.backbone_norm(pre)

    @torch.no_grad()
    def denoise(self, cache: PrefixCache, state: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The velocity at (x_t, t): only the expert runs, against the cached prefix."""
        suf, _, _, cond = self.embed_suffix(state, cache.state_valid, x_t, t)
        for block, kv in zip(self.blocks, cache.kv):
            _, suf, _ = block(None, suf, None, cache.rope_suffix, cache.masks, kv, cond=cond)
        return self.velocity(apply_norm(self.expert_norm, suf, cond)[0])

    @torch.no_grad()
    def sample_actions(self, inputs: ModelInputs, noise: torch.Tensor, steps: int | None = None,
                       use_cache: bool = True) -> torch.Tensor:
        """Normalised action chunks [B, H, Da] by Euler integration from `noise` (t = 1) to t = 0."""
        steps = steps or self.cfg.flow_steps
        if use_cache:
            cache = self.encode_prefix(inputs)
            return euler_sample(lambda x, t: self.denoise(cache, inputs.state, x, t), noise, steps)

        def full(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            _, hs = self._joint(inputs, x, t, insulate=False)
            return self.velocity(hs)

        return euler_sample(full, noise, steps)
