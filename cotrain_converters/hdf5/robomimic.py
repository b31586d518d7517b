"""robomimic HDF5 datasets (robomimic, robosuite, MimicGen, RoboCasa, LIBERO): one file, many demos.

Layout (ARISE-Initiative/robomimic `docs/datasets/overview.md`):
- `data/` attrs `total` (sample count) and `env_args` (JSON `{env_name, env_type, env_kwargs}`);
- `data/demo_<i>/` attrs `num_samples` and optional `ep_meta` (JSON; RoboCasa keeps the instruction
  in `lang`); datasets `actions (N, A)`, `states`, `rewards`, `dones` and `obs/<key>`: low-dim keys
  such as `robot0_eef_pos (N, 3)` and camera keys `<camera>_image (N, H, W, 3) uint8`;
- `mask/<filter_key>`: arrays of demo names (bytes), e.g. `train` / `valid`.

Isaac Lab writes the same container (isaaclab `utils/datasets/hdf5_dataset_file_handler.py`, and
Isaac Lab Mimic) with its own keys: `obs/` holds the policy observation terms (`actions` = the last
action again, `joint_pos`, `joint_vel`, `eef_pos`, `eef_quat`, `gripper_pos`, object terms, camera
terms such as `table_cam` (N, H, W, 3) uint8 without an `_image` suffix), Mimic adds the nested group
`obs/datagen_info/{object_pose,eef_pose,target_eef_pose}/<name>` and `subtask_term_signals`, demo
numbers have gaps where failed demos were dropped, and `env_args` is `{env_name, type: 2}`.

Demos are ordered numerically (demo_2 before demo_10), as robomimic's own loader does. The state is
the concatenation of the chosen obs datasets: `--state-keys`, else the first default set fully
present (robomimic's `robot0_eef_pos, robot0_eef_quat, robot0_gripper_qpos`; Isaac Lab's `eef_pos,
eef_quat, gripper_pos`; `joint_pos`), else every 1-D or 2-D obs dataset. An action key (`actions`,
`last_action`, ...) never enters the state: it would put the label into the input. The keys used
are logged on every conversion and recorded in the manifest. `states` (simulator state) is not
converted. The files carry no timestamps: frames are spaced at the env's `control_freq`
(robosuite's default 20 Hz when absent) unless `--source-fps` says otherwise.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from typing_extensions import TypedDict

from cotrain.convert.robot import RobotEpisode, robot_converter, robot_info
from cotrain.convert.spec import DatasetInfo, RobotOptions, Unit
from cotrain.errors import ConfigError, DataError, suggest
from cotrain_converters.hdf5.files import one_line, open_hdf5

log = logging.getLogger(__name__)

ROBOSUITE_FPS = 20.0
DEFAULT_STATE_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
# Default state sets, tried in order; the first whose keys are all obs datasets is used.
STATE_KEY_SETS = {
    "robomimic end-effector pose + gripper": DEFAULT_STATE_KEYS,
    "Isaac Lab end-effector pose + gripper": ("eef_pos", "eef_quat", "gripper_pos"),
    "Isaac Lab joint positions": ("joint_pos",),
}
_ACTION_KEY = re.compile(r"(^|[^a-z])actions?($|[^a-z])")  # actions, last_action, processed_actions, ...
LANGUAGE_KEYS = ("lang", "language_instruction", "task")
_IMAGE_SUFFIX = "_image"
# Frames are read in slabs: one h5py read per slab instead of one per frame, and a slab of 32
# 84x84 frames is 0.7 MB, so memory stays small even for 480x640 cameras (30 MB).
_SLAB_FRAMES = 32


class RobomimicOptions(RobotOptions):
    """Options of the robomimic converter (all robot options, plus these)."""

    filter_key: str | None = Field(None, description="Convert only the demos listed in mask/NAME (e.g. train, valid).")
    state_keys: str | None = Field(
        None, description="Comma list of obs datasets (nested ones as group/name) concatenated into the state "
        "(default: robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos; else Isaac Lab's eef_pos,eef_quat,"
        "gripper_pos; else joint_pos; else every 1-D/2-D obs dataset; never an action key)."
    )
    source_fps: float | None = Field(
        None, gt=0, description="Rate the demos were recorded at (default: env_args control_freq, else 20)."
    )
    rotate_images_180: bool = Field(False, description="Rotate camera frames by 180 degrees (LIBERO files store "
                                                       "them upside down).")


def _source_file(src: Path) -> Path:
    if src.is_dir():
        raise DataError(src, "expected one robomimic .hdf5 file, got a directory")
    return src


def _demo_sort_key(name: str) -> tuple[str, int, str]:
    """demo_2 < demo_10: the trailing number compares as a number, like robomimic's `int(elem[5:])`."""
    match = re.match(r"^(.*?)(\d+)$", name)
    return (match.group(1), int(match.group(2)), name) if match else (name, -1, name)


