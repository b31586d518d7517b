"""pi0 / pi0.5 checkpoints in and out: LeRobot policy directories and openpi's PyTorch conversion.

Layouts read (a local directory, `--init-from DIR`):
- LeRobot `PI0Policy` / `PI05Policy.save_pretrained`: `config.json` (`"type": "pi0" | "pi05"`, chunk_size,
  max_state_dim, max_action_dim, ...) and `model.safetensors` whose names start with `model.`;
- openpi `examples/convert_jax_model_to_pytorch.py`: `config.json` (action_dim, action_horizon,
  paligemma_variant, action_expert_variant, precision), `model.safetensors` with the same names
  without `model.`, and `assets/<asset_id>/norm_stats.json`.
Both name tensors after openpi's `PI0Pytorch` (transformers >= 4.52 naming:
`paligemma_with_expert.paligemma.model.language_model.layers.N...`). Each maps onto cotrain's
mixture of transformers (`blocks.N.backbone` / `blocks.N.expert`, ...). Tensors the network never
reads are skipped by name: the PaliGemma LM head (tied to the embedding) and the expert's LM head
(the expert has no token output). Anything else unmapped, or any shape that differs, is refused with
a one-line ConfigError naming the tensor.

Sizes come from the tensors, not from the variant names, so shrunken checkpoints load: widths,
depths and MLP sizes are read off the weights; heads are 8 as both producers hard-code them
(LeRobot `compute_layer_complete` reshapes to 8 * head_dim), so head_dim = q rows / 8; SigLIP heads
are width / 72 (So400m's head size).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cotrain.errors import ConfigError

__all__ = ["PiCheckpoint", "backbone_config", "from_cotrain_name", "load_pi_weights", "model_updates",
           "read_pi_checkpoint", "to_cotrain_name"]

PI_HEADS = 8
SIGLIP_HEAD_DIM = 72
_LR = "model."
_PG = "paligemma_with_expert.paligemma.model."
_EX = "paligemma_with_expert.gemma_expert.model."
_PREFIXES = (  # (checkpoint prefix, cotrain prefix); layers are handled by _LAYER
    # transformers 5 holds the SigLIP transformer itself where 4.x wraps it in `vision_model`
    (_PG + "vision_tower.vision_model.", "vision_tower."),
    (_PG + "multi_modal_projector.", "projector."),
    (_PG + "language_model.embed_tokens.", "embed_tokens."),
    (_PG + "language_model.norm.", "backbone_norm."),
    (_EX + "norm.", "expert_norm."),
    ("state_proj.", "state_proj."),
    ("action_in_proj.", "action_in_proj."),
    ("action_out_proj.", "action_out_proj."),
    ("action_time_mlp_in.", "time_mlp_in."),
    ("action_time_mlp_out.", "time_mlp_out."),
    ("time_mlp_in.", "time_mlp_in."),
    ("time_mlp_out.", "time_mlp_out."),
)
_LAYER = re.compile(r"paligemma_with_expert\.(paligemma\.model\.language_model|gemma_expert\.model)"
                    r"\.layers\.(\d+)\.(.+)")
_EMBED = _PG + "language_model.embed_tokens.weight"
_LM_HEAD = "paligemma_with_expert.paligemma.lm_head.weight"
_UNUSED = (_LM_HEAD, "paligemma_with_expert.gemma_expert.lm_head.weight")
_EXPECTED = ("a LeRobot pi0/pi05 policy directory or openpi's PyTorch conversion "
             "(config.json + model.safetensors)")


@dataclass(frozen=True)
class PiCheckpoint:
    """A validated pi0 / pi0.5 checkpoint directory: its layout, architecture, config and tensor shapes."""

    root: Path
    layout: str  # "lerobot" | "openpi"
    arch: str  # "pi0" | "pi05"
    config: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]  # canonical (openpi) names
    raw_names: dict[str, str]  # canonical name -> name in the file

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self.shapes:
            raise ConfigError(f"{self.root / 'model.safetensors'}: missing tensor {name!r} ({_EXPECTED})")
        return self.shapes[name]

    def count(self, prefix: str) -> int:
        pat = re.compile(re.escape(prefix) + r"(\d+)\.")
        found = {int(m.group(1)) for n in self.shapes if (m := pat.match(n))}
        return max(found) + 1 if found else 0


def _canonical(name: str, layout: str) -> str:
    return name[len(_LR):] if layout == "lerobot" and name.startswith(_LR) else name


def read_pi_checkpoint(path: str | Path) -> PiCheckpoint:
    """Validate a pi0 / pi0.5 checkpoint directory (module docstring); one-line ConfigErrors."""
    from safetensors import safe_open

    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"--init-from {root}: not a directory (expected {_EXPECTED})")
    cfg_path, weights = root / "config.json", root / "model.safetensors"
    for f in (cfg_path, weights):
        if not f.is_file():
            raise ConfigError(f"{root}: no {f.name}; expected {_EXPECTED}")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
        with safe_open(str(weights), framework="pt") as fh:
            names = list(fh.keys())
            layout = "lerobot" if isinstance(raw, dict) and raw.get("type") in ("pi0", "pi05") else "openpi"
            raw_names = {_canonical(n, layout): n for n in names}
            shapes = {c: tuple(fh.get_slice(n).get_shape()) for c, n in raw_names.items()}
    except (OSError, json.JSONDecodeError, ValueError) as exc:
        raise ConfigError(f"{root}: unreadable checkpoint: {exc}") from None
    if not isinstance(raw, dict) or (layout == "openpi" and "paligemma_variant" not in raw):
        raise ConfigError(f"{cfg_path}: neither a LeRobot pi0/pi05 config (\"type\") nor openpi's "
                          f"(\"paligemma_variant\"); expected {_EXPECTED}")
    if layout == "lerobot":
        arch = str(raw["type"])
    else:
        arch = "pi05" if "state_proj.weight" not in shapes else "pi0"
    if _EMBED not in shapes and _LM_HEAD in shapes:  # safetensors' save_model keeps one name of a tied pair
        raw_names[_EMBED] = raw_names.pop(_LM_HEAD)
        shapes[_EMBED] = shapes.pop(_LM_HEAD)
    return PiCheckpoint(root, layout, arch, raw, shapes, raw_names)


def _text_config(ck: PiCheckpoint) -> dict[str, Any]:
    vocab, width = ck.shape(_EMBED)
    layer0 = _PG + "language_model.layers.0."
    head_dim = ck.shape(layer0 + "self_attn.q_proj.weight")[0] // PI_HEADS
    return {"model_type": "gemma", "hidden_size": width,
            "intermediate_size": ck.shape(layer0 + "mlp.gate_proj.weight")[0],
            "num_hidden_layers": ck.count(_PG + "language_model.layers."), "num_attention_heads": PI_HEADS,
            "num_key_value_heads": ck.shape(layer0 + "self_attn.k_proj.weight")[0] // head_dim,
            "head_dim": head_dim, "vocab_size": vocab, "hidden_activation": "gelu_pytorch_tanh"}


def _vision_config(ck: PiCheckpoint) -> dict[str, Any]:
    emb = _PG + "vision_tower.vision_model.embeddings."
    width, _, patch, _ = ck.shape(emb + "patch_embedding.weight")
    side = patch * math.isqrt(ck.shape(emb + "position_embedding.weight")[0])
    if width % SIGLIP_HEAD_DIM:
        raise ConfigError(f"{ck.root}: vision width {width} is not a multiple of SigLIP's head size {SIGLIP_HEAD_DIM}")
    layers = _PG + "vision_tower.vision_model.encoder.layers."
    return {"model_type": "siglip_vision_model", "hidden_size": width, "patch_size": patch, "image_size": side,
            "intermediate_size": ck.shape(layers + "0.mlp.fc1.weight")[0], "num_hidden_layers": ck.count(layers),
            "num_attention_heads": width // SIGLIP_HEAD_DIM, "vision_use_head": False}


def backbone_config(ck: PiCheckpoint) -> dict[str, Any]:
    """The transformers PaliGemmaConfig (as a dict) of the checkpoint's backbone."""
    from transformers import PaliGemmaConfig

    text, vision = _text_config(ck), _vision_config(ck)
    vocab = text["vocab_size"]
    cfg = PaliGemmaConfig(vision_config=vision, text_config=text, projection_dim=text["hidden_size"],
                          hidden_size=text["hidden_size"], vocab_size=vocab, image_token_index=vocab)
    return cfg.to_dict()


