"""`cotrain mix plot`: stacked target weights over steps, phase boundaries, realised proportions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cotrain.atomic import write_bytes_atomic
from cotrain.mix.plan import build_planner
from cotrain.mix.resolve import Mixture
from cotrain.mix.schedule import Schedule


def plot_schedule(mixture: Mixture, out: str | Path, *, steps: int | None = None, smooth_steps: int = 20) -> Path:
    """Write the schedule figure as PNG (atomically) and return its path."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = steps or mixture.total_steps
    schedule, planner = Schedule(mixture.phases), build_planner(mixture)
    target = np.array([schedule.weights_at(k) for k in range(steps)])
    counts = np.array([planner.allocator.counts(k)[0] for k in range(steps)], dtype=np.float64)
    w = max(1, min(smooth_steps, steps))
    kernel = np.ones(w) / w
    realised = np.stack([np.convolve(counts[:, i], kernel, mode="same") for i in range(counts.shape[1])], 1)
    realised /= mixture.spec.batch_size
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    x = np.arange(steps)
    ax.stackplot(x, target.T, labels=mixture.names, alpha=0.55)
    cum = np.cumsum(realised, axis=1)
    for i in range(cum.shape[1] - 1):
        ax.plot(x, cum[:, i], color="k", lw=0.6, ls="--")
    for start in Schedule(mixture.phases).starts[1:]:
        ax.axvline(start, color="k", lw=1.2)
    for phase, start in zip(mixture.phases, Schedule(mixture.phases).starts):
        ax.text(start + steps * 0.005, 1.01, phase.name, fontsize=8, va="bottom")
    ax.set(xlim=(0, steps), ylim=(0, 1), xlabel="step", ylabel="share of global batch",
           title=f"{mixture.spec.name}: target weights (fill), realised cumulative shares (dashed, {w}-step mean)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    out = Path(out)
    write_bytes_atomic(out, buf.getvalue())
    return out
