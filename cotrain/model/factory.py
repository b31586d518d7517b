"""Build a VLA from a data-resolved config: networks, text tokenizer, frozen parts and LoRA adapters.

`build_vla` returns the final config too: it records the transformers backbone config (and, for a
checkpoint directory, the image size it was trained at), which is what a run stores so that
`Policy.load` can rebuild the same network offline.

Trainable parts:
- `freeze="vision"`: SigLIP and the projector are frozen;
- `freeze="backbone"`: also the text embedding (tied LM head), the backbone's layers and final norm;
- `lora_rank=R`: LoRA adapters (peft) on every backbone layer's q/k/v/o and MLP projections; the
  backbone's base weights are frozen as with `freeze="backbone"`, only the adapters train there.
The expert and the action/state heads always train.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from cotrain.errors import ConfigError
from cotrain.model.backbone import build_networks, random_backbone_config
from cotrain.model.backbone_ckpt import load_backbone
from cotrain.model.config import PI_PRESETS, ModelConfig, ResolvedModelConfig
from cotrain.model.mot import MoTBlock
from cotrain.model.pi_import import load_pi_weights, model_updates, read_pi_checkpoint
from cotrain.model.text import TextTokenizer, build_byte_tokenizer
from cotrain.model.vision_stem import init_sincos_positions
from cotrain.model.vla import VLA

__all__ = ["apply_trainable", "build_vla", "count_parameters", "fan_in_init", "load_tokenizer_for"]

LORA_TARGETS = r".*blocks\.\d+\.backbone\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def load_tokenizer_for(cfg: ModelConfig, init_from: str | Path | None) -> TextTokenizer:
    """The checkpoint's tokenizer.json for pretrained presets, the byte tokenizer otherwise."""
    if cfg.pretrained:
        if init_from is None:
            raise ConfigError(f"preset {cfg.preset!r} loads pretrained weights: pass --init-from DIR "
                              f"(a local Hugging Face PaliGemma checkpoint directory)")
        path = Path(init_from) / "tokenizer.json"
        if cfg.preset in PI_PRESETS and not path.is_file():
            raise ConfigError(f"{init_from}: no tokenizer.json; pi0/pi0.5 checkpoints do not ship one: copy "
                              f"PaliGemma's tokenizer.json (google/paligemma-3b-pt-224) into the directory")
        return TextTokenizer.load(path)
    return build_byte_tokenizer()


def build_vla(cfg: ModelConfig, *, seed: int, tokenizer: TextTokenizer,
              init_from: str | Path | None = None) -> tuple[VLA, ResolvedModelConfig]:
    """(model, final config). `init_from` loads a checkpoint directory (PaliGemma or pi0/pi0.5 for the
    pretrained presets, a cotrain backbone checkpoint for the random-init ones, whose expert and heads
    still start at random); otherwise random init from `cfg`.

    `cfg` must have its data sizes set, except those a pi0 / pi0.5 checkpoint fixes."""
    pi_ckpt = None
    if cfg.preset in PI_PRESETS and cfg.backbone_config is None:
        if init_from is None:
            raise ConfigError(f"preset {cfg.preset!r} loads pretrained weights: pass --init-from DIR")
        pi_ckpt = read_pi_checkpoint(init_from)
        fixed = ("backbone_config", "expert_width", "expert_mlp", "action_dim", "state_dim", "image_size")
        cfg = cfg.model_copy(update={k: v for k, v in model_updates(pi_ckpt, cfg.arch).items()
                                     if k in fixed or getattr(cfg, k) is None})
    return _build(cfg.resolved(), seed, tokenizer, init_from, pi_ckpt)


