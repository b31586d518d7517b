"""The only module that reads the process environment: rank, world size, local rank (torchrun).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them this is a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (rank 0 of 1 outside one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """The DistInfo from torchrun's environment variables."""
    env = os.environ
    return DistInfo(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def init_process_group(backend: str | None = None) -> DistInfo:
    """Initialise torch.distributed when launched by torchrun (gloo on CPU, nccl on GPU)."""
    info = dist_info()
    if info.is_distributed:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            chosen = backend or ("nccl" if torch.cuda.is_available() else "gloo")
            dist.init_process_group(chosen)
    return info
