"""The scripted expert: a stateless function of the world, so it can replan from any state.

Per step it picks a waypoint (x, y, z) and a gripper command from the world alone, then moves towards
the waypoint at `speed_m_s` (per step: speed / the embodiment's rate). Phases (each read off the
state, never remembered):
- pick:  hover above the object -> descend -> close -> lift to `carry_z` (planar: close = done);
- place: pick, carry above the goal -> open (the object drops onto it);
- push:  open, hover behind the object (on the far side from the goal) -> descend -> close -> drive
  through to the point where the object's centre sits on the goal; drifting off the line re-aligns.
`ExpertParams` varies speed and heights per demonstration (drawn from the episode's generator), so
demonstrations are not all alike. `expert_chunk` rolls a copy of the world forward for an action chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cotrain.sim.world import CONTACT_RADIUS, GRASP_Z, LIFT_Z, World

_ALIGN = 0.008  # xy distance at which a waypoint counts as reached
_LOW_Z = 0.02
_BEHIND = CONTACT_RADIUS + 0.03
_LINE_TOLERANCE = 0.02


@dataclass(frozen=True)
class ExpertParams:
    """Style of one demonstration.

    Args:
        speed_m_s: effector speed in metres per second (capped by the embodiment's).
        hover_z: height of moves above objects.
        carry_z: height of carrying (>= LIFT_Z, so a pick succeeds once reached).
    """

    speed_m_s: float = 0.45
    hover_z: float = 0.1
    carry_z: float = 0.14

    @classmethod
    def sample(cls, rng: np.random.Generator) -> ExpertParams:
        return cls(speed_m_s=float(rng.uniform(0.35, 0.5)), hover_z=float(rng.uniform(0.08, 0.12)),
                   carry_z=float(rng.uniform(LIFT_Z + 0.01, 0.17)))


def expert_action(world: World, params: ExpertParams = ExpertParams()) -> np.ndarray:
    """The expert's next action in the world's embodiment's action space."""
    verb = world.scene.task.verb
    if verb == "push":
        waypoint, grip = _push(world, params)
    else:
        waypoint, grip = _pick_place(world, params, place=verb == "place")
    if not world.embodiment.has_z:
        waypoint[2] = 0.0
    delta = waypoint - world.ee
    norm = float(np.linalg.norm(delta))
    speed = min(params.speed_m_s / world.embodiment.rate_hz, world.embodiment.max_step)
    if norm > speed:
        delta *= speed / norm
    return world.embodiment.make_action(delta, grip)


def expert_chunk(world: World, horizon: int, params: ExpertParams = ExpertParams()) -> np.ndarray:
    """[horizon, action_dim]: the expert's next actions, simulated on a copy of the world."""
    sim = world.copy()
    actions = []
    for _ in range(horizon):
        action = expert_action(sim, params)
        actions.append(action)
        sim.step(action)
    return np.stack(actions)


def _xy_dist(world: World, point: np.ndarray) -> float:
    return float(np.linalg.norm(world.ee[:2] - point[:2]))


def _approach(world: World, xy: np.ndarray, params: ExpertParams, low_z: float) -> tuple[np.ndarray, bool]:
    """Waypoint towards `xy` at hover height, then down to `low_z`; True once down and aligned."""
    if _xy_dist(world, xy) > _ALIGN:
        # Rise before travelling, so a low effector does not drag past neighbours (planar: no height).
        if world.embodiment.has_z and world.ee[2] < params.hover_z - 0.01:
            return np.array([world.ee[0], world.ee[1], params.hover_z]), False
        return np.array([xy[0], xy[1], params.hover_z]), False
    down = not world.embodiment.has_z or world.ee[2] <= low_z + 1e-6
    return np.array([xy[0], xy[1], low_z]), down


def _pick_place(world: World, params: ExpertParams, *, place: bool) -> tuple[np.ndarray, float]:
    target = 0
    if world.held >= 0 and world.held != target:
        return world.ee.copy(), 0.0  # wrong object: let go
    if world.held == target:
        carry = np.array([world.ee[0], world.ee[1], params.carry_z])
        if not place:
            return carry, 1.0
        if world.embodiment.has_z and world.ee[2] < LIFT_Z:
            return carry, 1.0
        goal = np.asarray(world.scene.goals[0].pos)
        if _xy_dist(world, goal) > _ALIGN:
            return np.array([goal[0], goal[1], params.carry_z]), 1.0
        return world.ee.copy(), 0.0  # over the goal: release
    if world.closed:
        return world.ee.copy(), 0.0  # closed on nothing: open before approaching
    waypoint, down = _approach(world, world.objects[target], params, _LOW_Z)
    return waypoint, 1.0 if down else 0.0


def _push(world: World, params: ExpertParams) -> tuple[np.ndarray, float]:
    if world.held >= 0:
        return world.ee.copy(), 0.0
    obj = world.objects[0, :2]
    goal = np.asarray(world.scene.goals[0].pos)
    line = goal - obj
    direction = line / max(float(np.linalg.norm(line)), 1e-9)
    if world.closed and _on_push_line(world, obj, direction):
        end = goal - direction * CONTACT_RADIUS
        return np.array([end[0], end[1], _LOW_Z]), 1.0
    behind = obj - direction * _BEHIND
    if world.closed:
        return world.ee.copy(), 0.0
    waypoint, down = _approach(world, behind, params, _LOW_Z)
    return waypoint, 1.0 if down and world.ee[2] < GRASP_Z else 0.0


def _on_push_line(world: World, obj: np.ndarray, direction: np.ndarray) -> bool:
    """Whether the effector is low, behind the object and on the object-goal line."""
    rel = obj - world.ee[:2]
    along = float(rel @ direction)
    across = abs(float(rel[0] * direction[1] - rel[1] * direction[0]))
    low = world.ee[2] < GRASP_Z
    return low and 0.0 < along <= _BEHIND + 0.02 and across <= _LINE_TOLERANCE
