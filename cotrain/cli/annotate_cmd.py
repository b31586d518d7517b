"""`cotrain annotate ROBOT_SHARDS OUT`: dense per-frame language for a converted robot dataset.

The options are `AnnotateOptions` and `RunOptions` (cotrain/annotate/options.py, cotrain/convert/spec.py),
so each default is written once; `from_file` keeps its short flag `--from`. Annotation reads JPEGs
from shards and decodes no video, so it has no `--decode-threads`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cotrain.annotate.options import AnnotateOptions
from cotrain.cli.options import build_model, command_from_models
from cotrain.cli.output import print_json, print_table
from cotrain.convert.spec import RunOptions


def _annotate(src: Path, out: Path, json_output: bool = False, **values: Any) -> None:
    """Make an annotation dataset: a dense target.txt per frame from segments (--from) or --scripted primitives."""
    from cotrain.annotate.segments import annotate

    options = build_model(AnnotateOptions, values)
    run = build_model(RunOptions, values)
    report, annotation = annotate(src, out, options, run)
    _print(report.to_json(), annotation, json_output)


annotate_cmd = command_from_models(
    _annotate, [("src", Path, "A converted robot dataset (folder with manifest.json)."),
                ("out", Path, "Output folder for the annotation dataset.")],
    [AnnotateOptions, RunOptions], flags={"from_file": "--from", "progress": "--progress/--no-progress"},
    exclude=("decode_threads",),
)


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
