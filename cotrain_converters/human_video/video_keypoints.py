"""Generic human video with per-frame keypoints (hand or body trackers' output) and optional segment text.

Layout: SRC is a folder (searched recursively, sorted) or one video. Each `X.mp4` needs, beside it:
- keypoints, either `X.npz` with array `--keypoints-key` (default `keypoints`) of shape [T, K, C]
  (or [T, D]), or `X.parquet` with one row per frame (in frame order) and a list column of that
  name holding [K][C] nested lists (or flat [D] lists); T must equal the video's frame count;
- optionally `X.jsonl`, one segment per line `{"start_frame": a, "end_frame": b, "text": "..."}`
  with inclusive frame bounds; a frame's instruction is the first listed segment covering it
  (uncovered frames get an empty instruction), and `--task` replaces every instruction.

Each frame t becomes one `human_video` sample: the frame (camera `video`), the state = the flattened
keypoints at t (`kp<k>_c<c>`), and the action chunk = keypoints at t+1 .. t+H minus those at t
(`--action-mode delta`, default) or the keypoints themselves (`absolute`); steps past the end are
invalid. Missing detections must be filled before converting: NaN keypoints are an error naming the
frame. `--captions-only` writes one caption sample per segment (needs segments or `--task`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from cotrain.convert.jsonl import iter_jsonl
from cotrain.convert.robot import RobotEpisode, robot_converter, robot_info
from cotrain.convert.spec import Converter, DatasetInfo, Unit, UnitSink
from cotrain.dataset import keys
from cotrain.errors import DataError
from cotrain.media.video import iter_video_frames, video_info
from cotrain_converters.human_video.caption import (
    HumanVideoOptions,
    caption_info,
    check_caption_options,
    write_caption_sample,
)
from cotrain_converters.human_video.hand_pose import future_steps
from cotrain_converters.source_files import FileRef, unit_file

CAMERA = "video"
_DEFAULT_FPS = 30.0


class VideoKeypointsOptions(HumanVideoOptions):
    """Options of the video-keypoints converter."""

    keypoints_key: str = Field("keypoints", description="Array name in X.npz, or list column in X.parquet.")
    action_mode: Literal["delta", "absolute"] = Field(
        "delta", description="Chunk steps as keypoints minus those at the anchor frame, or absolute keypoints.")


def _videos(src: Path) -> list[Path]:
    return [src] if src.is_file() else sorted(src.rglob("*.mp4"), key=lambda p: p.relative_to(src).as_posix())


def _keypoint_file(video: Path) -> Path:
    found = [p for p in (video.with_suffix(".npz"), video.with_suffix(".parquet")) if p.is_file()]
    if len(found) != 1:
        what = "both" if found else "neither"
        raise DataError(video, f"needs exactly one keypoint file beside it, found {what} of "
                               f"{video.with_suffix('.npz').name} and {video.with_suffix('.parquet').name}")
    return found[0]


def list_units(src: Path, opts: VideoKeypointsOptions) -> list[Unit[FileRef]]:
    """One unit per video with its keypoint file."""
    check_caption_options(opts)
    units: list[Unit[FileRef]] = []
    for i, video in enumerate(_videos(src)):
        episode = video.relative_to(src).with_suffix("").as_posix() if src.is_dir() else video.stem
        if opts.captions_only:
            est = max(1, len(load_segments(video, None)))
        else:
            _keypoint_file(video)
            est = max(1, int(video_info(video)["frames"]))
        units.append(Unit(index=i, id=episode, est_samples=est,
                          ref=FileRef(file=video.relative_to(src).as_posix() if src.is_dir() else "")))
    return units


def _npz_keypoints(path: Path, key: str, episode: str) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            if key not in z.files:
                raise DataError(path, f"no array {key!r} (it has: {', '.join(z.files) or 'none'}); set --keypoints-key",
                                episode=episode, key=key)
            return np.asarray(z[key])
    except (ValueError, OSError) as exc:  # not a zip, or an object array that would need pickle
        raise DataError(path, f"unreadable keypoints: {exc}", episode=episode, key=key) from None


def _parquet_keypoints(path: Path, key: str, episode: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        if key not in names:
            raise DataError(path, f"no column {key!r} (it has: {', '.join(names)}); set --keypoints-key",
                            episode=episode, key=key)
        rows = pq.read_table(path, columns=[key]).column(key).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, f"unreadable parquet: {exc}", episode=episode, key=key) from None
    try:
        return np.asarray(rows, dtype=np.float32)
    except (ValueError, TypeError):  # ragged rows or nulls
        lengths = sorted({len(r) if r is not None else 0 for r in rows})
        raise DataError(path, f"column {key!r} rows must all hold the same number of values, found lengths "
                              f"{lengths[:5]} (or null rows)", episode=episode, key=key) from None


def load_keypoints(video: Path, key: str, episode: str) -> np.ndarray:
    """[T, K, C] float32 keypoints of one video (a [T, D] file reads as K = D, C = 1)."""
    path = _keypoint_file(video)
    kp = _npz_keypoints(path, key, episode) if path.suffix == ".npz" else _parquet_keypoints(path, key, episode)
    if kp.ndim == 2:
        kp = kp[:, :, None]
    if kp.ndim != 3 or not np.issubdtype(kp.dtype, np.number) or kp.shape[0] == 0:
        raise DataError(path, f"keypoints must be numeric [frames, K, C], got {kp.dtype} {kp.shape}",
                        episode=episode, key=key)
    return kp.astype(np.float32)


def load_segments(video: Path, frames: int | None) -> list[tuple[int, int, str]]:
    """`X.jsonl` segments as (start, end inclusive, text); bounds are checked against `frames` when known."""
    path = video.with_suffix(".jsonl")
    if not path.is_file():
        return []
    out = []
    for n, row in iter_jsonl(path):
        try:
            start, end, text = int(row["start_frame"]), int(row["end_frame"]), str(row["text"]).strip()
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(path, f"line {n}: expected {{\"start_frame\", \"end_frame\", \"text\"}} "
                                  f"({type(exc).__name__}: {exc})") from None
        if not 0 <= start <= end:
            raise DataError(path, f"line {n}: need 0 <= start_frame <= end_frame, got {start}..{end}", frame=start)
        if frames is not None and end >= frames:
            raise DataError(path, f"line {n}: end_frame {end} is past the video's last frame {frames - 1}", frame=end)
        if not text:
            raise DataError(path, f"line {n}: empty text", frame=start)
        out.append((start, end, text))
    return out


def frame_tasks(segments: Sequence[tuple[int, int, str]], frames: int) -> list[str]:
    """Per frame, the text of the first listed segment that covers it ('' where none does)."""
    tasks: list[str | None] = [None] * frames
    for start, end, text in segments:
        for t in range(start, end + 1):
            if tasks[t] is None:
                tasks[t] = text
    return [t or "" for t in tasks]


def _check_video(video: Path, frames: int, episode: str) -> float:
    info = video_info(video)
    if info["frames"] and int(info["frames"]) != frames:
        raise DataError(video, f"video has {info['frames']} frames but its keypoints have {frames}", episode=episode)
    return float(info["fps"]) or _DEFAULT_FPS


def _frame_source(video: Path, episode: str):  # noqa: ANN202
    def frames(indices: Sequence[int], bound: tuple[int, int] | None) -> Iterator[np.ndarray]:
        yield from iter_video_frames(video, indices, bound=bound, episode=episode)

    return frames


def keypoint_chunks(flat: np.ndarray, indices: np.ndarray, horizon: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """[T', H, D] keypoints at t+1 .. t+H (minus those at t in delta mode) and [T', H] validity."""
    steps, inside = future_steps(indices, horizon)
    values = flat[steps]
    if mode == "delta":
        values = values - flat[np.asarray(indices)][:, None]
    return values.astype(np.float32), inside


def load_episode(src: Path, opts: VideoKeypointsOptions, unit: Unit[FileRef]) -> RobotEpisode:
    """Read one video's keypoints as state and actions and its frames as the camera."""
    video = unit_file(src, unit.ref)
    kp = load_keypoints(video, opts.keypoints_key, unit.id)
    frames = len(kp)
    fps = _check_video(video, frames, unit.id)
    flat = kp.reshape(frames, -1)
    first, first_valid = keypoint_chunks(flat, np.arange(frames), 1, opts.action_mode)
    return RobotEpisode(
        episode_id=unit.id, source_file=str(video), state=flat, actions=first[:, 0], valid=first_valid[:, 0],
        timestamps_s=np.arange(frames) / fps, tasks=frame_tasks(load_segments(video, frames), frames),
        cameras={} if opts.no_images else {CAMERA: _frame_source(video, unit.id)}, fps=fps,
        state_key=opts.keypoints_key, action_key=opts.keypoints_key,
        chunker=lambda idx, horizon: keypoint_chunks(flat, idx, horizon, opts.action_mode),
    )


