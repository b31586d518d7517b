"""LeRobotDataset v2.1, v3.0 and v3.1 (huggingface/lerobot) folders -> robot samples, one unit per episode.

Frames are parquet rows with `observation.state` and `action` (fixed-size or variable lists of
floats), `timestamp` (float32 seconds from the episode start), `frame_index`, `episode_index`,
`index` and `task_index`. v2.1 has one parquet per episode and one mp4 per episode and camera; v3.0
puts many episodes in each parquet (rows picked by `episode_index`) and concatenates their videos,
frame i of an episode sitting at `from_timestamp + i / fps` in the camera's mp4. `image` features are
HF Image structs `{bytes, path}` inline in the parquet. The metadata side (versions, episode tables,
tasks, path templates) is in `lerobot_meta.py`; videos of any codec PyAV decodes (h264, AV1) are read
with `cotrain.media.video.iter_video_frames`.

Every file a conversion will open is checked in `list_units`, so a missing video fails before any
work is done, naming the first missing file in episode order; `--no-images` skips cameras entirely.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from typing_extensions import TypedDict

from cotrain.convert.robot import FrameSource, RobotEpisode, parse_camera_map, robot_converter, robot_info
from cotrain.convert.spec import DatasetInfo, RobotOptions, Unit
from cotrain.errors import DataError
from cotrain.media.image import decode_image, is_jpeg
from cotrain.media.video import iter_video_frames
from cotrain_converters.lerobot.meta import (
    EpisodeEntry,
    LeRobotMeta,
    load_episodes,
    load_meta,
    load_tasks,
)
from cotrain_converters.source_files import checked_image, inside

# LeRobot's own check (`check_timestamps_sync`) accepts timestamps within 1e-4 s of frame_index / fps.
_TIMESTAMP_TOLERANCE_S = 1e-4


class LeRobotOptions(RobotOptions):
    """Options of the LeRobot converter: all robot options, plus which frame columns hold state and actions."""

    state_key: str = Field("observation.state", description="Frame column used as the state.")
    action_key: str = Field("action", description="Frame column used as the actions.")


def _selected_cameras(meta: LeRobotMeta, opts: LeRobotOptions) -> list[str]:
    if opts.no_images:
        return []
    return list(parse_camera_map(opts.cameras, meta.cameras, str(meta.info_file)))


class VideoSpanRef(TypedDict):
    """`VideoSpan` as JSON: the camera's file (relative to the root) and the episode's time range in it."""

    file: str
    from_s: float
    to_s: float | None


class LeRobotRef(TypedDict):
    """A unit's `ref`: one episode as the metadata lists it (plain JSON: units travel to workers as data)."""

    episode_index: int
    length: int
    tasks: list[str]
    data: str  # the frame parquet, relative to the root
    videos: dict[str, VideoSpanRef]  # video camera key -> span


def list_units(src: Path, opts: LeRobotOptions) -> list[Unit[LeRobotRef]]:
    """One unit per LeRobot episode."""
    meta = load_meta(src)
    meta.require(opts.state_key, "--state-key")
    meta.require(opts.action_key, "--action-key")
    episodes = load_episodes(meta)
    _check_files(meta, episodes, [k for k in _selected_cameras(meta, opts) if meta.is_video(k)])
    return [Unit(index=i, id=str(ep.index), est_samples=ep.length, ref=_ref(ep)) for i, ep in enumerate(episodes)]


