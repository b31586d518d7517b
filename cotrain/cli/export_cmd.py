"""`cotrain export ...`: hand cotrain data to other stacks (LeRobot dataset folders)."""

from __future__ import annotations

from pathlib import Path

import typer

from cotrain.cli.output import print_json, print_table

export_app = typer.Typer(help="Export datasets and mixtures to other formats.", no_args_is_help=True)


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
