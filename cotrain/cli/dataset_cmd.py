"""`cotrain inspect`, `cotrain validate` and `cotrain preview`: look at a converted dataset.

Thin commands over cotrain.dataset.summary, cotrain.dataset.validate and cotrain.dataset.preview;
those are imported inside each command so `cotrain --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cotrain.cli.output import print_json, print_table

_DATASET = typer.Argument(..., help="A converted dataset (holding manifest.json): a folder or an fsspec URL "
                                    "(s3://bucket/ds, gs://bucket/ds).")
_JSON = typer.Option(False, "--json", help="Print JSON instead of tables.")
_STORAGE = typer.Option([], "--storage-option", "-S", metavar="KEY=VALUE",
                        help="How to reach a URL dataset, repeatable: endpoint_url, profile, anonymous, region, "
                             "project, requester_pays (the mixture's storage_options; docs/mixtures.md).")


def _storage_options(pairs: list[str]) -> Any:
    """`KEY=VALUE` pairs as StorageOptions (values read as YAML scalars: true, 3, text); None when empty."""
    if not pairs:
        return None
    import yaml
    from pydantic import ValidationError

    from cotrain.dataset.storage import StorageOptions
    from cotrain.errors import ConfigError

    if bad := next((p for p in pairs if "=" not in p), None):
        raise ConfigError(f"--storage-option {bad!r}: expected KEY=VALUE, e.g. endpoint_url=http://127.0.0.1:9000")
    raw = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)}
    try:
        return StorageOptions.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        valid = ", ".join(StorageOptions.model_fields)
        raise ConfigError(f"--storage-option {err['loc'][0]}: {err['msg']}; valid keys: {valid}") from None


def _size(num_bytes: int) -> str:
    value, unit = float(num_bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{num_bytes:,} ({value:.1f} {unit})" if unit != "B" else f"{num_bytes:,}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _print_stats(title: str, rows: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from cotrain.dataset.summary import STAT_COLUMNS

    table = Table(title=title, title_justify="left")
    table.add_column("dimension", style="bold")
    for column in STAT_COLUMNS:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row.name, *(f"{v:.4g}" for v in row.values))
    Console().print(table)


def _overview(data: dict[str, Any]) -> dict[str, Any]:
    dims, prov = data["dimensions"], data["provenance"]
    rows = {"name": data["name"], "modality": data["modality"], "embodiment": data["embodiment"] or "-"}
    rows.update({k: data[k] for k in ("episodes", "samples", "shards")})
    rows["bytes"] = _size(data["bytes"])
    rows["state"] = f"{dims['state_dim']} dims" if dims["state_dim"] else "-"
    rows["actions"] = f"{dims['action_dim']} dims x horizon {dims['horizon']}" if dims["action_dim"] else "-"
    rows["fps"] = dims["fps"] or "-"
    rows["cameras"] = ", ".join(dims["cameras"]) or "-"
    rows["image size"] = "x".join(map(str, dims["image_size"])) + " (HxW bound)" if dims["image_size"] else "as source"
    rows["skipped episodes"] = len(data["skipped_episodes"])
    rows["converter"] = f"{prov['converter']} (cotrain {prov['cotrain_version']})"
    rows["source fingerprint"] = prov["source_fingerprint"][:16]
    return rows


def inspect_cmd(out: str = _DATASET, json_output: bool = _JSON, storage: list[str] = _STORAGE) -> None:
    """Summarise a dataset from its manifest (fast: no shard is read)."""
    from cotrain.dataset.summary import stat_rows, summarise

    summary = summarise(out, _storage_options(storage))
    if json_output:
        print_json(summary.to_json())
        return
    m = summary.manifest
    print_table(out, _overview(summary.to_json()))
    for title, stats, names in (("state", m.stats.state, m.state_names), ("actions", m.stats.actions, m.action_names)):
        if stats is not None:
            _print_stats(f"{title} stats ({stats.count} frames)", stat_rows(stats, names))
    for skipped in m.skipped_episodes:
        typer.echo(f"skipped episode {skipped.episode}: {skipped.reason}")


def validate_cmd(
    out: str = _DATASET,
    json_output: bool = _JSON,
    workers: int = typer.Option(1, min=1, help="Processes checking shards in parallel."),
    max_problems: int = typer.Option(1000, min=0, help="List at most this many problems (0: all); all are counted."),
    storage: list[str] = _STORAGE,
) -> None:
    """Re-hash every shard and check every sample against the manifest; exit 1 on any problem."""
    from cotrain.dataset.validate import validate

    report = validate(out, workers=workers, max_problems=max_problems or None, progress=None,
                      storage_options=_storage_options(storage))
    if json_output:
        print_json(report.to_json())
    else:
        for problem in report.problems:
            typer.echo(str(problem))
        hidden = report.num_problems - len(report.problems)
        more = f" ({hidden} not listed; raise --max-problems)" if hidden else ""
        verdict = "OK" if report.ok else _count(report.num_problems, "problem") + more
        typer.echo(f"validate {out}: {_count(report.shards, 'shard')}, {_count(report.samples, 'sample')} checked: "
                   f"{verdict}")
    if not report.ok:
        raise typer.Exit(1)


def preview_cmd(
    out: str = _DATASET,
    png: Path = typer.Option(..., "--out", help="PNG file to write."),
    samples: int = typer.Option(4, min=1, help="Number of samples (rows)."),
    seed: int = typer.Option(0, help="Seed of the sample choice (numpy default_rng)."),
    storage: list[str] = _STORAGE,
) -> None:
    """Render a PNG of a few samples: all cameras, their text and one action chunk each."""
    from cotrain.dataset.preview import render_preview

    result = render_preview(out, png, samples=samples, seed=seed, storage_options=_storage_options(storage))
    typer.echo(f"wrote {result.path} ({result.width_px}x{result.height_px} px): {', '.join(result.keys)}")
