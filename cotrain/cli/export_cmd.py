"""`cotrain export ...`: hand cotrain artefacts to other stacks (LeRobot policies and dataset folders)."""

from __future__ import annotations

from pathlib import Path

import typer

from cotrain.cli.output import print_json, print_table

export_app = typer.Typer(help="Export cotrain runs and data to other stacks.", no_args_is_help=True)


@export_app.command("lerobot")
def export_lerobot_cmd(
    run_dir: Path = typer.Argument(..., help="A pi0 / pi05 run directory (its latest checkpoint) or one checkpoint."),
    out: Path = typer.Argument(..., help="New LeRobot policy directory (config.json, model.safetensors, processors)."),
    source: str | None = typer.Option(None, "--source", help="Source or embodiment whose cameras, dims and "
                                         "norm stats the policy takes (default: the run's one robot source).",
                                         show_default=False),
    any_size: bool = typer.Option(False, "--any-size", help="Write models whose sizes LeRobot's named variants "
                                  "cannot build (shrunken test models)."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Write a cotrain-trained pi0 / pi0.5 model as a LeRobot policy that `from_pretrained` loads."""
    from cotrain.interop.lerobot_policy import export_lerobot_policy

    done = export_lerobot_policy(run_dir, out, source=source, any_size=any_size)
    report = {"out": str(done.out), "type": done.arch, "source": done.source, "tensors": done.tensors}
    print_json(report) if json_output else print_table("export lerobot", report)


@export_app.command("lerobot-dataset")
def lerobot_dataset(source: Path = typer.Argument(..., help="A converted dataset folder or a mixture YAML."),
                    out: Path = typer.Argument(..., help="Folder to write the LeRobotDataset v3.0 to."),
                    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
                    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON.")) -> None:
    """Write a converted dataset, or a mixture's robot sources with a `source` column, as a LeRobotDataset
    v3.0 folder (written under a temporary name, renamed when complete)."""
    from cotrain.interop.lerobot_dataset_export import export_lerobot_dataset

    summary = export_lerobot_dataset(source, out, overwrite=overwrite)
    report = {"out": str(summary.out), "sources": summary.sources, "episodes": summary.episodes,
              "frames": summary.frames, "tasks": summary.tasks, "cameras": summary.cameras}
    if json_output:
        print_json(report)
        return
    print_table(f"exported {source}", {k: ", ".join(v) if isinstance(v, list) else v for k, v in report.items()})
