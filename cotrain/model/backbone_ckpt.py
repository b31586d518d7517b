"""cotrain backbone checkpoints: the vision-language half of a random-init preset, saved and loaded.

A PaliGemma checkpoint gives a VLA its vision tower, projector, token embedding and language
layers; the action expert and the action/state heads start fresh. A cotrain backbone checkpoint is
the same thing for the random-init presets (`sim-paligemma`, `tiny-conv`, ...), whose front ends
(conv stem, fixed position grid) transformers cannot rebuild from a PaliGemma `config.json`:

    DIR/config.json         {"format": "cotrain-backbone", "version": 1, "preset", "architecture",
                             "image_size", "vocab_size", "parameters", "recipe"}
    DIR/model.safetensors   the backbone's tensors under the VLA's own names (vision_tower.*,
                             projector.*, embed_tokens.*, backbone_norm.*, blocks.N.backbone.*)

`cotrain train --model P --init-from DIR` loads it the way `--init-from` loads PaliGemma: the
architecture recorded in config.json must equal preset P's, and every backbone tensor must be
present with its shape (no more, no fewer); anything else is a one-line ConfigError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cotrain.errors import ConfigError
from cotrain.model.config import ModelConfig

__all__ = ["BACKBONE_FORMAT", "architecture_of", "is_backbone_dir", "backbone_state", "load_backbone",
           "read_backbone_config", "save_backbone"]

BACKBONE_FORMAT = "cotrain-backbone"
_VERSION = 1
_PREFIXES = ("vision_tower.", "projector.", "embed_tokens.", "backbone_norm.", "lm_head.")


def architecture_of(cfg: ModelConfig) -> dict[str, Any]:
    """What must match between a backbone checkpoint and the preset it is loaded into."""
    if cfg.vision is None or cfg.text is None:
        raise ConfigError(f"preset {cfg.preset!r} is not a random-init preset: it has no backbone of its own to save")
    return {"vision": cfg.vision.model_dump(mode="json"), "text": cfg.text.model_dump(mode="json"),
            "backbone": cfg.backbone}


def _is_backbone_key(name: str) -> bool:
    if name.startswith(_PREFIXES):
        return True
    parts = name.split(".")
    return len(parts) > 2 and parts[0] == "blocks" and parts[2] == "backbone"


def backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's tensors of a VLA, contiguous float32 copies (safetensors stores no views)."""
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()
            if _is_backbone_key(k)}


def save_backbone(model: nn.Module, cfg: ModelConfig, directory: str | Path, recipe: dict[str, Any]) -> Path:
    """Write DIR/model.safetensors and DIR/config.json (atomically, config last); returns DIR."""
    from safetensors.torch import save

    from cotrain.atomic import write_bytes_atomic, write_text_atomic

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    tensors = backbone_state(model)
    write_bytes_atomic(root / "model.safetensors", save(tensors, metadata={"format": BACKBONE_FORMAT}))
    write_text_atomic(root / "config.json", json.dumps({
        "format": BACKBONE_FORMAT, "version": _VERSION, "preset": cfg.preset, "architecture": architecture_of(cfg),
        "image_size": cfg.image_size, "vocab_size": cfg.text_vocab_size,
        "parameters": sum(t.numel() for t in tensors.values()), "recipe": recipe}, indent=2) + "\n")
    return root


def is_backbone_dir(path: str | Path) -> bool:
    """Whether `path` holds a cotrain backbone checkpoint (its config.json says so)."""
    cfg = Path(path) / "config.json"
    try:
        return bool(json.loads(cfg.read_text(encoding="utf-8")).get("format") == BACKBONE_FORMAT)
    except (OSError, ValueError, AttributeError):
        return False


def read_backbone_config(path: str | Path) -> dict[str, Any]:
    """DIR/config.json of a backbone checkpoint, checked for its format and version."""
    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"--init-from {path}: no config.json (expected a cotrain backbone checkpoint: config.json "
                          f"+ model.safetensors)")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{cfg_path}: unreadable: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != BACKBONE_FORMAT:
        raise ConfigError(f"{cfg_path}: not a cotrain backbone checkpoint (format must be {BACKBONE_FORMAT!r})")
    if raw.get("version") != _VERSION:
        raise ConfigError(f"{cfg_path}: backbone checkpoint version {raw.get('version')!r}; this cotrain reads "
                          f"version {_VERSION}")
    return raw


def check_backbone_fits(raw: dict[str, Any], cfg: ModelConfig, where: str) -> None:
    """The checkpoint's architecture, image size and vocabulary must be the preset's."""
    want = architecture_of(cfg)
    for key in ("vision", "text", "backbone"):
        if raw.get("architecture", {}).get(key) != want[key]:
            raise ConfigError(f"{where}: the checkpoint's {key} architecture {raw.get('architecture', {}).get(key)} "
                              f"is not preset {cfg.preset!r}'s {want[key]} (use --model {raw.get('preset')})")
    if cfg.image_size is not None and raw.get("image_size") not in (None, cfg.image_size):
        raise ConfigError(f"{where}: the checkpoint takes {raw['image_size']}x{raw['image_size']} images, the run "
                          f"{cfg.image_size}x{cfg.image_size}; set image_size: {raw['image_size']} in the mixture")
    if cfg.text_vocab_size is not None and raw.get("vocab_size") not in (None, cfg.text_vocab_size):
        raise ConfigError(f"{where}: the checkpoint's vocabulary has {raw['vocab_size']} text ids, the run's "
                          f"tokenizer {cfg.text_vocab_size}")


def load_backbone(model: nn.Module, cfg: ModelConfig, path: str | Path) -> None:
    """Copy a backbone checkpoint into `model` (a VLA built from `cfg`); strict on names and shapes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    where = f"--init-from {path}"
    check_backbone_fits(read_backbone_config(path), cfg, where)
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{where}: no model.safetensors")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"{weights}: unreadable safetensors file: {exc}") from None
    own = {k: v for k, v in model.state_dict().items() if _is_backbone_key(k)}
    missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if missing or extra:
        name = missing[0] if missing else extra[0]
        raise ConfigError(f"{weights}: tensor {name!r} is {'missing' if missing else 'not part of the backbone'} "
                          f"({len(missing)} missing, {len(extra)} unexpected)")
    for name, tensor in tensors.items():
        if tensor.shape != own[name].shape:
            raise ConfigError(f"{weights}: tensor {name!r} has shape {tuple(tensor.shape)}, the model "
                              f"{tuple(own[name].shape)}")
        if not torch.isfinite(tensor).all():
            raise ConfigError(f"{weights}: tensor {name!r} holds NaN or Inf")
    with torch.no_grad():
        for name, tensor in tensors.items():
            own[name].copy_(tensor.to(own[name].dtype))
