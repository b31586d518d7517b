"""From a loaded robot episode to samples: checks, resampling, chunking, cameras, metadata.

Every robot-like converter (LeRobot, robomimic, ALOHA, MCAP, RLDS, ...) only loads an episode into a
`RobotEpisode`; this module applies the shared rules so they hold identically everywhere:
- the action chunk of frame t is actions[t : t + H], padded by repeating the last action, with
  `actions_valid` False past the episode's end (and where the source marks a step invalid);
- `--fps` resamples onto a regular clock, taking the latest frame at or before each tick;
- NaN or Inf in state or actions is an error naming the episode, frame and dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cotrain.convert.spec import Converter, DatasetInfo, RefT, RobotOptions, Unit, UnitSink
from cotrain.dataset import keys
from cotrain.dataset.norm_stats import EpisodeLowdim
from cotrain.dataset.shards import encode_json, encode_npy
from cotrain.errors import ConfigError, DataError
from cotrain.media.image import parse_size, to_jpeg

# Decodes the given source frame indices (ascending) of one camera, resized within a bound.
FrameSource = Callable[[Sequence[int], "tuple[int, int] | None"], Iterator["np.ndarray | bytes"]]


@dataclass
class RobotEpisode:
    """One episode as loaded from a source.

    Args:
        episode_id: the source's id for the episode.
        source_file: the file the episode came from (for error messages).
        state: [T, Ds] per-frame proprioception.
        actions: [T, Da] per-frame commanded actions.
        timestamps_s: [T] seconds since the episode start.
        tasks: one instruction for the whole episode, or one per frame.
        cameras: source camera name -> frame source.
        valid: optional [T] bool; False marks action steps to exclude (e.g. low tracking confidence).
        fps: the source's nominal frame rate (estimated from timestamps when None).
        chunker: optional `(source frame indices [T'], H) -> (chunks [T', H, Da], valid [T', H])` for
            sources whose chunk is not `actions[t : t + H]`, e.g. human-hand poses expressed in the
            camera frame of the anchor frame. It receives the (resampled) frame indices.
        state_key / action_key: source names used in error messages.
    """

    episode_id: str
    source_file: str
    state: np.ndarray
    actions: np.ndarray
    timestamps_s: np.ndarray
    tasks: Sequence[str]
    cameras: Mapping[str, FrameSource] = field(default_factory=dict)
    valid: np.ndarray | None = None
    fps: float | None = None
    chunker: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None
    state_key: str = "state"
    action_key: str = "actions"


def parse_camera_map(spec: str | None, available: Sequence[str], where: str) -> dict[str, str]:
    """Source camera name -> stored name. Names match the source name or its normalised form."""
    norm = {keys.normalise_camera(name): name for name in available}
    if not spec:
        return {name: keys.normalise_camera(name) for name in available}
    out: dict[str, str] = {}
    for item in (p.strip() for p in spec.split(",") if p.strip()):
        src, _, dst = item.partition("=")
        source = src if src in available else norm.get(keys.normalise_camera(src))
        if source is None:
            raise ConfigError(f"--cameras: {where} has no camera {src!r}; available: {', '.join(available) or 'none'}")
        name = keys.normalise_camera(dst) if dst else keys.normalise_camera(source)
        if name in out.values():
            raise ConfigError(f"--cameras: two cameras would both be stored as {name!r}")
        out[source] = name
    return out


def resample_indices(timestamps_s: np.ndarray, fps: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Source frame index for each output frame, and the output timestamps (latest frame at or before)."""
    if fps is None:
        return np.arange(len(timestamps_s)), timestamps_s.astype(np.float64)
    t0, t1 = float(timestamps_s[0]), float(timestamps_s[-1])
    # Sources often store float32 seconds (LeRobot: frame 1 at 30 fps is 0.0333333351), so a frame
    # within 1e-4 s after a tick still counts as "at" it (LeRobot's own timestamp tolerance).
    tol = min(1e-4, 0.01 / fps)
    ticks = t0 + np.arange(int(np.floor((t1 - t0) * fps + tol * fps)) + 1) / fps
    idx = np.searchsorted(timestamps_s, ticks + tol, side="right") - 1
    return np.clip(idx, 0, len(timestamps_s) - 1), ticks


def check_finite(array: np.ndarray, name: str, ep: RobotEpisode) -> None:
    """Raise a DataError naming the frame and dimension of the first NaN or infinity."""
    bad = ~np.isfinite(array)
    if bad.any():
        frame, dim = (int(v) for v in np.argwhere(bad)[0])
        kind = "NaN" if np.isnan(array[frame, dim]) else "Inf"
        raise DataError(
            ep.source_file, f"{kind} in {name} dimension {dim}", episode=ep.episode_id, frame=frame, key=name
        )


def check_episode(ep: RobotEpisode) -> None:
    """Shapes, lengths and finiteness; each failure is one DataError saying where."""
    t = len(ep.timestamps_s)
    if t == 0:
        raise DataError(ep.source_file, "empty episode (no frames)", episode=ep.episode_id)
    for array, name in ((ep.state, ep.state_key), (ep.actions, ep.action_key)):
        if array.ndim != 2:
            raise DataError(ep.source_file, f"{name} must be 2-D [frames, dims], got shape {array.shape}",
                            episode=ep.episode_id, key=name)
        if array.shape[0] != t:
            raise DataError(ep.source_file, f"{name} has {array.shape[0]} frames but the episode has {t}",
                            episode=ep.episode_id, key=name)
        check_finite(array, name, ep)
    if len(ep.tasks) not in (1, t):
        raise DataError(ep.source_file, f"{len(ep.tasks)} task strings for {t} frames", episode=ep.episode_id)
    if np.any(np.diff(ep.timestamps_s) < 0):
        frame = int(np.argmax(np.diff(ep.timestamps_s) < 0)) + 1
        raise DataError(ep.source_file, "timestamps go backwards", episode=ep.episode_id, frame=frame)


