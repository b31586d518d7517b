"""The simulated embodiments: their action spaces, state layouts and how they look.

Two robots with different action spaces, plus the human hand of the "human video" demonstrations:

| name          | action                  | state                       | moves in |
|---------------|-------------------------|-----------------------------|----------|
| `sim_arm`     | [dx, dy, dz, gripper]   | [x, y, z, gripper]          | 3-D      |
| `sim_gripper` | [dx, dy, gripper]       | [x, y, gripper]             | the table plane |
| `human_hand`  | (poses, see generate)   | (poses)                     | 3-D      |

Robots step at 10 Hz; the hand is recorded at 30 Hz, as EgoDex records people (the converter's
`--fps 10` resamples it to the robots' clock). Deltas are metres per step (the table is 1 m square),
clipped to `max_step` = `max_speed_m_s / rate_hz`; `gripper` in the
action is a command (>= 0.5 closes), in the state the measured closure: 0 open, 1 closed on nothing,
`HOLD_CLOSURE` closed on an object, as a real parallel gripper's width reports a grasp. The planar
gripper has no height: it grasps wherever it closes and carries objects just above the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HOLD_CLOSURE = 0.6


@dataclass(frozen=True)
class Embodiment:
    """One embodiment's interface.

    Args:
        name: recorded as the dataset's embodiment (`--embodiment` of the conversion).
        action_names: names of the action dimensions, in order.
        state_names: names of the state dimensions, in order.
        has_z: whether it moves vertically (grasps need z < GRASP_Z, picks need z >= LIFT_Z).
        rate_hz: control (and recording) rate in steps per second.
        max_speed_m_s: fastest effector speed; moves are clipped to max_speed_m_s / rate_hz per step.
        start_z: height at the start of an episode.
        look: how the renderer draws it: "arm", "gripper" or "hand".
    """

    name: str
    action_names: tuple[str, ...]
    state_names: tuple[str, ...]
    has_z: bool
    rate_hz: int
    max_speed_m_s: float
    start_z: float
    look: str

    @property
    def max_step(self) -> float:
        return self.max_speed_m_s / self.rate_hz

    def steps_for(self, seconds: float) -> int:
        return int(round(seconds * self.rate_hz))

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    def split_action(self, action: np.ndarray) -> tuple[np.ndarray, float]:
        """An action vector -> (xyz delta [3], gripper command); checks the length."""
        a = np.asarray(action, np.float64).reshape(-1)
        if a.shape[0] != self.action_dim:
            raise ValueError(f"{self.name}: action has {a.shape[0]} values, expected {self.action_dim} "
                             f"({', '.join(self.action_names)})")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{self.name}: action holds NaN or inf: {a.tolist()}")
        delta = np.array([a[0], a[1], a[2] if self.has_z else 0.0])
        return delta, float(a[-1])

    def make_action(self, delta: np.ndarray, grip: float) -> np.ndarray:
        """(xyz delta, gripper command) -> this embodiment's float32 action vector."""
        parts = [delta[0], delta[1], delta[2], grip] if self.has_z else [delta[0], delta[1], grip]
        return np.asarray(parts, np.float32)

    def make_state(self, ee: np.ndarray, closure: float) -> np.ndarray:
        parts = [ee[0], ee[1], ee[2], closure] if self.has_z else [ee[0], ee[1], closure]
        return np.asarray(parts, np.float32)


EMBODIMENTS: dict[str, Embodiment] = {
    "sim_arm": Embodiment("sim_arm", ("dx", "dy", "dz", "gripper"), ("x", "y", "z", "gripper"),
                          has_z=True, rate_hz=10, max_speed_m_s=0.5, start_z=0.2, look="arm"),
    "sim_gripper": Embodiment("sim_gripper", ("dx", "dy", "gripper"), ("x", "y", "gripper"),
                              has_z=False, rate_hz=10, max_speed_m_s=0.5, start_z=0.0, look="gripper"),
    "human_hand": Embodiment("human_hand", ("dx", "dy", "dz", "grip"), ("x", "y", "z", "grip"),
                             has_z=True, rate_hz=30, max_speed_m_s=0.5, start_z=0.2, look="hand"),
}
ROBOTS = ("sim_arm", "sim_gripper")
DEFAULT_TARGET = "sim_arm"


def get_embodiment(name: str) -> Embodiment:
    """The embodiment called `name`, or a ValueError listing the known ones."""
    if name not in EMBODIMENTS:
        raise ValueError(f"unknown embodiment {name!r}; known: {', '.join(EMBODIMENTS)}")
    return EMBODIMENTS[name]


def other_robot(target: str) -> str:
    """The robot that is not `target` (the cross-embodiment source)."""
    if target not in ROBOTS:
        raise ValueError(f"target must be a robot ({', '.join(ROBOTS)}), got {target!r}")
    return next(r for r in ROBOTS if r != target)


# Hand geometry (metres): fingertips sit this far ahead of the wrist; the thumb-index gap is the grip.
HAND_REACH = 0.06
HAND_OPEN_GAP = 0.08
HAND_CLOSED_GAP = 0.02


def hand_keypoints(ee: np.ndarray, closure: float) -> dict[str, np.ndarray]:
    """Wrist, thumb tip and index tip positions [3] (table x, y, height) of a hand whose fingertips
    pinch at `ee`: the wrist lies behind them (towards the person, +y) and the gap closes with the grip."""
    gap = HAND_OPEN_GAP + (HAND_CLOSED_GAP - HAND_OPEN_GAP) * min(max(closure, 0.0), 1.0)
    ee = np.asarray(ee, np.float64)
    wrist = ee + np.array([0.02, HAND_REACH, 0.03])
    return {"wrist": wrist, "thumb": ee + np.array([-gap / 2, 0.0, 0.0]), "index": ee + np.array([gap / 2, 0.0, 0.0])}
