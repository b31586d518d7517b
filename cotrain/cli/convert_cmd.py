"""`cotrain convert FORMAT SRC OUT` (one subcommand per registered converter) and `merge-manifests`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import typer
from typer.core import TyperGroup

from cotrain.cli.options import build_model, command_from_models
from cotrain.cli.output import print_json, print_table
from cotrain.errors import ConfigError


def _report(report: Any, json_output: bool) -> None:
    data = report.to_json()
    if json_output:
        print_json(data)
        return
    rows = {k: data[k] for k in ("out", "converter", "samples", "episodes", "bytes", "seconds")}
    rows["shards"] = f"{data['shards_written']} written, {data['shards_reused']} reused of {data['shards_total']}"
    rows["skipped episodes"] = len(data["skipped"])
    if data["already_done"]:
        rows["note"] = "already converted with these arguments; nothing to do"
    elif not data["finalized"]:
        rows["note"] = "part finished; run `cotrain merge-manifests OUT` once every part is done"
    print_table("conversion", rows)
    for line in data["skipped"]:
        typer.echo(f"skipped: {line}", err=True)


def _make_command(name: str) -> Any:
    from cotrain.convert.spec import CONVERTERS, RunOptions

    conv = CONVERTERS.get(name)

    def run(src: Path, out: Path, json_output: bool = False, **values: Any) -> None:
        from cotrain.convert.pipeline import convert

        options = build_model(conv.options, values)
        run_opts = build_model(RunOptions, values)
        _report(convert(name, src, out, options, run_opts), json_output)

    run.__doc__ = conv.summary
    return command_from_models(
        run, [("src", Path, "Source dataset (folder or file)."), ("out", Path, "Output folder for shards.")],
        [conv.options, RunOptions],
    )


class _LazyConvertGroup(TyperGroup):
    """Subcommands come from the converter registry and are built on first use, so `cotrain --help`
    imports no converter."""

    # The ignores: typer 0.29 types TyperGroup against its vendored `typer._click`, a copy of click whose
    # classes are not the installed `click` package's.
    def list_commands(self, ctx: click.Context) -> list[str]:  # type: ignore[override]  # typer's vendored click (above)
        from cotrain.convert.spec import CONVERTERS

        return CONVERTERS.names()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:  # type: ignore[override]  # typer's vendored click (above)
        from cotrain.convert.spec import CONVERTERS

        if cmd_name not in CONVERTERS:
            return None
        try:
            CONVERTERS.get(cmd_name)
        except ImportError as exc:  # a plugin with a missing dependency must not break the others
            return click.Command(cmd_name, help=f"(unavailable: {exc})", callback=_unavailable(cmd_name, exc))
        single = typer.Typer(add_completion=False)
        single.command(cmd_name, help=CONVERTERS.get(cmd_name).summary)(_make_command(cmd_name))
        return typer.main.get_command(single)  # type: ignore[return-value]  # typer's vendored click (above)


def _unavailable(name: str, exc: Exception) -> Any:
    def fail() -> None:
        raise ConfigError(f"converter {name!r} cannot load: {exc}")

    return fail


def build_convert_app() -> typer.Typer:
    """The `cotrain convert` group, whose subcommands come from the converter registry."""
    return typer.Typer(cls=_LazyConvertGroup, help="Convert a source dataset into cotrain shards.",
                       no_args_is_help=True)


def merge_manifests(
    out: Path = typer.Argument(..., help="Output folder that the parts of a job array wrote into."),
    json_output: bool = typer.Option(False, "--json", help="Print the manifest summary as JSON."),
) -> None:
    """Join the parts of a `--num-parts K` conversion: check all shards, compute stats, write the manifest."""
    from cotrain.convert.finalize import finalize

    manifest = finalize(out)
    summary = {"out": str(out), "shards": len(manifest.shards), "samples": manifest.num_samples,
               "episodes": manifest.num_episodes, "skipped episodes": len(manifest.skipped_episodes)}
    print_json(summary) if json_output else print_table("merged", summary)
