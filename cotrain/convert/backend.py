"""Where unit tasks run: in this process, a local process pool, or a Ray cluster.

All three run the same `run_unit` on the same arguments and only the completion order differs; the
pipeline assembles shards in plan order, so the output bytes do not depend on the backend.
Processes are spawned (not forked) because video decoders keep threads that do not survive fork.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from cotrain.convert.unit_task import run_unit
from cotrain.errors import ConfigError

TaskArgs = tuple[Any, ...]


def run_tasks(tasks: Sequence[TaskArgs], *, workers: int, backend: str) -> Iterator[dict[str, Any]]:
    """Yield each task's result as it completes; the first error propagates and stops the rest."""
    if backend == "ray":
        yield from _run_ray(tasks, workers)
    elif workers <= 1 or len(tasks) <= 1:
        for args in tasks:
            yield run_unit(*args)
    else:
        yield from _run_pool(tasks, workers)


def _run_pool(tasks: Sequence[TaskArgs], workers: int) -> Iterator[dict[str, Any]]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx)
    try:
        # Keep a bounded window in flight so unit files on disk stay proportional to the workers.
        pending = list(tasks)[::-1]
        running = set()
        while pending or running:
            while pending and len(running) < 2 * workers:
                running.add(pool.submit(run_unit, *pending.pop()))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_ray(tasks: Sequence[TaskArgs], workers: int) -> Iterator[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs the optional extra: pip install 'cotrain[ray]'") from None
    if not ray.is_initialized():
        # Joins a running cluster when one is configured (RAY_ADDRESS), else starts a local one.
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                 num_cpus=workers if workers > 1 else None)
    remote = ray.remote(run_unit)
    refs = [remote.remote(*args) for args in tasks]
    try:
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                raise exc.cause from None  # the DataError raised inside the task, one line again
            yield result
    finally:
        for ref in refs:
            ray.cancel(ref)
