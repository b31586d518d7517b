"""The study's figures (matplotlib, Agg backend, written atomically as PNG):

- `success_per_split.png`: closed-loop success per split (seen, unseen, seen shift, unseen shift,
  and the run's own training layouts when evaluated) for every mixture: bars = mean over seeds,
  whiskers = SD, dots = the seeds;
- `reach_per_split.png`: the closest approach to the task's object per split (metres, lower is
  better; the grasp radius dashed), the dense measure where success is rare;
- `tracking.png`: whether the gripper first closes where the task's object stood (slope; the
  expert's 1 dashed), on seen and unseen tasks and the run's own training layouts;
- `unseen_groups.png`: unseen-task success by the modality that carries the task's new concept;
- `language_retention.png`: held-out vision-language text CE per mixture (lower = more language
  kept), with the baseline's mean as a dashed line.
A figure whose metrics no run reports is not written.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cotrain.atomic import write_bytes_atomic
from cotrain.lab.ablate.metrics import METRICS
from cotrain.lab.sim.world import GRASP_RADIUS

if TYPE_CHECKING:
    from cotrain.lab.ablate.runner import AblationResult

__all__ = ["save_png", "write_plots"]


def _values(result: AblationResult, mixture: str, key: str) -> list[float]:
    return [r.metrics[key] for r in result.runs if r.mixture == mixture and key in r.metrics]


def save_png(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buf.getvalue())
    return path


def _grouped(result: AblationResult, keys: Sequence[str], labels: Sequence[str], title: str, path: Path,
             ylabel: str = "success rate", ylim: tuple[float, float] | None = (0, 1.05),
             mark: tuple[float, str] | None = None) -> Path | None:
    """Bars per mixture and key (mean, SD whiskers, seed dots); `mark` = a dashed reference line (y, label)."""
    import matplotlib.pyplot as plt

    if not any(_values(result, m, k) for m in result.mixtures for k in keys):
        return None
    n_mix, n_keys = len(result.mixtures), len(keys)
    width = 0.8 / n_keys
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * n_mix + 2.5), 4.2), dpi=110)
    x = np.arange(n_mix)
    for j, (key, label) in enumerate(zip(keys, labels)):
        pos = x - 0.4 + width * (j + 0.5)
        vals = [_values(result, m, key) for m in result.mixtures]
        means = [float(np.mean(v)) if v else np.nan for v in vals]
        sds = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in vals]
        ax.bar(pos, means, width, yerr=sds, capsize=2, label=label, alpha=0.8)
        for p, v in zip(pos, vals):
            ax.scatter(np.full(len(v), p), v, s=7, color="k", zorder=3)
    ax.set_xticks(x, result.mixtures, rotation=30, ha="right")
    ax.set(ylabel=ylabel, title=title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if mark is not None:
        ax.axhline(mark[0], color="k", lw=0.8, ls="--", label=mark[1])
    ax.axvline(result.mixtures.index(result.baseline) + 0.5, color="grey", lw=0.6, ls=":")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def _retention(result: AblationResult, path: Path) -> Path | None:
    import matplotlib.pyplot as plt

    vals = [_values(result, m, "vl_text_ce") for m in result.mixtures]
    if not any(vals):
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(vals) + 2.0), 4.0), dpi=110)
    x = np.arange(len(vals))
    means = [float(np.mean(v)) if v else np.nan for v in vals]
    sds = [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in vals]
    ax.bar(x, means, 0.6, yerr=sds, capsize=3, color="tab:purple", alpha=0.75)
    for p, v in zip(x, vals):
        ax.scatter(np.full(len(v), p), v, s=9, color="k", zorder=3)
    base = means[result.mixtures.index(result.baseline)]
    if np.isfinite(base):
        ax.axhline(base, color="k", lw=0.8, ls="--", label=f"{result.baseline} mean")
        ax.legend(fontsize=8)
    ax.set_xticks(x, result.mixtures, rotation=30, ha="right")
    ax.set(ylabel="text cross-entropy (nats / token)",
           title="Language retention: held-out vision-language text CE (lower is better)")
    fig.tight_layout()
    return save_png(fig, path)


def write_plots(result: AblationResult) -> dict[str, Path]:
    """Write the figures into the study folder; returns {file name: path} of those written."""
    import matplotlib

    matplotlib.use("Agg")
    labels = {m.key: m.label for m in METRICS}
    splits = [m.key for m in METRICS if m.key.startswith("success_") and m.key != "success_overall"]
    groups = [m.key for m in METRICS if m.key.startswith("unseen_")]
    reach = [m.key for m in METRICS if m.key.startswith("reach_") and m.key != "reach_overall"]
    tracking = [m.key for m in METRICS if m.key.startswith("tracking_")]
    out = {
        "success_per_split.png": _grouped(result, splits, [labels[k].removeprefix("success, ") for k in splits],
                                          "Closed-loop success per split (mean ± SD over seeds, dots = seeds)",
                                          result.out / "success_per_split.png"),
        "unseen_groups.png": _grouped(result, groups, [labels[k].removeprefix("unseen success, ") for k in groups],
                                      "Unseen-task success by the modality that carries the new concept",
                                      result.out / "unseen_groups.png"),
        "reach_per_split.png": _grouped(result, reach,
                                        [labels[k].removeprefix("closest approach to the object, ") for k in reach],
                                        "Closest approach to the task's object per split (lower is better)",
                                        result.out / "reach_per_split.png", ylabel="metres on the table plane",
                                        ylim=None, mark=(GRASP_RADIUS, "grasp radius")),
        "tracking.png": _grouped(result, tracking, [labels[k].removeprefix("first grasp follows the object, ")
                                                    for k in tracking],
                                 "Does the first grasp follow the task's object? (slope; 1 = always at it)",
                                 result.out / "tracking.png", ylabel="slope of grasp point on object position",
                                 ylim=None, mark=(1.0, "expert")),
        "language_retention.png": _retention(result, result.out / "language_retention.png"),
    }
    return {k: v for k, v in out.items() if v is not None}
