"""Closed-loop episodes stepped one action chunk at a time: alone, or many in lockstep.

An `EpisodeRun` owns one env's episode and the dense measures the evaluator reports (`closest`,
`object_xy`, `first_close_xy`; evaluate.py says what they mean). `run_lockstep` runs a queue of
episodes through a pool of envs and asks a `BatchedPolicy` for the chunks of every running
episode in one call: a trained VLA then runs one forward pass for up to `batch_size` episodes
instead of one each, which is where a sequential evaluation spends its time (the simulator's step
costs ~20 us). Each episode's observations, actions and record are those of the sequential path;
only the policy's batched kernels may round differently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cotrain.lab.sim.env import EpisodeSpec, TabletopEnv
from cotrain.lab.sim.world import World

__all__ = ["BatchedPolicy", "EpisodeRun", "check_chunk", "run_lockstep"]


@dataclass(frozen=True)
class BatchedPolicy:
    """A stateless policy asked for many observations at once: `predict(observations) -> chunks`,
    one [H, action_dim] chunk per observation, each a function of its own observation only."""

    predict: Callable[[Sequence[dict[str, Any]]], Sequence[np.ndarray]]
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


def check_chunk(chunk: np.ndarray, dims: int) -> np.ndarray:
    """The chunk as float32 [H, dims]; a ValueError says what the policy returned instead."""
    arr = np.asarray(chunk, np.float32)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] != dims:
        raise ValueError(f"the policy returned an action chunk of shape {arr.shape}; expected [H, {dims}]")
    return arr


def _distance_to_object(world: World) -> float:
    """Table-plane distance from the effector to the task's object (objects[0], scene.py)."""
    return float(np.linalg.norm(world.ee[:2] - world.objects[0, :2]))


class EpisodeRun:
    """One episode on `env` (reset here): feed it chunks with `execute` until `done`, then `record()`."""

    def __init__(self, env: TabletopEnv, spec: EpisodeSpec) -> None:
        self.env, self.spec = env, spec
        self.obs, self.info = env.reset(options={"episode": spec})
        world = env.current()[0]
        self.done, self.closest, self.was_closed = False, _distance_to_object(world), world.closed
        self.first_close: list[float] | None = None
        self.object_xy = world.objects[0, :2].copy()

    def execute(self, chunk: np.ndarray, replan_steps: int) -> None:
        """Run the chunk's first `replan_steps` actions open loop (fewer if the episode ends)."""
        for action in check_chunk(chunk, self.env.action_dim)[:replan_steps]:
            self.obs, _, terminated, truncated, self.info = self.env.step(action)
            world = self.env.current()[0]
            if self.first_close is None and world.closed and not self.was_closed:
                self.first_close = [round(float(v), 4) for v in world.ee[:2]]
            self.was_closed, self.closest = world.closed, min(self.closest, _distance_to_object(world))
            self.done = terminated or truncated
            if self.done:
                return

    def record(self) -> dict[str, Any]:
        info = self.info
        return {"split": info["split"], "index": self.spec.index, "group": info["group"],
                "condition": info["condition"], "instruction": info["instruction"], "success": bool(info["success"]),
                "steps": int(info["steps"]), "closest": round(self.closest, 4),
                "object_xy": [round(float(v), 4) for v in self.object_xy], "first_close_xy": self.first_close}


def run_lockstep(make_env: Callable[[], TabletopEnv], specs: Sequence[EpisodeSpec], policy: BatchedPolicy,
                 replan_steps: int, progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Every episode of `specs` on a pool of up to `policy.batch_size` envs; records in `specs` order.

    A finished episode's env takes the next waiting episode, so the batch stays full until the
    queue runs dry.
    """
    pool = [make_env() for _ in range(min(policy.batch_size, len(specs)))]
    waiting = list(enumerate(specs))[::-1]  # popped from the end: spec order
    running: list[tuple[int, EpisodeRun]] = []
    records: dict[int, dict[str, Any]] = {}
    while waiting or running:
        while waiting and pool:
            i, spec = waiting.pop()
            running.append((i, EpisodeRun(pool.pop(), spec)))
        chunks = policy.predict([run.obs for _, run in running])
        if len(chunks) != len(running):
            raise ValueError(f"the policy returned {len(chunks)} chunks for {len(running)} observations")
        for (_, run), chunk in zip(running, chunks):
            run.execute(chunk, replan_steps)
        for i, run in [item for item in running if item[1].done]:
            records[i] = run.record()
            pool.append(run.env)
            if progress:
                progress(len(records), len(specs))
        running = [item for item in running if not item[1].done]
    return [records[i] for i in range(len(specs))]
