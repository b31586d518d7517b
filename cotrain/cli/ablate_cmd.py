"""`cotrain ablate MIXTURES... --seeds K --steps N --out OUT`: a thin wrapper over cotrain.lab.ablate.runner."""

from __future__ import annotations

from pathlib import Path

import typer

from cotrain.cli.output import print_json, print_table


def ablate_cmd(
    mixtures: list[Path] = typer.Argument(..., help="Mixture YAML files and/or folders (every *.yaml inside)."),
    out: Path = typer.Option(Path("ablation-out"), "--out", help="Study folder: runs, results.csv/.md, plots."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per mixture (0..K-1)."),
    steps: int | None = typer.Option(None, "--steps", help="Steps per run, phases rescaled (default: each "
                                        "mixture's own total).", show_default=False),
    episodes: int = typer.Option(48, "--episodes", help="Closed-loop simulator episodes per run."),
    train_episodes: int = typer.Option(24, "--train-episodes", help="Further episodes on the layouts of the "
                                       "target robot's own training demos (memorisation check; 0: none)."),
    eval_samples: int = typer.Option(128, "--eval-samples", help="Held-out samples per offline eval dataset."),
    eval_data: list[Path] = typer.Option([], "--eval-data", help="Held-out datasets for the offline eval "
                                         "(default: the study data's held-out sets)."),
    baseline: str | None = typer.Option(None, "--baseline", help="Mixture name the others are tested against "
                                           "(default: baseline, else the first).", show_default=False),
    model: str = typer.Option("tiny", "--model", help="Model preset."),
    prepare: bool = typer.Option(True, "--prepare/--no-prepare", help="Make the simulated study data when the "
                                 "mixtures' datasets are missing."),
    jobs: int = typer.Option(1, "--jobs", help="Runs at the same time, one process each (2 on 2 cores)."),
    threads: int = typer.Option(1, "--threads", help="Torch threads per run."),
    sets: list[str] = typer.Option([], "--set", help="TrainConfig field for every run, KEY=VALUE (repeatable)."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Train and evaluate every mixture x seed (resumable), then write results and plots (docs/ablation.md)."""
    from cotrain.cli.train_cmd import _parse_sets
    from cotrain.lab.ablate.runner import run_ablation
    from cotrain.lab.ablate.study import AblationConfig

    cfg = AblationConfig(mixtures=tuple(str(m) for m in mixtures), out=str(out), seeds=seeds, steps=steps, model=model,
                         episodes=episodes, train_episodes=train_episodes, eval_samples=eval_samples,
                         eval_data=tuple(str(p) for p in eval_data),
                         baseline=baseline, train_overrides=_parse_sets(sets), prepare=prepare,
                         jobs=jobs, threads=threads)
    result = run_ablation(cfg, progress=lambda msg: typer.echo(msg, err=True))
    summary = {"out": str(result.out), "baseline": result.baseline, "runs": len(result.runs),
               "kept from before": result.skipped, **{name: str(path) for name, path in result.files.items()}}
    print_json(summary) if json_output else print_table("ablation", summary)
