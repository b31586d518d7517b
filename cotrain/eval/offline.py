"""`cotrain eval RUN_DIR --data DIR...`: how a trained VLA does on converted datasets.

Per dataset (up to `max_samples` samples, evenly spaced, read and normalised exactly like the
training loader, with the *run's* norm stats for that dataset or embodiment):
- `actions` (robot / human-video / action-token data): chunks sampled from seeded noise with the
  cached prefix and `flow_steps` Euler steps, compared with the ground truth over valid steps and
  real dimensions: `normalized` (model units, clipped like training targets) and `original`
  (denormalised prediction vs the raw chunk, plus MAE per action dimension by name);
  `image_gain`: how much the normalised MSE rises when each sample is given another sample's
  images (sample i gets those of sample i + n/2 of the n evaluated, so from elsewhere in the
  dataset), with the same noise, state and text. Near 0 means the actions do not depend on what
  the cameras show in a way that carries over to these samples: a policy that memorised its
  training scenes, or ignores vision, scores ~0 on held-out data;
- `text` (data with targets): teacher-forced next-token cross-entropy over target tokens, its
  perplexity and token accuracy: the language-retention probe of Lin et al.;
- `action_tokens` (data with discrete tokens): teacher-forced CE and token accuracy.
Means are over cells / tokens (not per sample), so long targets weigh by length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cotrain.dataset import keys
from cotrain.dataset.manifest import Manifest, load_manifest
from cotrain.dataset.reader import SourceReader
from cotrain.errors import ConfigError
from cotrain.eval.policy import LoadedRun, load_run
from cotrain.mix.transform import SampleTransform
from cotrain.model.config import ModelConfig
from cotrain.model.inputs import ModelInputs
from cotrain.model.text import KIND_ACTION, KIND_TEXT

__all__ = ["EvalSet", "check_dataset", "dataset_names", "evaluate_dataset", "evaluate_run", "evaluate_set",
           "load_eval_set"]


def evaluate_run(run_dir: str | Path, datasets: Sequence[str | Path], *, max_samples: int = 256, batch_size: int = 16,
                 flow_steps: int | None = None, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """The report for every dataset (see module docstring)."""
    run = load_run(run_dir, device)
    steps = flow_steps or run.cfg.flow_steps
    out: dict[str, Any] = {"checkpoint": str(run.checkpoint), "step": run.step, "flow_steps": steps, "datasets": {}}
    for name, path in dataset_names(datasets).items():
        out["datasets"][name] = evaluate_dataset(run, Path(path), max_samples=max_samples, batch_size=batch_size,
                                                 flow_steps=steps, seed=seed)
    return out


def dataset_names(paths: Sequence[str | Path], taken: Sequence[str] = ()) -> dict[str, str | Path]:
    """Report names of datasets: the directory name, with `+` appended until it is unique."""
    out: dict[str, str | Path] = {}
    for path in paths:
        name = Path(path).name
        while name in out or name in taken:
            name += "+"
        out[name] = path
    return out


def check_dataset(model: ModelConfig, norm: dict[str, Any], path: Path,
                  manifest: Manifest) -> tuple[int, dict[str, Any] | None]:
    """(source index, stored record) whose stats normalise this dataset: same path, else same embodiment;
    a ConfigError if the model cannot take it or the run has no stats for it."""
    if len(manifest.action_names) > int(model.action_dim):  # type: ignore[arg-type]  # model config sizes are int | None until resolved; a loaded run's are set
        raise ConfigError(f"{path}: {len(manifest.action_names)} action dims; the model takes {model.action_dim}")
    if not manifest.action_names and not manifest.state_names:
        return 0, None
    sources = norm["sources"]
    same = [s for s in sources.values() if s.get("url") and Path(s["url"]).resolve() == path.resolve()]
    same = same or [s for s in sources.values() if s.get("embodiment") == manifest.embodiment and s.get("actions")
                    and len(s["action_names"]) == len(manifest.action_names)]
    if not same:
        known = sorted({s["embodiment"] for s in sources.values() if s.get("embodiment")})
        raise ConfigError(f"{path}: the run has no norm stats for embodiment {manifest.embodiment!r} with "
                          f"{len(manifest.action_names)} action dims; it knows: {', '.join(known) or 'none'}")
    return int(same[0]["index"]), same[0]


class _Totals:
    """Running sums of the three metric families."""

    def __init__(self, action_names: list[str]) -> None:
        self.names = action_names
        self.sums: dict[str, float] = {}
        self.dim_abs = np.zeros(len(action_names))
        self.dim_n = np.zeros(len(action_names))

    def add(self, key: str, value: float | torch.Tensor) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def report(self, samples: int, modality: str) -> dict[str, Any]:
        s = self.sums
        out: dict[str, Any] = {"modality": modality, "samples": samples}
        if s.get("cells"):
            mse = s["sq_norm"] / s["cells"]
            out["actions"] = {
                "cells": int(s["cells"]),
                "normalized": {"mse": mse, "mae": s["abs_norm"] / s["cells"]},
                "original": {"mse": s["sq_orig"] / s["cells"], "mae": s["abs_orig"] / s["cells"],
                             "per_dim_mae": {n: float(a / c) for n, a, c in zip(self.names, self.dim_abs, self.dim_n)
                                             if c}},
            }
            if "sq_shuffled" in s:
                shuffled = s["sq_shuffled"] / s["cells"]
                out["actions"]["normalized"]["mse_shuffled_images"] = shuffled
                out["actions"]["image_gain"] = shuffled - mse
        for name in ("text", "action_tokens"):
            n = s.get(f"{name}_n", 0.0)
            if n:
                ce = s[f"{name}_ce"] / n
                out[name] = {"tokens": int(n), "ce": ce, "accuracy": s[f"{name}_correct"] / n}
                if name == "text":
                    out[name]["perplexity"] = math.exp(min(ce, 50.0))
        return out


def _token_metrics(run: LoadedRun, inputs: ModelInputs, totals: _Totals) -> None:
    if not bool((inputs.text_kind > 0).any()):
        return
    hidden = run.model.prefix_hidden(inputs)
    offset = hidden.shape[1] - inputs.text_ids.shape[1]
    rows, cols = torch.nonzero(inputs.text_kind > 0, as_tuple=True)
    logits = run.model.logits(hidden[rows, offset + cols - 1]).float()
    targets, kind = inputs.text_ids[rows, cols], inputs.text_kind[rows, cols]
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    correct = logits.argmax(-1) == targets
    for name, k in (("text", KIND_TEXT), ("action_tokens", KIND_ACTION)):
        sel = kind == k
        totals.add(f"{name}_ce", ce[sel].sum())
        totals.add(f"{name}_correct", correct[sel].sum())
        totals.add(f"{name}_n", sel.sum())


def _valid_cells(inputs: ModelInputs, da: int) -> np.ndarray:
    """[B, H, da] bool: valid steps x real action dimensions."""
    return inputs.actions_valid.cpu().numpy()[:, :, None] & inputs.action_mask[:, :da].cpu().numpy()[:, None, :]


def _action_metrics(run: LoadedRun, inputs: ModelInputs, raws: list[dict[str, Any]], transform: SampleTransform,
                    noise: torch.Tensor, steps: int, totals: _Totals) -> None:
    da = len(transform.manifest.action_names)
    pred = run.model.sample_actions(inputs, noise, steps)[:, :, :da].cpu().numpy()
    target = inputs.actions[:, :, :da].cpu().numpy()
    mask = _valid_cells(inputs, da)
    h = pred.shape[1]
    raw = np.zeros_like(pred)
    for i, r in enumerate(raws):
        chunk = np.asarray(r[keys.ACTIONS], np.float64)[:h]
        raw[i, : len(chunk)] = chunk
    orig = transform.action_norm.inverse(pred) - raw  # type: ignore[union-attr]  # evaluate_set calls this only with an action normalizer
    err = (pred - target)[mask]
    totals.add("cells", mask.sum())
    totals.add("sq_norm", np.square(err).sum())
    totals.add("abs_norm", np.abs(err).sum())
    totals.add("sq_orig", np.square(orig[mask]).sum())
    totals.add("abs_orig", np.abs(orig[mask]).sum())
    totals.dim_abs += (np.abs(orig) * mask).sum(axis=(0, 1))
    totals.dim_n += mask.sum(axis=(0, 1))


def _shuffled_image_metrics(run: LoadedRun, pairs: list[tuple[dict[str, Any], dict[str, Any]]], da: int,
                            noise: torch.Tensor, steps: int, totals: _Totals) -> None:
    """The squared error of a batch whose samples each show their donor's images: (sample, donor)
    pairs; state, text, targets and masks stay the sample's own, and the noise is the batch's."""
    inputs = run.inputs([{**s, "images": d["images"], "camera_present": d["camera_present"]} for s, d in pairs])
    pred = run.model.sample_actions(inputs, noise, steps)[:, :, :da].cpu().numpy()
    err = (pred - inputs.actions[:, :, :da].cpu().numpy())[_valid_cells(inputs, da)]
    totals.add("sq_shuffled", np.square(err).sum())


@dataclass
class EvalSet:
    """One dataset's evaluation samples, read and normalised once; `evaluate_set` scores a model on them
    (training-time validation keeps these and re-scores the changing model)."""

    path: Path
    manifest: Manifest
    transform: SampleTransform
    raws: list[dict[str, Any]]  # as read, for the errors in the dataset's own units
    samples: list[dict[str, Any]]  # transformed like the training loader


def load_eval_set(run: LoadedRun, path: Path, max_samples: int) -> EvalSet:
    """Up to `max_samples` evenly spaced samples of the dataset at `path`, normalised with the run's stats."""
    manifest = load_manifest(path)
    index, record = check_dataset(run.cfg, run.norm, path, manifest)
    state_norm, action_norm = run.normalizers(record) if record else (None, None)
    transform = SampleTransform(index, path.name, manifest, run.cfg.image_size, run.cfg.horizon,
                                1.0, state_norm, action_norm)
    reader = SourceReader(str(path), manifest)
    picks = np.unique(np.linspace(0, manifest.num_samples - 1, min(max_samples, manifest.num_samples)).round())
    raws = [reader.read(int(i)) for i in picks]
    return EvalSet(path, manifest, transform, raws, [transform(r) for r in raws])