def _build(cfg: ResolvedModelConfig, seed: int, tokenizer: TextTokenizer, init_from: str | Path | None,
           pi_ckpt: Any) -> tuple[VLA, ResolvedModelConfig]:
    if not cfg.pretrained and cfg.backbone_config is None:
        cfg = cfg.model_copy(update={"backbone_config": random_backbone_config(cfg, tokenizer.vocab_size).to_dict(),
                                     "text_vocab_size": tokenizer.vocab_size})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vlm, expert = build_networks(cfg, init_from if cfg.pretrained and cfg.backbone_config is None else None)
        if cfg.backbone_config is None:
            cfg = cfg.model_copy(update={"backbone_config": vlm.config.to_dict()})
        _check_vocab(cfg, vlm.config.text_config.vocab_size, tokenizer)
        _check_sequence(cfg, vlm.config)
        model = VLA(cfg, vlm, expert)
        if pi_ckpt is not None:
            load_pi_weights(pi_ckpt, model)
        if not cfg.pretrained and cfg.init_scheme == "fan_in":
            fan_in_init(model)
        if cfg.vision is not None and cfg.vision.positions == "sincos":  # after fan_in_init, which redraws tables
            init_sincos_positions(model.vision_tower)
        if not cfg.pretrained and init_from is not None:  # a cotrain backbone checkpoint (backbone_ckpt.py)
            load_backbone(model, cfg, init_from)
    if cfg.lora_rank:
        _add_lora(model, cfg)
    apply_trainable(model, cfg)
    return model, cfg


def fan_in_init(model: nn.Module) -> None:
    """Redraw every linear weight from N(0, 1/fan_in) and every embedding from N(0, 1/width) (biases kept).

    transformers initialises Gemma with N(0, 0.02), about 1/sqrt(width) for its 2048-wide models. At
    the tiny preset's width of 64 (expert 32) that is 4-6x too small. Query-key logits start near zero,
    and the attention that binds an instruction word to image patches barely learns. The grounding
    probe (docs/ablation.md, "Where it fails") stays at the mean with N(0, 0.02) and learns with this.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, module.in_features ** -0.5)
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, module.embedding_dim ** -0.5)


def _check_vocab(cfg: ModelConfig, lm_vocab: int, tokenizer: TextTokenizer) -> None:
    if cfg.action_vocab_size and lm_vocab - cfg.action_token_skip - cfg.action_vocab_size < 0:
        raise ConfigError(f"model {cfg.preset!r}: {cfg.action_vocab_size} action ids + {cfg.action_token_skip} "
                          f"skipped do not fit the {lm_vocab}-entry vocabulary")
    if tokenizer.vocab_size > lm_vocab:
        raise ConfigError(f"model {cfg.preset!r}: the tokenizer has {tokenizer.vocab_size} ids, the embedding "
                          f"only {lm_vocab}")


def _check_sequence(cfg: ResolvedModelConfig, config: Any) -> None:
    """Gemma 2 alternates sliding-window layers; our attention is global, so the sequence must fit the window."""
    window = getattr(config.text_config, "sliding_window", None)
    vc = config.vision_config
    length = cfg.max_cameras * (vc.image_size // vc.patch_size) ** 2 + cfg.max_text_tokens + 1 + cfg.horizon
    if window and length > window:
        raise ConfigError(f"model {cfg.preset!r}: sequences of up to {length} tokens exceed the backbone's "
                          f"{window}-token sliding window; use fewer cameras or text tokens")


def _add_lora(model: VLA, cfg: ModelConfig) -> None:
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ConfigError("--lora-rank needs the peft package (pip install peft)") from None
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or cfg.lora_rank,  # type: ignore[arg-type]  # peft annotates int but only divides by it (scaling = alpha / r)
                      lora_dropout=0.0, target_modules=LORA_TARGETS, bias="none")
    inject_adapter_in_model(lora, model)


def _frozen_modules(model: VLA, cfg: ModelConfig) -> list[nn.Module]:
    frozen: list[nn.Module] = []
    if cfg.freeze in ("vision", "backbone") or cfg.lora_rank:
        frozen += [model.vision_tower, model.projector]
    if cfg.freeze == "backbone" or cfg.lora_rank:
        # VLA.blocks holds only MoTBlocks (a ModuleList types its items as plain modules)
        frozen += [model.embed_tokens, model.backbone_norm, *(cast(MoTBlock, b).backbone for b in model.blocks)]
        if model.lm_head is not None:
            frozen.append(model.lm_head)
    return frozen


def apply_trainable(model: VLA, cfg: ModelConfig) -> None:
    """Set requires_grad from `cfg.freeze` and `cfg.lora_rank` (see module docstring)."""
    for p in model.parameters():
        p.requires_grad_(True)
    for module in _frozen_modules(model, cfg):
        for p in module.parameters():
            p.requires_grad_(False)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts of `model`."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
