"""The dry-run side of a mixture: its planner and the layout check, without the loader.

`cotrain mix check | simulate | plot` and the loader share these; keeping them apart from
loader.py means a dry run never imports the readers, the transforms or torch's DataLoader
(tests/unit/mix/test_mix.py checks `sys.modules` after one).
"""

from __future__ import annotations

from cotrain.errors import ConfigError
from cotrain.mix.resolve import Mixture
from cotrain.mix.sampler import Allocator, Planner
from cotrain.mix.schedule import Schedule


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
