"""`cotrain export ...`: hand cotrain data to other stacks (LeRobot dataset folders)."""

from __future__ import annotations

from pathlib import Path

import typer

from cotrain.cli.output import print_table

export_app = typer.Typer(help="Export datasets and mixtures to other formats.", no_args_is_help=True)


@export_app.command("lerobot-dataset")
def lerobot_dataset(source: Path = typer.Argument(..., help="A converted dataset folder or a mixture YAML."),
                    out: Path = typer.Argument(..., help="Folder to write the LeRobotDataset v3.0 to."),
                    overwrite: bool = typer.Option(False, help="Replace OUT if it exists.")) -> None:
    """Write a converted dataset, or a mixture's robot sources with a `source` column, as a LeRobotDataset
    v3.0 folder (written under a temporary name, renamed when complete)."""
    from cotrain.interop.lerobot_dataset_export import export_lerobot_dataset

    summary = export_lerobot_dataset(source, out, overwrite=overwrite)
    print_table(f"exported {source} -> {summary.out}", {
        "sources": ", ".join(summary.sources), "episodes": summary.episodes, "frames": summary.frames,
        "tasks": summary.tasks, "cameras": ", ".join(summary.cameras) or "-",
    })
