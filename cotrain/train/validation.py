"""Validation during training: the `cotrain eval` metrics of held-out datasets every `eval_every` steps.

Held-out datasets come from the mixture's `val:` section and `--val-data PATH` (repeatable). They are
checked before anything is built or written (`plan_validation`): each must be a local converted
dataset whose embodiment the run has norm stats for, with action dims the model takes. Then, once
per run, up to `val_max_samples` evenly spaced samples of each are read and normalised exactly like
the training loader (`cotrain.eval.offline.load_eval_set`) and kept in memory; at every validation step
the current model scores them with `cotrain.eval.offline.evaluate_set`: sampled action chunks against
the truth (per embodiment: one dataset per embodiment), the teacher-forced text cross-entropy of
vision-language targets (the language-retention probe, here as a curve over steps), action-token
accuracy. The noise is drawn from a generator seeded by (seed, a fixed stream id), the same at every
validation step, so the curve moves only because the model does.

Validation never changes training: it runs under `torch.no_grad` in eval mode and restores the
previous mode, draws only from its own generator, and reads through its own readers; a run with
`--eval-every` logs the same training losses as one without (tested). It runs at steps s with
(s + 1) % eval_every == 0 and at the last step, a function of the step only, so a resumed run
continues the same schedule. Every rank validates (FSDP2 needs every rank for its all-gathers);
rank 0 logs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cotrain import seeds
from cotrain.dataset.manifest import load_manifest
from cotrain.dataset.storage import is_url
from cotrain.errors import ConfigError, CotrainError
from cotrain.eval.offline import EvalSet, check_dataset, dataset_names, evaluate_set, load_eval_set
from cotrain.eval.policy import LoadedRun
from cotrain.mix.resolve import load_mixture
from cotrain.train.compat import norm_stats_record, resolve_model_config
from cotrain.train.config import TrainConfig
from cotrain.train.setup import Run

__all__ = ["Validator", "plan_validation"]



def plan_validation(cfg: TrainConfig) -> dict[str, Path]:
    """Name -> local path of every held-out dataset, each checked against the run (see module docstring)."""
    if not cfg.validation.every:
        return {}
    mixture = load_mixture(cfg.mixture)
    named = {v.name: (v.url, f"{mixture.path}: val.{v.name}") for v in mixture.val}
    named.update({n: (str(p), f"--val-data {p}") for n, p in dataset_names(cfg.validation.data, list(named)).items()})
    if not named:
        raise ConfigError(f"--eval-every {cfg.validation.every}: no held-out data; pass --val-data DIR or add a val: "
                          f"section to {mixture.path}")
    model, norm = resolve_model_config(cfg, mixture), norm_stats_record(mixture)
    out = {}
    for name, (url, where) in named.items():
        if is_url(url):
            raise ConfigError(f"{where}: held-out data must be a local directory, not a URL")
        try:
            check_dataset(model, norm, Path(url), load_manifest(url))
        except CotrainError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        out[name] = Path(url)
    return out


@contextlib.contextmanager
def _full_parameters(run: Run) -> Iterator[None]:
    """FSDP2 gathers the root's own parameters only inside its forward; validation calls other methods."""
    if not (run.cfg.parallel.fsdp and run.info.is_distributed):
        yield
        return
    run.model.unshard()  # type: ignore[operator]  # an FSDP module here (typed nn.Module)
    try:
        yield
    finally:
        run.model.reshard()  # type: ignore[operator]  # as above


class Validator:
    """Scores the held-out sets at validation steps (see module docstring).

    Args:
        run: the prepared run (model, layout, norm stats, device).
        datasets: name -> path, from `plan_validation`.
    """

    def __init__(self, run: Run, datasets: dict[str, Path]) -> None:
        self.run = run
        self.every = run.cfg.validation.every
        self.model_view = LoadedRun(run.run_dir, run.start_step, run.model, run.model_cfg, run.layout,
                                    norm_stats_record(run.mixture), run.device)
        self.sets: dict[str, EvalSet] = {name: load_eval_set(self.model_view, path, run.cfg.validation.max_samples)
                                         for name, path in datasets.items()}
        self.seed = self.seed_for(run.seed)

    @staticmethod
    def seed_for(run_seed: int) -> int:
        """The seed of the validation noise (`cotrain eval --seed` with it reproduces a validation step)."""
        return int(np.random.SeedSequence([run_seed, seeds.VALIDATION_NOISE]).generate_state(1)[0])

    def due(self, step: int) -> bool:
        """Whether to validate after optimiser step `step` (0-based)."""
        return bool(self.sets) and ((step + 1) % self.every == 0 or step + 1 == self.run.cfg.steps)

    def metrics(self, step: int) -> dict[str, Any]:
        """`val` (name -> `cotrain eval` report) and `val_time_s`, with the model as it is after `step`."""
        run, t0 = self.run, time.perf_counter()
        self.model_view.step = step + 1
        was_training = run.wrapped.training
        amp = torch.autocast(run.device.type, dtype=run.amp_dtype) if run.amp_dtype else contextlib.nullcontext()
        run.wrapped.eval()
        try:
            with _full_parameters(run), amp:
                reports = {name: evaluate_set(self.model_view, data, batch_size=run.cfg.validation.batch_size,
                                              flow_steps=int(run.model_cfg.flow_steps), seed=self.seed)
                           for name, data in self.sets.items()}
        finally:
            run.wrapped.train(was_training)
        return {"val": reports, "val_time_s": time.perf_counter() - t0}
