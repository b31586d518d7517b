"""Run by torchrun in tests/unit/mix/test_mix.py: each rank loads its share and rank 0 writes all keys as JSON."""

from __future__ import annotations

import json
import sys

import torch.distributed as dist

from cotrain.dist import init_process_group
from cotrain.mix.loader import MixtureLoader
from cotrain.mix.resolve import load_mixture


def main(mixture_path: str, out_path: str, steps: int) -> None:
    info = init_process_group("gloo")
    loader = MixtureLoader(load_mixture(mixture_path), rank=info.rank, world_size=info.world_size, end_step=steps)
    mine = [[f"{s}:{k}" for s, k in zip(b.source.tolist(), b.key)] for b in loader]
    gathered: list[object] = [None] * info.world_size
    dist.all_gather_object(gathered, mine)
    if info.is_main:
        with open(out_path, "w") as fh:
            json.dump({"world_size": info.world_size, "ranks": gathered}, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
