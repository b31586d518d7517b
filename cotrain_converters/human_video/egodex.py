"""EgoDex egocentric human video: `<split>/<task>/<N>.hdf5` poses + `<N>.mp4` video (Apple, 2025).

HDF5 layout: `transforms/<joint>` (T, 4, 4) f32 joint -> world transforms in ARKit's world frame
(y up), `transforms/camera` the camera -> world transform, `confidences/<joint>` (T,) tracking
confidence in [0, 1] (about 18% of joint-frames are near 0), `camera/intrinsic` (3, 3), and root
attributes `description`, `llm_description` / `llm_description2` (picked by `which_llm_description`),
`llm_type`, `task`, ... Per hand: wrist `leftHand` / `rightHand`, fingertips `leftThumbTip`,
`leftIndexFingerTip`, ... (visionOS hand-skeleton names). Video and poses are 30 Hz, frame-aligned.

Each frame t becomes one `human_video` sample: the video frame (camera `ego`), the state = per hand
the wrist pose in the camera frame at t (xyz + 6D rotation) and the thumb-index grip aperture, and
the action chunk = the same 10 numbers per hand for frames t+1 .. t+H, all in the camera frame AT t
(see `hand_pose`). Steps where any used joint's confidence is below `--min-confidence` (default 0.1)
are invalid. The world frame cancels out, so its y-up convention needs no conversion; poses stay in
ARKit's camera frame (x right, y up, z towards the viewer). `--captions-only` writes caption samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from pydantic import Field

from cotrain.convert.robot import RobotEpisode, robot_converter, robot_info
from cotrain.convert.spec import Converter, DatasetInfo, Unit, UnitSink
from cotrain.dataset import keys
from cotrain.errors import DataError
from cotrain.media.video import iter_video_frames, video_info
from cotrain_converters.hdf5.files import open_hdf5
from cotrain_converters.human_video.caption import (
    HumanVideoOptions,
    caption_info,
    check_caption_options,
    write_caption_sample,
)
from cotrain_converters.human_video.hand_pose import HandTrack, anchor_chunks, hand_names, hand_state
from cotrain_converters.source_files import FileRef, unit_file

EGODEX_FPS = 30.0
CAMERA = "ego"
SIDES = ("left", "right")


def hand_joints(side: str) -> tuple[str, str, str]:
    """Wrist, thumb tip and index tip joint names of one hand."""
    return f"{side}Hand", f"{side}ThumbTip", f"{side}IndexFingerTip"


class EgodexOptions(HumanVideoOptions):
    """Options of the EgoDex converter."""

    min_confidence: float = Field(
        0.1, ge=0.0, le=1.0, description="Chunk steps where a used joint's confidence is below this are invalid.")


def _episode_files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]

    def order(p: Path) -> tuple[str, int, int, str]:  # 2.hdf5 before 10.hdf5 within a task folder
        folder = p.relative_to(src).parent.as_posix()
        return (folder, 0, int(p.stem), "") if p.stem.isdigit() else (folder, 1, 0, p.stem)

    return sorted(src.rglob("*.hdf5"), key=order)


def _frame_count(f, path: Path, episode: str) -> int:  # noqa: ANN001
    if "transforms/camera" not in f:
        raise DataError(path, "missing joint 'camera' (dataset 'transforms/camera')", episode=episode,
                        key="transforms/camera")
    return int(f["transforms/camera"].shape[0])


def list_units(src: Path, opts: EgodexOptions) -> list[Unit[FileRef]]:
    """One unit per EgoDex episode (an HDF5 file and its mp4)."""
    check_caption_options(opts)
    units: list[Unit[FileRef]] = []
    for i, path in enumerate(_episode_files(src)):
        episode = _episode_id(src, path)
        with open_hdf5(path) as f:
            frames = _frame_count(f, path, episode)
        units.append(Unit(index=i, id=episode, est_samples=1 if opts.captions_only else frames,
                          ref=FileRef(file=path.relative_to(src).as_posix() if src.is_dir() else "")))
    return units


def _episode_id(src: Path, path: Path) -> str:
    return path.relative_to(src).with_suffix("").as_posix() if src.is_dir() else path.stem


def _attr(f, name: str) -> str | None:  # noqa: ANN001
    value = f.attrs.get(name)
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
    return text.strip() or None


def episode_description(f, path: Path) -> str:  # noqa: ANN001
    """The LLM description chosen by `which_llm_description`, else `description`, else the task name."""
    which = _attr(f, "which_llm_description")
    llm = _attr(f, "llm_description2") if which == "2" else _attr(f, "llm_description")
    task = _attr(f, "task") or path.parent.name.replace("_", " ")
    return llm or _attr(f, "description") or task


def _transform(f, path: Path, episode: str, joint: str, frames: int) -> np.ndarray:  # noqa: ANN001
    key = f"transforms/{joint}"
    if key not in f:
        raise DataError(path, f"missing joint {joint!r} (dataset {key!r})", episode=episode, key=key)
    arr = np.asarray(f[key][()], np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (4, 4):
        raise DataError(path, f"{key} must be [frames, 4, 4], got shape {arr.shape}", episode=episode, key=key)
    if arr.shape[0] != frames:
        raise DataError(path, f"{key} has {arr.shape[0]} frames but transforms/camera has {frames}",
                        episode=episode, key=key)
    return arr


def _confidence(f, path: Path, episode: str, joint: str, frames: int, min_confidence: float) -> np.ndarray:  # noqa: ANN001
    key = f"confidences/{joint}"
    if key not in f:
        if min_confidence > 0:
            raise DataError(path, f"missing {key!r}; convert with --min-confidence 0 to use every frame",
                            episode=episode, key=key)
        return np.ones(frames)
    arr = np.asarray(f[key][()], np.float64).reshape(-1)
    if arr.shape[0] != frames:
        raise DataError(path, f"{key} has {arr.shape[0]} frames but transforms/camera has {frames}",
                        episode=episode, key=key)
    return arr


def load_hands(f, path: Path, episode: str, min_confidence: float) -> tuple[np.ndarray, list[HandTrack]]:  # noqa: ANN001
    """The camera -> world transforms [T, 4, 4] and both hands' tracks, checked for presence and length."""
    frames = _frame_count(f, path, episode)
    camera = _transform(f, path, episode, "camera", frames)
    hands = []
    for side in SIDES:
        joints = hand_joints(side)
        wrist, thumb, index = (_transform(f, path, episode, j, frames) for j in joints)
        conf = np.min([_confidence(f, path, episode, j, frames, min_confidence) for j in joints], axis=0)
        hands.append(HandTrack(wrist=wrist, thumb_tip=thumb, index_tip=index, confidence=conf))
    return camera, hands


