"""Inference from a run directory: `cotrain.Policy.load(run_dir).predict(images, state, instruction, embodiment)`.

`load` reads a checkpoint (the run's latest, or a given `checkpoints/step_*` directory): the stored
model config rebuilds the network offline (no --init-from needed), `model.safetensors` fills it,
`tokenizer.json` and `norm_stats.json` come from the same directory. `predict` prepares one
observation exactly like the training loader does (JPEG round trip, letterbox to the model's side,
the source's normalisation with the same floor and clip), samples a chunk with the cached prefix
and `flow_steps` Euler steps, and returns it denormalised to the embodiment's units, [H, Da].
`predict_batch` does the same for several `Observation`s in one forward pass (the policy server
batches concurrent clients through it); each observation keeps its own noise seed.

`embodiment` names a training source or an embodiment; when several sources share an embodiment
with different stats, name the source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cotrain.dataset.manifest import DimStats
from cotrain.errors import ConfigError
from cotrain.mix.collate import Collator
from cotrain.mix.transform import StatsNormalizer, build_normalizer, letterbox_jpeg
from cotrain.model.config import ModelConfig, ResolvedModelConfig
from cotrain.model.inputs import ModelInputs, build_inputs
from cotrain.model.text import TextLayout, TextTokenizer
from cotrain.model.vla import VLA

__all__ = ["LoadedRun", "Observation", "Policy", "load_run"]


@dataclass(frozen=True)
class Observation:
    """One observation for `Policy.predict_batch`: the arguments of `Policy.predict`, named.

    Args:
        images: camera name -> HxWx3 uint8 array (or JPEG bytes), or a list in the embodiment's camera order.
        state: the raw proprioceptive state [Ds].
        instruction: the task text.
        embodiment: a training source name or embodiment name.
        seed: seed of this observation's initial noise.
    """

    images: Mapping[str, Any] | Sequence[Any]
    state: Any
    instruction: str
    embodiment: str
    seed: int = 0


@dataclass
class LoadedRun:
    """A trained model with what it needs to read data like its training loader."""

    checkpoint: Path
    step: int
    model: VLA
    cfg: ResolvedModelConfig
    layout: TextLayout
    norm: dict[str, Any]
    device: torch.device

    def collator(self) -> Collator:
        c = self.cfg
        return Collator(max_cameras=c.max_cameras, image_size=c.image_size, state_dim=c.state_dim,
                        action_dim=c.action_dim, horizon=c.horizon)

    def normalizers(self, source: dict[str, Any]) -> tuple[StatsNormalizer | None, StatsNormalizer | None]:
        """(state, action) normalizers of a stored source record, as the loader built them."""
        kind, floor, clip = self.norm["normalization"], self.norm["floor"], self.norm["clip"]
        out = []
        for what in ("state", "actions"):
            raw = source.get(what)
            stats = DimStats.model_validate(raw) if raw else None
            out.append(build_normalizer(stats, kind, floor, clip, what))
        return out[0], out[1]

    def inputs(self, samples: list[dict[str, Any]]) -> ModelInputs:
        batch, _ = build_inputs(self.collator()(samples), self.layout)
        return batch.to(self.device)


def load_run(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> LoadedRun:
    """Load a run directory (its latest checkpoint) or one checkpoint directory; `dtype` casts the weights."""
    from cotrain.model.factory import build_vla
    from cotrain.train.checkpoint import latest_checkpoint, load_model_weights

    path = Path(path)
    ckpt = path if (path / "model.safetensors").is_file() else latest_checkpoint(path)
    if ckpt is None:
        raise ConfigError(f"{path}: no checkpoint (expected a run directory with checkpoints/ or a step directory)")
    stored = ModelConfig.model_validate_json((ckpt / "model_config.json").read_text(encoding="utf-8"))
    tokenizer = TextTokenizer.load(ckpt / "tokenizer.json")
    model, cfg = build_vla(stored, seed=0, tokenizer=tokenizer)  # cfg: the stored config resolved (sizes set)
    load_model_weights(ckpt, model)
    inv_freq = model.rotary.inv_freq.clone()
    model.to(device=device, dtype=dtype).eval()
    model.rotary.inv_freq = inv_freq.to(device)  # keep RoPE frequencies fp32 whatever the weight dtype
    state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    norm = json.loads((ckpt / "norm_stats.json").read_text(encoding="utf-8"))
    vocab = int(cfg.backbone_config["text_config"]["vocab_size"])  # type: ignore[index]  # build_vla always sets it
    layout = TextLayout(tokenizer, vocab, cfg.action_vocab_size, cfg.action_token_skip, cfg.max_text_tokens,
                        cfg.arch == "pi05")
    return LoadedRun(ckpt, int(state["step"]), model, cfg, layout, norm, torch.device(device))


def find_source(norm: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    """The stored source called `name`, or the one source with actions of embodiment `name`."""
    sources = norm["sources"]
    if name in sources:
        return name, sources[name]
    matches = [(n, s) for n, s in sources.items() if s.get("embodiment") == name and s.get("actions")]
    distinct = {json.dumps(s["actions"], sort_keys=True) for _, s in matches}
    if len(distinct) > 1:
        raise ConfigError(f"embodiment {name!r} is shared by sources {', '.join(n for n, _ in matches)} with different "
                          f"stats; pass the source name instead")
    if not matches:
        known = sorted({*sources, *(s["embodiment"] for s in sources.values() if s.get("embodiment"))})
        raise ConfigError(f"unknown embodiment {name!r}; the run knows: {', '.join(known)}")
    return matches[0]


class Policy:
    """A trained VLA that maps one observation to a denormalised action chunk (see module docstring)."""

    def __init__(self, run: LoadedRun) -> None:
        self.run = run

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Policy:
        """Load a run (or checkpoint) directory; e.g. `device="cuda", dtype=torch.bfloat16` for fast inference."""
        return cls(load_run(run_dir, device, dtype))

    def _images(self, images: Mapping[str, Any] | Sequence[Any], cameras: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from cotrain.media.image import encode_jpeg

        if isinstance(images, Mapping):
            unknown = sorted(set(images) - set(cameras))
            if unknown:
                raise ConfigError(f"camera {unknown[0]!r} is not one of this embodiment's: {', '.join(cameras)}")
            ordered = [images.get(c) for c in cameras]
        else:
            ordered = list(images) + [None] * max(0, len(cameras) - len(images))
        side = self.run.cfg.image_size
        out = np.zeros((max(1, len(ordered)), side, side, 3), np.uint8)
        present = np.zeros(len(out), bool)
        for i, img in enumerate(ordered):
            if img is not None:
                data = img if isinstance(img, (bytes, bytearray)) else encode_jpeg(np.asarray(img, np.uint8))
                out[i], present[i] = letterbox_jpeg(bytes(data), side), True
        return out, present

    def predict(self, images: Mapping[str, Any] | Sequence[Any], state: Any, instruction: str, embodiment: str,
                *, seed: int = 0, steps: int | None = None) -> np.ndarray:
        """One action chunk [H, Da] in the embodiment's units.

        Args:
            images: camera name -> HxWx3 uint8 array (or JPEG bytes), or a list in the embodiment's camera order.
            state: the raw proprioceptive state [Ds] (ignored if the embodiment had none).
            instruction: the task text.
            embodiment: a training source name or embodiment name.
            seed: seed of the initial noise (same seed, same chunk).
            steps: Euler steps (default: the model's `flow_steps`).
        """
        return self.predict_batch([Observation(images, state, instruction, embodiment, seed)], steps=steps)[0]

    def predict_batch(self, observations: Sequence[Observation], *, steps: int | None = None) -> list[np.ndarray]:
        """One action chunk [H, Da_i] per observation, from one forward pass over all of them.

        Each observation's noise comes from its own `seed`, so a chunk does not depend on which
        other observations share the batch (up to float rounding of the batched kernels).
        """
        if not observations:
            return []
        prepared = [self._prepare(obs) for obs in observations]
        inputs = self.run.inputs([sample for sample, _, _ in prepared])
        h, a = self.run.cfg.horizon, self.run.cfg.action_dim
        noise = torch.cat([torch.randn((1, h, a), generator=torch.Generator().manual_seed(obs.seed))
                           for obs in observations])
        chunks = self.run.model.sample_actions(inputs, noise.to(self.run.device), steps).float().cpu().numpy()
        return [norm.inverse(chunk[:, :da]) if norm else chunk[:, :da]
                for chunk, (_, da, norm) in zip(chunks, prepared)]

    def _prepare(self, obs: Observation) -> tuple[dict[str, Any], int, StatsNormalizer | None]:
        """(loader-style sample, real action dims, action normalizer) of one observation."""
        name, source = find_source(self.run.norm, obs.embodiment)
        if not source.get("actions"):
            raise ConfigError(f"source {name!r} has no actions to predict ({source['modality']})")
        state_norm, action_norm = self.run.normalizers(source)
        pixels, present = self._images(obs.images, source["cameras"])
        st = np.asarray(obs.state, np.float64).reshape(-1)
        if len(st) != len(source["state_names"]):
            raise ConfigError(f"state has {len(st)} values; {name!r} has {len(source['state_names'])}")
        h = self.run.cfg.horizon
        sample = {"images": pixels, "camera_present": present, "source": source["index"], "loss_weight": 1.0,
                  "state": state_norm(st) if state_norm else np.zeros(0, np.float32),
                  "actions": np.zeros((h, 0), np.float32), "actions_valid": np.zeros(h, bool),
                  "instruction": obs.instruction, "action_tokens": None}
        return sample, len(source["action_names"]), action_norm
