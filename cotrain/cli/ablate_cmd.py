"""`cotrain ablate MIXTURES... --seeds K --steps N --out OUT`: a thin wrapper over cotrain.lab.ablate.runner.

The options are `AblationConfig`'s fields (cotrain/lab/ablate/config.py), where each default is written once.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

from cotrain.cli.options import build_model, command_from_models
from cotrain.cli.output import print_json, print_table
from cotrain.lab.ablate.config import AblationConfig

# Fields the runner sets itself or that only the library exposes (`--set` fills train_overrides).
_NOT_OPTIONS = ("mixtures", "eval_seed", "target_source", "train_overrides", "data")


def _ablate(mixtures: list[Path], json_output: bool = False, sets: list[str] | None = None, **values: Any) -> None:
    """Train and evaluate every mixture x seed (resumable), then write results and plots (docs/ablation.md)."""
    from cotrain.cli.train_cmd import _parse_sets
    from cotrain.lab.ablate.runner import run_ablation

    values = {**values, "mixtures": tuple(str(m) for m in mixtures), "eval_data": tuple(values["eval_data"]),
              "train_overrides": _parse_sets(sets or [])}
    cfg = build_model(AblationConfig, values)
    result = run_ablation(cfg, progress=lambda msg: typer.echo(msg, err=True))
    summary = {"out": str(result.out), "baseline": result.baseline, "runs": len(result.runs),
               "kept from before": result.skipped, **{name: str(path) for name, path in result.files.items()}}
    print_json(summary) if json_output else print_table("ablation", summary)


ablate_cmd = command_from_models(
    _ablate, [("mixtures", list[Path], "Mixture YAML files and/or folders (every *.yaml inside).")], [AblationConfig],
    flags={"prepare": "--prepare/--no-prepare"}, exclude=_NOT_OPTIONS,
    extra=[inspect.Parameter("sets", inspect.Parameter.KEYWORD_ONLY, annotation=list[str], default=typer.Option(
        [], "--set", help="TrainConfig field for every run, KEY=VALUE (repeatable)."))],
)