def chunk_actions(actions: np.ndarray, valid: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """[T, D] actions -> [T, H, D] chunks (last action repeated past the end) and [T, H] validity."""
    t = len(actions)
    steps = np.arange(t)[:, None] + np.arange(horizon)[None, :]
    inside = steps < t
    clipped = np.minimum(steps, t - 1)
    return actions[clipped], inside & valid[clipped]


def _camera_frames(
    ep: RobotEpisode, camera_map: Mapping[str, str], indices: np.ndarray, opts: RobotOptions
) -> dict[str, Iterator[bytes]]:
    bound = parse_size(opts.image_size)
    # Frames repeat when resampling upwards; decode and encode each source frame once.
    unique = sorted(set(int(i) for i in indices))
    return {
        name: _repeat_by_index(ep.cameras[source](unique, bound), indices, opts.jpeg_quality, bound)
        for source, name in camera_map.items()
    }


def _repeat_by_index(
    frames: Iterator[np.ndarray | bytes], indices: np.ndarray, quality: int, bound: tuple[int, int] | None
) -> Iterator[bytes]:
    # `indices` is non-decreasing, so each change of value is the next frame of the source iterator.
    last, encoded = -1, b""
    for i in indices:
        if int(i) != last:
            encoded = to_jpeg(next(frames), bound, quality)
            last = int(i)
        yield encoded


def build_robot_samples(ep: RobotEpisode, opts: RobotOptions, unit: Unit[RefT], info: Mapping[str, object],
                        sink: UnitSink) -> None:
    """Validate one episode and emit one sample per (resampled) frame into the sink."""
    check_episode(ep)
    idx, times = resample_indices(np.asarray(ep.timestamps_s, np.float64), opts.fps)
    state = ep.state[idx].astype(np.float32)
    actions = ep.actions[idx].astype(np.float32)
    valid = (np.ones(len(ep.timestamps_s), bool) if ep.valid is None else ep.valid.astype(bool))[idx]
    if ep.chunker is None:
        chunks, chunk_valid = chunk_actions(actions, valid, opts.horizon)
        lowdim = EpisodeLowdim(state=state, actions=actions, valid=valid)
    else:
        chunks, chunk_valid = ep.chunker(idx, opts.horizon)
        chunks = chunks.astype(np.float32)
        lowdim = EpisodeLowdim(state=state, actions=actions, valid=valid, chunks=chunks, chunk_valid=chunk_valid)
    camera_map = {} if opts.no_images else parse_camera_map(opts.cameras, list(ep.cameras), ep.source_file)
    frames = _camera_frames(ep, camera_map, idx, opts)
    sink.add_episode(lowdim)
    for t in range(len(idx)):
        task = opts.task or (ep.tasks[0] if len(ep.tasks) == 1 else ep.tasks[int(idx[t])])
        meta = {
            **info,
            "episode": ep.episode_id,
            "episode_index": unit.index,
            "frame_index": t,
            "source_frame_index": int(idx[t]),
            "timestamp": round(float(times[t] - times[0]), 6),
            "task": task,
        }
        members = {
            keys.META: encode_json(meta),
            keys.STATE: encode_npy(state[t]),
            keys.ACTIONS: encode_npy(chunks[t]),
            keys.ACTIONS_VALID: encode_npy(chunk_valid[t]),
            keys.INSTRUCTION: task.encode("utf-8"),
        }
        for name, stream in frames.items():
            members[keys.camera_member(name)] = next(stream)
        sink.add(members)


def robot_converter(
    name: str,
    summary: str,
    options: type[RobotOptions],
    list_units: Callable[[Path, Any], list[Unit[RefT]]],
    describe: Callable[[Path, Any, Sequence[Unit[RefT]]], DatasetInfo],
    load_episode: Callable[[Path, Any, Unit[RefT]], RobotEpisode],
    *,
    modality: str = keys.ROBOT,
) -> Converter[RefT]:
    """A Converter whose units are episodes loaded by `load_episode` and built by the shared rules."""

    def convert_unit(src: Path, opts: RobotOptions, unit: Unit[RefT], sink: UnitSink) -> None:
        ep = load_episode(src, opts, unit)
        meta = {"dataset": opts.name or src.name, "modality": modality, "embodiment": opts.embodiment,
                "fps": opts.fps or ep.fps or _episode_fps(ep)}
        build_robot_samples(ep, opts, unit, meta, sink)

    return Converter(name, summary, options, list_units, describe, convert_unit)


def _episode_fps(ep: RobotEpisode) -> float | None:
    if len(ep.timestamps_s) < 2:
        return None
    span = float(ep.timestamps_s[-1] - ep.timestamps_s[0])
    return round((len(ep.timestamps_s) - 1) / span, 3) if span > 0 else None


def robot_info(opts: RobotOptions, *, state_names: Sequence[str], action_names: Sequence[str], fps: float | None,
               cameras: Sequence[str], where: str, extra: Mapping[str, Any] | None = None,
               modality: str = keys.ROBOT) -> DatasetInfo:
    """The DatasetInfo of a robot source after camera selection, resize and resampling."""
    selected = [] if opts.no_images else list(parse_camera_map(opts.cameras, list(cameras), where).values())
    return DatasetInfo(
        modality=modality,
        embodiment=opts.embodiment,
        state_names=list(state_names),
        action_names=list(action_names),
        fps=opts.fps or fps,
        horizon=opts.horizon,
        cameras=selected,
        image_size=parse_size(opts.image_size),
        extra=dict(extra or {}),
    )
