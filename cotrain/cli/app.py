"""The `cotrain` command. Expected errors print one line and exit 1; interrupts exit 130."""

from __future__ import annotations

import logging
import sys

import typer

from cotrain.cli.ablate_cmd import ablate_cmd
from cotrain.cli.annotate_cmd import annotate_cmd
from cotrain.cli.convert_cmd import build_convert_app, merge_manifests
from cotrain.cli.dataset_cmd import inspect_cmd, preview_cmd, validate_cmd
from cotrain.cli.export_cmd import export_app
from cotrain.cli.mix_cmd import mix_app
from cotrain.cli.serve_cmd import serve_cmd
from cotrain.cli.sim_cmd import sim_app
from cotrain.cli.tokenizer_cmd import tokenizer_app
from cotrain.cli.train_cmd import eval_cmd, train_cmd
from cotrain.errors import CotrainError

app = typer.Typer(
    help="cotrain: co-training data mixtures for robot learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(build_convert_app(), name="convert")
app.command("merge-manifests")(merge_manifests)
app.command("annotate")(annotate_cmd)
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(mix_app, name="mix")
app.add_typer(sim_app, name="sim")
app.add_typer(export_app, name="export")
app.command("inspect")(inspect_cmd)
app.command("validate")(validate_cmd)
app.command("preview")(preview_cmd)
app.command("train")(train_cmd)
app.command("eval")(eval_cmd)
app.command("ablate")(ablate_cmd)
app.command("serve")(serve_cmd)


def main() -> None:
    """The `cotrain` console script: run the CLI with logging on stderr."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        app()
    except CotrainError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted; run the same command again to resume", err=True)
        sys.exit(130)
