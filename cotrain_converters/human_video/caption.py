"""Caption-only samples from human video: frames + prompt + the clip's description, no actions.

Lin et al. (2026) fed human video to the VLA as captions, a vision-language-like modality, rather than
as pseudo-actions. With `--captions-only`, the human-video converters (egodex, video-keypoints) write
one sample per described span (an EgoDex episode, a keypoint-video segment): `--caption-frames`
frames spread evenly over the span (the centres of equal sub-spans, so one frame is the middle one),
stored as cameras `<camera>_0 .. <camera>_{N-1}`, the prompt in `prompt.txt` and the description in
`target.txt`. The dataset's modality is `vision_language`, with `extra.source_modality =
"human_video"` so mixtures can still tell these samples from web image-text.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cotrain.convert.robot import parse_camera_map
from cotrain.convert.spec import DatasetInfo, RobotOptions, UnitSink
from cotrain.dataset import keys
from cotrain.dataset.shards import encode_json
from cotrain.errors import ConfigError
from cotrain.media.image import parse_size, to_jpeg
from cotrain.media.video import iter_video_frames

DEFAULT_CAPTION_PROMPT = "Describe what the hands are doing."


class CaptionOptions(BaseModel):
    """Options of the caption-only mode, mixed into the human-video converters' options."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    captions_only: bool = Field(
        False, description="Write caption samples (frames + prompt + description, no actions; modality "
                           "vision_language) instead of hand-action samples.")
    caption_prompt: str = Field(DEFAULT_CAPTION_PROMPT, description="Prompt stored with every caption sample.")
    caption_frames: int = Field(1, ge=1, le=32, description="Frames per caption sample, spread evenly over the span.")


class HumanVideoOptions(CaptionOptions, RobotOptions):
    """Robot options with a human default embodiment, plus the caption-only mode."""

    embodiment: str = Field("human_hand", description="Embodiment name recorded with every sample.")


def check_caption_options(opts: HumanVideoOptions) -> None:
    """Refuse robot-only options that would silently do nothing in caption mode."""
    if not opts.captions_only:
        return
    if opts.no_images:
        raise ConfigError("--no-images: caption samples are frames plus text; drop --no-images or --captions-only")
    if opts.fps is not None:
        raise ConfigError("--fps: caption samples are not resampled; drop --fps or --captions-only")


def caption_frame_indices(first: int, last: int, count: int) -> list[int]:
    """`count` frames in [first, last] (inclusive) at the centres of equal sub-spans; repeats if too short."""
    span = last - first + 1
    return [first + (2 * i + 1) * span // (2 * count) for i in range(count)]


def caption_camera(opts: HumanVideoOptions, camera: str, where: str) -> str:
    """The stored camera name (after `--cameras` renaming) of the single video camera."""
    return parse_camera_map(opts.cameras, [camera], where)[camera]


def caption_info(opts: HumanVideoOptions, camera: str, where: str, extra: Mapping[str, Any]) -> DatasetInfo:
    """The vision-language dataset info of a human-video caption conversion."""
    name = caption_camera(opts, camera, where)
    return DatasetInfo(
        modality=keys.VISION_LANGUAGE,
        cameras=[f"{name}_{i}" for i in range(opts.caption_frames)],
        image_size=parse_size(opts.image_size),
        extra={"source_modality": keys.HUMAN_VIDEO, "caption_prompt": opts.caption_prompt,
               "caption_frames": opts.caption_frames, **extra},
    )


def write_caption_sample(sink: UnitSink, video: Path, span: tuple[int, int], text: str, opts: HumanVideoOptions,
                         camera: str, meta: Mapping[str, Any], *, episode: str) -> None:
    """Decode the span's caption frames from `video` and add one caption sample to the sink."""
    frames = caption_frame_indices(span[0], span[1], opts.caption_frames)
    unique = sorted(set(frames))
    bound = parse_size(opts.image_size)
    decoded = dict(zip(unique, iter_video_frames(video, unique, bound=bound, episode=episode)))
    name = caption_camera(opts, camera, str(video))
    members = {keys.camera_member(f"{name}_{i}"): to_jpeg(decoded[f], bound, opts.jpeg_quality)
               for i, f in enumerate(frames)}
    full_meta = {**meta, "modality": keys.VISION_LANGUAGE, "source_modality": keys.HUMAN_VIDEO,
                 "episode": episode, "frame_indices": frames, "task": text}
    members.update({keys.META: encode_json(full_meta), keys.PROMPT: opts.caption_prompt.encode("utf-8"),
                    keys.TARGET: text.encode("utf-8")})
    sink.add(members)
