"""The metrics of one ablation run, flattened from its evaluation files, and their definitions.

- `success_<split>`: closed-loop success rate in the simulator per split (sim.json), and overall.
- `unseen_<group>`: success on the unseen tasks of one group (the concept only one co-training
  modality shows: `vision_language` purple, `cross_embodiment` star, `human` triangle; `combo` the
  held-out verb-colour-shape triples), pooled over `unseen` and `unseen_shift`.
- `reach_<split>`: the mean over episodes of the nearest the effector came to the task's object (metres
  on the table plane, 0 once held), per split and overall: a dense closed-loop measure that can
  separate mixtures whose success rates are all near 0 (lower is better; grasping needs <= 0.045,
  pushing works from 0.11).
- `tracking_seen`, `tracking_unseen`: how closely where the gripper first closes follows where the
  task's object stood (`cotrain.lab.sim.evaluate.tracking_slope`, seen tasks pooled with their shifted
  episodes, unseen likewise): 1 for the expert, about 0 for a policy that closes in the same place
  whatever the layout or that goes for another object; on unseen tasks, whether the policy finds the
  object named by the concept it never saw on its own robot.
- `success_train`, `reach_train`, `tracking_train`: the same on the layouts of the target robot's own training
  demonstrations (sim_train.json): a run that does well there but not on `seen` has memorised its
  scenes; one that fails there too cannot control the robot yet.
- `action_mse`: normalised action MSE of sampled chunks on the held-out target-robot data (offline.json,
  cell-weighted over the held-out action datasets).
- `image_gain`: how much that MSE rises when each held-out sample is shown another sample's images
  (cotrain/eval/offline.py): whether the policy's actions follow what the camera shows in scenes it was
  not trained on (higher is better; ~0 for a policy that memorised its scenes or ignores vision).
- `vl_text_ce`: teacher-forced text cross-entropy on held-out vision-language data (token-weighted
  over the held-out text datasets); the language-retention probe: lower means more language kept.
- `train_loss` (mean of the last 5 logged rows) and `train_seconds`: context, not compared.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotrain.lab.sim.evaluate import tracking_slope
from cotrain.lab.sim.scene import EVAL_SPLITS, UNSEEN_GROUPS

__all__ = ["METRICS", "MetricDef", "run_metrics"]


@dataclass(frozen=True)
class MetricDef:
    """A reported metric: its key, a label, whether higher is better, and whether it is tested."""

    key: str
    label: str
    higher_is_better: bool
    tested: bool = True


METRICS: tuple[MetricDef, ...] = (
    *(MetricDef(f"success_{s}", f"success, {s.replace('_', ' ')}", True) for s in EVAL_SPLITS),
    MetricDef("success_overall", "success, all splits", True),
    *(MetricDef(f"unseen_{g}", f"unseen success, {g.replace('_', ' ')} group", True) for g in UNSEEN_GROUPS),
    *(MetricDef(f"reach_{s}", f"closest approach to the object, {s.replace('_', ' ')}", False) for s in EVAL_SPLITS),
    MetricDef("reach_overall", "closest approach to the object, all splits", False),
    MetricDef("tracking_seen", "first grasp follows the object, seen tasks", True),
    MetricDef("tracking_unseen", "first grasp follows the object, unseen tasks", True),
    MetricDef("success_train", "success, own training layouts", True),
    MetricDef("reach_train", "closest approach to the object, own training layouts", False),
    MetricDef("tracking_train", "first grasp follows the object, own training layouts", True),
    MetricDef("action_mse", "held-out action MSE (normalised)", False),
    MetricDef("image_gain", "held-out action MSE rise with another sample's images", True),
    MetricDef("vl_text_ce", "held-out VL text CE (language retention)", False),
    MetricDef("train_loss", "final training loss", False, tested=False),
    MetricDef("train_seconds", "training time (s)", False, tested=False),
)


def _sim_metrics(sim: dict[str, Any]) -> dict[str, float]:
    out = {f"success_{s}": float(v["success_rate"]) for s, v in sim["splits"].items()}
    out["success_overall"] = float(sim["overall"]["success_rate"])
    reached = [e for e in sim["episodes"] if "closest" in e]  # absent in evaluations before the metric existed
    for split in dict.fromkeys(e["split"] for e in reached):
        out[f"reach_{split}"] = sum(e["closest"] for e in reached if e["split"] == split) / sum(
            e["split"] == split for e in reached)
    if reached:
        out["reach_overall"] = sum(e["closest"] for e in reached) / len(reached)
    for family in ("seen", "unseen", "train"):
        slope = tracking_slope([e for e in sim["episodes"] if e["split"].removesuffix("_shift") == family])
        if slope is not None:
            out[f"tracking_{family}"] = slope
    unseen = [e for e in sim["episodes"] if e["split"].startswith("unseen")]
    for group in UNSEEN_GROUPS:
        episodes = [e["success"] for e in unseen if e["group"] == group]
        if episodes:
            out[f"unseen_{group}"] = sum(episodes) / len(episodes)
    return out


def _train_split_metrics(sim: dict[str, Any]) -> dict[str, float]:
    """The train split's metrics only: the file's `overall` is the train split, not all splits."""
    return {k: v for k, v in _sim_metrics(sim).items() if k in ("success_train", "reach_train", "tracking_train")}


def _offline_metrics(offline: dict[str, Any]) -> dict[str, float]:
    cells = sq = tokens = ce = gain_cells = gain = 0.0
    for report in offline["datasets"].values():
        if "actions" in report:
            n = float(report["actions"]["cells"])
            cells, sq = cells + n, sq + n * float(report["actions"]["normalized"]["mse"])
            if "image_gain" in report["actions"]:  # absent in evaluations before the probe existed
                gain_cells, gain = gain_cells + n, gain + n * float(report["actions"]["image_gain"])
        if "text" in report:
            n = float(report["text"]["tokens"])
            tokens, ce = tokens + n, ce + n * float(report["text"]["ce"])
    out = {}
    if cells:
        out["action_mse"] = sq / cells
    if gain_cells:
        out["image_gain"] = gain / gain_cells
    if tokens:
        out["vl_text_ce"] = ce / tokens
    return out


def _train_metrics(run_dir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    path = run_dir / "train" / "metrics.jsonl"
    rows: list[dict[str, Any]] = []
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        losses = [float(r["loss"]) for r in rows[-5:] if math.isfinite(float(r.get("loss", math.nan)))]
        if losses:
            out["train_loss"] = sum(losses) / len(losses)
    elapsed = rows[-1].get("elapsed_s") if rows else None
    seconds = run_dir / "train_seconds.txt"
    if isinstance(elapsed, (int, float)):  # the training loop's own clock: counts every segment of a resumed run
        out["train_seconds"] = float(elapsed)
    elif seconds.is_file():  # runs logged before elapsed_s: the last invocation's time only
        out["train_seconds"] = float(seconds.read_text())
    return out


def run_metrics(run_dir: Path) -> dict[str, float]:
    """Flat metrics of a run from its sim.json, sim_train.json, offline.json and training files (absent
    files: no keys)."""
    out: dict[str, float] = {}
    for name, extract in (("sim.json", _sim_metrics), ("sim_train.json", _train_split_metrics),
                          ("offline.json", _offline_metrics)):
        path = run_dir / name
        if path.is_file():
            out.update(extract(json.loads(path.read_text())))
    out.update(_train_metrics(run_dir))
    return out
