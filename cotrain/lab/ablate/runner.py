"""`run_ablation(cfg)`: train every mixture x seed, evaluate each run, then report and plot.

Per run, under `OUT/runs/<mixture>/seed<k>/`:

    mixture.yaml   the run's mixture (study.materialise: absolute paths, the seed, rescaled phases)
    train/         the trainer's run directory (`cotrain.train.loop.train`, checkpoints, metrics.jsonl)
    offline.json   `cotrain.eval.offline.evaluate_run` on the held-out datasets
    sim.json       `cotrain.lab.sim.evaluate.evaluate_policy` with the run's Policy, `episodes` episodes
    sim_train.json the same on `train_episodes` layouts of its own training demonstrations (`train` split)
    result.json    the run's flat metrics (metrics.py) and the evaluation settings; written last

Resumable at every level: a run whose `result.json` matches the study's evaluation settings and whose
last checkpoint is at its final step is skipped; a run with a partial checkpoint continues from it
(the trainer's exact resume); a trained run without results is only evaluated. A run directory made
with other training settings is refused (its mixture.yaml or the trainer's stored config differs),
so changing `--steps`, `--batch-size` or `--set` needs a new `--out`; more `--seeds` or more mixtures just add runs.
A study evaluated by an older version of the evaluators (`EVALUATION_VERSION`) is re-evaluated the
same way, its training kept.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cotrain.atomic import write_text_atomic
from cotrain.dataset.manifest import MANIFEST_NAME
from cotrain.errors import ConfigError
from cotrain.lab.ablate.data import StudyData, load_study_data, prepare_study_data, study_dataset_names
from cotrain.lab.ablate.metrics import run_metrics
from cotrain.lab.ablate.study import (
    AblationConfig,
    StudyMixture,
    dataset_paths,
    dump_yaml,
    load_study_mixtures,
    materialise,
)

log = logging.getLogger(__name__)
__all__ = ["AblationResult", "RunRecord", "expert_reference", "run_ablation", "run_policy_factory"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunRecord:
    """One finished run: its mixture, seed, folder, metrics and whether this invocation did any work."""

    mixture: str
    seed: int
    run_dir: Path
    metrics: dict[str, float]
    trained: bool
    evaluated: bool


@dataclass
class AblationResult:
    """What `run_ablation` did and wrote."""

    out: Path
    baseline: str
    mixtures: list[str]
    settings: dict[str, Any] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def skipped(self) -> int:
        return sum(1 for r in self.runs if not r.trained and not r.evaluated)


def _study_data(cfg: AblationConfig, docs: list[dict[str, Any]]) -> StudyData | None:
    """The study folder the target sources live in, prepared first when its datasets are missing."""
    paths = [p for doc in docs for p in dataset_paths(doc)]
    missing = sorted({p for p in paths if not (p / MANIFEST_NAME).is_file()})
    targets = [d["sources"][cfg.target_source] for d in docs]
    roots = {Path(t["path"]).parent for t in targets if t.get("path")}
    root = roots.pop() if len(roots) == 1 else None
    if missing:
        known = set(study_dataset_names(cfg.data.target))
        preparable = root is not None and all(p.parent == root and p.name in known for p in missing)
        if not (cfg.prepare and preparable):
            why = "" if cfg.prepare else " (--no-prepare)"
            raise ConfigError(
                f"dataset {missing[0]} not found{why}; {len(missing)} missing in all. Prepare the "
                f"simulated study data with `cotrain ablate` (it makes data/lin2026 when the mixtures point there) "
                f"or convert your own datasets to these paths"
            )
        log.info("preparing the study data in %s (%d datasets missing)", root, len(missing))
        return prepare_study_data(root, cfg.data)  # type: ignore[arg-type]  # preparable above implies root is not None
    if root is not None and (root / "study.json").is_file():
        return load_study_data(root)
    return None


# Bumped whenever the evaluators record something new that metrics.py reads (2: the first-close point
# behind the `tracking_*` metrics), so that results of an earlier version are recomputed, not mixed in.
EVALUATION_VERSION = 2


def _eval_settings(cfg: AblationConfig, data: StudyData | None, first: StudyMixture) -> dict[str, Any]:
    eval_data = [str(Path(p).resolve()) for p in cfg.eval_data] or [str(p) for p in (data.heldout if data else ())]
    # replan_steps only when not the evaluator's 8, so runs of studies made before it existed are kept
    replan = {} if cfg.replan_steps == 8 else {"replan_steps": cfg.replan_steps}
    return {"evaluation_version": EVALUATION_VERSION, "episodes": cfg.episodes, "eval_seed": cfg.eval_seed, **replan,
            "eval_samples": cfg.eval_samples, "eval_data": eval_data, "embodiment": data.target if data else None,
            "verbs": list(data.verbs) if data else None, "image_size": first.spec.image_size,
            "target_source": cfg.target_source,
            "train_episodes": min(cfg.train_episodes, data.episodes) if data else 0,
            "corpus_seed": data.seed if data else None}


def _final_step(train_dir: Path) -> int:
    from cotrain.train.checkpoint import latest_checkpoint

    path = latest_checkpoint(train_dir)
    return int(path.name.split("_")[-1]) if path is not None else 0


def _train(cfg: AblationConfig, run_dir: Path, steps: int) -> bool:
    """Train (or continue) the run; False when it had already reached its last step."""
    from cotrain.train.config import make_train_config
    from cotrain.train.loop import train

    train_dir = run_dir / "train"
    if _final_step(train_dir) >= steps:
        return False
    tcfg = make_train_config(mixture=str(run_dir / "mixture.yaml"), model=cfg.model, steps=steps, out=str(train_dir),
                             resume=True, **cfg.train_fields())
    started = time.perf_counter()
    try:
        train(tcfg)
    except ConfigError as exc:
        if "--resume" in str(exc):
            raise ConfigError(f"{run_dir} was trained with other settings ({exc}); use a new --out") from None
        raise
    write_text_atomic(run_dir / "train_seconds.txt", f"{time.perf_counter() - started:.1f}\n")
    return True


# Episodes per policy call when a run is evaluated: the episodes run in lockstep (sim/episode.py).
EVAL_BATCH = 64


def run_policy_factory(train_dir: Path, source: str) -> Any:
    """The run's Policy driving the simulator, asked by source name (the tokens copy shares the embodiment),
    for up to EVAL_BATCH episodes at once."""
    from cotrain.lab.sim.evaluate import load_run_policy

    return load_run_policy(train_dir, source, EVAL_BATCH)


def _sim_config(settings: dict[str, Any]) -> Any:
    from cotrain.lab.sim.evaluate import EvalConfig

    return EvalConfig(episodes=settings["episodes"], embodiment=settings["embodiment"],
                      image_size=settings["image_size"], seed=settings["eval_seed"],
                      verbs=tuple(settings["verbs"]), replan_steps=settings.get("replan_steps", 8))


def expert_reference(out: Path, settings: dict[str, Any]) -> dict[str, dict[str, int]] | None:
    """The scripted expert's successes per split on the study's own episodes: the ceiling beside the runs.

    Evaluated once per study folder (`expert.json`) and again only when the evaluation settings change.
    """
    from cotrain.lab.sim.evaluate import evaluate_policy, expert_policy

    if not settings["embodiment"]:
        return None
    path = out / "expert.json"
    try:  # a cache: unreadable or malformed (a hand edit, a disk error) means evaluate again
        stored = _load(path)
    except (OSError, ValueError):
        stored = None
    if isinstance(stored, dict) and stored.get("settings") == settings and isinstance(stored.get("success"), dict):
        return dict(stored["success"])
    ecfg = _sim_config(settings)
    sim = evaluate_policy(expert_policy(ecfg), ecfg, name="scripted expert")
    success = {split: {"successes": int(v["successes"]), "episodes": int(v["episodes"])}
               for split, v in sim["splits"].items()}
    write_text_atomic(path, json.dumps({"settings": settings, "success": success}, indent=1) + "\n")
    return success


def _evaluate(run_dir: Path, settings: dict[str, Any]) -> None:
    from cotrain.eval.offline import evaluate_run
    from cotrain.lab.sim.evaluate import evaluate_policy
    from cotrain.lab.sim.scene import TRAIN_SPLIT

    train_dir = run_dir / "train"
    for stale in ("offline.json", "sim.json", "sim_train.json"):  # settings may have changed since then
        (run_dir / stale).unlink(missing_ok=True)
    if settings["eval_data"]:
        offline = evaluate_run(train_dir, settings["eval_data"], max_samples=settings["eval_samples"], seed=0)
        write_text_atomic(run_dir / "offline.json", json.dumps(offline, indent=1) + "\n")
    if settings["embodiment"]:
        ecfg = _sim_config(settings)
        factory = run_policy_factory(train_dir, settings["target_source"])
        sim = evaluate_policy(factory, ecfg, name=str(run_dir))
        write_text_atomic(run_dir / "sim.json", json.dumps(sim, indent=1) + "\n")
        if settings["train_episodes"]:
            tcfg = replace(ecfg, episodes=settings["train_episodes"], splits=(TRAIN_SPLIT,),
                           seed=settings["corpus_seed"])
            on_train = evaluate_policy(factory, tcfg, name=str(run_dir))
            write_text_atomic(run_dir / "sim_train.json", json.dumps(on_train, indent=1) + "\n")


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _run_one(cfg: AblationConfig, mixture: StudyMixture, seed: int, doc: dict[str, Any], settings: dict[str, Any],
             progress: Progress) -> RunRecord:
    run_dir = Path(cfg.out) / "runs" / mixture.name / f"seed{seed}"
    steps = sum(int(p["steps"]) for p in doc["phases"])
    text = dump_yaml(doc)
    mix_file = run_dir / "mixture.yaml"
    if mix_file.is_file() and mix_file.read_text() != text:
        raise ConfigError(f"{mix_file} differs from the study's mixture for this run ({mixture.path}, --steps); "
                          f"the mixture changed since it was trained (or --steps / --batch-size did): use a new --out")
    result = _load(run_dir / "result.json")
    if result is not None and result.get("settings") == settings and _final_step(run_dir / "train") >= steps:
        return RunRecord(mixture.name, seed, run_dir, result["metrics"], trained=False, evaluated=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(mix_file, text)
    progress(f"{mixture.name} seed {seed}: training {steps} steps")
    trained = _train(cfg, run_dir, steps)
    progress(f"{mixture.name} seed {seed}: evaluating")
    _evaluate(run_dir, settings)
    metrics = run_metrics(run_dir)
    write_text_atomic(run_dir / "result.json", json.dumps({"mixture": mixture.name, "seed": seed, "steps": steps,
                                                           "settings": settings, "metrics": metrics}, indent=1) + "\n")
    return RunRecord(mixture.name, seed, run_dir, metrics, trained=trained, evaluated=True)


def _echo(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def _run_task(cfg: AblationConfig, mixture: StudyMixture, seed: int, doc: dict[str, Any], settings: dict[str, Any],
              label: str) -> RunRecord:
    """One run in a worker process (progress goes to stderr: a callback cannot cross processes)."""
    import torch

    torch.set_num_threads(cfg.threads)
    record = _run_one(cfg, mixture, seed, doc, settings, lambda msg: _echo(f"{label} {msg}"))
    done = "done" if record.trained or record.evaluated else "done before, kept"
    _echo(f"{label} {mixture.name} seed {seed}: {done}")
    return record


def _run_all(cfg: AblationConfig, tasks: list[tuple[StudyMixture, int, dict[str, Any]]], settings: dict[str, Any],
             say: Progress) -> list[RunRecord]:
    import torch

    total = len(tasks)
    if cfg.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(cfg.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_task, cfg, m, seed, doc, settings, f"[{n + 1}/{total}]")
                       for n, (m, seed, doc) in enumerate(tasks)]
            return [f.result() for f in futures]
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        records = []
        for n, (m, seed, doc) in enumerate(tasks):
            label = f"[{n + 1}/{total}]"
            record = _run_one(cfg, m, seed, doc, settings, lambda msg, label=label: say(f"{label} {msg}"))  # type: ignore[misc]  # mypy cannot infer a lambda binding `label` by default argument
            if not (record.trained or record.evaluated):
                say(f"{label} {m.name} seed {seed}: done before, kept")
            records.append(record)
        return records
    finally:
        torch.set_num_threads(threads)


def run_ablation(cfg: AblationConfig, progress: Progress | None = None) -> AblationResult:
    """Run (or continue) the study and write its report and plots; returns what it did."""
    from cotrain.lab.ablate.plots import write_plots
    from cotrain.lab.ablate.report import write_report

    say = progress or (lambda msg: log.info("%s", msg))
    mixtures, baseline = load_study_mixtures(cfg)
    docs = {m.name: [materialise(m, seed, cfg.steps, cfg.batch_size) for seed in range(cfg.seeds)] for m in mixtures}
    data = _study_data(cfg, [d[0] for d in docs.values()])
    settings = _eval_settings(cfg, data, mixtures[0])
    if not settings["eval_data"] and not settings["embodiment"]:
        raise ConfigError("nothing to evaluate: the mixtures are not on the simulated study data, so pass "
                          "--eval-data with held-out datasets")
    steps = {m.name: sum(int(p["steps"]) for p in docs[m.name][0]["phases"]) for m in mixtures}
    result = AblationResult(Path(cfg.out), baseline.name, [m.name for m in mixtures],
                            {**settings, "seeds": cfg.seeds, "steps": steps,
                             "batch_size": {m.name: int(docs[m.name][0]["batch_size"]) for m in mixtures},
                             "model": cfg.model,
                             "init_from": cfg.init_from,
                             "train": {k: v for k, v in cfg.train_fields().items() if k != "init_from"}})
    tasks = [(m, seed, docs[m.name][seed]) for m in mixtures for seed in range(cfg.seeds)]
    result.runs = _run_all(cfg, tasks, settings, say)
    expert = expert_reference(Path(cfg.out), settings)
    if expert is not None:
        result.settings["expert"] = expert
    result.files.update(write_report(result))
    result.files.update(write_plots(result))
    return result
