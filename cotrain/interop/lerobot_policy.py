"""`cotrain export lerobot RUN_DIR OUT`: a cotrain pi0 / pi0.5 run as a LeRobot policy directory.

Writes what LeRobot 0.4.4's `PI0Policy` / `PI05Policy.from_pretrained` and its processor pipelines
read (the layout of their own `save_pretrained`):
- `config.json`: `"type": "pi0" | "pi05"`, the embodiment's cameras as `observation.images.<camera>`,
  `observation.state` and `action` features with their real (unpadded) sizes, chunk size, padded
  dims, image resolution, flow settings, prompt length and the normalisation mode;
- `model.safetensors`: every tensor under LeRobot's names (`model.paligemma_with_expert...`); the tied
  embedding is stored once, as `...paligemma.lm_head.weight` like LeRobot's own files, and the action
  expert's LM head, which LeRobot's model has but never uses, as zeros so a strict load finds it;
- `policy_preprocessor.json` / `policy_postprocessor.json` + `*_normalizer_processor.safetensors`:
  LeRobot's pi0 / pi05 pipelines (tokenizer `google/paligemma-3b-pt-224`, as LeRobot's) with the
  run's statistics of the chosen source. cotrain floors the spread (max(std, floor), max(q99 - q01,
  floor)); the exported std / q99 carry the floor, so LeRobot normalises the same way. cotrain's clip
  to [-clip, clip] has no LeRobot counterpart: values outside the training range differ.

LeRobot builds its networks from the named variants only (gemma_2b + gemma_300m, SigLIP So400m/14,
257,152 tokens), so a model of other sizes is refused unless `any_size` (for tests that shrink LeRobot).
Written into a temporary sibling directory and renamed, so OUT is complete or absent.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cotrain.errors import ConfigError
from cotrain.model.config import ModelConfig, ResolvedModelConfig
from cotrain.model.pi_import import from_cotrain_name

__all__ = ["ExportedPolicy", "export_lerobot_policy"]

_STANDARD = {"text": {"hidden_size": 2048, "num_hidden_layers": 18, "intermediate_size": 16384,
                      "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 257152},
             "vision": {"hidden_size": 1152, "num_hidden_layers": 27, "intermediate_size": 4304,
                        "num_attention_heads": 16, "patch_size": 14}}
_EXPERT = (1024, 4096)
_TOKENIZER = "google/paligemma-3b-pt-224"
_LR = "model."
_EMBED = "model.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
_LM_HEAD = "model.paligemma_with_expert.paligemma.lm_head.weight"
_EXPERT_HEAD = "model.paligemma_with_expert.gemma_expert.lm_head.weight"


@dataclass(frozen=True)
class ExportedPolicy:
    """What `export_lerobot_policy` wrote: the folder, the architecture, the source and the tensor count."""

    out: Path
    arch: str
    source: str
    tensors: int


def _check_layout(cfg: ModelConfig, any_size: bool) -> None:
    if cfg.backbone != "gemma" or cfg.lora_rank:
        raise ConfigError(f"model {cfg.preset!r}: LeRobot's pi0/pi05 take a Gemma backbone without LoRA adapters")
    bc = cfg.backbone_config or {}
    text, vision = bc.get("text_config", {}), bc.get("vision_config", {})
    if text.get("num_attention_heads") != 8:
        raise ConfigError(f"model {cfg.preset!r}: {text.get('num_attention_heads')} attention heads; LeRobot's "
                          f"pi0/pi05 hard-code 8")
    if any_size:
        return
    for part, want in (("text", text), ("vision", vision)):
        for key, value in _STANDARD[part].items():
            if want.get(key) != value:
                raise ConfigError(f"model {cfg.preset!r}: {part} {key} is {want.get(key)}, LeRobot builds {value} "
                                  f"(gemma_2b / gemma_300m / SigLIP So400m only); pass --any-size to write it anyway")
    if (cfg.expert_width, cfg.expert_mlp) != _EXPERT:
        raise ConfigError(f"model {cfg.preset!r}: expert {cfg.expert_width}/{cfg.expert_mlp}, LeRobot builds "
                          f"gemma_300m (1024/4096); pass --any-size to write it anyway")


def _feature(kind: str, shape: list[int]) -> dict[str, Any]:
    return {"type": kind, "shape": shape}


def _config(cfg: ResolvedModelConfig, src: dict[str, Any], mode: str) -> dict[str, Any]:
    side = cfg.image_size
    inputs = {f"observation.images.{c}": _feature("VISUAL", [3, side, side]) for c in src["cameras"]}
    inputs["observation.state"] = _feature("STATE", [len(src["state_names"])])
    h = cfg.horizon
    return {
        "type": cfg.arch, "input_features": inputs,
        "output_features": {"action": _feature("ACTION", [len(src["action_names"])])},
        "device": "cpu", "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m", "dtype": "float32",
        "chunk_size": h, "n_action_steps": h, "max_state_dim": cfg.state_dim,
        "max_action_dim": cfg.action_dim, "num_inference_steps": cfg.flow_steps,
        "time_sampling_beta_alpha": cfg.time_beta[0], "time_sampling_beta_beta": cfg.time_beta[1],
        "image_resolution": [side, side], "tokenizer_max_length": cfg.max_text_tokens,
        "normalization_mapping": {"VISUAL": "IDENTITY", "STATE": mode, "ACTION": mode},
    }


def _state_dict(model: torch.nn.Module, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in model.state_dict().items():
        if name.endswith("inv_freq"):
            continue
        out[_LR + from_cotrain_name(name, cfg.arch)] = t.detach().float().contiguous().clone()
    out[_LM_HEAD] = out.pop(_EMBED)
    vocab = out[_LM_HEAD].shape[0]
    out[_EXPERT_HEAD] = torch.zeros(vocab, int(cfg.expert_width))
    return out


def _stats(norm: dict[str, Any], src: dict[str, Any]) -> dict[str, torch.Tensor]:
    """LeRobot normaliser state: per-feature mean/std/min/max/q01/q99 with cotrain's floor folded in."""
    floor = float(norm["floor"])
    out: dict[str, torch.Tensor] = {}
    for key, what in (("observation.state", "state"), ("action", "actions")):
        s = src.get(what)
        if not s:
            raise ConfigError(f"source has no {what} statistics; LeRobot's normaliser needs them")
        t = {k: torch.tensor(s[k], dtype=torch.float32) for k in ("mean", "std", "min", "max", "q01", "q99")}
        t["std"] = t["std"].clamp_min(floor)
        t["q99"] = t["q01"] + (t["q99"] - t["q01"]).clamp_min(floor)
        out.update({f"{key}.{k}": v for k, v in t.items()})
    return out


