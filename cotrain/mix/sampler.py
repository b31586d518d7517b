"""The global plan: which source and which sample fill each slot of each global batch.

Composition: at step k the target count of source s is B * w_s(k) plus the error carried from step
k - 1; counts are the floors, and the leftover slots go to the largest remainders (ties to the lower
source index). The carried error stays in (-1, 1), so after any number of steps every source's
realised count is within one sample of its cumulative target: no random drift, exact per batch.

Order: the source's j-th draw (j counts over the whole run) is sample perm_e[j mod N] of epoch
e = j // N, with perm_e a permutation seeded by (seed, crc32(source name), e): a shuffled order
without replacement per epoch, reshuffled every epoch. Inside a batch each source's slots are spread
evenly (`spread_order`), so every rank's share mixes sources and proportions hold over any window.

All of this is a pure function of (seed, schedule, step). The allocator keeps checkpoints of its
carried state every `checkpoint_every` steps, so planning step k costs at most that many steps of
replay, and resuming needs nothing but the step.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from cotrain import seeds
from cotrain.mix.schedule import Schedule


def apportion(targets: list[float], total: int) -> list[int]:
    """Largest-remainder rounding of `targets` (about `total` in sum) to ints >= 0 summing to `total`.

    Only sources with a positive target can receive a leftover slot.
    """
    floors = [int(np.floor(t)) if t > 0 else 0 for t in targets]
    left = total - sum(floors)
    order = sorted((i for i in range(len(targets)) if targets[i] > 0), key=lambda i: (-(targets[i] - floors[i]), i))
    for i in order[: max(left, 0)]:
        floors[i] += 1
    if left < 0:  # carried negative errors can push floors above total: take back from the smallest remainders
        for i in reversed(order):
            if left == 0:
                break
            if floors[i] > 0:
                floors[i] -= 1
                left += 1
    return floors


@dataclass
class _Carry:
    step: int
    error: list[float]
    drawn: list[int]  # per-source draws before `step`


class Allocator:
    """Per-step counts per source and per-source draw cursors, exact and replayable.

    Args:
        schedule: the phase schedule (weights per step).
        batch_size: global batch size B.
        num_sources: number of flat sources.
        checkpoint_every: spacing of the stored replay points.
    """

    def __init__(self, schedule: Schedule, batch_size: int, num_sources: int, checkpoint_every: int = 1024) -> None:
        self.schedule = schedule
        self.batch_size = batch_size
        self.num_sources = num_sources
        self.every = checkpoint_every
        self._points = [_Carry(0, [0.0] * num_sources, [0] * num_sources)]
        # The state after the latest `counts` call: a loader asks for steps in order, and without it
        # every step would replay up to `checkpoint_every` steps from the last checkpoint (O(k) per step).
        self._last: _Carry | None = None

    def _advance(self, carry: _Carry) -> list[int]:
        weights = self.schedule.weights_at(carry.step)
        # A source with weight 0 at this step gets nothing and forgets its carried error, so a source
        # absent from a phase never appears in it.
        targets = [self.batch_size * w + e if w > 0 else 0.0 for w, e in zip(weights, carry.error)]
        counts = apportion(targets, self.batch_size)
        carry.error = [t - c for t, c in zip(targets, counts)]
        carry.drawn = [d + c for d, c in zip(carry.drawn, counts)]
        carry.step += 1
        return counts

    def _carry_at(self, step: int) -> _Carry:
        while self._points[-1].step + self.every <= step:
            point = self._points[-1]
            carry = _Carry(point.step, list(point.error), list(point.drawn))
            for _ in range(self.every):
                self._advance(carry)
            self._points.append(carry)
        base = self._points[step // self.every]
        if self._last is not None and base.step <= self._last.step <= step:
            # Same checkpoint, same sequence of advances: continuing from it gives identical floats.
            base = self._last
        carry = _Carry(base.step, list(base.error), list(base.drawn))
        while carry.step < step:
            self._advance(carry)
        return carry

    def counts(self, step: int) -> tuple[list[int], list[int]]:
        """(counts per source at `step`, draws per source before `step`)."""
        carry = self._carry_at(step)
        drawn = list(carry.drawn)
        counts = self._advance(carry)
        self._last = carry  # a fresh copy owned here: the state before step + 1
        return counts, drawn


def spread_order(counts: list[int], seed: int, step: int) -> list[int]:
    """Order of a batch's slots (grouped by source) that spreads every source evenly over the batch.

    Source s's k-th slot sits at position (k + u_s) / c_s of the batch, u_s drawn per (seed, step);
    sorting by position interleaves sources so that every prefix of the batch holds each source within
    one sample of its share. Realised proportions then stay within about two samples per source of the
    target over any stretch of samples, not only over whole batches, and each rank's contiguous share
    of the batch mixes sources in proportion. Ties in position go to the smaller u_s, then the lower
    source (this order is part of the plan: it must not change between versions, see the tests).
    """
    rng = seeds.stream(seed, step, seeds.BATCH_SPREAD)
    offsets = rng.random(len(counts))
    c = np.asarray(counts, np.int64)
    source = np.repeat(np.arange(len(counts)), c)
    k = np.arange(len(source)) - np.repeat(np.cumsum(c) - c, c)  # index of each slot within its source
    u = offsets[source]
    position = (k + u) / c[source]
    order: list[int] = np.lexsort((source, u, position)).tolist()
    return order


def source_seed(seed: int, name: str) -> int:
    """The seed of a source's sample order (from the run seed and the source name)."""
    return zlib.crc32(name.encode("utf-8")) ^ (seed * 0x9E3779B1 & 0xFFFFFFFF)


@lru_cache(maxsize=32)
def epoch_permutation(seed: int, name: str, epoch: int, size: int) -> np.ndarray:
    """The sample order of one source in one epoch."""
    rng = seeds.stream(source_seed(seed, name), epoch, seeds.EPOCH_PERMUTATION)
    return rng.permutation(size)


class Slot(NamedTuple):
    """One position of a global batch (a named tuple: a loader builds thousands per second)."""

    source: int
    draw: int  # the source's draw counter j (over the whole run)
    index: int  # type: ignore[assignment]  # the sample index inside the source (shadows tuple.index; public name)
    epoch: int


class Planner:
    """Global batches as lists of slots; pure in (seed, schedule, step)."""

    def __init__(self, seed: int, names: list[str], sizes: list[int], allocator: Allocator) -> None:
        self.seed, self.names, self.sizes, self.allocator = seed, names, sizes, allocator

    def batch(self, step: int) -> list[Slot]:
        counts, drawn = self.allocator.counts(step)
        slots: list[Slot] = []
        for s, (c, d) in enumerate(zip(counts, drawn)):
            size, j = self.sizes[s], d
            while j < d + c:  # one slice of the epoch's permutation per epoch the draws span
                epoch, pos = divmod(j, size)
                take = min(d + c - j, size - pos)
                perm = epoch_permutation(self.seed, self.names[s], epoch, size)
                slots.extend(Slot(s, j + k, index, epoch) for k, index in enumerate(perm[pos: pos + take].tolist()))
                j += take
        return [slots[i] for i in spread_order(counts, self.seed, step)]

    def cursors(self, step: int) -> list[int]:
        """Draws per source before `step` (the per-source cursors of the loader state)."""
        return self.allocator.counts(step)[1]