def _check_files(meta: LeRobotMeta, episodes: Sequence[EpisodeEntry], video_keys: Sequence[str]) -> None:
    """Fail on the first missing data or video file (in episode order), and on video time ranges too
    short for their episode (which would silently take the next episode's frames in v3.0)."""
    seen: set[str] = set()
    for ep in episodes:
        if ep.data_file not in seen and not (meta.root / ep.data_file).is_file():
            raise DataError(meta.root / ep.data_file, "frame parquet file listed in the metadata is missing",
                            episode=ep.index)
        seen.add(ep.data_file)
        for key in video_keys:
            span = ep.videos[key]
            if span.file not in seen and not (meta.root / span.file).is_file():
                raise DataError(meta.root / span.file, "video file listed in the metadata is missing; pass "
                                "--no-images to convert state and actions only", episode=ep.index, key=key)
            seen.add(span.file)
            fps = meta.video_fps(key)
            # The range must reach the episode's last frame, which starts at from + (N-1)/fps. Some writers
            # store that start as to_timestamp instead of the end-exclusive from + N/fps; LeRobot's reader
            # only seeks from from_timestamp, so it loads them, and so does cotrain. A video that really
            # lacks frames still fails when decoding runs out ("truncated video").
            if span.to_s is not None and (span.to_s - span.from_s) * fps < ep.length - 1.5:
                raise DataError(ep.meta_file, f"video time range {span.from_s:.3f}..{span.to_s:.3f} s "
                                f"holds {(span.to_s - span.from_s) * fps:.1f} frames at {fps:g} fps but the episode "
                                f"has {ep.length}", episode=ep.index, key=key)


def _ref(ep: EpisodeEntry) -> LeRobotRef:
    return LeRobotRef(
        episode_index=ep.index,
        length=ep.length,
        tasks=list(ep.tasks),
        data=ep.data_file,
        videos={k: VideoSpanRef(file=v.file, from_s=v.from_s, to_s=v.to_s) for k, v in ep.videos.items()},
    )


def describe(src: Path, opts: LeRobotOptions, units: Sequence[Unit[LeRobotRef]]) -> DatasetInfo:
    """Names, rate and cameras from the LeRobot metadata."""
    meta = load_meta(src)
    extra = {"codebase_version": meta.version, "robot_type": meta.info.get("robot_type"),
             "state_key": opts.state_key, "action_key": opts.action_key}
    if meta.language_columns:  # v3.1: the language goes into annotation samples, see docs/annotations.md
        extra["language_columns"] = meta.language_columns
    return robot_info(opts, state_names=meta.names(opts.state_key, "state"),
                      action_names=meta.names(opts.action_key, "action"), fps=meta.fps, cameras=meta.cameras,
                      where=str(meta.info_file), extra=extra)