@torch.no_grad()
def evaluate_set(run: LoadedRun, data: EvalSet, *, batch_size: int, flow_steps: int, seed: int) -> dict[str, Any]:
    """The metrics of one prepared dataset (see module docstring); noise from a generator seeded by `seed`."""
    totals = _Totals(list(data.manifest.action_names))
    gen = torch.Generator().manual_seed(seed)
    samples, raws, n = data.samples, data.raws, len(data.samples)
    for start in range(0, n, batch_size):
        batch = samples[start: start + batch_size]
        inputs = run.inputs(batch)
        noise = torch.randn(tuple(inputs.actions.shape), generator=gen).to(run.device)
        if data.transform.action_norm is not None and bool(inputs.actions_valid.any()):
            _action_metrics(run, inputs, raws[start: start + batch_size], data.transform, noise, flow_steps, totals)
            if n > 1:
                pairs = [(s, samples[(start + i + n // 2) % n]) for i, s in enumerate(batch)]
                _shuffled_image_metrics(run, pairs, len(data.manifest.action_names), noise, flow_steps, totals)
        _token_metrics(run, inputs, totals)
    return totals.report(n, data.manifest.modality)


def evaluate_dataset(run: LoadedRun, path: Path, *, max_samples: int, batch_size: int, flow_steps: int,
                     seed: int) -> dict[str, Any]:
    """The metrics of one dataset (see module docstring)."""
    return evaluate_set(run, load_eval_set(run, path, max_samples), batch_size=batch_size, flow_steps=flow_steps,
                        seed=seed)
