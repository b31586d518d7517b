"""Hand-pose geometry shared by the human-video converters: 6D rotations, camera-relative poses, grip.

Conventions (stated once, used everywhere):
- poses are 4x4 homogeneous "frame -> world" transforms (EgoDex `transforms/<joint>` and
  `transforms/camera`); a joint's pose in the camera frame at frame t is `inv(T_cam[t]) @ T_joint`;
- the 6D rotation is the first two ROWS of the 3x3 rotation matrix, flattened
  `(R00, R01, R02, R10, R11, R12)`, the convention of TRI VLA Foundry's `pose_to_9d` (the `rot_6d`
  arrays of LBM shards), so human-hand and LBM robot rotations read the same way; the third row is
  recovered by Gram-Schmidt (`rotation_from_6d`);
- the grip proxy of a hand is the thumb-tip to index-tip distance in metres: rigid motions keep
  distances, so it needs no frame change;
- an action chunk of frame t holds steps t+1 .. t+H, all in the camera frame AT FRAME t (the anchor),
  like a robot whose action at t is the target reached at t+1. Steps past the episode's end repeat
  the last frame and are marked invalid, as cotrain does for robot chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

POSE_COMPONENTS = ("x", "y", "z", *(f"r6d_{i}" for i in range(6)))
HAND_COMPONENTS = (*POSE_COMPONENTS, "grip")


def hand_names(sides: Sequence[str]) -> list[str]:
    """`left_x, left_y, left_z, left_r6d_0..5, left_grip, right_...` for the given hands."""
    return [f"{side}_{c}" for side in sides for c in HAND_COMPONENTS]


def rigid_inverse(transform: np.ndarray) -> np.ndarray:
    """[..., 4, 4] rigid transforms -> their inverses, `[R^T, -R^T t]` (exact, no general inverse)."""
    t = np.asarray(transform, np.float64)
    rot_t = np.swapaxes(t[..., :3, :3], -1, -2)
    out = np.zeros_like(t)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rot_t, t[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def relative_pose(frame_to_world: np.ndarray, pose_to_world: np.ndarray) -> np.ndarray:
    """The pose expressed in `frame`: `inv(frame) @ pose`, broadcasting over leading axes (float64)."""
    return rigid_inverse(frame_to_world) @ np.asarray(pose_to_world, np.float64)


def rotation_to_6d(rotation: np.ndarray) -> np.ndarray:
    """[..., 3, 3] -> [..., 6]: the first two rows, flattened (VLA Foundry / LBM `rot_6d`)."""
    r = np.asarray(rotation)
    return r[..., :2, :].reshape(*r.shape[:-2], 6)


def rotation_from_6d(d6: np.ndarray) -> np.ndarray:
    """[..., 6] -> [..., 3, 3]: Gram-Schmidt on the two stored rows; the third row is their cross product."""
    d = np.asarray(d6, np.float64)
    a1, a2 = d[..., :3], d[..., 3:]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = b2 / np.linalg.norm(b2, axis=-1, keepdims=True)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-2)


def pose_to_9d(pose: np.ndarray) -> np.ndarray:
    """[..., 4, 4] -> [..., 9]: translation xyz then 6D rotation."""
    p = np.asarray(pose)
    return np.concatenate([p[..., :3, 3], rotation_to_6d(p[..., :3, :3])], axis=-1)


def grip_aperture(thumb_tip: np.ndarray, index_tip: np.ndarray) -> np.ndarray:
    """[...] distance between the thumb-tip and index-tip positions of [..., 4, 4] transforms."""
    diff = np.asarray(thumb_tip, np.float64)[..., :3, 3] - np.asarray(index_tip, np.float64)[..., :3, 3]
    return np.linalg.norm(diff, axis=-1)


@dataclass(frozen=True)
class HandTrack:
    """One hand over an episode, in the world frame.

    Args:
        wrist: [T, 4, 4] wrist -> world.
        thumb_tip: [T, 4, 4] thumb tip -> world (only its position is used).
        index_tip: [T, 4, 4] index-finger tip -> world (only its position is used).
        confidence: [T] tracking confidence of the hand (the lowest of the joints above).
    """

    wrist: np.ndarray
    thumb_tip: np.ndarray
    index_tip: np.ndarray
    confidence: np.ndarray

    def features(self, camera: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """[..., 10] = wrist xyz + 6D rotation in `camera` ([..., 4, 4], cam -> world) + grip, at `frames`."""
        pose = relative_pose(camera, self.wrist[frames])
        grip = grip_aperture(self.thumb_tip[frames], self.index_tip[frames])
        return np.concatenate([pose_to_9d(pose), grip[..., None]], axis=-1)


def future_steps(indices: np.ndarray, horizon: int, offset: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Source frame of chunk step h of output frame t: `indices[t + h + offset]`, clipped at the end.

    Returns ([T, H] source frame indices, [T, H] bool inside the episode). `indices` maps output
    frames to source frames (the identity, or the resampled clock of `--fps`).
    """
    n = len(indices)
    pos = np.arange(n)[:, None] + np.arange(horizon)[None, :] + offset
    return np.asarray(indices)[np.minimum(pos, n - 1)], pos < n


def hand_state(camera: np.ndarray, hands: Sequence[HandTrack]) -> np.ndarray:
    """[T, 10 * hands]: each hand at frame t in the camera frame of frame t."""
    frames = np.arange(len(camera))
    return np.concatenate([hand.features(camera, frames) for hand in hands], axis=-1)


def anchor_chunks(camera: np.ndarray, hands: Sequence[HandTrack], indices: np.ndarray, horizon: int,
                  min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Chunks [T', H, 10 * hands] in the camera frame of each anchor frame, and validity [T', H].

    A step is valid inside the episode and where every hand's confidence reaches `min_confidence`.
    """
    steps, inside = future_steps(indices, horizon)
    anchor_cam = np.asarray(camera, np.float64)[np.asarray(indices)][:, None]  # [T', 1, 4, 4] broadcasts over H
    chunks = np.concatenate([hand.features(anchor_cam, steps) for hand in hands], axis=-1)
    confident = np.all([hand.confidence[steps] >= min_confidence for hand in hands], axis=0)
    return chunks.astype(np.float32), inside & confident