def _episode_table(meta: LeRobotMeta, path: Path, episode_index: int, columns: Sequence[str],  # noqa: ANN401
                   optional: Sequence[str] = ()) -> Any:
    """The episode's rows of `columns` (+ those of `optional` present) as a pyarrow.Table, ordered by
    frame_index, which must run 0..T-1."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    episode = str(episode_index)
    many = meta.many_episodes_per_file  # v3.x files hold many episodes, told apart by episode_index
    required = [*columns, "episode_index"] if many else list(columns)
    try:
        # ParquetFile rather than pq.read_table: the latter goes through pyarrow.dataset, whose import
        # alone costs ~0.2 s in every worker process.
        with pq.ParquetFile(path) as pf:
            names = pf.schema_arrow.names
            for col in required:
                if col not in names:
                    raise DataError(path, f"no column {col!r}; columns: {', '.join(names)}", episode=episode, key=col)
            present = [c for c in (*optional, "frame_index", "episode_index") if c in names]
            wanted = list(dict.fromkeys([*columns, *present]))
            table = _episode_rows(pf, wanted, episode_index) if many else pf.read(columns=wanted)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(path, f"unreadable parquet file: {exc}", episode=episode) from None
    if "episode_index" in table.column_names:
        ids = table.column("episode_index").to_numpy()
        if np.any(ids != episode_index):
            row = int(np.argmax(ids != episode_index))
            raise DataError(path, f"row {row} has episode_index {int(ids[row])}, expected {episode_index}",
                            episode=episode, key="episode_index")
    if "frame_index" not in table.column_names:
        return table
    frame_index = table.column("frame_index").to_numpy()
    order = np.argsort(frame_index, kind="stable")
    gaps = np.nonzero(frame_index[order] != np.arange(len(order)))[0]
    if len(gaps):
        raise DataError(path, f"frame_index values are not 0..{len(order) - 1}: position {int(gaps[0])} holds "
                        f"{int(frame_index[order][gaps[0]])}", episode=episode, key="frame_index")
    return table if np.array_equal(order, np.arange(len(order))) else table.take(order)


def _episode_rows(pf: Any, columns: list[str], episode_index: int) -> Any:  # noqa: ANN401
    """The rows of one episode, reading only row groups whose episode_index statistics may hold it."""
    import pyarrow as pa

    groups = [g for g in range(pf.num_row_groups) if _may_hold(pf.metadata.row_group(g), episode_index)]
    table = pf.read_row_groups(groups, columns=columns)
    return table.filter(pa.array(table.column("episode_index").to_numpy() == episode_index))


def _may_hold(group: Any, episode_index: int) -> bool:  # noqa: ANN401
    for c in range(group.num_columns):
        col = group.column(c)
        if col.path_in_schema == "episode_index":
            stats = col.statistics
            return stats is None or not stats.has_min_max or stats.min <= episode_index <= stats.max
    return True


def _column_2d(table: Any, key: str, dims: int, path: Path, episode: str) -> np.ndarray:  # noqa: ANN401
    """A list-of-numbers column (fixed-size, variable or nested lists, or scalars) as [T, D]."""
    import pyarrow as pa

    arr = table.column(key).combine_chunks()
    rows, level = len(arr), 0
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if arr.null_count:
            row = int(np.argmax(arr.is_null().to_numpy(zero_copy_only=False)))
            raise DataError(path, "null value", episode=episode, frame=row if level == 0 else None, key=key)
        if not pa.types.is_fixed_size_list(arr.type):
            lengths = arr.value_lengths().to_numpy()
            if len(lengths) and np.any(lengths != lengths[0]):
                row = int(np.argmax(lengths != lengths[0]))
                raise DataError(path, f"rows differ in length ({int(lengths[0])} vs {int(lengths[row])} values)",
                                episode=episode, frame=row if level == 0 else None, key=key)
        arr, level = arr.flatten(), level + 1
    values = arr.to_numpy(zero_copy_only=False)
    if values.dtype.kind not in "fiub":
        raise DataError(path, f"expected numbers, got arrow type {arr.type}", episode=episode, key=key)
    out = values.astype(np.float32).reshape(rows, -1) if rows else np.zeros((0, dims), np.float32)
    if out.shape[1] != dims:
        raise DataError(path, f"{out.shape[1]} values per frame but meta/info.json gives {dims}",
                        episode=episode, key=key)
    return out


def _timestamps(table: Any, fps: float) -> np.ndarray:  # noqa: ANN401
    ideal = np.arange(table.num_rows, dtype=np.float64) / fps
    if "timestamp" not in table.column_names:
        return ideal
    recorded = table.column("timestamp").to_numpy(zero_copy_only=False).astype(np.float64)
    # NOTE: timestamps are float32 (0.0333333351 for frame 1 at 30 fps); when they agree with
    # frame_index / fps as LeRobot requires, use the exact values so --fps resampling picks the same
    # frames as a clean clock would. Otherwise keep what was recorded.
    return ideal if np.all(np.abs(recorded - ideal) <= _TIMESTAMP_TOLERANCE_S) else recorded


def _frame_tasks(table: Any, tasks: Mapping[int, str], fallback: Sequence[str], path: Path,  # noqa: ANN401
                 episode: str) -> list[str]:
    """One task for the episode when constant, else one per frame (from task_index)."""
    if "task_index" not in table.column_names:
        return [fallback[0] if fallback else ""]
    col = table.column("task_index")
    if col.null_count:
        frame = int(np.argmax(col.is_null().to_numpy(zero_copy_only=False)))
        raise DataError(path, "null task_index", episode=episode, frame=frame, key="task_index")
    idx = col.to_numpy()
    unknown = ~np.isin(idx, np.fromiter(tasks, np.int64, len(tasks)))
    if unknown.any():
        frame = int(np.argmax(unknown))
        raise DataError(path, f"task_index {int(idx[frame])} is not in the task table (known: "
                        f"{', '.join(map(str, sorted(tasks)))})", episode=episode, frame=frame, key="task_index")
    if len(idx) and np.all(idx == idx[0]):
        return [tasks[int(idx[0])]]
    return [tasks[int(i)] for i in idx]


def _video_source(path: Path, span: VideoSpanRef, fps: float, episode: str) -> FrameSource:
    def frames(indices: Sequence[int], bound: tuple[int, int] | None) -> Iterator[np.ndarray | bytes]:
        return iter_video_frames(path, indices, start_s=float(span["from_s"]), fps=fps, bound=bound, episode=episode)

    return frames


def _image_source(meta: LeRobotMeta, path: Path, key: str, episode_index: int) -> FrameSource:
    def frames(indices: Sequence[int], bound: tuple[int, int] | None) -> Iterator[np.ndarray | bytes]:
        column = _episode_table(meta, path, episode_index, [key]).column(key)
        for i in indices:
            if i >= len(column):
                raise DataError(path, f"image column has {len(column)} rows", episode=episode_index, frame=i, key=key)
            yield _image_value(meta, column[i].as_py(), path, episode_index, i, key)

    return frames


def _image_value(meta: LeRobotMeta, item: object, path: Path, episode: int, frame: int, key: str) -> np.ndarray | bytes:
    """An HF Image struct {bytes, path} -> JPEG bytes (passed through) or a decoded array."""
    data = item.get("bytes") if isinstance(item, dict) else item
    if data is None and isinstance(item, dict) and item.get("path"):
        # HF stores only the path when the image stayed a separate file: read it inside the dataset only.
        candidate = inside(meta.root, str(item["path"]), where=path, episode=episode, frame=frame, key=key,
                           what="image path")
        if not candidate.is_file():
            raise DataError(path, f"image has no bytes and its path {item['path']!r} does not exist",
                            episode=episode, frame=frame, key=key)
        data = candidate.read_bytes()
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise DataError(path, "missing image bytes", episode=episode, frame=frame, key=key)
    if is_jpeg(data):
        return checked_image(bytes(data), where=path, episode=episode, frame=frame, key=key)
    try:
        return decode_image(bytes(data))
    except Exception as exc:  # noqa: BLE001  (PIL raises many types for corrupt data)
        raise DataError(path, f"undecodable image: {exc}", episode=episode, frame=frame, key=key) from None


def _cameras(meta: LeRobotMeta, path: Path, unit: Unit[LeRobotRef]) -> dict[str, FrameSource]:
    e = int(unit.ref["episode_index"])
    out: dict[str, FrameSource] = {}
    for key in meta.cameras:
        if meta.is_video(key):
            span = unit.ref["videos"][key]
            out[key] = _video_source(meta.root / span["file"], span, meta.video_fps(key), unit.id)
        else:
            out[key] = _image_source(meta, path, key, e)
    return out


def load_episode(src: Path, opts: LeRobotOptions, unit: Unit[LeRobotRef]) -> RobotEpisode:
    """Read one episode's state, actions, task and camera frames."""
    meta = load_meta(src)
    path = src / unit.ref["data"]
    table = _episode_table(meta, path, int(unit.ref["episode_index"]), [opts.state_key, opts.action_key],
                           optional=("timestamp", "task_index"))
    if table.num_rows != unit.ref["length"]:
        raise DataError(path, f"{table.num_rows} frame rows but the metadata gives length {unit.ref['length']}",
                        episode=unit.id)
    state = _column_2d(table, opts.state_key, meta.dims(opts.state_key), path, unit.id)
    actions = _column_2d(table, opts.action_key, meta.dims(opts.action_key), path, unit.id)
    tasks = _frame_tasks(table, load_tasks(meta), unit.ref["tasks"], path, unit.id)
    return RobotEpisode(episode_id=unit.id, source_file=str(path), state=state, actions=actions,
                        timestamps_s=_timestamps(table, meta.fps), tasks=tasks, cameras=_cameras(meta, path, unit),
                        fps=meta.fps, state_key=opts.state_key, action_key=opts.action_key)


CONVERTER = robot_converter(
    "lerobot",
    "LeRobotDataset v2.1 / v3.0 / v3.1 folders (parquet frames, mp4 videos of any PyAV codec, inline images).",
    LeRobotOptions, list_units, describe, load_episode,
)
