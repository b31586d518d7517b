"""Reading MCAP files: opening them with one-line errors, decoding messages of every supported
encoding, the per-file topic index, and turning image messages into frames.

Supported channels (message encoding + schema encoding), checked by name before a message is read:
- `cdr` + `ros2msg`: ROS 2, decoded by `mcap_ros2.decoder.DecoderFactory` from the schema text, so no
  ROS install is needed (`ros2idl` schemas are not supported by mcap_ros2 and are rejected);
- `protobuf` + `protobuf`: decoded by `mcap_protobuf.decoder.DecoderFactory` from the schema's
  FileDescriptorSet;
- `json` (any schema encoding, usually `jsonschema`): `json.loads`.

Images are recognised by their fields, not their schema name, so ROS 2 and Foxglove schemas both work:
`format` + `data` is a compressed image (sensor_msgs/msg/CompressedImage, foxglove.CompressedImage),
`encoding` + `width` + `height` + `step` + `data` a raw one (sensor_msgs/msg/Image, foxglove.RawImage).
Raw rows may be padded (`step` >= width * channels); JSON carries bytes as base64 text.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cotrain.errors import CotrainError, DataError
from cotrain.media.image import image_problem, is_jpeg
from cotrain_converters.mcap.topics import FieldPath, field_value, message_fields

SUPPORTED = "cdr+ros2msg (ROS 2), protobuf+protobuf, json"
_RAW_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
_COMPRESSED_FORMATS = ("jpeg", "jpg", "png")
_PNG_MAGIC = b"\x89PNG"


def _corrupt_errors() -> tuple[type[BaseException], ...]:
    # What a damaged file raises from inside the mcap reader: its own errors for bad magic, record
    # lengths and ends of file, and plain struct/numeric/codec errors from garbage bytes mid-record.
    from mcap.exceptions import McapError

    errors: list[type[BaseException]] = [McapError, EOFError, OverflowError, struct.error, ValueError, IndexError,
                                         KeyError]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover - zstandard comes with mcap's extras
        pass
    return tuple(errors)


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Turn the mcap reader's exceptions for a damaged file into one DataError naming the file."""
    try:
        yield
    except CotrainError:
        raise
    except _corrupt_errors() as exc:
        start = getattr(getattr(exc, "record", None), "message_start_time", None)  # a chunk failing its CRC
        where = f" in the chunk of messages from log_time {start} ns" if isinstance(start, int) else ""
        raise DataError(path, f"unreadable, truncated or corrupt MCAP file ({type(exc).__name__}: {exc}{where}); "
                              "`mcap recover` can often salvage a recording cut short") from None


@contextmanager
def open_reader(path: Path) -> Iterator[Any]:
    """A seeking `McapReader` over `path` (the magic bytes are checked on opening)."""
    from mcap.reader import make_reader

    try:
        handle = open(path, "rb")  # noqa: SIM115  (closed in the finally below)
    except OSError as exc:
        raise DataError(path, f"cannot open ({exc.strerror})") from None
    try:
        with reading(path):
            # Chunk CRCs are checked: a flipped bit inside a chunk would otherwise change a message silently.
            reader = make_reader(handle, validate_crcs=True)
        yield reader
    finally:
        handle.close()


def iter_messages(reader: Any, path: Path, topics: Sequence[str], start_ns: int | None = None,
                  end_ns: int | None = None) -> Iterator[tuple[Any, Any, Any]]:
    """(schema, channel, message) on `topics` in log-time order within [start_ns, end_ns).

    Only the reader's own steps are guarded, so errors raised by the caller's loop body keep their type.
    """
    it = reader.iter_messages(topics=list(topics), log_time_order=True, starting_at=start_ns, ending_before=end_ns)
    while True:
        with reading(path):
            item = next(it, None)
        if item is None:
            return
        yield item