def _attr_text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def _json_attr(obj: Any, name: str, path: Path, episode: str | None = None) -> dict[str, Any]:
    """A JSON object stored as a string attribute ({} when absent)."""
    if name not in obj.attrs:
        return {}
    try:
        value = json.loads(_attr_text(obj.attrs[name]))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"attribute {name!r} is not valid JSON: {exc}", episode=episode, key=name) from None
    if not isinstance(value, dict):
        raise DataError(path, f"attribute {name!r} must hold a JSON object, got {type(value).__name__}",
                        episode=episode, key=name)
    return value


def _selected_demos(f: Any, path: Path, filter_key: str | None) -> list[str]:
    if "data" not in f:
        raise DataError(path, "missing group 'data' (not a robomimic file?)", key="data")
    if filter_key is None:
        return sorted(f["data"].keys(), key=_demo_sort_key)
    masks = sorted(f["mask"].keys()) if "mask" in f else []
    if filter_key not in masks:
        raise DataError(path, f"no filter key {filter_key!r}{suggest(filter_key, masks)}; available: "
                              f"{', '.join(masks) or 'none (the file has no mask group)'}", key=f"mask/{filter_key}")
    names = {_attr_text(n) for n in np.asarray(f[f"mask/{filter_key}"][()]).reshape(-1)}
    return sorted(names, key=_demo_sort_key)


def _is_dataset(obj: Any) -> bool:
    import h5py

    return isinstance(obj, h5py.Dataset)


def _is_camera(key: str, ds: Any) -> bool:
    """An RGB frame stack (N, H, W, 3) uint8: robomimic's `<cam>_image`, Isaac Lab's `table_cam`."""
    return _is_dataset(ds) and ds.dtype == np.uint8 and ds.ndim == 4 and ds.shape[-1] == 3


def camera_name(key: str) -> str:
    """The camera name of an image observation key (`agentview_image` -> `agentview`)."""
    return key[: -len(_IMAGE_SUFFIX)] if key.endswith(_IMAGE_SUFFIX) else key


def is_action_key(key: str) -> bool:
    """An obs key holding an action (Isaac Lab records the last action as `obs/actions`)."""
    return bool(_ACTION_KEY.search(key.rsplit("/", 1)[-1].lower()))


def _state_keys(obs: Any, opts: RobomimicOptions) -> tuple[list[str], str]:
    """The state's obs keys and where they came from (an option or which default)."""
    if opts.state_keys:
        keys = [k.strip() for k in opts.state_keys.split(",") if k.strip()]
        leaks = [k for k in keys if is_action_key(k)]
        if leaks:
            raise ConfigError(f"--state-keys: {leaks[0]!r} holds an action (Isaac Lab records the last action as "
                              "obs/actions); in the state it would leak the label into the input")
        return keys, "--state-keys"
    for origin, key_set in STATE_KEY_SETS.items():
        if all(k in obs and _is_dataset(obs[k]) for k in key_set):
            return list(key_set), f"default: {origin}"
    rest = sorted(k for k in obs if _is_dataset(obs[k]) and obs[k].ndim in (1, 2) and not is_action_key(k))
    return rest, "default: every 1-D/2-D obs dataset except actions"