def model_updates(ck: PiCheckpoint, preset: str) -> dict[str, Any]:
    """ModelConfig fields the checkpoint fixes (sizes, flow settings, the backbone config)."""
    if ck.arch != preset:
        raise ConfigError(f"{ck.root}: the checkpoint is {ck.arch}, not {preset}; use --model {ck.arch}")
    width = ck.shape("action_in_proj.weight")[0]
    c = ck.config
    out: dict[str, Any] = {"expert_width": width, "expert_mlp": ck.shape(_EX + "layers.0.mlp.gate_proj.weight")[0],
                           "action_dim": ck.shape("action_in_proj.weight")[1], "backbone_config": backbone_config(ck)}
    if ck.layout == "lerobot":
        out.update(horizon=int(c["chunk_size"]), flow_steps=int(c.get("num_inference_steps", 10)),
                   time_beta=(float(c.get("time_sampling_beta_alpha", 1.5)),
                              float(c.get("time_sampling_beta_beta", 1.0))),
                   max_text_tokens=int(c.get("tokenizer_max_length", 48)))
    else:
        out["horizon"] = int(c.get("action_horizon", 50))
    out["state_dim"] = (ck.shape("state_proj.weight")[1] if ck.arch == "pi0"
                        else int(c.get("max_state_dim", out["action_dim"])))
    out["image_size"] = int(out["backbone_config"]["vision_config"]["image_size"])
    return out


