"""Rolling the expert out into recorded demonstrations (frames, state, actions, instruction).

Frame t holds the observation BEFORE action t, as LeRobot records (`observation.*` and `action` on
the same row); an episode ends at the step that completes its task, so its last action is the one
that succeeds. Human demonstrations also keep the effector position and gripper closure per frame,
from which `egodex_writer` builds hand poses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cotrain.lab.sim.embodiments import Embodiment
from cotrain.lab.sim.env import CAMERA, EPISODE_SECONDS, EpisodeSpec
from cotrain.lab.sim.expert import ExpertParams, expert_step
from cotrain.lab.sim.render import Renderer
from cotrain.lab.sim.world import World


@dataclass(frozen=True)
class Recording:
    """One demonstration.

    Args:
        spec: the episode it records.
        images: camera name -> uint8 [T, H, W, 3].
        state: float32 [T, state_dim].
        action: float32 [T, action_dim].
        effector: float64 [T, 3] effector position (x, y, height) at each frame.
        closure: float64 [T] measured gripper closure at each frame.
        phases: the expert's subtask phrase at each frame.
    """

    spec: EpisodeSpec
    images: dict[str, np.ndarray]
    state: np.ndarray
    action: np.ndarray
    effector: np.ndarray
    closure: np.ndarray
    phases: tuple[str, ...] = ()

    def segments(self) -> list[tuple[int, int, str]]:
        """Runs of equal phases as half-open frame spans (start, end, text)."""
        out: list[tuple[int, int, str]] = []
        for t, phase in enumerate(self.phases):
            if out and out[-1][2] == phase:
                out[-1] = (out[-1][0], t + 1, phase)
            else:
                out.append((t, t + 1, phase))
        return out

    @property
    def length(self) -> int:
        return int(self.state.shape[0])

    @property
    def instruction(self) -> str:
        return self.spec.scene.task.instruction


def record_demo(spec: EpisodeSpec, params: ExpertParams, embodiment: Embodiment, renderer: Renderer,
                max_steps: int | None = None, miss: np.ndarray | None = None) -> Recording:
    """Run the expert from the episode's start until success; a failure is a RuntimeError (the
    samplers only hand out solvable episodes, so this means a bug).

    `miss` [2] makes a recovery demonstration (DART-style: what is executed differs from what is
    recorded): the first time the expert closes on the object, the executed action instead moves the
    effector by `miss` (x, y) and closes there, on nothing. The recorded action of that frame is
    still the expert's; the frames after it show the expert open the gripper, go back and grasp.
    """
    world = World.start(spec.scene, embodiment)
    frames, states, actions, effector, closure, phases = [], [], [], [], [], []
    pending = miss is not None
    for _ in range(max_steps or embodiment.steps_for(EPISODE_SECONDS) * (2 if pending else 1)):
        frames.append(renderer.render(world, spec.condition))
        states.append(world.state())
        effector.append(world.ee.copy())
        closure.append(world.closure)
        action, phase = expert_step(world, params)
        actions.append(action)
        phases.append(phase)
        executed = action
        if pending and phase.startswith("grasp") and world.held < 0:
            executed, pending = _missed_grasp(world, action, miss), False  # type: ignore[arg-type]  # pending implies miss
        world.step(executed)
        if world.success():
            return Recording(spec, {CAMERA: np.stack(frames)}, np.stack(states), np.stack(actions),
                             np.stack(effector), np.asarray(closure), tuple(phases))
    raise RuntimeError(f"the expert did not solve {spec.split} episode {spec.index} ({spec.scene.task.instruction})")


def _missed_grasp(world: World, action: np.ndarray, miss: np.ndarray) -> np.ndarray:
    """The expert's closing action moved by `miss` on the table plane (the embodiment's step limit
    still applies in World.step, so a miss is at most one step long)."""
    delta, grip = world.embodiment.split_action(action)
    delta = np.array(delta, dtype=np.float64)
    delta[:2] += miss
    return world.embodiment.make_action(delta, max(grip, 1.0))
