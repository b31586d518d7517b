"""`cotrain annotate ROBOT_SHARDS OUT`: dense per-frame language for a converted robot dataset.

The options mirror `AnnotateOptions` and `RunOptions` (a test keeps them in step) but are spelled out
here: building them from the models would import numpy on every `cotrain --help`. Options left unset
are not passed, so the models' defaults apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cotrain.cli.output import print_json, print_table

_TEXT_PROMPT = "answer en What is the robot doing?"  # = cotrain.annotate.segments.DEFAULT_PROMPT (checked by a test)


def annotate_cmd(
    src: Path = typer.Argument(..., help="A converted robot dataset (folder with manifest.json)."),
    out: Path = typer.Argument(..., help="Output folder for the annotation dataset."),
    from_file: str | None = typer.Option(None, "--from", help="Segment annotations: JSONL file, LeRobot dataset "
                                            "folder with language columns, or AgiBot task_info JSON (file or folder)."),
    scripted: bool = typer.Option(False, "--scripted", help="Motion-primitive phrases from state/action deltas."),
    format: str | None = typer.Option(None, "--format", help="Format of --from: auto, jsonl, lerobot, agibot "
                                         "(default: auto)."),
    style: str | None = typer.Option(None, "--style", help="LeRobot language style (default: subtask)."),
    uncovered: str | None = typer.Option(None, "--uncovered", help="Frames no segment covers: skip or empty "
                                            "(kept with an empty target) (default: skip)."),
    prompt: str | None = typer.Option(None, "--prompt", help="prompt.txt of every sample; {instruction} is "
                                         f"replaced by the sample's instruction (default: {_TEXT_PROMPT!r})."),
    scripted_from: str | None = typer.Option(None, "--scripted-from", help="Scripted: state or actions "
                                                "(default: state)."),
    dims: str | None = typer.Option(None, "--dims", help="Scripted: x=0,y=1,z=2,roll=..,pitch=..,yaw=..,gripper=.. "
                                       "(indices or names) or 'ecot'; default: detected from the names."),
    window: int | None = typer.Option(None, "--window", help="Scripted: states per delta window (default: 4)."),
    threshold: float | None = typer.Option(None, "--threshold", help="Scripted: no-motion threshold "
                                              "(default: 0.03)."),
    rotation_scale: float | None = typer.Option(None, "--rotation-scale", help="Scripted: rotation deltas are "
                                                   "divided by this (default: 10)."),
    gripper_increase: str | None = typer.Option(None, "--gripper-increase", help="Scripted: a growing gripper "
                                                   "value means open or close (default: open)."),
    name: str | None = typer.Option(None, "--name", help="Dataset name (default: the output folder name)."),
    shard_size: int | None = typer.Option(None, "--shard-size", help="Target samples per shard (default: 1000)."),
    on_bad_episode: str | None = typer.Option(None, "--on-bad-episode", help="raise or skip (default: raise)."),
    workers: int = typer.Option(1, "--workers", help="Processes converting shards in parallel."),
    num_parts: int = typer.Option(1, "--num-parts", help="Split the work into this many parts (job arrays)."),
    part: int = typer.Option(0, "--part", help="Which part this run converts (0-based)."),
    backend: str = typer.Option("process", "--backend", help="process or ray."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing or unfinished output."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress", help="Progress bar.", show_default=False),
    json_output: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Make an annotation dataset: a dense target.txt per frame from segments (--from) or --scripted primitives."""
    values = {k: v for k, v in locals().items() if v is not None and k not in ("src", "out", "json_output")}
    from cotrain.annotate.segments import AnnotateOptions, annotate
    from cotrain.cli.options import build_model
    from cotrain.convert.spec import RunOptions

    options = build_model(AnnotateOptions, values)
    run = build_model(RunOptions, values)
    report, annotation = annotate(src, out, options, run)
    _print(report.to_json(), annotation, json_output)


def _print(conversion: dict[str, Any], annotation: dict[str, Any] | None, json_output: bool) -> None:
    if json_output:
        print_json({"conversion": conversion, "annotation": annotation})
        return
    rows = {k: conversion[k] for k in ("out", "samples", "episodes", "seconds")}
    if not conversion["finalized"]:
        rows["note"] = "part finished; the annotation report is in the manifest after `cotrain merge-manifests OUT`"
    print_table("annotate", rows)
    if annotation is None:
        return
    counts = {k: v for k, v in annotation.items() if not isinstance(v, (list, dict))}
    counts["source"] = ", ".join(f"{k}={v}" for k, v in annotation["source"].items() if k != "sha256")
    print_table("annotation report", counts)
    for key in ("unannotated_episode_ids", "unmatched_episode_ids"):
        if annotation.get(key):
            typer.echo(f"{key.replace('_', ' ')}: {', '.join(annotation[key])}", err=True)
    for line in annotation.get("problems", []):
        typer.echo(f"problem: {line}", err=True)
