"""The mixture loader: the global plan, this rank's share of it, a torch DataLoader, resumable state.

Rank r of W takes slots [r*B/W, (r+1)*B/W) of every global batch; the DataLoader hands whole per-rank
batches to its workers round-robin, so no two ranks or workers ever read the same slot. The state is
`{"step", "cursors", "skipped", ...}`; because the plan is a pure function of (seed, schedule, step),
restoring it continues with exactly the batches an uninterrupted run would have produced, on any
number of ranks and workers as long as the global batch size is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cotrain.errors import ConfigError, CotrainError, DataError
from cotrain.mix.batch import BatchBuilder, SlotKey
from cotrain.mix.collate import Batch, BatchArrays, Collator, to_tensors
from cotrain.mix.plan import build_planner, check_layout
from cotrain.mix.resolve import Mixture
from cotrain.mix.ring import ImageRing
from cotrain.mix.transform import SampleTransform

__all__ = ["Batch", "MixtureLoader", "SlotKey", "build_planner", "check_layout", "default_collator"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _WorkerFailure:
    """What a worker sends for a batch that failed with an expected error: torch would re-raise the
    exception itself as a bare RuntimeError, so it travels as a value and is raised here."""

    error: CotrainError


class _SlotDataset:
    """The DataLoader's map-style dataset, keyed by slot: a `BatchBuilder` whose images go to one of
    the ring's shared buffers (ring.py), the batch carrying its `RingSlot` as `images`."""

    def __init__(self, builder: BatchBuilder, ring: ImageRing) -> None:
        self.builder, self.ring = builder, ring

    def __getitems__(self, keys: list[SlotKey]) -> BatchArrays | _WorkerFailure:
        """One collated batch (torch's fetcher calls this with the batch sampler's keys)."""
        slot, images = self.ring.claim()
        try:
            arrays = self.builder.build(keys, (None, images))
        except CotrainError as exc:
            self.ring.cancel(slot)
            return _WorkerFailure(exc)
        except BaseException:
            self.ring.cancel(slot)
            raise
        arrays.images = slot
        return arrays


def _collated(batch: BatchArrays | _WorkerFailure) -> BatchArrays | _WorkerFailure:
    """The DataLoader's collate_fn: `_SlotDataset.__getitems__` has already collated the batch."""
    return batch


class _RankBatches:
    """Batch sampler: this rank's slot keys for steps [start, end)."""

    def __init__(self, loader: MixtureLoader, start: int, end: int) -> None:
        self.loader, self.start, self.end = loader, start, end

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self) -> Iterator[list[SlotKey]]:
        for step in range(self.start, self.end):
            yield self.loader.rank_keys(step)


