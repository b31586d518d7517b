"""A shared-memory ring of batch image buffers between DataLoader workers and the training process.

Why: a tensor a worker returns is moved into a fresh shared-memory segment per batch (4.8 MB of
images at 224 x 224 x 32), whose pages the kernel must allocate and zero, and whose file descriptor
travels to the main process through a socket handshake. Measured on 2 cores: 4.2 ms of CPU per
batch to allocate and fill a fresh segment against 0.2 ms to refill a reused buffer, with workers
then spending ~40% more CPU per batch than the same work in one process. Here each worker decodes
into its own few buffers, allocated once before the workers start; a batch carries only the
buffer's number, and the main process copies the images out (~0.3 ms) and hands the buffer back.

Safety does not rest on the DataLoader's scheduling: a worker takes a permit from its semaphore
before writing a buffer, and the main process returns it only after copying that buffer out. A
worker's batches are consumed in order, so the buffer it reuses is always the oldest, already
copied one. With `depth` = prefetch_factor + 1 a worker never waits: at most prefetch_factor of its
batches are in flight plus the one being copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RingSlot:
    """What a worker's batch carries in place of its images: whose buffer, and which."""

    worker: int
    slot: int


class ImageRing:
    """`depth` uint8 image buffers of `shape` ([B, C, S, S, 3]) per worker, in one shared tensor."""

    def __init__(self, workers: int, depth: int, shape: tuple[int, ...], context: Any) -> None:
        import torch

        if workers < 1 or depth < 1:
            raise ValueError(f"an image ring needs at least one worker and one buffer, got {workers} x {depth}")
        self.depth = depth
        # Created before the workers start: each receives its file descriptor once, at spawn.
        self.images = torch.zeros((workers, depth, *shape), dtype=torch.uint8).share_memory_()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        self.permits = [context.Semaphore(depth) for _ in range(workers)]
        self._written = 0  # per process: counts the batches this worker has claimed buffers for

    def claim(self) -> tuple[RingSlot, np.ndarray]:
        """Worker side: the next buffer of this worker, waiting until the main process has copied it out."""
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is None:
            raise RuntimeError("ImageRing.claim runs in DataLoader workers; the main process allocates plainly")
        self.permits[info.id].acquire()
        slot = RingSlot(info.id, self._written % self.depth)
        self._written += 1
        return slot, self.images[slot.worker, slot.slot].numpy()

    def cancel(self, slot: RingSlot) -> None:
        """Worker side: a claimed buffer whose batch failed (nobody will copy it) is free again."""
        self.permits[slot.worker].release()

    def take(self, slot: RingSlot) -> Any:
        """Main side: a private copy of the buffer's images (uint8 tensor [B, C, S, S, 3]); frees the buffer."""
        import torch

        out = torch.from_numpy(self.images[slot.worker, slot.slot].numpy().copy())
        self.permits[slot.worker].release()
        return out
