"""Writing human demonstrations in the EgoDex layout: `<split>/<task>/<N>.hdf5` + `<N>.mp4`.

HDF5 contents (as Apple's EgoDex release; see cotrain_converters/human_video/egodex.py for what is read):
- `transforms/<joint>` [T, 4, 4] float32 joint -> world transforms in an ARKit-style world frame
  (y up): table point (x, y) at height h is world (x, h, y);
- `transforms/camera` the camera -> world transform: the top-down camera 1 m above the table centre
  (camera axes x right, y up, z backward, as ARKit's), so camera -z looks down at the table;
- `confidences/<joint>` [T] in [0, 1]; `camera/intrinsic` [3, 3] of the rendered image;
- root attributes `task`, `description`, `llm_description`, `which_llm_description`, `llm_type`.
The right hand performs the task (wrist, thumb tip and index tip from `hand_keypoints`); the left
hand rests at the table's near edge. Video frames are the rendered images at the recording's fps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cotrain.lab.sim.embodiments import hand_keypoints
from cotrain.lab.sim.lerobot_writer import write_video
from cotrain.lab.sim.recording import Recording

CAMERA_HEIGHT_M = 1.0
# Camera -> world rotation: columns are the camera's x, y, z axes in world coordinates.
_CAMERA_ROTATION = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
_LEFT_REST = (0.1, 1.02, 0.03)  # table x, y, height: just past the near edge, out of view
_CONFIDENCE = 0.95


def world_point(table_xyh: np.ndarray) -> np.ndarray:
    """[..., 3] table (x, y, height) -> [..., 3] world (x, height, y)."""
    p = np.asarray(table_xyh, np.float64)
    return np.stack([p[..., 0], p[..., 2], p[..., 1]], axis=-1)


def camera_pose() -> np.ndarray:
    """[4, 4] camera -> world of the top-down camera."""
    pose = np.eye(4)
    pose[:3, :3] = _CAMERA_ROTATION
    pose[:3, 3] = world_point(np.array([0.5, 0.5, CAMERA_HEIGHT_M]))
    return pose


def intrinsics(image_size: int) -> np.ndarray:
    """Pinhole intrinsics whose view spans the 1 m table at 1 m distance."""
    f = float(image_size)
    return np.array([[f, 0.0, image_size / 2], [0.0, f, image_size / 2], [0.0, 0.0, 1.0]], np.float32)


def _poses(points: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """[T, 3] table points and [T] yaw (about world y) -> [T, 4, 4] joint -> world transforms."""
    c, s = np.cos(yaw), np.sin(yaw)
    out = np.zeros((len(points), 4, 4))
    out[:, 0, 0], out[:, 0, 2], out[:, 2, 0], out[:, 2, 2] = c, s, -s, c
    out[:, 1, 1] = out[:, 3, 3] = 1.0
    out[:, :3, 3] = world_point(points)
    return out


def hand_joints(rec: Recording) -> dict[str, np.ndarray]:
    """Both hands' wrist and fingertip transforms [T, 4, 4] over the recording."""
    keypoints = [hand_keypoints(ee, c) for ee, c in zip(rec.effector, rec.closure)]
    # The wrist turns with the reach, as a person's does, so rotations are not constant.
    yaw = 0.6 * (rec.effector[:, 0] - 0.5)
    joints = {f"right{name}": _poses(np.stack([k[part] for k in keypoints]), yaw)
              for name, part in (("Hand", "wrist"), ("ThumbTip", "thumb"), ("IndexFingerTip", "index"))}
    rest = np.tile(np.asarray(_LEFT_REST), (rec.length, 1))
    zero = np.zeros(rec.length)
    joints["leftHand"] = _poses(rest, zero)
    joints["leftThumbTip"] = _poses(rest + [-0.03, -0.05, 0.0], zero)
    joints["leftIndexFingerTip"] = _poses(rest + [0.01, -0.07, 0.0], zero)
    return joints


def write_egodex_episode(stem: Path, rec: Recording, *, fps: int, camera: str) -> Path:
    """`<stem>.hdf5` and `<stem>.mp4` of one human recording; returns the hdf5 path."""
    import h5py

    stem.parent.mkdir(parents=True, exist_ok=True)
    frames = rec.images[camera]
    joints = hand_joints(rec)
    path = stem.with_suffix(".hdf5")
    with h5py.File(path, "w") as f:
        f.create_dataset("camera/intrinsic", data=intrinsics(frames.shape[1]))
        f.create_dataset("transforms/camera", data=np.repeat(camera_pose()[None], rec.length, 0).astype(np.float32))
        for name, arr in joints.items():
            f.create_dataset(f"transforms/{name}", data=arr.astype(np.float32))
            f.create_dataset(f"confidences/{name}", data=np.full(rec.length, _CONFIDENCE, np.float32))
        task = rec.spec.scene.task
        f.attrs["task"] = task.verb
        f.attrs["description"] = rec.instruction
        f.attrs["llm_description"] = rec.instruction
        f.attrs["which_llm_description"] = "1"
        f.attrs["llm_type"] = "non-reversible"
        f.attrs["environment"] = "sim tabletop"
    write_video(stem.with_suffix(".mp4"), frames, fps)
    return path
