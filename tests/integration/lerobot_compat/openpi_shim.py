"""What LeRobot 0.4.4's pi0 / pi05 need from openpi's patched transformers, on stock transformers 4.57.

LeRobot 0.4.4 runs pi0 / pi05 only on the transformers branch `fix/lerobot_openpi` (openpi's
`transformers_replace` files), which is not on PyPI; stock transformers makes `PI0Pytorch.__init__`
raise "An incorrect transformer version is used". The branch changes exactly these behaviours, which
this module installs in-process before LeRobot builds a model (written from openpi's description and
LeRobot's later `pi_gemma.py`, which re-implements the same patch as subclasses):

- `GemmaRMSNorm(dim, eps, cond_dim=None)`: `forward(x, cond=None)` returns (out, gate); with a condition
  a zero-initialised dense layer gives (scale, shift, gate): out = rms(x) * (1 + scale) + shift;
- `modeling_gemma._gated_residual(x, y, gate)` = x + y * gate (x + y without a gate);
- decoder layers pass `adarms_cond` to both norms and use gated residuals; the layer and final norms
  of a config with `use_adarms` are adaptive with `adarms_cond_dim`;
- `GemmaModel.forward` takes `adarms_cond`, uses the 4-D additive mask as given and does NOT scale
  the input embeddings by sqrt(width) (the caller already did);
- attention with a cache and `use_cache=False` attends [cached K/V, new K/V] without storing the new
  ones (each denoising step reuses the prefix cache);
- `PaliGemmaModel.get_image_features` does not divide by sqrt(width);
- `transformers.models.siglip.check` exists and says the patch is installed.
Everything else (embeddings, masks, the layer loop of training, flow matching, sampling) is LeRobot's.
"""

from __future__ import annotations

import sys
import types

import torch
from torch import nn


class AdaptiveNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6, cond_dim: int | None = None) -> None:
        super().__init__()
        self.eps = eps
        if cond_dim is None:
            self.weight = nn.Parameter(torch.zeros(dim))
            self.dense = None
        else:
            self.dense = nn.Linear(cond_dim, 3 * dim)
            nn.init.zeros_(self.dense.weight)

    def forward(self, x, cond=None):
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if cond is None or self.dense is None:
            return (normed * (1.0 + self.weight.float())).type_as(x), None
        mod = self.dense(cond)
        if x.dim() == 3:
            mod = mod.unsqueeze(1)
        scale, shift, gate = mod.chunk(3, dim=-1)
        return (normed * (1 + scale.float()) + shift.float()).to(x.dtype), gate.to(x.dtype)


def gated_residual(x, y, gate):
    return x + y if gate is None else x + y * gate


def install() -> None:
    from transformers.cache_utils import DynamicCache
    from transformers.modeling_outputs import BaseModelOutputWithPast
    from transformers.models.gemma import modeling_gemma as mg
    from transformers.models.paligemma import modeling_paligemma as mp

    check = types.ModuleType("transformers.models.siglip.check")
    check.check_whether_transformers_replace_is_installed_correctly = lambda: True
    sys.modules[check.__name__] = check
    mg.GemmaRMSNorm = AdaptiveNorm
    mg._gated_residual = gated_residual

    def cond_dim(config):
        return getattr(config, "adarms_cond_dim", None) if getattr(config, "use_adarms", False) else None

    layer_init = mg.GemmaDecoderLayer.__init__

    def new_layer_init(self, config, layer_idx):
        layer_init(self, config, layer_idx)
        self.input_layernorm = AdaptiveNorm(config.hidden_size, config.rms_norm_eps, cond_dim(config))
        self.post_attention_layernorm = AdaptiveNorm(config.hidden_size, config.rms_norm_eps, cond_dim(config))

    def layer_forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_values=None,
                      use_cache=False, cache_position=None, position_embeddings=None, adarms_cond=None, **kwargs):
        residual = hidden_states
        h, gate = self.input_layernorm(hidden_states, cond=adarms_cond)
        h, _ = self.self_attn(hidden_states=h, attention_mask=attention_mask, position_embeddings=position_embeddings,
                              past_key_values=past_key_values, use_cache=use_cache, cache_position=cache_position)
        h = gated_residual(residual, h, gate)
        residual = h
        h, gate = self.post_attention_layernorm(h, cond=adarms_cond)
        return gated_residual(residual, self.mlp(h), gate)

    def attn_forward(self, hidden_states, position_embeddings, attention_mask, past_key_values=None,
                     cache_position=None, use_cache=False, **kwargs):
        shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = mg.apply_rotary_pos_emb(q, k, cos, sin)
        if past_key_values is not None:
            if use_cache:
                k, v = past_key_values.update(k, v, self.layer_idx, {"sin": sin, "cos": cos,
                                                                    "cache_position": cache_position})
            else:
                cached = past_key_values.layers[self.layer_idx]
                k, v = torch.cat([cached.keys, k], dim=2), torch.cat([cached.values, v], dim=2)
        out, weights = mg.eager_attention_forward(self, q, k, v, attention_mask, dropout=0.0, scaling=self.scaling)
        return self.o_proj(out.reshape(*hidden_states.shape[:-1], -1).contiguous()), weights

    model_init = mg.GemmaModel.__init__

    def new_model_init(self, config):
        model_init(self, config)
        self.norm = AdaptiveNorm(config.hidden_size, config.rms_norm_eps, cond_dim(config))

    def model_forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                      inputs_embeds=None, use_cache=None, cache_position=None, adarms_cond=None, **kwargs):
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        h = inputs_embeds
        pe = self.rotary_emb(h, position_ids)
        for layer in self.layers:
            h = layer(h, attention_mask=attention_mask, position_ids=position_ids, past_key_values=past_key_values,
                      use_cache=use_cache, position_embeddings=pe, adarms_cond=adarms_cond)
        h, _ = self.norm(h, cond=adarms_cond)
        return BaseModelOutputWithPast(last_hidden_state=h, past_key_values=past_key_values if use_cache else None)

    def image_features(self, pixel_values):
        return self.multi_modal_projector(self.vision_tower(pixel_values).last_hidden_state)

    mg.GemmaDecoderLayer.__init__ = new_layer_init
    mg.GemmaDecoderLayer.forward = layer_forward
    mg.GemmaDecoderLayer.__call__ = nn.Module.__call__  # skip GradientCheckpointingLayer's kwarg filtering
    mg.GemmaAttention.forward = attn_forward
    mg.GemmaModel.__init__ = new_model_init
    mg.GemmaModel.forward = model_forward
    mp.PaliGemmaModel.get_image_features = image_features
