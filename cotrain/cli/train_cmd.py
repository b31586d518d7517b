"""`cotrain train` and `cotrain eval`: thin wrappers over cotrain.train.loop.train and cotrain.eval.offline.

Works the same under torchrun (`torchrun --nproc-per-node K -m cotrain train ...`); only rank 0 prints.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import typer

from cotrain.cli.output import print_json, print_table
from cotrain.errors import ConfigError


def _parse_sets(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (a TrainConfig field)")
        out[key.replace("-", "_")] = yaml.safe_load(value)
    return out


def _parse_pairs(items: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"{option} {item!r}: expected SOURCE=ASSET")
        out[key] = value
    return out


def train_cmd(
    mixture: Path = typer.Argument(..., help="Mixture YAML."),
    model: str = typer.Option("tiny", "--model", help="Preset: tiny, tiny-conv, small, paligemma, paligemma2, pi0, "
                              "pi05."),
    steps: int = typer.Option(..., "--steps", help="Optimiser steps of the whole run."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, metrics, TensorBoard)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run directory's latest checkpoint."),
    init_from: Path | None = typer.Option(None, "--init-from", help="Local checkpoint dir: Hugging Face PaliGemma "
                                             "(paligemma*), LeRobot or openpi-PyTorch pi0/pi05 (pi0, pi05)."),
    base_stats: list[str] = typer.Option([], "--base-stats", help="SOURCE=ASSET: normalise SOURCE with the "
                                         "--init-from checkpoint's stats (openpi asset id, or 'lerobot'; repeatable)."),
    freeze: str = typer.Option("none", "--freeze", help="none, vision (SigLIP + projector) or backbone."),
    lora_rank: int = typer.Option(0, "--lora-rank", help="LoRA rank on the backbone's language layers (0: off)."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimiser step."),
    fsdp: bool = typer.Option(False, "--fsdp", help="FSDP2 sharding instead of DDP (under torchrun)."),
    activation_checkpointing: bool = typer.Option(False, "--activation-checkpointing", help="Recompute each layer."),
    knowledge_insulation: bool = typer.Option(False, "--knowledge-insulation", help="Expert sees detached K/V."),
    lr: float = typer.Option(1e-4, "--lr", help="Peak learning rate."),
    warmup_steps: int = typer.Option(100, "--warmup-steps", help="Linear warmup steps."),
    save_every: int = typer.Option(1000, "--save-every", help="Checkpoint every N steps (and at the end)."),
    workers: int = typer.Option(0, "--workers", help="DataLoader workers per rank."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast on GPU), fp32 or bf16."),
    eval_every: int = typer.Option(0, "--eval-every", help="Validate on held-out data every N steps (0: never)."),
    val_data: list[Path] = typer.Option([], "--val-data", help="Held-out dataset for --eval-every (repeatable)."),
    max_bad_fraction: float = typer.Option(0.01, "--max-bad-fraction", help="Warn when a source's replaced "
                                           "(bad) samples pass this fraction of its draws."),
    wandb: str = typer.Option("off", "--wandb", help="Also log to Weights & Biases: online or offline."),
    wandb_project: str = typer.Option("cotrain", "--wandb-project", help="W&B project."),
    wandb_run_name: str | None = typer.Option(None, "--wandb-run-name", help="W&B run name (default: RUN's)."),
    sets: list[str] = typer.Option([], "--set", help="Any other TrainConfig field, KEY=VALUE (repeatable)."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Train a VLA on a mixture (see docs/training.md)."""
    from cotrain.train.config import make_train_config
    from cotrain.train.loop import train

    fields = dict(mixture=str(mixture), model=model, steps=steps, out=str(out), resume=resume,
                  init_from=str(init_from) if init_from else None, freeze=freeze, lora_rank=lora_rank,
                  grad_accum=grad_accum, fsdp=fsdp, activation_checkpointing=activation_checkpointing,
                  knowledge_insulation=knowledge_insulation, lr=lr, warmup_steps=warmup_steps, save_every=save_every,
                  num_workers=workers, precision=precision, eval_every=eval_every,
                  val_data=tuple(str(p) for p in val_data), max_bad_fraction=max_bad_fraction, wandb=wandb,
                  wandb_project=wandb_project, wandb_run_name=wandb_run_name,
                  base_stats=_parse_pairs(base_stats, "--base-stats"))
    cfg = make_train_config(**{**fields, **_parse_sets(sets)})
    # With --json stdout must be exactly one JSON document: the progress bar (and anything else the
    # run prints) goes to stderr instead.
    with contextlib.redirect_stdout(sys.stderr) if json_output else contextlib.nullcontext():
        result = train(cfg)
    if result.rank == 0:
        last = result.history[-1] if result.history else {}
        summary = {"run_dir": str(result.run_dir), "steps": f"{result.start_step} -> {result.end_step}",
                   "loss": last.get("loss"), "checkpoint": str(result.last_checkpoint or ""),
                   "parameters": result.parameters["total"], "trainable": result.parameters["trainable"]}
        print_json(summary) if json_output else print_table("train", summary)


def eval_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (or one of its checkpoint directories)."),
    data: list[Path] = typer.Option(..., "--data", help="Converted datasets to evaluate on (repeatable)."),
    max_samples: int = typer.Option(256, "--max-samples", help="Samples per dataset (evenly spaced)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Samples per forward pass."),
    flow_steps: int | None = typer.Option(None, "--flow-steps", help="Euler steps (default: the model's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling noise."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (cuda:N)."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Per dataset: action error of sampled chunks, text CE on VL data, action-token accuracy."""
    from cotrain.eval.offline import evaluate_run

    report = evaluate_run(run_dir, data, max_samples=max_samples, batch_size=batch_size, flow_steps=flow_steps,
                          seed=seed, device=device)
    if json_output:
        print_json(report)
        return
    for name, rows in report["datasets"].items():
        print_table(f"eval {name}", {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in _flat(rows).items()})


def _flat(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
