"""Sequential video decoding with PyAV: pick frames by index, resize in swscale, report truncation.

Robot episodes need every frame (or a regular subset) in order, so decoding runs forward once from
the episode's start; seeking per frame would decode each GOP many times. Resizing happens inside
`to_ndarray` (swscale), which is several times cheaper than resizing full frames in Python.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from cotrain.errors import ConfigError, DataError
from cotrain.media.image import fit_size

ENCODERS = {"h264": "libx264", "av1": "libsvtav1"}

# Decoder threads per open video. FFmpeg's default (0) starts one thread per core in every process,
# so N conversion workers on N cores would run N x N threads; the pipeline sets this per worker.
DECODE_THREADS_ENV = "COTRAIN_DECODE_THREADS"


def decode_threads() -> int:
    """Threads each video decoder may use: the COTRAIN_DECODE_THREADS value, 0 (FFmpeg picks) if unset."""
    raw = os.environ.get(DECODE_THREADS_ENV, "0").strip() or "0"
    if not raw.isdigit():
        raise ConfigError(f"{DECODE_THREADS_ENV}={raw!r}: expected a whole number >= 0 (0 lets FFmpeg choose)")
    return int(raw)


@contextmanager
def decode_threads_set(threads: int) -> Iterator[None]:
    """Within the block, decoders in this process use `threads` threads (0: leave the setting alone)."""
    if threads <= 0:
        yield
        return
    before = os.environ.get(DECODE_THREADS_ENV)
    os.environ[DECODE_THREADS_ENV] = str(threads)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(DECODE_THREADS_ENV, None)
        else:
            os.environ[DECODE_THREADS_ENV] = before


def write_video(path: str | Path, frames: Sequence[np.ndarray] | np.ndarray, fps: int, *, codec: str = "h264",
                crf: int | None = None) -> None:
    """Encode [H, W, 3] uint8 frames to mp4 as LeRobot does (yuv420p, GOP 2), frame i at time i / fps.

    Used by the simulator's LeRobot writer, the sample writers and the benchmarks, so every video
    cotrain makes for itself is encoded one way.
    """
    from fractions import Fraction

    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"g": "2", "crf": str(crf if crf is not None else 10)}
    if codec == "av1":
        options = {"g": "2", "crf": str(crf if crf is not None else 20), "preset": "10"}
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(ENCODERS.get(codec, codec), rate=fps, options=options)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def video_info(path: str | Path) -> dict[str, float | int | str]:
    """Codec, size, frame rate and frame count (from the container; 0 when unknown)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            return {
                "codec": stream.codec_context.name,
                "width": stream.codec_context.width,
                "height": stream.codec_context.height,
                "fps": rate,
                "frames": int(stream.frames or 0),
            }
    except (av.error.FFmpegError, IndexError) as exc:
        raise DataError(path, f"unreadable video: {exc}") from None


def iter_video_frames(
    path: str | Path,
    indices: Sequence[int],
    *,
    start_s: float = 0.0,
    fps: float | None = None,
    bound: tuple[int, int] | None = None,
    episode: object | None = None,
) -> Iterator[np.ndarray]:
    """Yield [H, W, 3] uint8 frames at the given frame indices (ascending, relative to `start_s`).

    Frames before `start_s` (minus half a frame) are skipped after a backward keyframe seek, so an
    episode inside a concatenated file (LeRobot v3) starts at its own first frame. Raises a DataError
    naming the first missing frame when the video ends early or cannot be decoded.
    """
    import av

    wanted = list(indices)
    if not wanted:
        return
    if any(b <= a for a, b in zip(wanted, wanted[1:])):
        raise ValueError("frame indices must be strictly ascending")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise DataError(path, f"unreadable video: {exc}", episode=episode) from None
    with container:
        stream = container.streams.video[0]
        threads = decode_threads()
        if threads:
            stream.codec_context.thread_count = threads
        rate = fps or float(stream.average_rate or stream.guessed_rate or 30)
        half = 0.5 / rate
        if start_s > half:
            container.seek(int(max(0.0, start_s - half) / stream.time_base), stream=stream, backward=True)  # type: ignore[operator]  # PyAV: Optional, but a demuxed video stream has one
        local, pos = 0, 0
        size: tuple[int, int] | None = None
        try:
            for frame in container.decode(stream):
                if frame.time is not None and frame.time < start_s - half:
                    continue
                if local == wanted[pos]:
                    if size is None:
                        size = fit_size(frame.height, frame.width, bound)
                    yield frame.to_ndarray(format="rgb24", width=size[1], height=size[0])
                    pos += 1
                    if pos == len(wanted):
                        return
                local += 1
        except av.error.FFmpegError as exc:
            raise DataError(path, f"undecodable video data: {exc}", episode=episode, frame=wanted[pos]) from None
    raise DataError(
        path,
        f"truncated video: it ends after {local} frames, frame {wanted[pos]} was needed",
        episode=episode,
        frame=wanted[pos],
    )