class RobomimicLayout(TypedDict):
    """What every demo must share, taken from the first well-formed demo."""

    state_keys: list[str]  # obs/<key> datasets concatenated into the state
    state_keys_source: str  # how they were chosen (option, env_meta, default), printed and recorded
    state_widths: list[int]
    action_dim: int
    cameras: list[str]  # obs keys holding images


class RobomimicRef(RobomimicLayout):
    """A unit's `ref`: one demo, with the file's layout, rate and default task."""

    demo: str
    fps: float
    default_task: str
    env_name: str | None


def _layout(f: Any, path: Path, demos: Sequence[str], opts: RobomimicOptions) -> RobomimicLayout:
    """State keys and widths, action width and cameras, from the first demo that has what they need.

    Taking them from a well-formed demo (not blindly the first) lets `--on-bad-episode skip` skip a
    malformed first demo; every demo is checked against this layout when it is loaded.
    """
    for demo in demos:
        group = f["data"].get(demo)
        if group is None or "actions" not in group or "obs" not in group or group["actions"].ndim != 2:
            continue
        obs = group["obs"]
        keys, origin = _state_keys(obs, opts)
        if not keys or any(k not in obs or not _is_dataset(obs[k]) or obs[k].ndim == 0 for k in keys):
            continue
        return RobomimicLayout(
            state_keys=keys,
            state_keys_source=origin,
            state_widths=[int(np.prod(obs[k].shape[1:])) for k in keys],
            action_dim=int(group["actions"].shape[1]),
            cameras=sorted(k for k in obs if _is_camera(k, obs[k])),
        )
    raise _layout_error(f, path, demos[0], opts)


def _layout_error(f: Any, path: Path, demo: str, opts: RobomimicOptions) -> DataError:
    """Why no demo gave a layout, diagnosed on the first demo."""
    group = f["data"].get(demo)
    if group is None or "obs" not in group or "actions" not in group or group["actions"].ndim != 2:
        return DataError(path, "no demo has both a 2-D 'actions' dataset and an 'obs' group", key="data")
    obs = group["obs"]
    (keys, _), available = _state_keys(obs, opts), sorted(obs.keys())
    for key in keys:
        if key not in obs:
            return DataError(path, f"obs key {key!r} not found{suggest(key, available)}; obs keys: "
                                   f"{', '.join(available)}", episode=demo, key=f"obs/{key}")
        if not _is_dataset(obs[key]):
            return DataError(path, f"a state key must name a dataset, not a group (it holds: "
                                   f"{', '.join(sorted(obs[key].keys()))})", episode=demo, key=f"obs/{key}")
        if obs[key].ndim == 0:
            return DataError(path, "a state key must name a dataset of shape (N, ...), not a scalar",
                             episode=demo, key=f"obs/{key}")
    return DataError(path, "no 1-D or 2-D obs key to build the state from; pass --state-keys", episode=demo, key="obs")


def _default_task(f: Any, path: Path) -> tuple[str, str | None]:
    """LIBERO's `problem_info` instruction, else the env name; also returns the env name."""
    env = _json_attr(f["data"], "env_args", path)
    problem = _json_attr(f["data"], "problem_info", path)
    env_name = env.get("env_name")
    task = problem.get("language_instruction") or env_name or ""
    return str(task).strip(), env_name


def _fps(f: Any, path: Path, opts: RobomimicOptions) -> float:
    if opts.source_fps:
        return opts.source_fps
    kwargs = _json_attr(f["data"], "env_args", path).get("env_kwargs")
    freq = kwargs.get("control_freq") if isinstance(kwargs, dict) else None
    return float(freq) if isinstance(freq, (int, float)) and freq > 0 else ROBOSUITE_FPS


