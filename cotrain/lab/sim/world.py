"""Kinematic tabletop physics: an end effector that moves, grasps, carries, releases and pushes.

Rules (all in metres on a 1 x 1 table; chosen so one step costs microseconds):
- the effector moves by the clipped delta and stays over the table (x, y in [0.02, 0.98], z in [0, 0.3]);
- closing the gripper (command crossing 0.5 upwards) below `GRASP_Z` grasps the nearest object within
  `GRASP_RADIUS`; a held object follows the effector; opening drops it straight down onto the table;
- a CLOSED, empty gripper below `GRASP_Z` pushes table objects it touches out to `CONTACT_RADIUS`
  along the line from the effector (an open gripper's fingers straddle objects, so it passes over);
- objects do not collide with each other.
Success: pick = holding the task object (lifted to `LIFT_Z` when the embodiment has height); push = the
object rests within `SUCCESS_RADIUS` of the goal and was never grasped; place = the same after a grasp.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cotrain.lab.sim.embodiments import HOLD_CLOSURE, Embodiment
from cotrain.lab.sim.scene import Scene

GRASP_Z = 0.05
GRASP_RADIUS = 0.045
CONTACT_RADIUS = 0.11  # object radius 0.075 + closed finger half-width 0.035
LIFT_Z = 0.12
SUCCESS_RADIUS = 0.08
_XY_BOUNDS = (0.02, 0.98)
_Z_MAX = 0.3


@dataclass
class World:
    """Mutable simulation state of one episode.

    Args:
        scene: the layout and task (immutable).
        embodiment: the embodiment being simulated.
        ee: [3] effector position (x, y, z).
        objects: [N, 3] object positions (x, y, z), in `scene.objects` order.
        grip_cmd: the last gripper command.
        held: index of the held object, or -1.
        grasped: [N] bool, whether each object was ever grasped.
        steps: steps taken.
    """

    scene: Scene
    embodiment: Embodiment
    ee: np.ndarray
    objects: np.ndarray
    grip_cmd: float = 0.0
    held: int = -1
    grasped: np.ndarray | None = None
    steps: int = 0

    @classmethod
    def start(cls, scene: Scene, embodiment: Embodiment) -> World:
        ee = np.array([scene.start[0], scene.start[1], embodiment.start_z])
        objects = np.array([[o.pos[0], o.pos[1], 0.0] for o in scene.objects])
        return cls(scene, embodiment, ee, objects, grasped=np.zeros(len(objects), bool))

    def copy(self) -> World:
        grasped = None if self.grasped is None else self.grasped.copy()
        return replace(self, ee=self.ee.copy(), objects=self.objects.copy(), grasped=grasped)

    @property
    def closed(self) -> bool:
        return self.grip_cmd >= 0.5

    @property
    def closure(self) -> float:
        """Measured gripper closure: 0 open, HOLD_CLOSURE on an object, 1 closed on nothing."""
        if not self.closed:
            return 0.0
        return HOLD_CLOSURE if self.held >= 0 else 1.0

    def state(self) -> np.ndarray:
        return self.embodiment.make_state(self.ee, self.closure)

    def step(self, action: np.ndarray) -> None:
        delta, grip = self.embodiment.split_action(action)
        norm = float(np.linalg.norm(delta))
        if norm > self.embodiment.max_step:
            delta = delta * (self.embodiment.max_step / norm)
        self.ee = self.ee + delta
        self.ee[:2] = np.clip(self.ee[:2], *_XY_BOUNDS)
        self.ee[2] = np.clip(self.ee[2], 0.0, _Z_MAX if self.embodiment.has_z else 0.0)
        was_closed, self.grip_cmd = self.closed, float(np.clip(grip, 0.0, 1.0))
        if was_closed and not self.closed and self.held >= 0:
            self.objects[self.held, 2] = 0.0
            self.held = -1
        if self.held >= 0:
            self.objects[self.held] = self.ee
        if self.closed and not was_closed and self.held < 0 and self.ee[2] < GRASP_Z:
            self._grasp()
        if self.closed and self.held < 0 and self.ee[2] < GRASP_Z:
            self._push()
        self.steps += 1

    def _grasp(self) -> None:
        on_table = self.objects[:, 2] == 0.0
        dist = np.linalg.norm(self.objects[:, :2] - self.ee[:2], axis=1)
        dist[~on_table] = np.inf
        nearest = int(np.argmin(dist))
        if dist[nearest] <= GRASP_RADIUS:
            self.held = nearest
            self.grasped[nearest] = True  # type: ignore[index]  # None only as a field default; start() sets it
            self.objects[nearest] = self.ee

    def _push(self) -> None:
        offset = self.objects[:, :2] - self.ee[:2]
        dist = np.linalg.norm(offset, axis=1)
        touching = (dist < CONTACT_RADIUS) & (dist > 1e-9) & (self.objects[:, 2] == 0.0)
        for i in np.nonzero(touching)[0]:
            self.objects[i, :2] = self.ee[:2] + offset[i] / dist[i] * CONTACT_RADIUS

    def success(self) -> bool:
        task, target = self.scene.task, 0
        if task.verb == "pick":
            return self.held == target and (not self.embodiment.has_z or self.ee[2] >= LIFT_Z)
        if self.held == target or self.objects[target, 2] != 0.0:
            return False
        near = np.linalg.norm(self.objects[target, :2] - np.asarray(self.scene.goals[0].pos)) < SUCCESS_RADIUS
        return bool(near and (self.grasped[target] == (task.verb == "place")))  # type: ignore[index]  # as above