class MixtureLoader:
    """Iterates per-rank batches of a mixture from a given step.

    Args:
        mixture: a resolved mixture (`load_mixture`).
        rank, world_size: this process's place in the job (see cotrain.dist for torchrun).
        num_workers: DataLoader worker processes per rank.
        end_step: stop before this step (default: the schedule's total steps).
        collator: padding sizes (default: from the sources and the mixture spec).
    """

    def __init__(self, mixture: Mixture, *, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 end_step: int | None = None, collator: Collator | None = None, prefetch_factor: int = 2) -> None:
        check_layout(mixture, world_size, num_workers)
        spec = mixture.spec
        self.mixture, self.rank, self.world_size, self.num_workers = mixture, rank, world_size, num_workers
        self.planner = build_planner(mixture)
        self.end_step = mixture.total_steps if end_step is None else end_step
        self.collator = collator or default_collator(mixture)
        self.transforms = [
            SampleTransform.build(i, s.name, s.manifest, image_size=spec.image_size, horizon=self.collator.horizon,
                                  loss_weight=s.loss_weight, normalization=spec.normalization,
                                  floor=spec.quantile_floor, clip=spec.clip)
            for i, s in enumerate(mixture.sources)
        ]
        self.builder = BatchBuilder(mixture, self.transforms, self.collator)
        self.prefetch_factor = prefetch_factor
        self.step = 0
        self.skipped = [0] * len(mixture.sources)
        self._warned: set[int] = set()

    def rank_keys(self, step: int) -> list[SlotKey]:
        slots = self.planner.batch(step)
        per = len(slots) // self.world_size
        mine = slots[self.rank * per: (self.rank + 1) * per]
        for slot in mine:
            self._check_epochs(slot.source, slot.draw)
        return [SlotKey(step, self.rank * per + i, s.source, s.index, s.draw) for i, s in enumerate(mine)]

    def _check_epochs(self, source: int, draw: int) -> None:
        src = self.mixture.sources[source]
        if src.max_epochs is None or draw < src.max_epochs * src.num_samples:
            return
        if src.on_max_epochs == "stop":
            raise DataError(src.url, f"source {src.name!r} passed max_epochs {src.max_epochs} (draw {draw} of "
                                     f"{src.num_samples} samples)")
        if source not in self._warned:
            self._warned.add(source)
            log.warning("source %s repeats past max_epochs %s", src.name, src.max_epochs)

    def __len__(self) -> int:
        return max(0, self.end_step - self.step)

    def __iter__(self) -> Iterator[Batch]:
        step = self.step
        for arrays in self._arrays(step):
            batch = to_tensors(arrays, step)
            counts = np.bincount(arrays.source, weights=arrays.skipped, minlength=len(self.skipped))
            self.skipped = [a + int(b) for a, b in zip(self.skipped, counts)]
            step += 1
            self.step = step
            yield batch

    def _arrays(self, start: int) -> Iterator[BatchArrays]:
        """Collated batches (`Collator.arrays` form, images in this process) of steps [start, end)."""
        if not self.num_workers:
            # In one process the DataLoader would only call __getitems__ per batch; going direct saves
            # its per-batch machinery (fetcher, profiler hooks, collate hop): ~0.3 ms a batch of 32.
            for step in range(start, self.end_step):
                yield self.builder.build(self.rank_keys(step))
            return
        yield from self._worker_arrays(start)

    def _worker_arrays(self, start: int) -> Iterator[BatchArrays]:
        import multiprocessing

        from torch.utils.data import DataLoader

        context = multiprocessing.get_context("spawn")
        c = self.collator
        shape = (self.mixture.spec.batch_size // self.world_size, c.max_cameras, c.image_size, c.image_size, 3)
        ring = ImageRing(self.num_workers, self.prefetch_factor + 1, shape, context)
        loader: DataLoader[BatchArrays | _WorkerFailure] = DataLoader(
            _SlotDataset(self.builder, ring),  # type: ignore[arg-type]  # (map-style by __getitems__ alone)
            batch_sampler=_RankBatches(self, start, self.end_step),
            num_workers=self.num_workers,
            # The dataset collates (__getitems__); workers return arrays, tensors are made here (collate.py).
            collate_fn=_collated,  # type: ignore[arg-type]  # (called on __getitems__'s batch, not a list)
            prefetch_factor=self.prefetch_factor,
            multiprocessing_context=context,
        )
        it = iter(loader)
        try:
            for arrays in it:
                if isinstance(arrays, _WorkerFailure):
                    raise arrays.error
                arrays.images = ring.take(arrays.images)  # copied out before the next batch: see ring.py
                yield arrays
        finally:
            try:  # stop workers now, not at interpreter exit
                it._shutdown_workers()  # type: ignore[attr-defined]  # (private: no public way to stop them)
            except RuntimeError as exc:
                # A worker stopped while its queue thread still sends a batch nobody will read can
                # die with SIGABRT as its interpreter exits (torch's "killed by signal: Aborted");
                # rare since batches are built in shared memory (collate.py), and harmless here.
                log.debug("a DataLoader worker died while being stopped: %s", exc)

    def state_dict(self) -> dict[str, Any]:
        """Small, JSON-able: the next step, per-source cursors, and bad-sample counts of this rank."""
        cursors = self.planner.cursors(self.step)
        return {
            "version": 1,
            "mixture": self.mixture.spec.name,
            "batch_size": self.mixture.spec.batch_size,
            "step": self.step,
            "cursors": dict(zip(self.mixture.names, cursors)),
            "skipped": dict(zip(self.mixture.names, self.skipped)),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("batch_size") != self.mixture.spec.batch_size:
            raise ConfigError(f"loader state has global batch {state.get('batch_size')}, the mixture has "
                              f"{self.mixture.spec.batch_size}; exact resume needs the same global batch")
        step = int(state["step"])
        expected = dict(zip(self.mixture.names, self.planner.cursors(step)))
        if state.get("cursors") != expected:
            raise ConfigError("loader state does not match this mixture's plan (sources, weights, seed or phases "
                              "changed since the checkpoint); exact resume needs the same mixture")
        self.step = step
        self.skipped = [int(state.get("skipped", {}).get(n, 0)) for n in self.mixture.names]


def default_collator(mixture: Mixture) -> Collator:
    """A collator padding to the mixture's sizes (defaults: the largest over its sources)."""
    spec, ms = mixture.spec, [s.manifest for s in mixture.sources]
    horizon = spec.horizon or max((m.horizon or 1) for m in ms)
    return Collator(
        max_cameras=spec.max_cameras or max(1, max(len(m.cameras) for m in ms)),
        image_size=spec.image_size,
        state_dim=max(len(m.state_names) for m in ms),
        action_dim=max(len(m.action_names) for m in ms),
        horizon=horizon,
    )
