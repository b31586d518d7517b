"""Pretrain the simulator backbone ("sim PaliGemma") and save it as a cotrain backbone checkpoint.

The backbone of a random-init preset (conv stem, Gemma layers, tied token embedding) is trained as a
prefix-LM vision-language model on pretrain_data.py's rendered scenes: the prompt (and image)
attended bidirectionally, the answer predicted token by token, exactly how the VLA's backbone
treats a vision-language sample. One auxiliary term helps it learn where things are: a linear head
on the final image-token states predicts, per 8 x 8 patch, a Gaussian bump around each point the
answer names (binary cross-entropy). The head is dropped afterwards; only the backbone is saved.

    cotrain sim pretrain OUT      # the exact recipe of the shipped checkpoint (backbone_ckpt.py format)

Everything random flows from `seed`: the network's init and the data generator, so the same config
gives the same tensors on the same torch build.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from cotrain.lab.sim.embodiments import get_embodiment
from cotrain.lab.sim.pretrain_config import PretrainConfig
from cotrain.lab.sim.pretrain_data import KINDS, PretrainSample, draw_sample, pretrain_tasks
from cotrain.lab.sim.render import Renderer
from cotrain.model.backbone_ckpt import save_backbone
from cotrain.model.config import ResolvedModelConfig, get_preset, with_overrides
from cotrain.model.factory import build_vla
from cotrain.model.inputs import ModelInputs, build_inputs
from cotrain.model.text import KIND_TEXT, TextLayout, build_byte_tokenizer
from cotrain.model.vla import VLA

__all__ = ["PretrainConfig", "PretrainReport", "pretrain_backbone"]

_TEXT_TOKENS = 192
_EVAL_STREAM = 7_919  # the held-out batch's generator stream, apart from training's


@dataclass(frozen=True)
class PretrainReport:
    """Where the checkpoint went, the final loss and the held-out pointing error per kind (median
    distance in table units of the greedily decoded answer; 1.0 where it does not parse)."""

    out: Path
    steps: int
    seconds: float
    loss: float
    pointing_error: dict[str, float]


def _layout(cfg: ResolvedModelConfig) -> TextLayout:
    vocab = int(cfg.backbone_config["text_config"]["vocab_size"])  # type: ignore[index]  # build_vla sets it
    # Captions run to ~150 bytes; the preset's text budget is sized for instructions, so pretraining
    # takes its own (the checkpoint's position tables are RoPE, so no length is baked into it).
    return TextLayout(build_byte_tokenizer(), vocab, cfg.action_vocab_size, cfg.action_token_skip, _TEXT_TOKENS)


def _inputs(samples: list[PretrainSample], layout: TextLayout) -> ModelInputs:
    n = len(samples)
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2)[:, None]
    batch = {"images": images, "camera_mask": torch.ones(n, 1, dtype=torch.bool),
             "prompt": [s.prompt for s in samples], "target": [s.answer for s in samples],
             "state": torch.zeros(n, 1), "state_mask": torch.zeros(n, 1, dtype=torch.bool),
             "actions": torch.zeros(n, 1, 1), "actions_valid": torch.zeros(n, 1, dtype=torch.bool),
             "action_mask": torch.zeros(n, 1, dtype=torch.bool)}
    return build_inputs(batch, layout)[0]


def _patch_targets(samples: list[PretrainSample], side: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """([B, side*side] bump targets, [B] whether the sample names a point)."""
    centres = (torch.arange(side) + 0.5) / side
    out = torch.zeros(len(samples), side, side)
    for i, s in enumerate(samples):
        for x, y in s.points:
            d2 = (centres[None, :] - x) ** 2 + (centres[:, None] - y) ** 2
            out[i] = torch.maximum(out[i], torch.exp(-d2 / (2 * sigma**2)))
    return out.flatten(1), torch.tensor([bool(s.points) for s in samples])


class _Pretrainer:
    """The network, its patch head, optimiser and data stream of one run."""

    def __init__(self, cfg: PretrainConfig) -> None:
        self.cfg = cfg
        preset = with_overrides(get_preset(cfg.preset), image_size=cfg.image_size, max_cameras=1, horizon=1,
                                action_dim=1, state_dim=1)
        self.model, self.model_cfg = build_vla(preset, seed=cfg.seed, tokenizer=build_byte_tokenizer())
        self.layout = _layout(self.model_cfg)
        self.side = int(math.isqrt(self.model.image_tokens))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed + 1)
            self.head = torch.nn.Linear(self.model.text_width, 1)
        self.params = [p for name, p in self.model.named_parameters() if _trained(name)] + list(self.head.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.0)
        self.renderer = Renderer(cfg.image_size)
        self.embodiment = get_embodiment("sim_arm")
        self.tasks = pretrain_tasks(cfg.verbs)
        self.rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0]))

    def draw(self, rng: np.random.Generator, n: int) -> list[PretrainSample]:
        return [draw_sample(rng, self.renderer, self.embodiment, self.tasks, self.cfg.mix) for _ in range(n)]

    def lr_at(self, step: int) -> float:
        c = self.cfg
        warm = min(1.0, (step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, c.steps) / c.steps))
        return c.lr * warm * (c.min_lr_ratio + (1 - c.min_lr_ratio) * cosine)

    def step(self, step: int) -> float:
        samples = self.draw(self.rng, self.cfg.batch_size)
        inputs = _inputs(samples, self.layout)
        hidden = self.model.prefix_forward(inputs)
        text = self.model.token_losses(hidden, inputs)["text"].mean()
        target, has_point = _patch_targets(samples, self.side, self.cfg.patch_sigma)
        logits = self.head(hidden[:, : self.model.image_tokens]).squeeze(-1)
        patch = F.binary_cross_entropy_with_logits(logits[has_point], target[has_point]) if has_point.any() \
            else logits.sum() * 0.0
        loss = text + self.cfg.patch_loss_weight * patch
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return float(loss.detach())


def _trained(name: str) -> bool:
    """Backbone parameters only: the expert and the action heads are not part of the checkpoint."""
    return not (".expert." in name or name.startswith(("expert_norm", "state_proj", "action_", "time_mlp")))


def pointing_error(model: VLA, layout: TextLayout, samples: list[PretrainSample]) -> dict[str, float]:
    """Median distance between each pointing answer and the model's greedy answer, per kind."""
    was_training = model.training
    model.eval()
    answers = greedy_answers(model, layout, samples, max_new=12 * max(len(s.points) for s in samples))
    model.train(was_training)
    errors: dict[str, list[float]] = {}
    for sample, answer in zip(samples, answers):
        if sample.points:
            errors.setdefault(sample.kind, []).append(_distance(answer, sample.points))
    return {k: round(float(np.median(v)), 4) for k, v in errors.items()}


