"""Where unit tasks run: in this process, a local process pool, or a Ray cluster.

All three run the same `run_unit` on the same arguments and only the completion order differs; the
pipeline assembles shards in plan order, so the output bytes do not depend on the backend.
Processes are spawned (not forked) because video decoders keep threads that do not survive fork.
Each parallel worker gets its share of the cores for video decoding (`worker_decode_threads`), so
workers do not each start one decoder thread per core and fight over them. Pool workers die with the
process that started them (`die_with_parent`), even when it is killed with SIGKILL.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from cotrain.convert.unit_task import UnitTask, run_unit
from cotrain.convert.workfiles import UnitResult
from cotrain.errors import ConfigError
from cotrain.media.video import decode_threads_set


class LimitedTask(NamedTuple):
    """A unit task with the decoder threads its worker may use."""

    threads: int
    task: UnitTask


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one, as under Slurm or cgroups)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def worker_decode_threads(requested: int, workers: int, backend: str) -> int:
    """Decoder threads per task: `requested` if set; else a fair share of the cores; 0 leaves FFmpeg's choice.

    A Ray task reserves one CPU, so it decodes with one thread unless asked otherwise.
    """
    if requested > 0:
        return requested
    if backend == "ray":
        return 1
    return max(1, usable_cores() // workers) if workers > 1 else 0


def run_limited(limited: LimitedTask) -> UnitResult:
    """`run_unit` with its video decoders limited to `threads` threads (module level: spawn and Ray call it)."""
    with decode_threads_set(limited.threads):
        return run_unit(limited.task)


def die_with_parent(parent: int) -> None:
    """Pool worker initializer: end this worker as soon as `parent` is gone, however it died.

    An idle pool worker blocks on its task queue and never notices its parent's death: a `kill -9`
    of the converting process left every worker, and multiprocessing's resource tracker that they
    keep open, running for good. On Linux the kernel kills the worker (PR_SET_PDEATHSIG); elsewhere
    a daemon thread polls the parent id once a second.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1  # from <sys/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
    else:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="cotrain-parent-watch").start()
    if os.getppid() != parent:  # the parent died before the request above took effect
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def run_tasks(tasks: Sequence[UnitTask], *, workers: int, backend: str,
              decode_threads: int = 0) -> Iterator[UnitResult]:
    """Yield each task's result as it completes; the first error propagates and stops the rest."""
    threads = worker_decode_threads(decode_threads, workers, backend)
    limited = [LimitedTask(threads, task) for task in tasks]
    if backend == "ray":
        yield from _run_ray(limited, workers)
    elif workers <= 1 or len(tasks) <= 1:
        for one in limited:
            yield run_limited(one)
    else:
        yield from _run_pool(limited, workers)


def _run_pool(tasks: Sequence[LimitedTask], workers: int) -> Iterator[UnitResult]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx,
                               initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        # Keep a bounded window in flight so unit files on disk stay proportional to the workers.
        pending = list(tasks)[::-1]
        running: set[Future[UnitResult]] = set()
        while pending or running:
            while pending and len(running) < 2 * workers:
                running.add(pool.submit(run_limited, pending.pop()))
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_ray(tasks: Sequence[LimitedTask], workers: int) -> Iterator[UnitResult]:
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs the optional extra: pip install 'cotrain[ray]'") from None
    if not ray.is_initialized():
        # Joins a running cluster when one is configured (RAY_ADDRESS), else starts a local one.
        ray.init(ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                 num_cpus=workers if workers > 1 else None)
    remote = ray.remote(run_limited)
    refs = [remote.remote(task) for task in tasks]
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