def list_units(src: Path, opts: RobomimicOptions) -> list[Unit[RobomimicRef]]:
    """One unit per selected demo of the HDF5 file."""
    path = _source_file(src)
    with open_hdf5(path) as f:
        demos = _selected_demos(f, path, opts.filter_key)
        if not demos:
            return []
        task, env_name = _default_task(f, path)
        layout, fps = _layout(f, path, demos, opts), _fps(f, path, opts)
        units: list[Unit[RobomimicRef]] = []
        for i, demo in enumerate(demos):
            group = f["data"].get(demo)
            est = 0
            if group is not None:
                est = int(group.attrs.get("num_samples", group["actions"].shape[0] if "actions" in group else 0))
            ref = RobomimicRef(demo=demo, **layout, fps=fps, default_task=task, env_name=env_name)
            units.append(Unit(index=i, id=demo, est_samples=est, ref=ref))
    return units


def describe(src: Path, opts: RobomimicOptions, units: Sequence[Unit[RobomimicRef]]) -> DatasetInfo:
    """Names and cameras from the first demo's observation layout."""
    ref = units[0].ref
    state_names = [f"{k}_{i}" for k, w in zip(ref["state_keys"], ref["state_widths"]) for i in range(w)]
    action_names = [f"action_{i}" for i in range(ref["action_dim"])]
    cameras = [camera_name(c) for c in ref["cameras"]]
    origin = ref.get("state_keys_source", "")
    # Printed on every conversion: a state silently built from the wrong keys trains a wrong policy.
    log.info("robomimic %s: state = %s (%d dims; %s)", src.name, ", ".join(f"obs/{k}" for k in ref["state_keys"]),
             len(state_names), origin)
    extra = {"env_name": ref["env_name"], "filter_key": opts.filter_key, "state_keys": ref["state_keys"],
             "state_keys_source": origin, "source_fps": ref["fps"]}
    return robot_info(opts, state_names=state_names, action_names=action_names, fps=ref["fps"], cameras=cameras,
                      where=str(src), extra=extra)


def _read(group: Any, key: str, path: Path, demo: str) -> np.ndarray:
    """A whole dataset; a missing key or an unreadable (truncated, corrupt) block is one DataError."""
    if key not in group:
        raise DataError(path, f"missing dataset {key!r}; has: {', '.join(sorted(group.keys())) or 'nothing'}",
                        episode=demo, key=_full_key(group, key))
    try:
        return np.asarray(group[key][()])
    except (OSError, RuntimeError) as exc:
        raise DataError(path, f"cannot read dataset: {one_line(exc)}", episode=demo,
                        key=_full_key(group, key)) from None


def _full_key(group: Any, key: str) -> str:
    """`obs/robot0_eef_pos` relative to the demo group (group.name is /data/demo_3/obs)."""
    parts = group.name.strip("/").split("/")[2:]
    return "/".join([*parts, key])


