"""The scripted expert: a stateless function of the world, so it can replan from any state.

Per step it picks a waypoint (x, y, z) and a gripper command from the world alone, then moves towards
the waypoint at `speed_m_s` (per step: speed / the embodiment's rate). Phases (each read off the
state, never remembered):
- pick:  hover above the object -> descend -> close -> lift to `carry_z` (planar: close = done);
- place: pick, carry above the goal -> open (the object drops onto it);
- push:  open, hover behind the object (on the far side from the goal) -> descend -> close -> drive
  through to the point where the object's centre sits on the goal; drifting off the line re-aligns.
Each step also names its phase ("move to the red cube", "grasp the red cube", "carry the red cube to
the blue plate", ...), which becomes the demonstrations' dense subtask annotation.
`ExpertParams` varies speed and heights per demonstration (drawn from the episode's generator), so
demonstrations are not all alike. `expert_chunk` rolls a copy of the world forward for an action chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cotrain.lab.sim.world import CONTACT_RADIUS, GRASP_Z, LIFT_Z, World

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


def expert_step(world: World, params: ExpertParams = ExpertParams()) -> tuple[np.ndarray, str]:
    """The expert's next action in the world's embodiment's action space, and its subtask phrase
    ("move to the red cube", "grasp the red cube", ...: the dense annotation of this frame)."""
    verb = world.scene.task.verb
    if verb == "push":
        waypoint, grip, phase = _push(world, params)
    else:
        waypoint, grip, phase = _pick_place(world, params, place=verb == "place")
    if not world.embodiment.has_z:
        waypoint[2] = 0.0
    delta = waypoint - world.ee
    norm = float(np.linalg.norm(delta))
    speed = min(params.speed_m_s / world.embodiment.rate_hz, world.embodiment.max_step)
    if norm > speed:
        delta *= speed / norm
    return world.embodiment.make_action(delta, grip), phase


def expert_action(world: World, params: ExpertParams = ExpertParams()) -> np.ndarray:
    """The expert's next action (see `expert_step`)."""
    return expert_step(world, params)[0]


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


def _approach(world: World, xy: np.ndarray, params: ExpertParams, low_z: float) -> tuple[np.ndarray, str]:
    """Waypoint towards `xy` at hover height, then down to `low_z`; the stage: move, lower or down."""
    if _xy_dist(world, xy) > _ALIGN:
        # Rise before travelling, so a low effector does not drag past neighbours (planar: no height).
        if world.embodiment.has_z and world.ee[2] < params.hover_z - 0.01:
            return np.array([world.ee[0], world.ee[1], params.hover_z]), "move"
        return np.array([xy[0], xy[1], params.hover_z]), "move"
    down = not world.embodiment.has_z or world.ee[2] <= low_z + 1e-6
    return np.array([xy[0], xy[1], low_z]), "down" if down else "lower"


def _names(world: World) -> tuple[str, str]:
    obj, goal = world.scene.objects[0], world.scene.goals[0]
    return f"the {obj.colour} {obj.shape}", f"the {goal.colour} {goal.shape}"


def _pick_place(world: World, params: ExpertParams, *, place: bool) -> tuple[np.ndarray, float, str]:
    target, (obj, goal_name) = 0, _names(world)
    if world.held >= 0 and world.held != target:
        return world.ee.copy(), 0.0, "let go"  # wrong object
    if world.held == target:
        carry = np.array([world.ee[0], world.ee[1], params.carry_z])
        if not place or (world.embodiment.has_z and world.ee[2] < LIFT_Z):
            return carry, 1.0, f"lift {obj}"
        goal = np.asarray(world.scene.goals[0].pos)
        if _xy_dist(world, goal) > _ALIGN:
            return np.array([goal[0], goal[1], params.carry_z]), 1.0, f"carry {obj} to {goal_name}"
        return world.ee.copy(), 0.0, f"release {obj} on {goal_name}"
    if world.closed:
        return world.ee.copy(), 0.0, "open the gripper"  # closed on nothing: open before approaching
    waypoint, stage = _approach(world, world.objects[target], params, _LOW_Z)
    phase = {"move": f"move to {obj}", "lower": f"lower the gripper to {obj}", "down": f"grasp {obj}"}[stage]
    return waypoint, 1.0 if stage == "down" else 0.0, phase


def _push(world: World, params: ExpertParams) -> tuple[np.ndarray, float, str]:
    obj_name, goal_name = _names(world)
    if world.held >= 0:
        return world.ee.copy(), 0.0, "let go"
    obj = world.objects[0, :2]
    goal = np.asarray(world.scene.goals[0].pos)
    line = goal - obj
    direction = line / max(float(np.linalg.norm(line)), 1e-9)
    if world.closed and _on_push_line(world, obj, direction):
        end = goal - direction * CONTACT_RADIUS
        return np.array([end[0], end[1], _LOW_Z]), 1.0, f"push {obj_name} to {goal_name}"
    if world.closed:
        return world.ee.copy(), 0.0, "open the gripper"
    waypoint, stage = _approach(world, obj - direction * _BEHIND, params, _LOW_Z)
    if stage == "down" and world.ee[2] < GRASP_Z:
        return waypoint, 1.0, f"close the gripper behind {obj_name}"
    phase = f"lower the gripper behind {obj_name}" if stage != "move" else f"move behind {obj_name}"
    return waypoint, 0.0, phase


def _on_push_line(world: World, obj: np.ndarray, direction: np.ndarray) -> bool:
    """Whether the effector is low, behind the object and on the object-goal line."""
    rel = obj - world.ee[:2]
    along = float(rel @ direction)
    across = abs(float(rel[0] * direction[1] - rel[1] * direction[0]))
    low = world.ee[2] < GRASP_Z
    return low and 0.0 < along <= _BEHIND + 0.02 and across <= _LINE_TOLERANCE