def to_cotrain_name(name: str) -> str | None:
    """The cotrain parameter a canonical checkpoint tensor fills; None when it is unknown."""
    m = _LAYER.fullmatch(name)
    if m:
        stream = "backbone" if m.group(1).startswith("paligemma") else "expert"
        return f"blocks.{m.group(2)}.{stream}.{m.group(3)}"
    for src, dst in _PREFIXES:
        if name.startswith(src):
            return dst + name[len(src):]
    return None


def from_cotrain_name(name: str, arch: str) -> str:
    """The canonical (openpi) name of a cotrain parameter; pi0 keeps openpi's `action_time_mlp_*`."""
    name = name.replace("vision_tower.vision_model.", "vision_tower.")
    m = re.fullmatch(r"blocks\.(\d+)\.(backbone|expert)\.(.+)", name)
    if m:
        stream = "paligemma.model.language_model" if m.group(2) == "backbone" else "gemma_expert.model"
        return f"paligemma_with_expert.{stream}.layers.{m.group(1)}.{m.group(3)}"
    for src, dst in _PREFIXES:
        if name.startswith(dst) and not (dst.startswith("time_mlp") and (arch == "pi0") != src.startswith("action_")):
            return src + name[len(dst):]
    raise KeyError(name)


def load_pi_weights(ck: PiCheckpoint, model: torch.nn.Module) -> None:
    """Fill `model` from the checkpoint in place, one tensor at a time (no second copy of a 3B model),
    after checking every name and shape first, so a refused checkpoint leaves the model untouched."""
    from safetensors import safe_open

    target = model.state_dict()
    where = ck.root / "model.safetensors"
    plan: dict[str, str] = {}
    for name, raw in ck.raw_names.items():
        if name in _UNUSED:
            continue
        dst = to_cotrain_name(name)
        if dst is not None and dst not in target and dst.startswith("vision_tower."):
            dst = "vision_tower.vision_model." + dst[len("vision_tower."):]
        if dst is None or dst not in target:
            raise ConfigError(f"{where}: tensor {raw!r} maps to nothing in cotrain's {ck.arch} model")
        if ck.shapes[name] != tuple(target[dst].shape):
            raise ConfigError(f"{where}: tensor {raw!r} has shape {list(ck.shapes[name])}, cotrain's {dst} takes "
                              f"{list(target[dst].shape)}")
        plan[dst] = raw
    missing = [n for n in target if n not in plan and not n.endswith("inv_freq")]
    if missing:
        raise ConfigError(f"{where}: no tensor for cotrain's {missing[0]} (expected "
                          f"{from_cotrain_name(missing[0], ck.arch)!r})")
    with torch.no_grad(), safe_open(str(where), framework="pt") as fh:
        for dst, raw in plan.items():
            target[dst].copy_(fh.get_tensor(raw))
