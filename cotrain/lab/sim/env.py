"""The gym-style tabletop environment and the deterministic episode samplers behind it.

`TabletopEnv(embodiment).reset(seed=s, options={"split": ..., "index": k})` returns `(obs, info)`
and `step(action)` returns `(obs, reward, terminated, truncated, info)`, as in Gymnasium; `obs` is
`{"images": {"top": uint8 [H, W, 3]}, "state": float32 [D], "instruction": str}`. Reward is 1 on the
step that completes the task (which also terminates the episode), else 0; episodes are truncated
after `EPISODE_SECONDS` (60 steps at the robots' 10 Hz).

Episodes are pure functions of (seed, split or role, index): every generator comes from
`np.random.SeedSequence([seed, stream, index, attempt])`. Layouts the expert cannot solve with the
embodiment in question (a neighbour in the push path, say) are redrawn with the next `attempt`, so
every evaluation episode is solvable and the expert's success rate measures the benchmark, not luck.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cotrain import seeds
from cotrain.lab.sim.embodiments import Embodiment, get_embodiment
from cotrain.lab.sim.expert import ExpertParams, expert_action
from cotrain.lab.sim.render import SHIFTS, Condition, Renderer, sample_condition
from cotrain.lab.sim.scene import (
    ALL_SPLITS,
    EVAL_SPLITS,
    ROLES,
    TRAIN_SPLIT,
    UNSEEN_GROUPS,
    VERBS,
    Scene,
    demo_tasks,
    palette,
    sample_scene,
    sample_task,
    unseen_tasks,
)
from cotrain.lab.sim.world import World

CAMERA = "top"
EPISODE_SECONDS = 6.0
_EVAL_STREAM = seeds.SIM_EVAL  # eval streams never meet the demo streams (role index 0..3)
_MAX_ATTEMPTS = 50


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything that fixes an episode: layout and task, rendering condition, and where it came from."""

    scene: Scene
    condition: Condition
    split: str
    group: str
    seed: int
    index: int


def episode_rng(seed: int, stream: int, index: int, attempt: int = 0) -> np.random.Generator:
    """The generator of one episode attempt, from the seed, stream, index and attempt."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index, attempt]))


def solvable(scene: Scene, embodiment: Embodiment, params: ExpertParams = ExpertParams(),  # noqa: B008  (a frozen config: immutable)
             max_steps: int | None = None) -> int:
    """Steps the expert needs to solve the scene with this embodiment (0: it cannot within max_steps,
    default EPISODE_SECONDS)."""
    world = World.start(scene, embodiment)
    for step in range(1, (max_steps or embodiment.steps_for(EPISODE_SECONDS)) + 1):
        world.step(expert_action(world, params))
        if world.success():
            return step
    return 0


def sample_demo_episode(role: str, index: int, seed: int, embodiment: Embodiment, max_steps: int | None = None,
                        verbs: Sequence[str] = VERBS) -> tuple[EpisodeSpec, ExpertParams]:
    """Demonstration `index` of a role (normal conditions), with the expert style that solves it."""
    tasks, pal = demo_tasks(role, verbs), palette(role)
    for attempt in range(_MAX_ATTEMPTS):
        rng = episode_rng(seed, ROLES.index(role), index, attempt)
        scene = sample_scene(sample_task(tasks, rng), rng, pal)
        params = ExpertParams.sample(rng)
        if solvable(scene, embodiment, params, max_steps):
            return EpisodeSpec(scene, sample_condition("normal", rng), role, role, seed, index), params
    raise RuntimeError(f"no solvable {role} episode {index} in {_MAX_ATTEMPTS} attempts")


def sample_eval_episode(split: str, index: int, seed: int, embodiment: Embodiment, max_steps: int | None = None,
                        verbs: Sequence[str] = VERBS) -> EpisodeSpec:
    """Evaluation episode `index` of a split: unseen cycles its groups (those with tasks of `verbs`),
    shifted splits cycle SHIFTS. `train` is the target robot's demonstration `index` of a corpus
    generated with this `seed` and `verbs` (its layout, task and normal conditions)."""
    if split not in ALL_SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(ALL_SPLITS)}")
    if split == TRAIN_SPLIT:
        spec, _ = sample_demo_episode("target", index, seed, embodiment, max_steps, verbs)
        return replace(spec, split=TRAIN_SPLIT, group=TRAIN_SPLIT)
    groups = [g for g in UNSEEN_GROUPS if unseen_tasks(g, verbs)]
    unseen = split.startswith("unseen")
    group = groups[index % len(groups)] if unseen else "seen"
    tasks = unseen_tasks(group, verbs) if unseen else demo_tasks("target", verbs)
    shift = SHIFTS[(index // len(groups) if unseen else index) % len(SHIFTS)] if split.endswith("shift") else "normal"
    for attempt in range(_MAX_ATTEMPTS):
        rng = episode_rng(seed, _EVAL_STREAM + EVAL_SPLITS.index(split), index, attempt)
        scene = sample_scene(sample_task(tasks, rng), rng, palette("target"))
        if solvable(scene, embodiment, ExpertParams(), max_steps):
            return EpisodeSpec(scene, sample_condition(shift, rng), split, group, seed, index)
    raise RuntimeError(f"no solvable {split} episode {index} in {_MAX_ATTEMPTS} attempts")


class TabletopEnv:
    """Gym-style environment for one embodiment.

    Args:
        embodiment: `sim_arm` or `sim_gripper` (or `human_hand`, used to render human videos).
        image_size: square image side in pixels (even, >= 32).
        max_steps: steps before truncation (default: EPISODE_SECONDS at the embodiment's rate).
    """

    def __init__(self, embodiment: str = "sim_arm", image_size: int = 64, max_steps: int | None = None) -> None:
        self.embodiment = get_embodiment(embodiment)
        self.renderer = Renderer(image_size)
        self.max_steps = max_steps or self.embodiment.steps_for(EPISODE_SECONDS)
        self.spec: EpisodeSpec | None = None
        self.world: World | None = None

    @property
    def action_dim(self) -> int:
        return self.embodiment.action_dim

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict]:
        """Start an episode: `options["episode"]` (an EpisodeSpec), or evaluation episode
        `options["index"]` (default 0) of `options["split"]` (default seen) drawn with `seed` (default 0)."""
        options = options or {}
        spec = options.get("episode")
        if spec is None:
            spec = sample_eval_episode(options.get("split", "seen"), int(options.get("index", 0)), int(seed or 0),
                                       self.embodiment, self.max_steps)
        self.spec = spec
        self.world = World.start(spec.scene, self.embodiment)
        return self._obs(), self._info(False)

    def current(self) -> tuple[World, EpisodeSpec]:
        """The running episode's world (privileged state, for the expert) and its spec."""
        if self.world is None or self.spec is None:
            raise RuntimeError("call reset() before step() or render()")
        return self.world, self.spec

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict]:
        world, _ = self.current()
        world.step(action)
        success = world.success()
        truncated = not success and world.steps >= self.max_steps
        return self._obs(), float(success), success, truncated, self._info(success)

    def render(self) -> np.ndarray:
        world, spec = self.current()
        return self.renderer.render(world, spec.condition)

    def _obs(self) -> dict[str, Any]:
        world, spec = self.current()
        return {"images": {CAMERA: self.render()}, "state": world.state(), "instruction": spec.scene.task.instruction}

    def _info(self, success: bool) -> dict[str, Any]:
        world, spec = self.current()
        return {"success": success, "steps": world.steps, "split": spec.split, "group": spec.group,
                "condition": spec.condition.name, "instruction": spec.scene.task.instruction}
