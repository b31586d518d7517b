"""MCAP robot logs (ROS 2 bags, Foxglove recordings): topics resampled onto one clock, one episode per
file or per marker message.

Layout: SRC is one `.mcap` file or a folder of them (episodes in file-name order). A topic map
(`--topics` YAML and/or the topic options; see `mcap_topics.py`) names the state and action topics
with the field paths that give their float vectors, the camera topics (sensor_msgs/msg/Image or
CompressedImage, or Foxglove's equivalents), an optional instruction topic (std_msgs/msg/String) and
an optional episode marker topic. Channels may be ROS 2 (cdr + ros2msg), protobuf or JSON
(`mcap_decode.py`).

Clock. MCAP topics run at their own rates, so one timestamp array (what `RobotEpisode` holds) cannot
index them all; this module therefore resamples every topic itself onto a regular clock at `--fps`:
tick k is `start + k / fps`, and each topic contributes its latest message with log_time at or before
the tick. `start` is the latest first message and the clock ends at the earliest last message over
the state, action and image topics, so every topic has a real message at every tick and nothing is
extrapolated past a topic's end. `--fps` is required (no default from the state topic's rate): with
joints at 500 Hz and cameras at 30 Hz neither rate is a sensible default, and a fixed clock makes the
dataset's fps known before any file is read. The episode handed to the shared robot rules already
has regular timestamps `k / fps`, so their own `--fps` resampling is the identity and the recorded
`fps` is exactly `--fps`.

Episodes. Without a marker an episode is a file. With `--episode-marker TOPIC` each message on TOPIC
starts an episode that runs until the next marker (or the file's end); messages before the first
marker belong to no episode, and no topic reads across a marker, so episodes never share messages.
The instruction is the exception: it is the latest instruction message at or before each tick since
the file's start (an instruction published once for the whole session applies to every episode), or
the episode's first one for ticks before it.

Memory. Only the state and action vectors and every topic's log times are kept in memory; each
camera re-reads its topic lazily while frames are written and decodes only the messages shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from cotrain.convert.robot import RobotEpisode, robot_converter, robot_info
from cotrain.convert.spec import DatasetInfo, RobotOptions, Unit
from cotrain.errors import DataError, suggest
from cotrain_converters.mcap.decode import (
    Decoders,
    FileIndex,
    encoding_problem,
    image_frame_source,
    iter_messages,
    open_reader,
    problem_text,
    read_index,
)
from cotrain_converters.mcap.topics import (
    DEFAULT_FIELDS,
    FieldPath,
    TopicMap,
    VectorSpec,
    field_value,
    load_topic_map,
    message_fields,
    parse_field_path,
    to_vector,
    vector_names,
)
from cotrain_converters.source_files import FileRef, unit_file

Window = tuple[int | None, int | None]  # [start_ns, end_ns) of an episode; None: the file's start / end


class MCAPOptions(RobotOptions):
    """Options of the MCAP converter: the robot options plus the topic map."""

    # Required here (optional for other robot sources): see "Clock" in the module docstring.
    fps: float = Field(
        ..., gt=0, description="Clock rate in Hz that every topic is resampled onto (latest message at or before "
                               "each tick); required for MCAP.")
    topics: Path | None = Field(None, description="YAML topic map (keys: state, action, images, instruction, "
                                                  "episode_marker); the topic options below replace its parts.")
    state_topic: str | None = Field(None, description="State topic, e.g. /joint_states.")
    state_fields: str | None = Field(None, description="Comma list of field paths concatenated into the state, e.g. "
                                                       "position or position,velocity (default by schema: JointState "
                                                       "position, Float64MultiArray data).")
    action_topic: str | None = Field(None, description="Action topic, e.g. /joint_commands.")
    action_fields: str | None = Field(None, description="Comma list of field paths concatenated into the action.")
    image_topics: str | None = Field(None, description="Comma list of camera topics, each NAME=TOPIC or TOPIC "
                                                       "(sensor_msgs/msg/Image or CompressedImage).")
    instruction_topic: str | None = Field(None, description="Topic of instruction strings (std_msgs/msg/String); "
                                                            "--task overrides it.")
    episode_marker: str | None = Field(None, description="Topic whose every message starts a new episode "
                                                         "(default: one episode per file).")


def _files(src: Path) -> list[Path]:
    if src.is_file():
        return [src]
    return sorted(p for p in src.iterdir() if p.suffix == ".mcap" and p.is_file())


class McapRef(FileRef):
    """A unit's `ref`: one episode, a time window of one file."""

    start_ns: int | None  # the window [start_ns, end_ns) in log time; None: the file's start / end
    end_ns: int | None
    topics: dict[str, Any]  # the TopicMap as JSON (`model_dump`); a worker validates it back