def _check_finite(array: np.ndarray, key: str, path: Path, demo: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        frame, dim = (int(v) for v in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(array[frame, dim]) else "Inf"
        raise DataError(path, f"{kind} in {key} dimension {dim}", episode=demo, frame=frame, key=key)


def _read_state(obs: Any, ref: RobomimicLayout, frames: int, path: Path, demo: str) -> np.ndarray:
    parts = []
    for key, width in zip(ref["state_keys"], ref["state_widths"]):
        name = f"obs/{key}"
        arr = _read(obs, key, path, demo).astype(np.float64)
        arr = arr.reshape(len(arr), -1) if arr.ndim else arr
        if arr.ndim != 2 or arr.shape[1] != width:
            raise DataError(path, f"shape {arr.shape}, expected ({frames}, {width}) like the first demo",
                            episode=demo, key=name)
        if arr.shape[0] != frames:
            raise DataError(path, f"{arr.shape[0]} frames but actions has {frames}", episode=demo, key=name)
        _check_finite(arr, name, path, demo)
        parts.append(arr)
    return np.concatenate(parts, axis=1)


def _episode_task(group: Any, path: Path, demo: str) -> str | None:
    meta = _json_attr(group, "ep_meta", path, demo)
    for key in LANGUAGE_KEYS:
        if isinstance(meta.get(key), str) and meta[key].strip():
            return meta[key].strip()
    return None


def _check_camera(obs: Any, key: str, frames: int, path: Path, demo: str) -> None:
    if key not in obs:
        raise DataError(path, "camera missing in this demo", episode=demo, key=f"obs/{key}")
    ds = obs[key]
    if not _is_camera(key, ds):
        raise DataError(path, f"camera must be uint8 (N, H, W, 3), got {ds.dtype} {ds.shape}",
                        episode=demo, key=f"obs/{key}")
    if ds.shape[0] != frames:
        raise DataError(path, f"{ds.shape[0]} frames but actions has {frames}", episode=demo, key=f"obs/{key}")


def _frame_source(path: Path, demo: str, key: str, rotate: bool):  # noqa: ANN202  (FrameSource)
    def frames(indices: Sequence[int], bound: tuple[int, int] | None) -> Iterator[np.ndarray]:
        with open_hdf5(path) as f:
            data = f[f"data/{demo}/obs/{key}"]
            for start in range(0, len(indices), _SLAB_FRAMES):
                part = indices[start : start + _SLAB_FRAMES]
                try:
                    slab = data[part[0] : part[-1] + 1]
                except (OSError, RuntimeError) as exc:
                    raise DataError(path, f"cannot read frames: {one_line(exc)}", episode=demo, frame=int(part[0]),
                                    key=f"obs/{key}") from None
                for i in part:
                    image = slab[i - part[0]]
                    yield np.ascontiguousarray(image[::-1, ::-1]) if rotate else image

    return frames


def load_episode(src: Path, opts: RobomimicOptions, unit: Unit[RobomimicRef]) -> RobotEpisode:
    """Read one demo's state, actions, task and camera frames."""
    path, demo, ref = _source_file(src), unit.id, unit.ref
    with open_hdf5(path) as f:
        group = f["data"].get(demo)
        if group is None:
            where = f" but listed in mask/{opts.filter_key}" if opts.filter_key else ""
            raise DataError(path, f"demo group data/{demo} is missing{where}", episode=demo)
        actions = _read(group, "actions", path, demo)
        if actions.ndim != 2 or actions.shape[1] != ref["action_dim"]:
            raise DataError(path, f"actions shape {actions.shape}, expected (N, {ref['action_dim']}) like the "
                                  "first demo", episode=demo, key="actions")
        n = len(actions)
        if "num_samples" in group.attrs and int(group.attrs["num_samples"]) != n:
            raise DataError(path, f"attribute num_samples is {int(group.attrs['num_samples'])} but actions has {n} "
                                  "frames", episode=demo, key="num_samples")
        if "obs" not in group:
            raise DataError(path, "missing group 'obs'", episode=demo, key="obs")
        state = _read_state(group["obs"], ref, n, path, demo)
        task = _episode_task(group, path, demo) or ref["default_task"]
        cameras = [] if opts.no_images else ref["cameras"]
        for key in cameras:
            _check_camera(group["obs"], key, n, path, demo)
    sources = {camera_name(key): _frame_source(path, demo, key, opts.rotate_images_180) for key in cameras}
    return RobotEpisode(episode_id=demo, source_file=str(path), state=state, actions=actions.astype(np.float64),
                        timestamps_s=np.arange(n, dtype=np.float64) / ref["fps"], tasks=[task], cameras=sources,
                        fps=ref["fps"], state_key="state", action_key="actions")


CONVERTER = robot_converter(
    "robomimic", "robomimic HDF5 datasets (robosuite, MimicGen, RoboCasa, LIBERO): low-dim obs, cameras, actions.",
    RobomimicOptions, list_units, describe, load_episode,
)
