"""`train(cfg) -> TrainResult`: the training loop (single process, DDP or FSDP2 under torchrun).

Each optimiser step takes one global batch from the mixture loader (this rank's slice), tokenises
its text, splits it into micro-batches (microbatch.py: `grad_accum` equal ones, or two by text length
with `length_split`) and accumulates per-sample losses (losses.py).
Flow noise and times for step s are drawn for the whole global batch from a generator seeded by
(seed, s) and each rank takes its rows, so a sample's noise does not depend on the number of
ranks or micro-batches, and a resumed run draws exactly what the uninterrupted run drew. On CPU
`torch.use_deterministic_algorithms(True)` is on for the run, which makes the loss sequence of a
killed-and-resumed run equal, float for float, to the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cotrain import seeds
from cotrain.dataset import keys
from cotrain.errors import CotrainError
from cotrain.mix.collate import Batch
from cotrain.model.flow_matching import sample_time
from cotrain.model.inputs import ModelInputs, build_inputs
from cotrain.model.losses import LossTerms, combine_losses
from cotrain.train.bad_samples import BadSampleMonitor
from cotrain.train.checkpoint import save_checkpoint
from cotrain.train.config import TrainConfig
from cotrain.train.metrics import (
    MetricsLogger,
    SampleMetrics,
    ScalarSink,
    TensorBoardSink,
    flops_per_step,
    peak_tflops,
    summarise_step,
)
from cotrain.train.microbatch import micro_batches
from cotrain.train.setup import Run, prepare_run
from cotrain.train.validation import Validator, plan_validation

log = logging.getLogger(__name__)
__all__ = ["TrainResult", "train"]


@dataclass
class TrainResult:
    """What a run did (rank 0 holds the metric rows; other ranks an empty list)."""

    run_dir: Path
    start_step: int
    end_step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    last_checkpoint: Path | None = None
    parameters: dict[str, int] = field(default_factory=dict)
    rank: int = 0


def train(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) the run described by `cfg`; every rank calls this under torchrun."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    if cfg.wandb.mode != "off":
        from cotrain.train.wandb_log import require_wandb

        require_wandb()  # before anything is built or written
    val_sets = plan_validation(cfg)
    run = prepare_run(cfg)
    try:
        if run.device.type == "cpu":
            torch.use_deterministic_algorithms(True)
        return _loop(run, Validator(run, val_sets))
    finally:
        torch.use_deterministic_algorithms(deterministic)
        if run.info.is_distributed:
            import torch.distributed as dist

            dist.destroy_process_group()


def _noise(run: Run, step: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows of the global batch's noise [B, H, Da] and times [B] for `step` ([B, K, H, Da] and [B, K]
    with K = flow_samples > 1)."""
    global_b, k = run.mixture.spec.batch_size, run.model_cfg.flow_samples
    seed = seeds.stream_seed(run.seed, step, seeds.TRAIN_NOISE)
    gen = torch.Generator().manual_seed(seed)
    # one draw keeps the [B, H, Da] / [B] shapes (and so the values) of runs made before flow_samples
    draws = (global_b, *shape[1:]) if k == 1 else (global_b, k, *shape[1:])
    noise = torch.randn(draws, generator=gen)
    t = sample_time(global_b * k, gen, *run.model_cfg.time_beta).view(noise.shape[:-2])
    rows = slice(run.info.rank * shape[0], (run.info.rank + 1) * shape[0])
    return noise[rows], t[rows]


def _sync(run: Run, last: bool) -> contextlib.AbstractContextManager[Any]:
    """Skip the gradient all-reduce on all but the last micro-batch."""
    if last or not run.info.is_distributed or run.cfg.parallel.fsdp:  # FSDP2: set_requires_gradient_sync in _step
        return contextlib.nullcontext()
    return run.wrapped.no_sync()  # type: ignore[operator]  # run.wrapped is the DDP module here (typed nn.Module)


