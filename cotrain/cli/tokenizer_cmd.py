"""`cotrain tokenizer fit` and `cotrain tokenizer eval`: discrete action tokenizers (FAST, bins)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cotrain.cli.output import print_json, print_table

tokenizer_app = typer.Typer(help="Fit and evaluate discrete action tokenizers (FAST, uniform bins).",
                            no_args_is_help=True)


@tokenizer_app.command("fit")
def fit_cmd(
    datasets: list[Path] = typer.Argument(..., help="Converted robot datasets to fit on (same action dims)."),
    out: Path = typer.Option(..., "--out", help="Output tokenizer folder (config.json, tokenizer.json)."),
    kind: str = typer.Option("fast", "--kind", help="fast (DCT + BPE) or bins (uniform bins)."),
    vocab_size: int | None = typer.Option(None, "--vocab-size", help="FAST: BPE vocabulary size (default: 1024); "
                                             "bins: bins per value (default: 256).", show_default=False),
    scale: float = typer.Option(10.0, "--scale", help="FAST: DCT coefficients are multiplied by this, then rounded."),
    horizon: int | None = typer.Option(None, "--horizon", help="Tokenize the first H steps of each chunk "
                                          "(default: the datasets' horizon).", show_default=False),
    max_chunks: int = typer.Option(100_000, "--max-chunks", help="FAST: fit on at most this many chunks, evenly "
                                   "spaced over all samples (0: all)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a tokenizer already in --out."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Fit a tokenizer on the datasets' action chunks (normalised with their q01/q99 stats)."""
    from cotrain.action_tokens import fit_tokenizer

    report = fit_tokenizer(datasets, out, kind=kind, vocab_size=vocab_size, scale=scale, horizon=horizon,
                           max_chunks=max_chunks or None, overwrite=overwrite)
    print_json(report) if json_output else print_table("tokenizer fit", report)


@tokenizer_app.command("eval")
def eval_cmd(
    directory: Path = typer.Argument(..., help="Tokenizer folder."),
    datasets: list[Path] = typer.Argument(..., help="Converted robot datasets to round-trip."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Round-trip every chunk: reconstruction error (normalised and original units) and tokens per chunk."""
    from cotrain.action_tokens import evaluate_tokenizer

    report = evaluate_tokenizer(directory, datasets)
    if json_output:
        print_json(report)
        return
    print_table("tokenizer eval", _flat(report))


def _flat(report: dict[str, Any]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for key, value in report.items():
        if isinstance(value, dict):
            rows.update({f"{key} {k}": (f"{v:.6g}" if isinstance(v, float) else v) for k, v in value.items()})
        else:
            rows[key] = f"{value:.6g}" if isinstance(value, float) else value
    return rows
