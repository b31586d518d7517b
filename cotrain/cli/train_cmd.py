"""`cotrain train` and `cotrain eval`: thin wrappers over cotrain.train.loop.train and cotrain.eval.offline.

Works the same under torchrun (`torchrun --nproc-per-node K -m cotrain train ...`); only rank 0 prints.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from cotrain.cli.options import nested_parameters
from cotrain.cli.output import print_json, print_table
from cotrain.errors import ConfigError


def _parse_sets(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE (a TrainConfig field, e.g. optim.eps=1e-6)")
        out[key.replace("-", "_")] = yaml.safe_load(value)
    return out


def _train(mixture: Path, sets: list[str], json_output: bool, **options: Any) -> None:
    """Train a VLA on a mixture (see docs/training.md)."""
    from cotrain.cli.options import nested_values
    from cotrain.train.config import TrainConfig, make_train_config
    from cotrain.train.loop import train

    # --set last: it overrides the options, dotted (optim.lr) or by a flat name of earlier versions (lr).
    cfg = make_train_config(**{"mixture": str(mixture), **nested_values(TrainConfig, options), **_parse_sets(sets)})
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


def build_train_cmd() -> Callable[..., None]:
    """`cotrain train`: the options are TrainConfig's fields that name a flag (train/config.py), so each
    default and description is written once; `--set` reaches every other field."""
    from cotrain.train.config import TrainConfig

    params = [inspect.Parameter("mixture", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                                default=typer.Argument(..., help=TrainConfig.model_fields["mixture"].description))]
    params += nested_parameters(TrainConfig)
    params.append(inspect.Parameter("sets", inspect.Parameter.KEYWORD_ONLY, annotation=list[str], default=typer.Option(
        [], "--set", help="Any other TrainConfig field, KEY=VALUE (repeatable; dotted: optim.eps=1e-6).")))
    params.append(inspect.Parameter("json_output", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                    default=typer.Option(False, "--json", help="Print the summary as JSON.")))

    def train_cmd(**kwargs: Any) -> None:
        _train(**kwargs)

    train_cmd.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # typer reads it
    train_cmd.__annotations__ = {p.name: p.annotation for p in params}
    train_cmd.__doc__ = _train.__doc__
    return train_cmd


train_cmd = build_train_cmd()


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
