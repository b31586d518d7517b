"""Dynamic batching: observations that arrive together run as one forward pass.

Each connection awaits `Batcher.submit(observation)`. One collector task takes the first waiting
request, then waits at most `batch_wait_ms` for others, and no longer once `max_batch` are waiting
or every connected client is (`connected`, kept by the server: nobody else can join, so a lone
client pays no wait at all). It hands the batch to `predict_batch` on one worker thread, so the
event loop keeps reading sockets while the model runs; whatever arrives during that pass forms the
next batch. With 8 clients on one device the model runs ~8 observations per pass instead of 8
passes (benchmarks/serve_bench.py measures both).

An error in a pass fails every request of that batch (the server reports it to each client); the
observation mapping runs before submit, so one client's malformed observation never reaches a batch.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cotrain.eval.policy import Observation

__all__ = ["BatchConfig", "BatchStats", "Batcher"]

PredictBatch = Callable[[Sequence[Observation]], list[np.ndarray]]


class BatchConfig(BaseModel):
    """How requests are grouped: `max_batch` per forward pass, each waiting at most `batch_wait_ms` for company."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch: int = Field(8, ge=1, description="Most observations per forward pass.")
    batch_wait_ms: float = Field(5.0, ge=0, description="Longest a request waits for others to join its batch.")


@dataclass
class BatchStats:
    """Forward passes run so far and how many observations each held (size -> passes)."""

    passes: int = 0
    sizes: Counter[int] = field(default_factory=Counter)

    def record(self, size: int) -> None:
        self.passes += 1
        self.sizes[size] += 1


@dataclass
class _Request:
    observation: Observation
    future: asyncio.Future[np.ndarray]


class Batcher:
    """Groups concurrent `submit` calls into `predict_batch` calls (see module docstring); start it inside a loop."""

    def __init__(self, predict_batch: PredictBatch, cfg: BatchConfig = BatchConfig()) -> None:  # noqa: B008  (a frozen config: immutable)
        self._predict = predict_batch
        self.cfg = cfg
        self.stats = BatchStats()
        self.connected = 0  # clients that may still send (the server counts them)
        self._pending: list[_Request] = []
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        # One worker: torch already uses the cores inside a pass, and passes must not interleave.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cotrain-serve")

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def submit(self, observation: Observation) -> np.ndarray:
        """The action chunk of `observation`, computed in a batch with whatever arrives alongside it."""
        if self._arrived is None:
            raise RuntimeError("Batcher.start() must run before submit()")
        request = _Request(observation, asyncio.get_running_loop().create_future())
        self._pending.append(request)
        self._arrived.set()
        return await request.future

    async def _collect(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            deadline = loop.time() + self.cfg.batch_wait_ms / 1000
            while len(self._pending) < min(self.cfg.max_batch, self.connected) and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch = [r for r in self._pending[: self.cfg.max_batch] if not r.future.done()]
            self._pending = self._pending[self.cfg.max_batch:]
            if not self._pending:
                self._arrived.clear()
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        try:
            chunks = await loop.run_in_executor(self._executor, self._predict, [r.observation for r in batch])
        except Exception as exc:  # noqa: BLE001  (every waiting client hears of it; the server stays up)
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        self.stats.record(len(batch))
        for r, chunk in zip(batch, chunks):
            if not r.future.done():
                r.future.set_result(chunk)