def _window(unit: Unit[McapRef]) -> Window:
    return unit.ref.get("start_ns"), unit.ref.get("end_ns")


def _check_topics(index: FileIndex, tmap: TopicMap, path: Path) -> None:
    available = sorted(index.channels)
    for role, topic in tmap.all_topics().items():
        if topic not in index.channels:
            raise DataError(path, f"{role} topic {topic} not in file{suggest(topic, available)}; "
                                  f"available: {', '.join(available) or 'none'}", key=topic)
        problem = encoding_problem(*index.channels[topic])
        if problem and role != "episode marker":  # marker messages are only counted, never decoded
            raise DataError(path, f"{role} topic {topic}: {problem}", key=topic)


def _windows(path: Path, tmap: TopicMap) -> tuple[FileIndex, list[Window]]:
    with open_reader(path) as reader:
        index = read_index(reader, path)
        _check_topics(index, tmap, path)
        if tmap.episode_marker is None:
            return index, [(None, None)]
        starts = [m.log_time for _, _, m in iter_messages(reader, path, [tmap.episode_marker])]
    if not starts:
        raise DataError(path, f"episode marker topic {tmap.episode_marker} has no messages, so no episode starts "
                              "in this file", key=tmap.episode_marker)
    return index, list(zip(starts, [*starts[1:], None], strict=True))


def list_units(src: Path, opts: MCAPOptions) -> list[Unit[McapRef]]:
    """One unit per MCAP file, or per episode window of a file."""
    tmap = load_topic_map(opts)
    topics = tmap.model_dump(mode="json")
    units: list[Unit[McapRef]] = []
    for path in _files(src):
        index, windows = _windows(path, tmap)
        for i, (start, end) in enumerate(windows):
            span_s = ((index.end_ns if end is None else end) - (index.start_ns if start is None else start)) / 1e9
            units.append(Unit(
                index=len(units), id=path.stem if tmap.episode_marker is None else f"{path.stem}#{i}",
                est_samples=max(1, int(span_s * opts.fps) + 1),
                ref=McapRef(file=path.name if src.is_dir() else "", start_ns=start, end_ns=end, topics=topics),
            ))
    return units


# --- vectors ----------------------------------------------------------------------------------------


def _field_paths(role: str, spec: VectorSpec, schema: Any, decoded: Any, path: Path) -> list[FieldPath]:
    name = schema.name if schema is not None else ""
    fields = spec.fields or DEFAULT_FIELDS.get(name)
    if not fields:
        have = ", ".join(message_fields(decoded) or [])
        raise DataError(path, f"no field path for {role} topic {spec.topic} ({name or 'no schema'}): pass "
                              f"--{role}-fields (fields: {have})", key=spec.topic)
    return [parse_field_path(f) for f in fields]


def _vector(decoded: Any, paths: Sequence[FieldPath]) -> np.ndarray:
    return np.concatenate([to_vector(field_value(decoded, p), p) for p in paths])


def _message_problem(role: str, log_time: int, exc: Exception) -> str:
    # KeyErrors read "has no field ..."; ValueErrors are whole sentences about the field.
    sep = " " if isinstance(exc, KeyError) else ": "
    return f"{role} message at log_time {log_time} ns{sep}{problem_text(exc)}"