def describe(src: Path, opts: VideoKeypointsOptions, units: Sequence[Unit[FileRef]]) -> DatasetInfo:
    """Names, rate and camera of the first video (or the caption info with --captions-only)."""
    video = unit_file(src, units[0].ref)
    if opts.captions_only:
        return caption_info(opts, CAMERA, str(video), {"source_format": "video-keypoints"})
    kp = load_keypoints(video, opts.keypoints_key, units[0].id)
    names = [f"kp{k}_c{c}" for k in range(kp.shape[1]) for c in range(kp.shape[2])]
    fps = float(video_info(video)["fps"]) or _DEFAULT_FPS
    return robot_info(opts, state_names=names, action_names=names, fps=fps, cameras=[CAMERA], where=str(video),
                      extra={"action_mode": opts.action_mode, "keypoints_shape": list(kp.shape[1:]),
                             "chunk_steps": "frames t+1 .. t+H"},
                      modality=keys.HUMAN_VIDEO)


def _convert_captions(src: Path, opts: VideoKeypointsOptions, unit: Unit[FileRef], sink: UnitSink) -> None:
    video = unit_file(src, unit.ref)
    frames = int(video_info(video)["frames"]) or None
    segments = load_segments(video, frames)
    if not segments:
        if not opts.task or frames is None:
            raise DataError(video, f"nothing to caption: no segments file {video.with_suffix('.jsonl').name}"
                                   + (" and no --task" if not opts.task else " and the frame count is unknown"),
                            episode=unit.id)
        segments = [(0, frames - 1, opts.task)]
    sink.add_episode(None)
    for i, (start, end, text) in enumerate(segments):
        write_caption_sample(sink, video, (start, end), opts.task or text, opts, CAMERA,
                             {"dataset": opts.name or src.name, "episode_index": unit.index, "segment": i},
                             episode=unit.id)


_ROBOT = robot_converter("video-keypoints", "", VideoKeypointsOptions, list_units, describe, load_episode,
                         modality=keys.HUMAN_VIDEO)


def convert_unit(src: Path, opts: VideoKeypointsOptions, unit: Unit[FileRef], sink: UnitSink) -> None:
    """Write one video's robot-format samples, or its caption samples."""
    if opts.captions_only:
        _convert_captions(src, opts, unit, sink)
    else:
        _ROBOT.convert_unit(src, opts, unit, sink)


CONVERTER = Converter(
    "video-keypoints", "Human video (mp4) with per-frame keypoints (npz or parquet) and optional segment text.",
    VideoKeypointsOptions, list_units, describe, convert_unit,
)
