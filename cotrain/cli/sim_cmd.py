"""`cotrain sim generate|eval|splits`: the simulated tabletop benchmark (see docs/sim.md)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cotrain.cli.options import build_model, command_from_models
from cotrain.cli.output import print_json, print_table
from cotrain.errors import ConfigError
from cotrain.lab.corpus_config import CorpusConfig
from cotrain.lab.sim.pretrain_config import SHIPPED_NAME, PretrainConfig

if TYPE_CHECKING:
    from cotrain.lab.sim.episode import BatchedPolicy
    from cotrain.lab.sim.evaluate import EvalConfig, PolicyFactory

sim_app = typer.Typer(help="Simulated tabletop benchmark: generate a co-training corpus, evaluate policies.",
                      no_args_is_help=True)


def _generate(out: Path, json_output: bool = False, convert_to: Path | None = None, workers: int = 1,
              overwrite: bool = False, **values: Any) -> None:
    """Write demonstrations (LeRobot v3.0 per robot, EgoDex human video) and vision-language data."""
    from cotrain.lab.sim.generate import convert_corpus, generate_corpus

    report = generate_corpus(out, build_model(CorpusConfig, values), overwrite=overwrite)
    if convert_to is not None:
        report["converted"] = convert_corpus(out, convert_to, workers=workers, overwrite=overwrite)
    if json_output:
        print_json(report)
        return
    rows = [(s["name"], f"{s['converter']} <- {out / s['path']} ({s['role']})") for s in report["sources"]]
    rows += [(f"converted {c['name']}", f"{c['samples']} samples -> {c['out']}") for c in report.get("converted", [])]
    print_table(f"sim corpus ({report['seconds']} s)", rows)


def _option(name: str, annotation: Any, option: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


# The corpus options are CorpusConfig's fields (cotrain/lab/corpus_config.py, shared with `cotrain ablate`).
sim_app.command("generate")(command_from_models(
    _generate, [("out", Path, "Output folder for the raw corpus (source formats + corpus.json).")], [CorpusConfig],
    flags={"questions_per_image": "--questions"},
    extra=[_option("convert_to", Path | None, typer.Option(None, "--convert", help="Also convert every source "
                                                                "into this folder.", show_default=False)),
           _option("workers", int, typer.Option(1, "--workers", help="Conversion worker processes (with --convert).")),
           _option("overwrite", bool, typer.Option(False, "--overwrite", help="Replace an existing corpus (and "
                                                                             "conversions)."))],
))


@sim_app.command("eval")
def eval_cmd(
    run_dir: Path | None = typer.Argument(None, help="Trained run directory (omit with --policy or --server)."),
    policy: str | None = typer.Option(None, "--policy", help="Baseline instead of a run: expert or random."),
    server: str | None = typer.Option(None, "--server", help="A policy served by `cotrain serve`, ws://HOST:PORT, "
                                         "instead of a run directory (docs/serving.md)."),
    episodes: int = typer.Option(50, "--episodes", help="Total episodes, spread round-robin over the splits."),
    splits: str = typer.Option("seen,unseen,seen_shift,unseen_shift", "--splits",
                              help="Comma-separated splits; `train` replays the training demos' layouts "
                              "(--seed as generated)."),
    embodiment: str = typer.Option("sim_arm", "--embodiment", help="Robot to drive: sim_arm or sim_gripper."),
    replan_steps: int = typer.Option(8, "--replan-steps", help="Actions executed per chunk before replanning."),
    batch: int = typer.Option(64, "--batch", min=1, help="A run's episodes asked in one forward pass (lockstep); "
                              "1: one episode after another, as through --server."),
    image_size: int = typer.Option(64, "--image-size", help="Camera image side (as generated for training)."),
    seed: int = typer.Option(0, "--seed", help="Evaluation seed (same seed: same episodes for every policy)."),
    verbs: str = typer.Option("pick,push,place", "--verbs", help="Task verbs to evaluate (as generated)."),
    out: Path | None = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    json_output: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Closed-loop success rate per split (seen, unseen, seen_shift, unseen_shift) and unseen group."""
    from cotrain.lab.sim.evaluate import EvalConfig, evaluate_policy

    cfg = EvalConfig(episodes=episodes, splits=_split_list(splits), embodiment=embodiment, replan_steps=replan_steps,
                     image_size=image_size, seed=seed, verbs=_split_list(verbs))
    factory, name = _policy(run_dir, policy, server, cfg, batch)
    result = evaluate_policy(factory, cfg, name=name)
    if out is not None:
        import json

        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
    print_json(result) if json_output else print_table(f"sim eval: {name} ({result['seconds']} s)", _rows(result))