def _video(path: Path, episode: str, frames: int) -> tuple[Path, float]:
    """The episode's mp4 and its frame rate; its frame count must match the poses."""
    video = path.with_suffix(".mp4")
    if not video.is_file():
        raise DataError(path, f"no video {video.name} beside the poses (use --no-images for poses only)",
                        episode=episode)
    info = video_info(video)
    if info["frames"] and int(info["frames"]) != frames:
        raise DataError(video, f"video has {info['frames']} frames but {path.name} has {frames} pose frames",
                        episode=episode)
    return video, float(info["fps"]) or EGODEX_FPS


def _frame_source(video: Path, episode: str):  # noqa: ANN202
    def frames(indices: Sequence[int], bound: tuple[int, int] | None) -> Iterator[np.ndarray]:
        yield from iter_video_frames(video, indices, bound=bound, episode=episode)

    return frames


def load_episode(src: Path, opts: EgodexOptions, unit: Unit[FileRef]) -> RobotEpisode:
    """Read one episode: hand keypoints as state and actions, video frames as the camera."""
    path = unit_file(src, unit.ref)
    with open_hdf5(path) as f:
        camera, hands = load_hands(f, path, unit.id, opts.min_confidence)
        task = episode_description(f, path)
    frames = len(camera)
    cameras, fps = {}, EGODEX_FPS
    if not opts.no_images:
        video, fps = _video(path, unit.id, frames)
        cameras = {CAMERA: _frame_source(video, unit.id)}
    # Per-frame "action" = chunk step 0 (the next frame in this frame's camera), for overall stats.
    first, first_valid = anchor_chunks(camera, hands, np.arange(frames), 1, opts.min_confidence)
    return RobotEpisode(
        episode_id=unit.id, source_file=str(path), state=hand_state(camera, hands).astype(np.float32),
        actions=first[:, 0], valid=first_valid[:, 0], timestamps_s=np.arange(frames) / fps, tasks=[task],
        cameras=cameras, fps=fps, state_key="transforms", action_key="transforms",
        chunker=lambda idx, horizon: anchor_chunks(camera, hands, idx, horizon, opts.min_confidence),
    )


def describe(src: Path, opts: EgodexOptions, units: Sequence[Unit[FileRef]]) -> DatasetInfo:
    """Names, rate and camera of the first episode (or the caption info with --captions-only)."""
    path = unit_file(src, units[0].ref)
    if opts.captions_only:
        return caption_info(opts, CAMERA, str(path), {"source_format": "egodex"})
    names = hand_names(SIDES)
    extra = {"pose_frame": "camera at the anchor frame (ARKit camera axes: x right, y up, z backward)",
             "rotation_6d": "first two rows of the rotation matrix", "grip": "thumb-index tip distance (m)",
             "chunk_steps": "frames t+1 .. t+H", "min_confidence": opts.min_confidence}
    return robot_info(opts, state_names=names, action_names=names, fps=EGODEX_FPS, cameras=[CAMERA],
                      where=str(path), extra=extra, modality=keys.HUMAN_VIDEO)


def _convert_captions(src: Path, opts: EgodexOptions, unit: Unit[FileRef], sink: UnitSink) -> None:
    path = unit_file(src, unit.ref)
    with open_hdf5(path) as f:
        frames = _frame_count(f, path, unit.id)
        text = opts.task or episode_description(f, path)
    video, _ = _video(path, unit.id, frames)
    sink.add_episode(None)
    write_caption_sample(sink, video, (0, frames - 1), text, opts, CAMERA,
                         {"dataset": opts.name or src.name, "episode_index": unit.index}, episode=unit.id)


_ROBOT = robot_converter("egodex", "", EgodexOptions, list_units, describe, load_episode, modality=keys.HUMAN_VIDEO)


def convert_unit(src: Path, opts: EgodexOptions, unit: Unit[FileRef], sink: UnitSink) -> None:
    """Write one episode's robot-format samples, or its caption samples."""
    if opts.captions_only:
        _convert_captions(src, opts, unit, sink)
    else:
        _ROBOT.convert_unit(src, opts, unit, sink)


CONVERTER = Converter(
    "egodex", "EgoDex human video (HDF5 hand poses + mp4): camera-relative wrist poses and grip, or captions.",
    EgodexOptions, list_units, describe, convert_unit,
)