def _sample_metrics(terms: LossTerms, batch: Batch, rows: torch.Tensor, inputs: ModelInputs,
                    image_tokens: int) -> SampleMetrics:
    """The micro-batch's per-sample facts for the metrics (see metrics.summarise_step)."""
    modality = torch.tensor([keys.MODALITIES.index(m) if m in keys.MODALITIES else -1
                             for m in (batch["modality"][i] for i in rows.tolist())], dtype=torch.float32)
    suffix = inputs.actions.shape[1] + inputs.state_valid.float()
    tokens = inputs.text_valid.sum(1).float() + inputs.camera_mask.sum(1).float() * image_tokens + suffix

    def cpu(value: torch.Tensor) -> torch.Tensor:
        return value.detach().float().cpu()

    return SampleMetrics(
        source=batch["source"][rows].float(), modality=modality,
        flow=cpu(terms["flow"]), flow_count=cpu(terms["flow_count"]), text=cpu(terms["text"]),
        text_count=cpu(terms["text_count"]), action_tokens=cpu(terms["action_tokens"]),
        action_tokens_count=cpu(terms["action_tokens_count"]), loss_weight=batch["loss_weight"][rows].float(),
        tokens=tokens)


def _step(run: Run, inputs: ModelInputs, batch: Batch, step: int,
          weights: dict[str, float]) -> tuple[SampleMetrics, float, float]:
    cfg = run.cfg
    b = inputs.batch_size
    lr = run.schedule.apply(run.optimizer, step)
    noise, t = _noise(run, step, tuple(inputs.actions.shape))
    amp = torch.autocast(run.device.type, dtype=run.amp_dtype) if run.amp_dtype else contextlib.nullcontext()
    fixed = run.model.image_tokens * inputs.camera_mask.shape[1] + inputs.actions.shape[1] + 1
    groups = micro_batches(inputs.text_valid.sum(1), cfg.optim.grad_accum,
                           cfg.optim.length_split and not run.info.is_distributed, fixed)
    parts = []
    for k, rows in enumerate(groups):
        last = k == len(groups) - 1
        local = inputs.select(rows).trim_text()
        if cfg.parallel.fsdp and run.info.is_distributed:
            run.wrapped.set_requires_gradient_sync(last)  # type: ignore[operator]  # run.wrapped is the FSDP module here (typed nn.Module)
        with _sync(run, last), amp:
            terms = run.wrapped(local.to(run.device), noise[rows].to(run.device), t[rows].to(run.device))
            loss = combine_losses(terms, batch.loss_weight[rows].to(run.device), weights, b)
        loss.backward()
        parts.append(_sample_metrics(terms, batch, rows, local, run.model.image_tokens))
    params = [p for p in run.model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return SampleMetrics.cat(parts), float(norm), lr


def _gather(run: Run, samples: SampleMetrics) -> SampleMetrics:
    """Every rank's samples, in rank order: one all_gather of the packed [b, 10] tensor."""
    if not run.info.is_distributed:
        return samples
    import torch.distributed as dist

    local = samples.pack().to(run.device)
    out = [torch.empty_like(local) for _ in range(run.info.world_size)]
    dist.all_gather(out, local)
    return SampleMetrics.unpack(torch.cat(out).cpu())


def _row(run: Run, step: int, samples: SampleMetrics, weights: dict[str, float], timing: dict[str, float],
         inputs: ModelInputs) -> dict[str, Any]:
    summary = summarise_step(samples, weights, run.mixture.names, list(keys.MODALITIES))
    dt = timing["step"]
    global_b = run.mixture.spec.batch_size
    cams = int(inputs.camera_mask.sum()) * run.info.world_size
    tokens = float(samples.tokens.sum())
    row = {"step": step, **summary, "lr": timing["lr"], "grad_norm": timing["grad_norm"], "step_time_s": dt,
           "samples_per_s": global_b / dt, "tokens_per_s": tokens / dt, "data_wait": timing["data"] / dt,
           "truncated": int(timing["truncated"]), "elapsed_s": round(timing["elapsed"], 3)}
    peak = peak_tflops(run.cfg.logging.peak_tflops) if run.device.type == "cuda" else None
    if peak:
        prefix = run.model.image_tokens * inputs.camera_mask.shape[1] + inputs.text_ids.shape[1]
        flops = flops_per_step(run.model, cams, prefix, int(inputs.actions.shape[1]) + 1, global_b)
        row["mfu"] = flops / dt / (peak * 1e12 * run.info.world_size)
    return row


def _warn_truncated(run: Run, seen: list[int], truncated: int, samples: int, step: int) -> None:
    """Text cut to the budget is never silent: the first time it happens, one warning with the rate so
    far (`seen` holds samples cut, samples seen, warned); every step's count goes to `truncated`."""
    seen[0] += truncated
    seen[1] += samples
    if truncated and not seen[2] and run.info.is_main:
        seen[2] = 1
        log.warning("step %d: the text of %d of %d samples so far (%.1f%%) was longer than max_text_tokens=%d and "
                    "was cut (prompt end first; see the `truncated` metric); raise it with --set max_text_tokens=N",
                    step, seen[0], seen[1], 100 * seen[0] / seen[1], run.layout.max_tokens)


def _progress(run: Run) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                        TimeRemainingColumn(), disable=not (run.cfg.logging.progress and run.info.is_main))
    progress.start()
    return progress