def greedy_answers(model: VLA, layout: TextLayout, samples: list[PretrainSample], max_new: int) -> list[str]:
    """Each sample's answer decoded greedily (its own tokens fed back), up to <eos> or `max_new` tokens."""
    tok = layout.tokenizer
    base = _inputs(samples, layout)
    rows = [layout.encode({"prompt": s.prompt})[0] for s in samples]
    start = [len(r) for r in rows]
    done = [False] * len(rows)
    for _ in range(max_new):
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tok.pad_id, dtype=torch.int64)
        kind = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            kind[i, start[i]: len(row)] = KIND_TEXT
        inputs = replace(base, text_ids=ids, text_kind=kind, text_valid=ids != tok.pad_id)
        hidden = model.prefix_hidden(inputs)
        offset = hidden.shape[1] - width
        last = hidden[torch.arange(len(rows)), offset + torch.tensor([len(r) for r in rows]) - 1]
        for i, nxt in enumerate(model.logits(last).argmax(-1).tolist()):
            if not done[i]:
                rows[i].append(nxt)
                done[i] = nxt == tok.eos_id
        if all(done):
            break
    return [tok.decode([t for t in r[s:] if t != tok.eos_id]) for r, s in zip(rows, start)]


def _distance(text: str, points: tuple[tuple[float, float], ...]) -> float:
    try:
        values = [float(v) for v in text.replace("<eos>", " ").split()[: 2 * len(points)]]
    except ValueError:
        return 1.0
    if len(values) != 2 * len(points):
        return 1.0
    return float(np.mean([math.dist(values[2 * k: 2 * k + 2], p) for k, p in enumerate(points)]))


def pretrain_backbone(cfg: PretrainConfig, out: str | Path, command: str = "",
                      log: Callable[[str], None] = lambda _: None) -> PretrainReport:
    """Train the backbone of `cfg.preset` as configured and save it to `out` (backbone_ckpt format)."""
    torch.set_num_threads(cfg.threads)
    run = _Pretrainer(cfg)
    held_out = run.draw(np.random.default_rng(np.random.SeedSequence([cfg.seed, _EVAL_STREAM])), cfg.eval_samples)
    start, loss, errors = time.perf_counter(), float("nan"), {}
    for step in range(cfg.steps):
        loss = run.step(step)
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            errors = pointing_error(run.model, run.layout, held_out)
            log(f"step {step + 1}/{cfg.steps}  loss {loss:.3f}  pointing error {errors}  "
                f"{time.perf_counter() - start:.0f} s")
    seconds = time.perf_counter() - start
    recipe = {"command": command, "config": cfg.model_dump(mode="json"), "steps": cfg.steps,
              "seconds": round(seconds, 1), "final_loss": round(loss, 4), "pointing_error": errors,
              "kinds": list(KINDS), "torch": torch.__version__}
    save_backbone(run.model, run.model_cfg, out, recipe)
    return PretrainReport(Path(out), cfg.steps, seconds, loss, errors)
