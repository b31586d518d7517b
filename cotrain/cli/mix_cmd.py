"""`cotrain mix check | simulate | plot`: dry runs of a mixture YAML."""

from __future__ import annotations

from pathlib import Path

import typer

from cotrain.cli.output import print_json
from cotrain.mix.spec import MAX_BATCH, MAX_STEPS

mix_app = typer.Typer(help="Validate, simulate and plot mixture YAMLs.", no_args_is_help=True)


def _print_report(report: object, json_output: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    data = report.to_json()  # type: ignore[attr-defined]  # every report passed here has to_json()
    if json_output:
        print_json(data)
        return
    console = Console()
    for phase in data["phases"]:
        table = Table(title=f"phase {phase['name']} ({phase['steps']} steps)", title_justify="left")
        for col in ("source", "drawn", "epochs", "target", "realised"):
            table.add_column(col, justify="left" if col == "source" else "right")
        for name in phase["drawn"]:
            table.add_row(name, str(phase["drawn"][name]), f"{phase['epochs'][name]:.3f}",
                          f"{phase['target'][name]:.4f}", f"{phase['realised'][name]:.4f}")
        console.print(table)
    if data["worst_window"]:
        ww = data["worst_window"]
        console.print(f"worst {int(ww['window_samples'])}-sample window deviation: {ww['max_deviation']:.5f}")
    for warning in data["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")


@mix_app.command("check")
def check(mixture: Path = typer.Argument(..., help="Mixture YAML."),
          world_size: int = typer.Option(1, min=1, max=MAX_BATCH, help="Ranks to check the layout for."),
          workers: int = typer.Option(0, min=0, max=1024, help="DataLoader workers per rank to check the layout for."),
          json_output: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Validate a mixture and print, per phase, samples and epochs drawn per source, with warnings."""
    from cotrain.mix.report import check_mixture
    from cotrain.mix.resolve import load_mixture

    _print_report(check_mixture(load_mixture(mixture), world_size=world_size, num_workers=workers), json_output)


@mix_app.command("simulate")
def simulate(mixture: Path = typer.Argument(..., help="Mixture YAML."),
             steps: int = typer.Option(..., min=1, max=MAX_STEPS, help="Steps to simulate."),
             world_size: int = typer.Option(1, min=1, max=MAX_BATCH, help="Ranks."),
             workers: int = typer.Option(0, min=0, max=1024, help="DataLoader workers per rank."),
             json_output: bool = typer.Option(False, "--json", help="Print the report as JSON.")) -> None:
    """Run the real sampler without decoding; report realised against target proportions per phase."""
    from cotrain.mix.report import simulate_mixture
    from cotrain.mix.resolve import load_mixture

    _print_report(simulate_mixture(load_mixture(mixture), steps, world_size=world_size, num_workers=workers),
                  json_output)


@mix_app.command("plot")
def plot(
    mixture: Path = typer.Argument(..., help="Mixture YAML."),
    out: Path = typer.Option(..., "--out", help="PNG to write."),
    steps: int = typer.Option(0, min=0, max=MAX_STEPS, help="Steps to plot (default: the whole schedule)."),
) -> None:
    """Plot stacked target weights over steps with phase boundaries and realised proportions."""
    from cotrain.mix.plot import plot_schedule
    from cotrain.mix.resolve import load_mixture

    typer.echo(str(plot_schedule(load_mixture(mixture), out, steps=steps or None)))