def _split_list(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _policy(run_dir: Path | None, policy: str | None, server: str | None,
            cfg: EvalConfig, batch: int) -> tuple[PolicyFactory | BatchedPolicy, str]:
    from cotrain.lab.sim.evaluate import BASELINES, expert_policy, load_run_policy, random_policy, served_policy

    if sum(x is not None for x in (run_dir, policy, server)) != 1:
        raise ConfigError("give either RUN_DIR (a trained run), --policy expert|random or --server ws://HOST:PORT; "
                          "exactly one of them")
    if policy is not None:
        if policy not in BASELINES:
            raise ConfigError(f"--policy {policy!r}: choose from {', '.join(BASELINES)}")
        return (expert_policy if policy == "expert" else random_policy)(cfg), policy
    if server is not None:
        return served_policy(server, cfg.embodiment), server
    assert run_dir is not None
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} not found")
    return load_run_policy(run_dir, cfg.embodiment, batch), str(run_dir)


def _rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    def fmt(s: dict[str, Any]) -> str:
        lo, hi = s["ci95"]
        tracking = "-" if s.get("tracking") is None else f"{s['tracking']:.2f}"
        return (f"{s['success_rate']:.3f} ({s['successes']}/{s['episodes']}, 95% CI {lo:.2f}-{hi:.2f}); "
                f"closest {s['mean_closest']:.3f} m; tracking {tracking}")

    rows = [(split, fmt(s)) for split, s in result["splits"].items()]
    rows += [(f"  {split} / {g}", fmt(s)) for split, groups in result["groups"].items() for g, s in groups.items()]
    rows.append(("overall", fmt(result["overall"])))
    return rows


def _pretrain(out: Path, json_output: bool = False, **values: Any) -> None:
    """Pretrain the simulator backbone (sim PaliGemma) on rendered scenes; writes a cotrain backbone checkpoint."""
    import sys

    from cotrain.lab.sim.pretrain import pretrain_backbone

    cfg = build_model(PretrainConfig, values)
    command = "cotrain sim pretrain " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["sim", "pretrain"] else ""
    report = pretrain_backbone(cfg, out, command=command, log=lambda m: typer.echo(m, err=True))
    if json_output:
        print_json({"out": str(report.out), "steps": report.steps, "seconds": round(report.seconds, 1),
                    "loss": report.loss, "pointing_error": report.pointing_error})
        return
    rows = [("out", str(report.out)), ("steps", str(report.steps)), ("seconds", f"{report.seconds:.0f}"),
            ("loss", f"{report.loss:.4f}"), *((f"pointing error ({k})", f"{v:.3f}")
                                              for k, v in report.pointing_error.items())]
    print_table("sim backbone", rows)


sim_app.command("pretrain")(command_from_models(
    _pretrain, [("out", Path, "Output folder of the backbone checkpoint (config.json + model.safetensors).")],
    [PretrainConfig], exclude=("mix", "verbs", "patch_sigma", "warmup_steps", "min_lr_ratio", "image_size")))


@sim_app.command("backbone")
def backbone_cmd() -> None:
    """Print the shipped simulator backbone's directory (for `cotrain train --init-from`)."""
    from cotrain.lab.sim.pretrain_config import resolve_backbone

    print(resolve_backbone(SHIPPED_NAME))


@sim_app.command("splits")
def splits_cmd(json_output: bool = typer.Option(False, "--json", help="Print the table as JSON.")) -> None:
    """Which colours and shapes each data role shows (the split design of docs/sim.md)."""
    from cotrain.lab.sim.scene import HELD_OUT_COMBOS, split_table

    table = split_table()
    if json_output:
        print_json({"concepts": table, "held_out_combos": [list(c) for c in HELD_OUT_COMBOS]})
        return
    rows = [(r["concept"], r["shown_by"]) for r in table]
    rows += [("held out (all demos)", "; ".join(" ".join(c) for c in HELD_OUT_COMBOS))]
    print_table("sim split design", rows)
