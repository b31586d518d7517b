"""Fit a model preset to a mixture, before anything is built: sizes, modalities, one-line ConfigErrors.

Data sizes the preset leaves open come from the mixture (image side, camera slots, horizon, padded
state/action dims). Then every source is checked against the model:
- its action/state dims must fit the padded dims (a 14-dim arm does not fit `--set action_dim=7`);
- robot and human-video sources need actions; action-token sources need an action vocabulary at
  least as large as their tokenizer's (manifest `extra.tokenizer.vocab_size`);
- vision-language and annotation sources need a non-zero text loss weight (else they add nothing);
- pretrained checkpoints fix the image side: the mixture's `image_size` must equal it.
The norm-stats record saved with the run is built here too, from the same manifests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cotrain.dataset import keys
from cotrain.errors import ConfigError
from cotrain.mix.collate import Collator
from cotrain.mix.resolve import Mixture
from cotrain.model.config import PI_PRESETS, ModelConfig, ResolvedModelConfig, get_preset, with_overrides
from cotrain.train.config import TrainConfig

__all__ = ["collator_for", "norm_stats_record", "resolve_model_config"]

_ACTION_MODALITIES = (keys.ROBOT, keys.HUMAN_VIDEO, keys.ACTION_TOKENS_MODALITY)
_TEXT_MODALITIES = (keys.VISION_LANGUAGE, keys.ANNOTATION)


def resolve_model_config(cfg: TrainConfig, mixture: Mixture) -> ResolvedModelConfig:
    """The preset with the run's overrides and the mixture's sizes, checked against every source."""
    model = with_overrides(_checkpoint_preset(cfg), **cfg.model.overrides())
    spec, ms = mixture.spec, [s.manifest for s in mixture.sources]
    image_size = _image_size(model, cfg, spec.image_size, mixture.path)
    sizes = {
        "image_size": image_size,
        "max_cameras": model.max_cameras or spec.max_cameras or max(1, max(len(m.cameras) for m in ms)),
        "horizon": model.horizon or spec.horizon or max((m.horizon or 1) for m in ms),
        "action_dim": model.action_dim or max(1, max(len(m.action_names) for m in ms)),
        "state_dim": model.state_dim or max(1, max(len(m.state_names) for m in ms)),
    }
    resolved = with_overrides(model, **sizes).resolved()
    for src in mixture.sources:
        _check_source(resolved, src.name, src.manifest)
    return resolved


def _checkpoint_preset(cfg: TrainConfig) -> ModelConfig:
    """The preset; for pi0 / pi0.5 with the sizes of the --init-from checkpoint (pi_import.py)."""
    model = get_preset(cfg.model.preset)
    if model.preset not in PI_PRESETS:
        return model
    if cfg.model.init_from is None:
        raise ConfigError(f"preset {model.preset!r} loads pretrained weights: pass --init-from DIR (a LeRobot "
                          f"{model.preset} policy directory or openpi's PyTorch conversion)")
    from cotrain.model.pi_import import model_updates, read_pi_checkpoint

    updates = model_updates(read_pi_checkpoint(cfg.model.init_from), model.arch)
    updates.pop("backbone_config")  # set when the model is built, which also loads the weights
    return with_overrides(model, **updates)


def _image_size(model: ModelConfig, cfg: TrainConfig, mixture_side: int, where: str) -> int:
    init_from = cfg.model.init_from
    if model.preset in PI_PRESETS and model.image_size != mixture_side:
        raise ConfigError(f"{where}: image_size is {mixture_side} but the checkpoint {init_from} takes "
                          f"{model.image_size}x{model.image_size} images; "
                          f"set image_size: {model.image_size} in the mixture")
    if not model.pretrained or model.preset in PI_PRESETS:
        if model.image_size is not None and model.image_size != mixture_side:
            raise ConfigError(f"{where}: image_size is {mixture_side} but preset {model.preset!r} takes "
                              f"{model.image_size}x{model.image_size} images; set image_size: {model.image_size}")
        return model.image_size or mixture_side
    if init_from is None:
        raise ConfigError(f"preset {model.preset!r} loads pretrained weights: pass --init-from DIR (a local "
                          f"Hugging Face PaliGemma checkpoint directory)")
    from cotrain.model.backbone import check_checkpoint_dir

    raw = check_checkpoint_dir(init_from, model.backbone)
    side = int((raw.get("vision_config") or {}).get("image_size", 224))
    if side != mixture_side:
        raise ConfigError(f"{where}: image_size is {mixture_side} but the checkpoint {init_from} takes "
                          f"{side}x{side} images; set image_size: {side} in the mixture")
    return side


def _check_source(model: ResolvedModelConfig, name: str, manifest: Any) -> None:
    modality, where = manifest.modality, f"source {name!r} ({manifest.modality})"
    if modality not in keys.MODALITIES:
        raise ConfigError(f"{where}: unknown modality; the model takes {', '.join(keys.MODALITIES)}")
    na, ns = len(manifest.action_names), len(manifest.state_names)
    if na > model.action_dim:
        raise ConfigError(f"{where}: {na} action dims do not fit the model's {model.action_dim} "
                          f"(raise it: --set action_dim={na})")
    if ns > model.state_dim:
        raise ConfigError(f"{where}: {ns} state dims do not fit the model's {model.state_dim} "
                          f"(raise it: --set state_dim={ns})")
    if modality in _ACTION_MODALITIES and modality != keys.ACTION_TOKENS_MODALITY and not na:
        raise ConfigError(f"{where}: has no actions, so the flow loss has nothing to learn from")
    if modality == keys.ACTION_TOKENS_MODALITY:
        vocab = int(((manifest.extra or {}).get("tokenizer") or {}).get("vocab_size", 0))
        if not model.action_vocab_size:
            raise ConfigError(f"{where}: model {model.preset!r} has no action-token vocabulary "
                              f"(pass --set action_vocab_size={vocab or 1024})")
        if vocab > model.action_vocab_size:
            raise ConfigError(f"{where}: its tokenizer has {vocab} ids, the model takes {model.action_vocab_size} "
                              f"(raise it: --set action_vocab_size={vocab})")
        if model.action_token_loss_weight == 0 and not na:
            raise ConfigError(f"{where}: contributes no loss (action-token loss weight is 0)")
    if modality in _TEXT_MODALITIES and model.text_loss_weight == 0:
        raise ConfigError(f"{where}: contributes no loss (text loss weight is 0)")


def collator_for(model: ResolvedModelConfig) -> Collator:
    """Pads every batch straight to the model's sizes."""
    return Collator(max_cameras=model.max_cameras, image_size=model.image_size, state_dim=model.state_dim,
                    action_dim=model.action_dim, horizon=model.horizon)


def norm_stats_record(mixture: Mixture) -> dict[str, Any]:
    """Per-source normalisation facts `Policy` and `cotrain eval` need to (de)normalise like the loader."""
    spec = mixture.spec
    sources = {}
    for i, src in enumerate(mixture.sources):
        m = src.manifest
        sources[src.name] = {
            "index": i, "url": src.url, "modality": m.modality, "embodiment": m.embodiment, "cameras": list(m.cameras),
            "state_names": list(m.state_names), "action_names": list(m.action_names), "horizon": m.horizon,
            "state": m.stats.state.model_dump(mode="json") if m.stats.state else None,
            "actions": m.stats.actions.model_dump(mode="json", exclude={"per_timestep"}) if m.stats.actions else None,
        }
    return {"normalization": spec.normalization, "floor": spec.quantile_floor, "clip": spec.clip,
            "image_size": spec.image_size, "sources": sources}


def write_json(path: Path, obj: Any) -> None:
    from cotrain.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")