def _logger(run: Run) -> MetricsLogger:
    """JSONL on rank 0, fanned out to TensorBoard and W&B when they are on."""
    sinks: list[ScalarSink] = []
    if run.info.is_main and run.cfg.logging.tensorboard:
        sinks.append(TensorBoardSink(run.run_dir, run.start_step))
    if run.info.is_main and run.cfg.wandb.mode != "off":
        from cotrain.train.wandb_log import open_wandb

        sinks.append(open_wandb(run))
    return MetricsLogger(run.run_dir, run.start_step, enabled=run.info.is_main, sinks=sinks)


def _loop(run: Run, validator: Validator) -> TrainResult:
    cfg, mc = run.cfg, run.model_cfg
    weights = {"flow": mc.flow_loss_weight, "text": mc.text_loss_weight, "action_tokens": mc.action_token_loss_weight}
    bad = BadSampleMonitor(run.loader, run.info, run.device, cfg.data.max_bad_fraction)
    logger = _logger(run)
    result = TrainResult(run.run_dir, run.start_step, run.start_step,
                         parameters={"total": sum(p.numel() for p in run.model.parameters()),
                                     "trainable": sum(p.numel() for p in run.model.parameters() if p.requires_grad)},
                         rank=run.info.rank)
    progress = _progress(run)
    task = progress.add_task("", total=cfg.steps, completed=run.start_step)
    step, batches = run.start_step, iter(run.loader)
    text_cut = [0, 0, 0]
    clock = time.perf_counter() - run.start_seconds  # elapsed_s continues across resumes
    run.wrapped.train()
    try:
        while step < cfg.steps:
            t0 = time.perf_counter()
            batch = next(batches)
            inputs, truncated = build_inputs(batch, run.layout)
            _warn_truncated(run, text_cut, truncated, inputs.batch_size, step)
            t_data = time.perf_counter() - t0
            samples, grad_norm, lr = _step(run, inputs, batch, step, weights)
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)
            timing = {"step": time.perf_counter() - t0, "data": t_data, "lr": lr, "grad_norm": grad_norm,
                      "truncated": truncated, "elapsed": time.perf_counter() - clock}
            validate = validator.due(step)
            if (step + 1) % cfg.logging.every == 0 or step + 1 == cfg.steps or validate:
                row = _row(run, step, _gather(run, samples), weights, timing, inputs)
                if not math.isfinite(row["loss"]):
                    raise CotrainError(f"loss is {row['loss']} at step {step} (flow {row['flow']}, text "
                                       f"{row['text']}, action tokens {row['action_tokens']}); lower --lr?")
                row.update(bad.metrics(step))
                row.update(validator.metrics(step) if validate else {})
                logger.log(row)
                if run.info.is_main:
                    result.history.append(row)
                progress.update(task, description=f"loss {row['loss']:.4f}")
            step += 1
            progress.update(task, completed=step)
            if cfg.checkpoint.enabled and (step % cfg.checkpoint.every == 0 or step == cfg.steps):
                result.last_checkpoint = save_checkpoint(run.run_dir, step, run.model, run.optimizer,
                                                         run.loader.state_dict(), run.info, cfg.checkpoint.keep,
                                                         {"global_batch": run.mixture.spec.batch_size,
                                                          "train_seconds": round(time.perf_counter() - clock, 3)})
            result.end_step = step
    finally:
        progress.stop()
        logger.close()
    return result