def encoding_problem(channel: Any, schema: Any) -> str | None:
    """Why this channel cannot be decoded, or None when it can."""
    enc, schema_enc = channel.message_encoding, schema.encoding if schema is not None else ""
    if (enc, schema_enc) in (("cdr", "ros2msg"), ("protobuf", "protobuf")) or enc == "json":
        return None
    return (f"message encoding {enc!r} with schema encoding {schema_enc!r} is not supported "
            f"(supported: {SUPPORTED})")


class Decoders:
    """Decodes message bytes by channel, building each channel's decoder once."""

    def __init__(self) -> None:
        from mcap_protobuf.decoder import DecoderFactory as ProtobufDecoders
        from mcap_ros2.decoder import DecoderFactory as Ros2Decoders

        self._factories = [Ros2Decoders(), ProtobufDecoders()]
        self._by_channel: dict[int, Callable[[bytes], Any]] = {}

    def _decoder(self, schema: Any, channel: Any) -> Callable[[bytes], Any]:
        if channel.message_encoding == "json":
            return json.loads
        for factory in self._factories:
            decoder = factory.decoder_for(channel.message_encoding, schema)
            if decoder is not None:
                return decoder
        raise ValueError(encoding_problem(channel, schema) or "no decoder")

    def decode(self, schema: Any, channel: Any, message: Any) -> Any:
        """The decoded message; ValueError(problem) when its bytes or schema cannot be decoded."""
        try:
            decoder = self._by_channel.get(channel.id)
            if decoder is None:
                decoder = self._by_channel[channel.id] = self._decoder(schema, channel)
            return decoder(message.data)
        except Exception as exc:  # noqa: BLE001  (any decoder failure is bad data in this one message)
            name = schema.name if schema is not None else "no schema"
            raise ValueError(f"cannot decode the message at log_time {message.log_time} ns ({name}, "
                             f"{channel.message_encoding}): {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class FileIndex:
    """What one file holds: topic -> (channel, schema), and the log-time span of its messages."""

    channels: dict[str, tuple[Any, Any]]
    start_ns: int
    end_ns: int


def read_index(reader: Any, path: Path) -> FileIndex:
    """From the summary section when the file has one, else by scanning every message once."""
    with reading(path):
        summary = reader.get_summary()
    channels: dict[str, tuple[Any, Any]]
    if summary is not None and summary.statistics is not None:
        channels = {ch.topic: (ch, summary.schemas.get(ch.schema_id)) for ch in summary.channels.values()}
        stats = summary.statistics
        return FileIndex(channels, stats.message_start_time, stats.message_end_time)
    channels = {}
    start = end = None
    with reading(path):
        for schema, channel, message in reader.iter_messages(log_time_order=False):
            channels.setdefault(channel.topic, (channel, schema))
            start = message.log_time if start is None else min(start, message.log_time)
            end = message.log_time if end is None else max(end, message.log_time)
    return FileIndex(channels, start or 0, end or 0)


# --- images -----------------------------------------------------------------------------------------


def _get(msg: Any, key: str) -> Any:
    return field_value(msg, FieldPath(key, ((key, None),)))


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):  # JSON (foxglove schemas) carries bytes as base64
        return base64.b64decode(value)
    return bytes(value)


def image_from_message(msg: Any) -> np.ndarray | bytes:
    """A compressed or raw image message -> JPEG bytes or an [H, W, 3] uint8 array.

    Raises ValueError(problem) for unsupported formats and encodings or inconsistent sizes.
    """
    fields = set(message_fields(msg) or ())
    if {"format", "data"} <= fields:
        return _compressed(str(_get(msg, "format")), _bytes(_get(msg, "data")))
    if {"encoding", "width", "height", "step", "data"} <= fields:
        return _raw(str(_get(msg, "encoding")), int(_get(msg, "height")), int(_get(msg, "width")),
                    int(_get(msg, "step")), _bytes(_get(msg, "data")))
    raise ValueError("not an image message: expected format+data (sensor_msgs/msg/CompressedImage) or "
                     f"encoding/width/height/step/data (sensor_msgs/msg/Image); fields: {', '.join(sorted(fields))}")


