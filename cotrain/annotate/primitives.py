"""Scripted motion primitives: a short phrase per frame from the end-effector's motion (ECoT rules).

The rules follow Embodied Chain-of-Thought (`scripts/generate_embodied_data/primitive_movements.py`):
- the delta of frame t is `x[t + window - 1] - x[t]` over a window of `window` states (ECoT takes
  `states[t : t + 4]`, so 3 steps), shortened at the episode's end; the last frame repeats the
  phrase of the frame before it (ECoT appends the last primitive again);
- if |dx| + |dy| + |dz| exceeds 3 * threshold the translation is rescaled to that sum, so only the
  dominant directions survive; rotation deltas are divided by `rotation_scale` (10);
- each of x, y, z, roll, pitch, yaw, gripper becomes -1, 0 or +1 by comparing with +-threshold (0.03);
- roll and pitch both read as "tilt" (pitch is used when roll is 0), yaw as "rotate".

Directions are those of a robot base frame with x forward, y left, z up (Bridge/WidowX, Franka):
+x "forward", +y "left", +z "up", +roll/pitch "tilt up", +yaw "rotate counterclockwise", and a
growing gripper value "open gripper" (set `gripper_increase="close"` when larger means closed).
Rotations are read in radians and their deltas are wrapped to (-pi, pi], so crossing +-pi is not a
full turn. Several primitives combine: "move left and up, close gripper"; no motion is "stop".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cotrain.errors import ConfigError, suggest

ROLES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")
# --dims presets: ECoT/Bridge state layout [x, y, z, roll, pitch, yaw, gripper].
PRESETS = {"ecot": dict(zip(ROLES, range(7)))}

_XYZ_WORDS = ({1: "forward", -1: "backward"}, {1: "left", -1: "right"}, {1: "up", -1: "down"})
_POS_PREFIXES = ("pos", "position", "xyz", "translation", "trans")
_ROT_PREFIXES = ("rpy", "euler")


@dataclass(frozen=True)
class PrimitiveRules:
    """Parameters of the ECoT rules.

    Args:
        window: states per delta window (ECoT: 4, i.e. x[t + 3] - x[t]).
        threshold: |delta| below this is no motion (ECoT: 0.03).
        rotation_scale: rotation deltas are divided by this before thresholding (ECoT: 10).
        gripper_increase: what a growing gripper value means, "open" (Bridge, ALOHA) or "close".
    """

    window: int = 4
    threshold: float = 0.03
    rotation_scale: float = 10.0
    gripper_increase: str = "open"


@dataclass(frozen=True)
class DimMap:
    """Which dimension of the state (or action) vector holds each role; None where absent."""

    x: int
    y: int
    z: int
    roll: int | None = None
    pitch: int | None = None
    yaw: int | None = None
    gripper: int | None = None

    def as_names(self, names: Sequence[str]) -> dict[str, str]:
        """Role -> dimension name (or index) for reports."""
        out = {}
        for role in ROLES:
            idx = getattr(self, role)
            if idx is not None:
                out[role] = names[idx] if idx < len(names) else str(idx)
        return out


def _name_role(name: str) -> str | None:
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    if not tokens:
        return None
    last = tokens[-1]
    if last in ("x", "y", "z", "roll", "pitch", "yaw"):
        return last
    if any(t.startswith("gripper") for t in tokens):
        return "gripper"
    if last in ("0", "1", "2") and len(tokens) > 1:
        if tokens[-2] in _POS_PREFIXES:
            return "xyz"[int(last)]
        if tokens[-2] in _ROT_PREFIXES:
            return ROLES[3 + int(last)]
    return None


def detect_dims(names: Sequence[str], what: str) -> DimMap:
    """Find x, y, z (required) and roll, pitch, yaw, gripper (optional) from dimension names.

    Raises ConfigError naming the dimensions and the `--dims` option when the names do not tell.
    """
    found: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        role = _name_role(name)
        if role is not None:
            found.setdefault(role, []).append(i)
    listed = ", ".join(names) or "none"
    hint = "set --dims, e.g. --dims x=0,y=1,z=2,gripper=6 (indices or names), or --dims ecot"
    missing = [r for r in ("x", "y", "z") if r not in found]
    if missing:
        raise ConfigError(f"cannot tell which {what} dimensions are {', '.join(missing)} from the names "
                          f"[{listed}]; {hint}")
    ambiguous = {r: v for r, v in found.items() if len(v) > 1}
    if ambiguous:
        role, idx = sorted(ambiguous.items())[0]
        raise ConfigError(f"{what} dimensions {', '.join(names[i] for i in idx)} could each be {role!r}; {hint}")
    return DimMap(**{r: v[0] for r, v in found.items()})


def parse_dims(spec: str, names: Sequence[str], what: str) -> DimMap:
    """`x=0,y=1,z=2,gripper=6` (indices or dimension names) or a preset name (`ecot`) -> DimMap."""
    if spec in PRESETS:
        chosen = PRESETS[spec]
    else:
        chosen = {}
        for item in (p.strip() for p in spec.split(",") if p.strip()):
            role, sep, value = item.partition("=")
            role = role.strip()
            if not sep or role not in ROLES:
                raise ConfigError(f"--dims {spec!r}: expected ROLE=DIM items with ROLE one of {', '.join(ROLES)}"
                                  + (suggest(role, ROLES) if sep else ""))
            chosen[role] = _dim_index(value.strip(), names, spec)
    for role, idx in chosen.items():
        if idx >= len(names) > 0 or idx < 0:
            raise ConfigError(f"--dims {spec!r}: {role}={idx} is out of range; the {what} has {len(names)} "
                              f"dimensions [{', '.join(names)}]")
    missing = [r for r in ("x", "y", "z") if r not in chosen]
    if missing:
        raise ConfigError(f"--dims {spec!r}: {', '.join(missing)} missing (x, y and z are required)")
    return DimMap(**chosen)


def _dim_index(value: str, names: Sequence[str], spec: str) -> int:
    if value.lstrip("-").isdigit():
        return int(value)
    if value in names:
        return list(names).index(value)
    raise ConfigError(f"--dims {spec!r}: no dimension named {value!r}{suggest(value, names)}; "
                      f"names: {', '.join(names) or 'none'}")


def move_vector(delta: np.ndarray, dims: DimMap, rules: PrimitiveRules) -> np.ndarray:
    """[7] ints in {-1, 0, 1} for x, y, z, roll, pitch, yaw, gripper from one delta vector."""
    diff = np.zeros(7, np.float64)
    for k, role in enumerate(ROLES):
        idx = getattr(dims, role)
        if idx is not None:
            diff[k] = float(delta[idx])
    diff[3:6] = (diff[3:6] + np.pi) % (2 * np.pi) - np.pi  # a yaw from 3.1 to -3.1 is a small turn
    total = np.abs(diff[:3]).sum()
    if total > 3 * rules.threshold:
        diff[:3] *= 3 * rules.threshold / total
    diff[3:6] /= rules.rotation_scale
    return (diff > rules.threshold).astype(np.int64) - (diff < -rules.threshold).astype(np.int64)


def describe_move(vec: Sequence[int] | np.ndarray, rules: PrimitiveRules) -> str:
    """The phrase of a move vector: "move forward, left and up, tilt down, open gripper" or "stop"."""
    words = [_XYZ_WORDS[k][int(vec[k])] for k in range(3) if vec[k]]
    parts = []
    if words:
        joined = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
        parts.append("move " + joined)
    tilt = int(vec[3]) or int(vec[4])  # ECoT reads pitch when there is no roll
    if tilt:
        parts.append("tilt up" if tilt > 0 else "tilt down")
    if vec[5]:
        parts.append("rotate counterclockwise" if vec[5] > 0 else "rotate clockwise")
    if vec[6]:
        opens = (vec[6] > 0) == (rules.gripper_increase == "open")
        parts.append("open gripper" if opens else "close gripper")
    return ", ".join(parts) or "stop"


def trajectory_primitives(traj: np.ndarray, dims: DimMap, rules: PrimitiveRules) -> list[str]:
    """One phrase per frame of an episode's [T, D] state trajectory."""
    t = len(traj)
    if t == 0:
        return []
    phrases = []
    for i in range(max(t - 1, 1)):
        j = min(i + rules.window - 1, t - 1)
        phrases.append(describe_move(move_vector(traj[j] - traj[i], dims, rules), rules))
    if t > 1:
        phrases.append(phrases[-1])  # ECoT: the last frame has no future; repeat the one before
    return phrases


def chunk_primitive(chunk: np.ndarray, dims: DimMap, rules: PrimitiveRules) -> str:
    """The phrase of one [H, D] chunk of absolute targets: chunk[window - 1] - chunk[0]."""
    j = min(rules.window - 1, len(chunk) - 1)
    return describe_move(move_vector(chunk[j] - chunk[0], dims, rules), rules)