def _pipelines(cfg: ResolvedModelConfig, conf: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    features = {**conf["input_features"], **conf["output_features"]}
    mapping = conf["normalization_mapping"]
    norm = {"registry_name": "normalizer_processor",
            "config": {"eps": 1e-08, "features": features, "norm_map": mapping}}
    tok = {"registry_name": "tokenizer_processor", "config": {
        "max_length": cfg.max_text_tokens, "task_key": "task", "padding_side": "right", "padding": "max_length",
        "truncation": True, "tokenizer_name": _TOKENIZER}}
    device = {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}
    head = [{"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
            {"registry_name": "to_batch_processor", "config": {}}]
    if cfg.arch == "pi0":  # LeRobot's order: tokenise, then normalise
        steps = [*head, {"registry_name": "pi0_new_line_processor", "config": {}}, tok, device, norm]
    else:  # the state is normalised before it is cut into prompt bins
        # LeRobot's own files leave this config empty, which means 32 dims; say the model's (equal for real bases)
        bins = {"registry_name": "pi05_prepare_state_tokenizer_processor_step",
                "config": {"max_state_dim": cfg.state_dim, "task_key": "task"}}
        steps = [*head, norm, bins, tok, device]
    pre_index = steps.index(norm)
    norm["state_file"] = f"policy_preprocessor_step_{pre_index}_normalizer_processor.safetensors"
    unnorm = {"registry_name": "unnormalizer_processor", "config": {
        "eps": 1e-08, "features": conf["output_features"], "norm_map": mapping},
        "state_file": "policy_postprocessor_step_0_unnormalizer_processor.safetensors"}
    return {"name": "policy_preprocessor", "steps": steps}, {"name": "policy_postprocessor", "steps": [unnorm, device]}


def export_lerobot_policy(run_dir: str | Path, out: str | Path, source: str | None = None,
                          any_size: bool = False) -> ExportedPolicy:
    """Write the run's latest checkpoint as a LeRobot policy directory (module docstring)."""
    from safetensors.torch import save_file

    from cotrain.eval.policy import find_source, load_run

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not an empty directory; choose a new OUT")
    run = load_run(run_dir)
    cfg = run.cfg
    _check_layout(cfg, any_size)
    name, src = _pick_source(run.norm, source, find_source)
    mode = {"quantile": "QUANTILES", "mean_std": "MEAN_STD"}[run.norm["normalization"]]
    conf = _config(cfg, src, mode)
    pre, post = _pipelines(cfg, conf)
    stats = _stats(run.norm, src)
    tensors = _state_dict(run.model, cfg)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / "config.json").write_text(json.dumps(conf, indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / "model.safetensors"))
        for doc, state in ((pre, pre["steps"]), (post, post["steps"])):
            (tmp / f"{doc['name']}.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            for step in state:
                if "state_file" in step:
                    save_file(stats, str(tmp / step["state_file"]))
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportedPolicy(out, cfg.arch, name, len(tensors))


def _pick_source(norm: dict[str, Any], source: str | None, find: Any) -> tuple[str, dict[str, Any]]:
    if source is not None:
        return find(norm, source)
    robots = [(n, s) for n, s in norm["sources"].items() if s.get("actions") and s.get("state")]
    if len(robots) != 1:
        names = ", ".join(n for n, _ in robots) or "none"
        raise ConfigError(f"the run has {len(robots)} sources with state and actions ({names}); pick one with --source")
    return robots[0]
