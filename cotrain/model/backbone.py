"""The PaliGemma backbone and the Gemma action expert, built with transformers.

- Random-init presets (`tiny`, `small`) build a `PaliGemmaConfig` from `SiglipVisionConfig` +
  `GemmaConfig` and instantiate `PaliGemmaForConditionalGeneration` from it.
- `paligemma` / `paligemma2` load a local Hugging Face checkpoint directory (`--init-from DIR`):
  `config.json` (model_type `paligemma`, text model `gemma` or `gemma2`), safetensors weights
  (`model.safetensors`, or `model.safetensors.index.json` and every shard it lists) and
  `tokenizer.json`. Nothing is fetched from the network; `.bin` (pickle) weights are refused.
- The expert is the text model's class (`GemmaModel` / `Gemma2Model`) from a copy of the text
  config with the expert's width and MLP size; depth, heads, KV heads, head_dim, RoPE and (Gemma 2)
  soft-capping are the backbone's, as the one shared attention requires. Its embedding is unused.

A random-init tower may have its patch embedding swapped for a convolutional stem
(`VisionSpec.stem = "conv"`, vision_stem.py); the tower's own forward is kept.

Only the weights are taken from transformers; the forward pass (embedding scaling included) is our
own (vla.py), so the transformers 4.x -> 5.4 move of the sqrt(width) factor cannot change it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from cotrain.errors import ConfigError
from cotrain.model.config import ModelConfig
from cotrain.model.vision_stem import apply_vision_front_end

__all__ = ["build_networks", "check_checkpoint_dir", "lm_vocab_size", "random_backbone_config"]

_EXPECTED = "a Hugging Face PaliGemma checkpoint directory (config.json, model*.safetensors, tokenizer.json)"
_TEXT_TYPES = {"gemma": "paligemma", "gemma2": "paligemma2"}


def lm_vocab_size(cfg: ModelConfig, text_vocab: int) -> int:
    """Random-init vocabulary: the text tokenizer's ids, then the skipped ids, then the action-token tail."""
    return text_vocab + cfg.action_token_skip + cfg.action_vocab_size


def random_backbone_config(cfg: ModelConfig, text_vocab: int) -> Any:
    """A `PaliGemmaConfig` for a random-init preset whose data sizes are resolved."""
    from transformers import Gemma2Config, GemmaConfig, PaliGemmaConfig, SiglipVisionConfig

    v, t = cfg.vision, cfg.text
    if v is None or t is None or cfg.image_size is None:
        raise ConfigError(f"preset {cfg.preset!r}: vision/text sizes and image_size must be set to build it")
    if cfg.image_size % v.patch_size:
        raise ConfigError(f"image_size {cfg.image_size} is not a multiple of the preset's patch size {v.patch_size}")
    vocab = lm_vocab_size(cfg, text_vocab)
    vision = SiglipVisionConfig(hidden_size=v.width, intermediate_size=v.mlp, num_hidden_layers=v.depth,
                                num_attention_heads=v.heads, image_size=cfg.image_size, patch_size=v.patch_size,
                                vision_use_head=False)
    text_cls = Gemma2Config if cfg.backbone == "gemma2" else GemmaConfig
    extra: dict[str, Any] = {"query_pre_attn_scalar": t.head_dim} if cfg.backbone == "gemma2" else {}
    text = text_cls(hidden_size=t.width, intermediate_size=t.mlp, num_hidden_layers=t.depth,
                    num_attention_heads=t.heads, num_key_value_heads=t.kv_heads, head_dim=t.head_dim,
                    vocab_size=vocab, **extra)
    # image_token_index only matters to transformers' own forward; out of vocabulary it is never embedded.
    return PaliGemmaConfig(vision_config=vision, text_config=text, projection_dim=t.width, hidden_size=t.width,
                           vocab_size=vocab, image_token_index=vocab)


def check_checkpoint_dir(path: str | Path, backbone: str) -> dict[str, Any]:
    """Validate a local PaliGemma checkpoint directory; returns its config.json. One-line ConfigErrors."""
    root = Path(path)
    if not root.exists():
        raise ConfigError(f"--init-from {root}: directory not found (expected {_EXPECTED})")
    if not root.is_dir():
        raise ConfigError(f"--init-from {root}: not a directory (expected {_EXPECTED})")
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{root}: no config.json; expected {_EXPECTED}")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{cfg_path}: unreadable: {exc}") from None
    if raw.get("model_type") != "paligemma":
        raise ConfigError(f"{cfg_path}: model_type is {raw.get('model_type')!r}, not 'paligemma'; expected {_EXPECTED}")
    text_type = (raw.get("text_config") or {}).get("model_type", "gemma")
    if text_type != backbone:
        raise ConfigError(f"{root}: the text model is {text_type!r} but the preset needs {backbone!r} "
                          f"(use --model {_TEXT_TYPES.get(text_type, 'paligemma')})")
    _check_weights(root)
    if not (root / "tokenizer.json").is_file():
        raise ConfigError(f"{root}: no tokenizer.json (the text tokenizer is read from it; tokenizer.model alone "
                          f"is not enough)")
    return raw


def _check_weights(root: Path) -> None:
    index = root / "model.safetensors.index.json"
    if (root / "model.safetensors").is_file():
        return
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"{index}: unreadable index: {exc}") from None
        missing = [s for s in shards if not (root / s).is_file()]
        if missing:
            raise ConfigError(f"{root}: incomplete checkpoint: {missing[0]} (listed in {index.name}) is missing"
                              f"{f' with {len(missing) - 1} more' if len(missing) > 1 else ''}")
        return
    if any(root.glob("*.bin")):
        raise ConfigError(f"{root}: only PyTorch .bin weights; cotrain loads safetensors only (no pickle)")
    raise ConfigError(f"{root}: no model.safetensors or model.safetensors.index.json; expected {_EXPECTED}")


def _expert(text_config: Any, cfg: ModelConfig) -> Any:
    from transformers import AutoModel

    ecfg = copy.deepcopy(text_config)
    ecfg.hidden_size = cfg.expert_width
    ecfg.intermediate_size = cfg.expert_mlp
    ecfg.vocab_size = 8  # the expert has no token inputs; keep its unused embedding tiny
    expert = AutoModel.from_config(ecfg)
    expert.embed_tokens = None
    return expert


def build_networks(cfg: ModelConfig, init_from: str | Path | None = None) -> tuple[Any, Any]:
    """(PaliGemmaForConditionalGeneration, expert text model): loaded from `init_from`, else random init.

    Random init draws from torch's global generator: callers seed it (factory.build_vla does, inside
    `fork_rng`, so their own RNG state is left untouched and a seed always gives the same weights).
    """
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    if init_from is not None:
        check_checkpoint_dir(init_from, cfg.backbone)
        vlm = PaliGemmaForConditionalGeneration.from_pretrained(str(init_from), local_files_only=True,
                                                                dtype=torch.float32)
    else:
        if cfg.backbone_config is None:
            raise ConfigError(f"preset {cfg.preset!r}: no backbone config resolved (pass --init-from DIR)")
        vlm = PaliGemmaForConditionalGeneration(PaliGemmaConfig.from_dict(cfg.backbone_config))
        if cfg.vision is not None:
            apply_vision_front_end(vlm.model.vision_tower, cfg.vision.stem)
    return vlm, _expert(vlm.config.text_config, cfg)
