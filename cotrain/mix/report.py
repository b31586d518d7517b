"""Dry runs of a mixture: what each phase draws from each source, realised vs target proportions.

`check_mixture` and `simulate_mixture` run the real planner (no decoding), so what they report is
what training will consume.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cotrain.mix.plan import build_planner, check_layout
from cotrain.mix.resolve import Mixture
from cotrain.mix.schedule import Schedule

REPEAT_WARN_EPOCHS = 10.0
SMALL_SOURCE_SAMPLES_PER_READER = 4


@dataclass
class PhaseReport:
    """What one phase of a mixture draws from each source."""

    name: str
    steps: int
    drawn: dict[str, int]
    epochs: dict[str, float]
    target: dict[str, float]
    realised: dict[str, float]
    max_abs_error: float


@dataclass
class MixtureReport:
    """A mixture's simulated draws, epochs and warnings."""

    name: str
    batch_size: int
    steps: int
    world_size: int
    num_workers: int
    phases: list[PhaseReport]
    warnings: list[str] = field(default_factory=list)
    worst_window: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _phase_bounds(mixture: Mixture, steps: int) -> list[tuple[str, int, int]]:
    out, at = [], 0
    for i, p in enumerate(mixture.phases):
        end = at + p.steps if i < len(mixture.phases) - 1 else max(at + p.steps, steps)
        out.append((p.name, at, min(end, steps)))
        at += p.steps
    return [b for b in out if b[2] > b[1]]


def simulate_mixture(mixture: Mixture, steps: int | None = None, *, world_size: int = 1, num_workers: int = 0,
                     window: int = 1000) -> MixtureReport:
    """Run the planner for `steps` (default: the schedule) and compare realised with target proportions."""
    check_layout(mixture, world_size, num_workers)
    steps = mixture.total_steps if steps is None else steps
    planner = build_planner(mixture)
    schedule = Schedule(mixture.phases)
    names, sizes = mixture.names, [s.num_samples for s in mixture.sources]
    b, n = mixture.spec.batch_size, len(names)
    counts = np.zeros((steps, n), np.int64)
    targets = np.zeros((steps, n))
    for k in range(steps):
        c, _ = planner.allocator.counts(k)
        counts[k], targets[k] = c, np.asarray(schedule.weights_at(k)) * b
    phases = []
    for name, lo, hi in _phase_bounds(mixture, steps):
        drawn, goal = counts[lo:hi].sum(0), targets[lo:hi].sum(0)
        total = max(drawn.sum(), 1)
        phases.append(PhaseReport(
            name, hi - lo, dict(zip(names, map(int, drawn))),
            {nm: round(float(d) / sz, 4) for nm, d, sz in zip(names, drawn, sizes)},
            {nm: round(float(g) / total, 6) for nm, g in zip(names, goal)},
            {nm: round(float(d) / total, 6) for nm, d in zip(names, drawn)},
            float(np.abs(drawn - goal).max()),
        ))
    report = MixtureReport(mixture.spec.name, b, steps, world_size, num_workers, phases)
    order = (
        np.concatenate([[slot.source for slot in planner.batch(k)] for k in range(steps)])
        if steps
        else np.zeros(0, int)
    )
    report.worst_window = worst_window_deviation(order.astype(np.int64), np.repeat(targets / b, b, axis=0), window)
    report.warnings = _warnings(mixture, counts, world_size, num_workers)
    return report


def worst_window_deviation(sources: np.ndarray, targets: np.ndarray, window: int) -> dict[str, float]:
    """Largest |realised - target| share of any source over every `window`-sample stretch.

    Args:
        sources: [N] int, the source of each sample in global order (batch after batch, slot order).
        targets: [N, S] the target weights in force for each sample.
        window: stretch length in samples; windows start at every sample, not only at batch starts.
    """
    n, num_sources = targets.shape
    w = min(window, n)
    if w == 0:
        return {}
    onehot = np.zeros((n + 1, num_sources))
    onehot[np.arange(1, n + 1), sources] = 1.0
    realised = np.cumsum(onehot, 0)
    goal = np.cumsum(np.vstack([np.zeros(num_sources), targets]), 0)
    dev = np.abs((realised[w:] - realised[:-w]) - (goal[w:] - goal[:-w])) / w
    return {"window_samples": float(w), "max_deviation": float(dev.max())}


def _warnings(mixture: Mixture, counts: np.ndarray, world_size: int, num_workers: int) -> list[str]:
    out = []
    total = counts.sum(0)
    readers = world_size * max(1, num_workers)
    for i, src in enumerate(mixture.sources):
        epochs = total[i] / src.num_samples
        limit = src.max_epochs or REPEAT_WARN_EPOCHS
        if total[i] == 0:
            out.append(f"source {src.name!r} is never used (weight 0 in every phase)")
        elif epochs > limit:
            out.append(
                f"source {src.name!r} repeats {epochs:.1f} epochs (over {limit:g}): "
                "consider more data or a lower weight"
            )
        if 0 < src.num_samples < SMALL_SOURCE_SAMPLES_PER_READER * readers:
            out.append(f"source {src.name!r} has {src.num_samples} samples for {readers} readers: each reads very few")
    return out


def check_mixture(mixture: Mixture, *, world_size: int = 1, num_workers: int = 0) -> MixtureReport:
    """Validate and summarise the whole schedule (what `cotrain mix check` prints)."""
    return simulate_mixture(mixture, None, world_size=world_size, num_workers=num_workers)