def _decode(decoders: Decoders, item: Any, path: Path, episode: str | None) -> Any:
    schema, channel, message = item
    try:
        return decoders.decode(schema, channel, message)
    except ValueError as exc:
        raise DataError(path, problem_text(exc), episode=episode, key=channel.topic) from None


def _first_message(path: Path, topic: str) -> Any:
    with open_reader(path) as reader:
        return next(iter_messages(reader, path, [topic]), None)


def _names(src: Path, units: Sequence[Unit[McapRef]], role: str, spec: VectorSpec) -> list[str]:
    """Dimension names from the first message on the topic (JointState `name` where it fits)."""
    for path in dict.fromkeys(unit_file(src, u.ref) for u in units):
        item = _first_message(path, spec.topic)
        if item is not None:
            decoded = _decode(Decoders(), item, path, None)
            try:
                return vector_names(decoded, _field_paths(role, spec, item[0], decoded, path))
            except (KeyError, ValueError) as exc:
                raise DataError(path, _message_problem(role, item[2].log_time, exc), key=spec.topic) from None
    raise DataError(src, f"{role} topic {spec.topic} has no messages in any file", key=spec.topic)


def describe(src: Path, opts: MCAPOptions, units: Sequence[Unit[McapRef]]) -> DatasetInfo:
    """Names from the topic map and the first file, at the --fps clock."""
    tmap = TopicMap.model_validate(units[0].ref["topics"])
    return robot_info(opts, state_names=_names(src, units, "state", tmap.state),
                      action_names=_names(src, units, "action", tmap.action), fps=opts.fps,
                      cameras=list(tmap.images), where=str(unit_file(src, units[0].ref)),
                      extra={"topics": units[0].ref["topics"], "clock": "log_time"})


# --- one episode ------------------------------------------------------------------------------------


class _Streams:
    """What the first read of an episode keeps: log times per topic and the state/action vectors."""

    def __init__(self, tmap: TopicMap) -> None:
        self.specs = {"state": tmap.state, "action": tmap.action}
        self.times: dict[str, list[int]] = {t: [] for t in (tmap.state.topic, tmap.action.topic, *tmap.images.values())}
        self.values: dict[str, list[np.ndarray]] = {"state": [], "action": []}
        self.paths: dict[str, list[FieldPath]] = {}

    def add(self, item: Any, decoders: Decoders, path: Path, episode: str) -> None:
        _, channel, message = item
        self.times[channel.topic].append(message.log_time)
        roles = [role for role, spec in self.specs.items() if spec.topic == channel.topic]
        if not roles:
            return  # an image: only its time now, its bytes when the frame is written
        decoded = _decode(decoders, item, path, episode)
        for role in roles:
            if role not in self.paths:
                self.paths[role] = _field_paths(role, self.specs[role], item[0], decoded, path)
            try:
                vec = _vector(decoded, self.paths[role])
            except (KeyError, ValueError) as exc:
                raise DataError(path, _message_problem(role, message.log_time, exc), episode=episode,
                                key=channel.topic) from None
            self._check_size(role, vec, message.log_time, path, episode)
            self.values[role].append(vec)

    def _check_size(self, role: str, vec: np.ndarray, log_time: int, path: Path, episode: str) -> None:
        first = self.values[role][0] if self.values[role] else vec
        if len(vec) == 0 or len(vec) != len(first):
            want = "at least one value" if len(first) == 0 else f"{len(first)} like the first message"
            raise DataError(path, f"{role} message at log_time {log_time} ns gives {len(vec)} values, expected {want}",
                            episode=episode, key=self.specs[role].topic)


def _read_streams(path: Path, tmap: TopicMap, window: Window, episode: str) -> _Streams:
    streams, decoders = _Streams(tmap), Decoders()
    with open_reader(path) as reader:
        for item in iter_messages(reader, path, sorted(streams.times), *window):
            streams.add(item, decoders, path, episode)
    return streams


