"""The mixture loader: the global plan, this rank's share of it, a torch DataLoader, resumable state.

Rank r of W takes slots [r*B/W, (r+1)*B/W) of every global batch; the DataLoader hands whole per-rank
batches to its workers round-robin, so no two ranks or workers ever read the same slot. The state is
`{"step", "cursors", "skipped", ...}`; because the plan is a pure function of (seed, schedule, step),
restoring it continues with exactly the batches an uninterrupted run would have produced, on any
number of ranks and workers as long as the global batch size is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cotrain.dataset.reader import SourceReader
from cotrain.errors import ConfigError, CotrainError, DataError
from cotrain.mix.collate import BatchRows, Collator, to_tensors
from cotrain.mix.resolve import Mixture
from cotrain.mix.ring import ImageRing
from cotrain.mix.sampler import Allocator, Planner, source_seed
from cotrain.mix.schedule import Schedule
from cotrain.mix.transform import ImageJob, SampleTransform, letterbox_jpeg

log = logging.getLogger(__name__)
MAX_REPLACEMENTS = 8
WORKER_ERROR = "_error"  # a worker's batch that failed with an expected error carries only it
SlotKey = tuple[int, int, int, int, int]  # step, slot position, source, sample index, draw
BAD_SAMPLE = (CotrainError, OSError, ValueError, KeyError)  # what `bad_samples: skip` replaces


def build_planner(mixture: Mixture) -> Planner:
    """The batch planner of a resolved mixture."""
    alloc = Allocator(Schedule(mixture.phases), mixture.spec.batch_size, len(mixture.sources))
    return Planner(mixture.spec.seed, mixture.names, [s.num_samples for s in mixture.sources], alloc)


def check_layout(mixture: Mixture, world_size: int, num_workers: int) -> None:
    """Fail at start on layouts that cannot work, saying what would."""
    b = mixture.spec.batch_size
    if b % world_size:
        raise ConfigError(f"{mixture.path}: batch_size {b} does not divide over {world_size} ranks; "
                          f"use a multiple of {world_size}")
    readers = world_size * max(1, num_workers)
    used = {i for p in mixture.phases for i, w in enumerate(p.weights) if w > 0}
    for i in sorted(used):
        src = mixture.sources[i]
        if src.num_samples < readers:
            raise ConfigError(f"{mixture.path}: source {src.name!r} has {src.num_samples} samples, fewer than the "
                              f"{readers} readers ({world_size} ranks x {max(1, num_workers)} workers)")


class _SlotDataset:
    """Map-style dataset keyed by slot: reads, replaces bad samples deterministically, transforms."""

    def __init__(self, mixture: Mixture, transforms: list[SampleTransform], collator: Collator,
                 ring: ImageRing | None = None) -> None:
        self.mixture = mixture
        self.transforms = transforms
        self.collator = collator
        self.ring = ring  # with DataLoader workers: where they decode images to (ring.py)
        self.normalizers = [(t.state_norm, t.action_norm) for t in transforms]  # applied per batch (collate.py)
        self.members = [t.members for t in transforms]  # decoded per sample; other members are skipped
        self._readers: list[SourceReader] | None = None  # opened lazily, per worker process

    def _reader(self, source: int) -> SourceReader:
        if self._readers is None:
            self._readers = [SourceReader(s.url, s.manifest, s.storage_options) for s in self.mixture.sources]
        return self._readers[source]

    def __getitems__(self, keys: list[SlotKey]) -> dict[str, Any]:
        """One collated batch (`Collator.arrays` form), each sample written straight into its row of
        the batch (`SampleTransform.into`): no per-sample canvas, dict or second copy (torch's fetcher
        calls this). In a worker the images go to one of the ring's buffers and the batch carries its
        `RingSlot` as "images"."""
        if self.ring is None:
            return self._batch(keys)
        slot, images = self.ring.claim()
        try:
            batch = self._batch(keys, (None, images))
        except CotrainError as exc:  # sent as a value: torch re-raises worker errors as a bare RuntimeError
            self.ring.cancel(slot)
            return {WORKER_ERROR: exc}
        except BaseException:
            self.ring.cancel(slot)
            raise
        batch["images"] = slot
        return batch

    def _batch(self, keys: list[SlotKey], images: tuple[None, np.ndarray] | None = None) -> dict[str, Any]:
        """Two passes over the batch: first each sample's read, small-array decoding and row
        bookkeeping, then all its JPEGs back to back into their rows. Per sample, each JPEG decode
        evicts the Python side's working set from the caches; batched, the same work measured ~5%
        faster (same process, alternating, so at the same machine speed)."""
        rows = self.collator.rows(len(keys), images)
        jobs: list[list[ImageJob]] = [[] for _ in keys]
        tries = [self._read(key, self._writer(key, rows, i, jobs[i]), self._undo(rows, i, jobs[i]))
                 for i, key in enumerate(keys)]
        for i, key in enumerate(keys):
            try:
                for data, out in jobs[i]:
                    letterbox_jpeg(data, out.shape[0], out=out)
            except BAD_SAMPLE as exc:  # replaced exactly as if it had failed in the first pass
                attempt, index = tries[i]
                undo = self._undo(rows, i, None)
                replacement = self._replace(key, index, attempt, exc, undo)
                tries[i] = self._read(key, self._writer(key, rows, i, None), undo, attempt + 1, replacement)
        rows.skipped[:] = [attempt for attempt, _ in tries]
        return self.collator.finish(rows, self.normalizers)

    def _writer(self, key: SlotKey, rows: BatchRows, i: int,
                jobs: list[ImageJob] | None) -> Callable[[dict[str, Any]], None]:
        transform = self.transforms[key[2]]
        return lambda sample: transform.into(sample, rows, i, jobs)

    @staticmethod
    def _undo(rows: BatchRows, i: int, jobs: list[ImageJob] | None) -> Callable[[], None]:
        def undo() -> None:
            rows.clear_row(i)
            if jobs is not None:
                jobs.clear()
        return undo

    def __getitem__(self, key: SlotKey) -> dict[str, Any]:
        return self.fetch(key)

    def fetch(self, key: SlotKey) -> dict[str, Any]:
        """One sample on its own, normalised (`SampleTransform.__call__`); batches are built by `_batch`."""
        out: dict[str, Any] = {}
        out["skipped"], _ = self._read(key, lambda sample: out.update(self.transforms[key[2]](sample)))
        return out

    def _read(self, key: SlotKey, use: Callable[[dict[str, Any]], None], undo: Callable[[], None] | None = None,
              attempt: int = 0, index: int | None = None) -> tuple[int, int]:
        """Read the slot's sample (or `index`, replacement number `attempt`) and `use` it, replacing
        samples that fail (`_replace`). Returns (replacements made, index of the sample used)."""
        source = key[2]
        index = key[3] if index is None else index
        while True:
            try:
                use(self._reader(source).read(index, self.members[source]))
                return attempt, index
            except BAD_SAMPLE as exc:
                index = self._replace(key, index, attempt, exc, undo)
                attempt += 1

    def _replace(self, key: SlotKey, index: int, attempt: int, exc: Exception, undo: Callable[[], None] | None) -> int:
        """After sample `index` failed on replacement number `attempt`: raise (`bad_samples: raise`),
        or `undo` its partial writes and return the next replacement, a deterministic draw from the
        same source seeded by (mixture seed, source, draw, attempt)."""
        step, _, source, _, draw = key
        src = self.mixture.sources[source]
        if self.mixture.spec.bad_samples == "raise":
            where = self._reader(source).describe(index)
            raise DataError(src.url, f"bad sample {index} ({where}) of source {src.name!r} at step {step}: {exc}; "
                                     f"`bad_samples: skip` replaces such samples") from None
        if attempt >= MAX_REPLACEMENTS:
            raise DataError(src.url, f"{MAX_REPLACEMENTS} replacements in a row failed for source {src.name!r}; "
                                     f"the last: {exc}")
        log.warning(
            "replacing bad sample %d (%s) of %s: %s", index, self._reader(source).describe(index), src.name, exc
        )
        if undo is not None:
            undo()
        rng = np.random.default_rng(
            np.random.SeedSequence([source_seed(self.mixture.spec.seed, src.name), draw, attempt, 3])
        )
        return int(rng.integers(src.num_samples))


def _collated(batch: dict[str, Any]) -> dict[str, Any]:
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
        return [(step, self.rank * per + i, s.source, s.index, s.draw) for i, s in enumerate(mine)]

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

    def __iter__(self) -> Iterator[dict[str, Any]]:
        step = self.step
        for arrays in self._arrays(step):
            batch = to_tensors(arrays)
            batch["step"] = step
            counts = np.bincount(arrays["source"], weights=arrays["skipped"], minlength=len(self.skipped))
            self.skipped = [a + int(b) for a, b in zip(self.skipped, counts)]
            step += 1
            self.step = step
            yield batch

    def _arrays(self, start: int) -> Iterator[dict[str, Any]]:
        """Collated batches (`Collator.arrays` form, images in this process) of steps [start, end)."""
        if not self.num_workers:
            # In one process the DataLoader would only call __getitems__ per batch; going direct saves
            # its per-batch machinery (fetcher, profiler hooks, collate hop): ~0.3 ms a batch of 32.
            dataset = _SlotDataset(self.mixture, self.transforms, self.collator)
            for step in range(start, self.end_step):
                yield dataset.__getitems__(self.rank_keys(step))
            return
        yield from self._worker_arrays(start)

    def _worker_arrays(self, start: int) -> Iterator[dict[str, Any]]:
        import multiprocessing

        from torch.utils.data import DataLoader

        context = multiprocessing.get_context("spawn")
        c = self.collator
        shape = (self.mixture.spec.batch_size // self.world_size, c.max_cameras, c.image_size, c.image_size, 3)
        ring = ImageRing(self.num_workers, self.prefetch_factor + 1, shape, context)
        # The ignores: _SlotDataset is a Dataset by duck typing (__getitem__/__getitems__), and its
        # __getitems__ hands collate_fn one collated dict where torch's types expect a list of samples.
        loader: DataLoader[dict[str, Any]] = DataLoader(
            _SlotDataset(self.mixture, self.transforms, self.collator, ring),  # type: ignore[arg-type]
            batch_sampler=_RankBatches(self, start, self.end_step),
            num_workers=self.num_workers,
            # The dataset collates (__getitems__); workers return arrays, tensors are made here (collate.py).
            collate_fn=_collated,  # type: ignore[arg-type]
            prefetch_factor=self.prefetch_factor,
            multiprocessing_context=context,
        )
        it = iter(loader)
        try:
            for arrays in it:
                if WORKER_ERROR in arrays:
                    raise arrays[WORKER_ERROR]
                arrays["images"] = ring.take(arrays["images"])  # copied out before the next batch: see ring.py
                yield arrays
        finally:
            try:  # stop workers now, not at interpreter exit
                it._shutdown_workers()  # type: ignore[attr-defined]  # private, the only way to stop workers now
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
