"""ALOHA / ACT episode HDF5 files (`episode_<i>.hdf5`), raw or JPEG-compressed images.

Layout: `observations/qpos` (T, 14) state, `action` (T, 14), `observations/images/<cam>` either
(T, H, W, 3) uint8 or, in act-plus-plus's compressed variant, (T, max_len) uint8 rows of zero-padded
JPEG bytes whose true lengths are in the root dataset `compress_len` (n_cams, T), cameras in sorted
order... as written by `compress_data.py`. ALOHA records at 50 Hz.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from cotrain.convert.robot import RobotEpisode, robot_converter, robot_info
from cotrain.convert.spec import DatasetInfo, RobotOptions, Unit
from cotrain.errors import DataError

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
    return sorted(files, key=lambda p: int(_EPISODE_RE.search(p.name).group(1)))  # type: ignore[union-attr]


def _open(path: Path):  # noqa: ANN202  (h5py.File)
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(path, f"unreadable or truncated HDF5 file: {exc}") from None


def list_units(src: Path, opts: AlohaOptions) -> list[Unit]:
    units = []
    for i, path in enumerate(_episode_files(src)):
        with _open(path) as f:
            if "action" not in f:
                raise DataError(path, "missing dataset 'action'", key="action")
            n = int(f["action"].shape[0])
        units.append(Unit(index=i, id=path.stem, est_samples=n, ref={"file": path.name if src.is_dir() else ""}))
    return units


def _cameras(f) -> list[str]:  # noqa: ANN001
    group = f.get("observations/images")
    return sorted(group.keys()) if group is not None else []


def describe(src: Path, opts: AlohaOptions, units: Sequence[Unit]) -> DatasetInfo:
    path = _path(src, units[0])
    with _open(path) as f:
        cams = _cameras(f)
        dims = int(f["action"].shape[1])
        compressed = "compress_len" in f
    names = _NAMES if dims == len(_NAMES) else [f"joint_{i}" for i in range(dims)]
    return robot_info(opts, state_names=names, action_names=names, fps=ALOHA_FPS, cameras=cams, where=str(path),
                      extra={"compressed_images": compressed})


def _path(src: Path, unit: Unit) -> Path:
    return src / unit.ref["file"] if unit.ref.get("file") else src


def _read(f, key: str, path: Path, episode: str) -> np.ndarray:  # noqa: ANN001
    if key not in f:
        raise DataError(path, f"missing dataset {key!r}", episode=episode, key=key)
    return np.asarray(f[key][()], dtype=np.float32)


def _frame_source(path: Path, cam: str, cam_index: int, compressed: bool, episode: str):  # noqa: ANN202
    def frames(indices: Sequence[int], bound: tuple[int, int] | None) -> Iterator[np.ndarray | bytes]:
        with _open(path) as f:
            data = f[f"observations/images/{cam}"]
            lengths = f["compress_len"][cam_index] if compressed else None
            for i in indices:
                if i >= data.shape[0]:
                    raise DataError(path, f"camera {cam!r} has {data.shape[0]} frames", episode=episode, frame=i)
                row = data[i]
                yield bytes(row[: int(lengths[i])]) if compressed else row  # type: ignore[index]

    return frames


def load_episode(src: Path, opts: AlohaOptions, unit: Unit) -> RobotEpisode:
    path = _path(src, unit)
    with _open(path) as f:
        state = _read(f, "observations/qpos", path, unit.id)
        actions = _read(f, "action", path, unit.id)
        cams = _cameras(f)
        compressed = "compress_len" in f
        if compressed and f["compress_len"].shape[0] != len(cams):
            raise DataError(path, f"compress_len has {f['compress_len'].shape[0]} rows for {len(cams)} cameras",
                            episode=unit.id, key="compress_len")
    timestamps = np.arange(len(actions), dtype=np.float64) / ALOHA_FPS
    cameras = {cam: _frame_source(path, cam, i, compressed, unit.id) for i, cam in enumerate(cams)}
    return RobotEpisode(episode_id=unit.id, source_file=str(path), state=state, actions=actions,
                        timestamps_s=timestamps, tasks=[opts.task or ""], cameras=cameras, fps=ALOHA_FPS,
                        state_key="observations/qpos", action_key="action")


CONVERTER = robot_converter(
    "aloha", "ALOHA/ACT episode HDF5 files (raw or JPEG-compressed images).", AlohaOptions,
    list_units, describe, load_episode,
)
