"""ALOHA / ACT episode HDF5 files (`episode_<i>.hdf5`), raw or JPEG-compressed images.

Layout: `observations/qpos` (T, 14) state, `action` (T, 14), `observations/images/<cam>` either
(T, H, W, 3) uint8 or, in the compressed variant, (T, max_len) uint8 rows of zero-padded JPEG bytes
with the true lengths in the root dataset `compress_len` (n_cams, T). ALOHA records at 50 Hz.

The rows of `compress_len` are not in one agreed camera order: aloha's `record_episodes.py` writes
them in its configured order (cam_high, cam_low, cam_left_wrist, cam_right_wrist), act-plus-plus's
`compress_data.py` in HDF5 name order without the depth cameras. So each JPEG's length is taken from
the row itself (a JPEG ends with the nonzero EOI byte, the padding is zeros), and `compress_len` is
only checked for its shape. Non-colour streams (depth: uint16, or no 3 channels) are not cameras.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from cotrain.convert.robot import RobotEpisode, robot_converter, robot_info
from cotrain.convert.spec import DatasetInfo, RobotOptions, Unit
from cotrain.errors import DataError
from cotrain_converters.hdf5.files import open_hdf5
from cotrain_converters.source_files import FileRef, unit_file

ALOHA_FPS = 50.0
_JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
_NAMES = [f"{side}_{j}" for side in ("left", "right") for j in _JOINTS]
_EPISODE_RE = re.compile(r"episode_(\d+)\.hdf5$")


class AlohaOptions(RobotOptions):
    """Options of the ALOHA converter (all robot options)."""


def _episode_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    files = [p for p in src.iterdir() if _EPISODE_RE.search(p.name)]
    return sorted(files, key=lambda p: int(_EPISODE_RE.search(p.name).group(1)))  # type: ignore[union-attr]  # files were filtered by this regex above


def _num_frames(path: Path) -> int:
    # Unreadable files and missing `action` are reported by load_episode, where
    # `--on-bad-episode skip` can skip them; here they only count as empty.
    try:
        with open_hdf5(path) as f:
            return int(f["action"].shape[0]) if "action" in f else 0
    except DataError:
        return 0


def list_units(src: Path, opts: AlohaOptions) -> list[Unit[FileRef]]:
    """One unit per episode file."""
    return [Unit(index=i, id=path.stem, est_samples=_num_frames(path),
                 ref=FileRef(file=path.name if src.is_dir() else ""))
            for i, path in enumerate(_episode_files(src))]


def _cameras(f) -> dict[str, bool]:  # noqa: ANN001
    """Colour cameras in name order -> whether stored as JPEG rows; depth and other streams are skipped."""
    group = f.get("observations/images")
    cams = {}
    for name in sorted(group.keys()) if group is not None else []:
        ds = group[name]
        if getattr(ds, "dtype", None) != np.uint8:
            continue
        if ds.ndim == 4 and ds.shape[-1] == 3:
            cams[name] = False
        elif ds.ndim == 2:
            cams[name] = True
    return cams


def describe(src: Path, opts: AlohaOptions, units: Sequence[Unit[FileRef]]) -> DatasetInfo:
    """Names, rate and cameras, read from the first readable episode with 2-D actions."""
    for unit in units:  # the first readable episode with a 2-D action describes the dataset
        path = unit_file(src, unit.ref)
        if _num_frames(path) == 0:
            continue
        with open_hdf5(path) as f:
            if f["action"].ndim != 2:
                continue
            cams = _cameras(f)
            dims = int(f["action"].shape[1])
        names = _NAMES if dims == len(_NAMES) else [f"joint_{i}" for i in range(dims)]
        return robot_info(opts, state_names=names, action_names=names, fps=ALOHA_FPS, cameras=list(cams),
                          where=str(path), extra={"compressed_images": any(cams.values())})
    raise DataError(src, "no readable episode file has a 2-D 'action' dataset", key="action")


def _read(f, key: str, path: Path, episode: str) -> np.ndarray:  # noqa: ANN001
    if key not in f:
        raise DataError(path, f"missing dataset {key!r}", episode=episode, key=key)
    try:
        return np.asarray(f[key][()], dtype=np.float32)
    except (OSError, RuntimeError) as exc:  # a corrupt or truncated block
        raise DataError(path, f"cannot read dataset: {' '.join(str(exc).split())}", episode=episode, key=key) from None


def _jpeg_row(row: np.ndarray, path: Path, cam: str, episode: str, frame: int) -> bytes:
    """The JPEG in a zero-padded row: it ends at the last nonzero byte (EOI is FF D9)."""
    nonzero = np.flatnonzero(row)
    data = bytes(row[: int(nonzero[-1]) + 1]) if len(nonzero) else b""
    if not (data.startswith(b"\xff\xd8\xff") and data.endswith(b"\xff\xd9")):
        raise DataError(path, "compressed image row is not a zero-padded JPEG (FF D8 ... FF D9)",
                        episode=episode, frame=frame, key=f"observations/images/{cam}")
    return data


def _frame_source(path: Path, cam: str, compressed: bool, episode: str):  # noqa: ANN202
    def frames(indices: Sequence[int], bound: tuple[int, int] | None) -> Iterator[np.ndarray | bytes]:
        with open_hdf5(path) as f:
            data = f[f"observations/images/{cam}"]
            for i in indices:
                if i >= data.shape[0]:
                    raise DataError(path, f"camera {cam!r} has {data.shape[0]} frames", episode=episode, frame=i,
                                    key=f"observations/images/{cam}")
                yield _jpeg_row(data[i], path, cam, episode, i) if compressed else data[i]

    return frames


def _check_compress_len(f, cams: dict[str, bool], frames: int, path: Path, episode: str) -> None:  # noqa: ANN001
    if "compress_len" not in f:
        return
    expected = (sum(cams.values()), frames)
    if tuple(f["compress_len"].shape) != expected:
        raise DataError(path, f"compress_len has shape {tuple(f['compress_len'].shape)}, expected {expected} "
                              "(one row per compressed camera, one column per frame)", episode=episode,
                        key="compress_len")


def load_episode(src: Path, opts: AlohaOptions, unit: Unit[FileRef]) -> RobotEpisode:
    """Read one episode file: qpos as state, the action dataset, and the camera frames."""
    path = unit_file(src, unit.ref)
    with open_hdf5(path) as f:
        state = _read(f, "observations/qpos", path, unit.id)
        actions = _read(f, "action", path, unit.id)
        cams = _cameras(f)
        _check_compress_len(f, cams, len(actions), path, unit.id)
    timestamps = np.arange(len(actions), dtype=np.float64) / ALOHA_FPS
    cameras = {cam: _frame_source(path, cam, compressed, unit.id) for cam, compressed in cams.items()}
    return RobotEpisode(episode_id=unit.id, source_file=str(path), state=state, actions=actions,
                        timestamps_s=timestamps, tasks=[opts.task or ""], cameras=cameras, fps=ALOHA_FPS,
                        state_key="observations/qpos", action_key="action")


CONVERTER = robot_converter(
    "aloha", "ALOHA/ACT episode HDF5 files (raw or JPEG-compressed images).", AlohaOptions,
    list_units, describe, load_episode,
)