def _clock(times: dict[str, np.ndarray], roles: dict[str, str], fps: float, path: Path, episode: str) -> np.ndarray:
    """Tick log times (ns): regular at `fps` over the span where every topic has a message."""
    for topic, t in times.items():
        if len(t) == 0:
            raise DataError(path, f"empty episode: no messages on {roles[topic]} topic {topic}", episode=episode,
                            key=topic)
    first = {topic: int(t[0]) for topic, t in times.items()}
    last = {topic: int(t[-1]) for topic, t in times.items()}
    start, end = max(first.values()), min(last.values())
    if start > end:
        late, early = max(first, key=first.__getitem__), min(last, key=last.__getitem__)
        raise DataError(path, f"empty episode: {roles[late]} topic {late} starts {(start - end) / 1e9:.3f} s after "
                              f"{roles[early]} topic {early} ends, so no tick has a message on every topic",
                        episode=episode)
    n = int(np.floor((end - start) * fps / 1e9 + 1e-6)) + 1
    return start + np.round(np.arange(n) * (1e9 / fps)).astype(np.int64)


def _tasks(path: Path, tmap: TopicMap, window: Window, ticks: np.ndarray, episode: str) -> list[str]:
    """Per tick: the latest instruction at or before it since the file's start (else the first one)."""
    spec = tmap.instruction
    if spec is None:
        return [""]
    field, decoders = parse_field_path(spec.field), Decoders()
    times, texts = [], []
    with open_reader(path) as reader:
        for item in iter_messages(reader, path, [spec.topic], None, window[1]):
            try:
                text = field_value(_decode(decoders, item, path, episode), field)
            except KeyError as exc:
                raise DataError(path, _message_problem("instruction", item[2].log_time, exc), episode=episode,
                                key=spec.topic) from None
            if not isinstance(text, str):
                raise DataError(path, f"instruction field {spec.field!r} is a {type(text).__name__}, not text",
                                episode=episode, key=spec.topic)
            times.append(item[2].log_time)
            texts.append(text)
    if not texts:
        raise DataError(path, f"no message on instruction topic {spec.topic} before this episode ends; pass --task "
                              "to give the instruction", episode=episode, key=spec.topic)
    index = np.maximum(np.searchsorted(np.asarray(times, np.int64), ticks, side="right") - 1, 0)
    return [texts[i] for i in index]


def load_episode(src: Path, opts: MCAPOptions, unit: Unit[McapRef]) -> RobotEpisode:
    """Read one unit's topics and resample them onto the --fps clock."""
    tmap, path, window = TopicMap.model_validate(unit.ref["topics"]), unit_file(src, unit.ref), _window(unit)
    streams = _read_streams(path, tmap, window, unit.id)
    times = {topic: np.asarray(t, np.int64) for topic, t in streams.times.items()}
    roles = {topic: role.split(" ")[0] for role, topic in reversed(tmap.all_topics().items())}
    ticks = _clock(times, roles, opts.fps, path, unit.id)
    # Latest message at or before each tick; >= 0 because the clock starts at every topic's first message.
    index = {topic: np.searchsorted(t, ticks, side="right") - 1 for topic, t in times.items()}
    cameras = {} if opts.no_images else {
        name: image_frame_source(path, topic, window, index[topic], times[topic], unit.id)
        for name, topic in tmap.images.items()
    }
    return RobotEpisode(
        episode_id=unit.id, source_file=str(path),
        state=np.stack(streams.values["state"])[index[tmap.state.topic]],
        actions=np.stack(streams.values["action"])[index[tmap.action.topic]],
        timestamps_s=np.arange(len(ticks)) / opts.fps,
        tasks=[opts.task] if opts.task else _tasks(path, tmap, window, ticks, unit.id),
        cameras=cameras, fps=opts.fps, state_key=tmap.state.topic, action_key=tmap.action.topic,
    )


CONVERTER = robot_converter(
    "mcap", "MCAP robot logs (ROS 2, protobuf, JSON channels) resampled onto one clock.", MCAPOptions,
    list_units, describe, load_episode,
)