def _compressed(fmt: str, data: bytes) -> np.ndarray | bytes:
    low = fmt.lower()
    # compressedDepth is a 16-bit PNG behind a custom header; a policy camera wants colour frames.
    if "compresseddepth" in low or not any(name in low for name in _COMPRESSED_FORMATS):
        raise ValueError(f"compressed image format {fmt!r} is not supported (supported: jpeg, png)")
    if is_jpeg(data):
        if problem := image_problem(data):  # passed through undecoded below, so decoded once here
            raise ValueError(problem)
        return data  # stored as is: no decode, no quality loss (unless a resize is asked for)
    if data.startswith(_PNG_MAGIC):
        from cotrain.media.image import decode_image

        try:
            return decode_image(data)
        except Exception as exc:  # noqa: BLE001  (PIL raises several types for broken files)
            raise ValueError(f"PNG data cannot be decoded ({type(exc).__name__}: {exc})") from None
    raise ValueError(f"format {fmt!r} but the data is neither JPEG nor PNG (starts with {data[:4].hex()})")


def _raw(encoding: str, height: int, width: int, step: int, data: bytes) -> np.ndarray:
    channels = _RAW_CHANNELS.get(encoding.lower())
    if channels is None:
        raise ValueError(f"image encoding {encoding!r} is not supported "
                         f"(supported: {', '.join(sorted(_RAW_CHANNELS))})")
    row = width * channels
    if height <= 0 or width <= 0 or step < row or len(data) < height * step:
        raise ValueError(f"{encoding} image of {height}x{width} with step {step} needs {height * max(step, row)} "
                         f"bytes of data, got {len(data)}")
    image = np.frombuffer(data, np.uint8, count=height * step).reshape(height, step)[:, :row]
    image = image.reshape(height, width, channels)
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if encoding.lower().startswith("bgr"):
        return np.ascontiguousarray(image[..., 2::-1])
    return np.ascontiguousarray(image[..., :3])


def problem_text(exc: Exception) -> str:
    """The message of a ValueError/KeyError raised above (KeyError's str() would add quotes)."""
    return str(exc.args[0]) if exc.args else type(exc).__name__


def image_frame_source(path: Path, topic: str, window: tuple[int | None, int | None], ordinals: np.ndarray,
                       log_times: np.ndarray, episode: str) -> Callable[..., Iterator[np.ndarray | bytes]]:
    """A camera's FrameSource: output frame t shows message `ordinals[t]` of `topic` within `window`.

    It reads the topic again, lazily and in order, and decodes only the messages it shows, so an
    episode's images are never all in memory; `log_times` (from the first read) guards the pairing.
    """

    def frames(ticks: Sequence[int], bound: tuple[int, int] | None) -> Iterator[np.ndarray | bytes]:
        decoders = Decoders()
        with open_reader(path) as reader:
            messages = iter_messages(reader, path, [topic], *window)
            at, item, frame = -1, None, None
            for tick in ticks:
                want = int(ordinals[tick])
                while at < want:
                    item, at, frame = next(messages, None), at + 1, None
                    if item is None:
                        raise DataError(path, f"image topic {topic} has fewer messages than on the first read",
                                        episode=episode, frame=int(tick), key=topic)
                if frame is None:
                    frame = _frame(decoders, item, int(log_times[want]), path, topic, episode, int(tick))
                yield frame

    return frames


def _frame(decoders: Decoders, item: Any, log_time: int, path: Path, topic: str, episode: str,
           tick: int) -> np.ndarray | bytes:
    schema, channel, message = item
    if message.log_time != log_time:
        raise DataError(path, f"image topic {topic} changed between reads (log_time {message.log_time} ns, "
                              f"expected {log_time} ns)", episode=episode, frame=tick, key=topic)
    try:
        return image_from_message(decoders.decode(schema, channel, message))
    except (ValueError, KeyError) as exc:
        raise DataError(path, f"image message at log_time {log_time} ns: {problem_text(exc)}",
                        episode=episode, frame=tick, key=topic) from None
