"""Bad-sample accounting during training: how many samples of each source the loader replaced.

With `bad_samples: skip` the loader replaces a sample that fails to read or decode with a
deterministic draw from the same source and counts it per source (`MixtureLoader.skipped`, kept in
the loader state, so the counts survive a resume). At each logged step the counts of all ranks are
summed and logged as `bad_samples/<source>` (cumulative) and `bad_fraction/<source>` (over the
source's draws so far, from the plan).

When a source's fraction passes `max_bad_fraction` the run logs one warning for that source and
goes on; it does not stop. Early in a run the fraction is noisy (one bad sample among a source's
first 50 draws is 2%), and a killed run would lose its steps for what may be a handful of broken
files; the metric is there to plot or to alert on in W&B. To stop at the first bad sample instead,
keep the mixture's default `bad_samples: raise`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from cotrain.dist import DistInfo
from cotrain.mix.loader import MixtureLoader, build_planner

log = logging.getLogger(__name__)
__all__ = ["BadSampleMonitor"]


class BadSampleMonitor:
    """Per-source bad-sample counts and fractions for the metric rows (see module docstring).

    Args:
        loader: this rank's loader (its `skipped` counts).
        info: the job's ranks; counts are summed over them (every rank must call `metrics` together).
        device: where the all-reduce runs (NCCL reduces GPU tensors only).
        max_fraction: the fraction of a source's draws above which the run warns once.
    """

    def __init__(self, loader: MixtureLoader, info: DistInfo, device: torch.device, max_fraction: float) -> None:
        self.loader, self.info, self.device, self.max_fraction = loader, info, device, max_fraction
        self.names = loader.mixture.names
        # Its own planner: asking the loader's for an earlier step than it last planned (it runs ahead
        # of the loop) would throw away its replay cache, and every next batch would replay up to 1024 steps.
        self._planner = build_planner(loader.mixture)
        self._warned: set[str] = set()

    def _counts(self) -> list[int]:
        if not self.info.is_distributed:
            return list(self.loader.skipped)
        import torch.distributed as dist

        counts = torch.tensor(self.loader.skipped, dtype=torch.float64, device=self.device)
        dist.all_reduce(counts)
        return [int(c) for c in counts.tolist()]

    def metrics(self, step: int) -> dict[str, Any]:
        """`bad_samples` and `bad_fraction` per source after step `step` (0-based) has been read."""
        counts = self._counts()
        draws = self._planner.cursors(step + 1)
        fractions = {n: c / d for n, c, d in zip(self.names, counts, draws) if d}
        if self.info.is_main:
            for name, frac in fractions.items():
                if frac > self.max_fraction and name not in self._warned:
                    self._warned.add(name)
                    i = self.names.index(name)
                    log.warning("source %r: %d of its %d samples drawn by step %d (%.2f%%) were bad and replaced, "
                                "more than max_bad_fraction %g; check it with `cotrain validate %s`", name, counts[i],
                                draws[i], step, 100 * frac, self.max_fraction, self.loader.mixture.sources[i].url)
        return {"bad_samples": dict(zip(self.names, counts)), "bad_fraction": fractions}
