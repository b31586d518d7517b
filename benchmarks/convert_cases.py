"""The MCAP and RLDS cases of convert_bench.py: source data, the converter call and its decoding floor.

MCAP: one ROS 2 log per episode (mcap_ros2's writer, the message definitions of tests/fixtures/mcap.py):
`/joint_states` (sensor_msgs/msg/JointState, 100 Hz), `/joint_commands` (Float64MultiArray, 100 Hz) and
two cameras as sensor_msgs/msg/CompressedImage JPEG at 30 Hz, converted with `--fps 30` so every
camera message becomes exactly one output frame. Floor: one pass of the mcap reader over the three
kinds of topic with the ROS 2 CDR decoder (every message decoded, as the converter decodes them), and
the converter's JPEG handling of each camera frame (`cotrain.media.image.to_jpeg`: decode, resize within
the bound, encode), nothing else.

RLDS: a TFDS folder written with tests/fixtures/rlds.py `write_rlds` (one tf.train.Example per
episode; the fixture's smooth frames are replaced by the textured ones of convert_bench through its
`mutate` hook). Floor: every record read with CRC checks (`tfrecord.iter_records`), parsed
(`tf_example.parse_example`), each step feature decoded (`tfds_features.decode_steps`) and each image
handled by `to_jpeg`. RLDS has no library outside TensorFlow, so the floor uses the converter's own
framing and parsing functions: the ratio measures what the converter adds around them (unit listing,
standardisation, the shared robot rules, shard writing, stats).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import import_fixtures

JPEG_QUALITY = 90
CAMERA_TOPICS = {"front": "/cam_front/image_raw/compressed", "wrist": "/cam_wrist/image_raw/compressed"}
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow", "wrist_flex", "wrist_roll", "gripper"]
RLDS_CAMERAS = ("observation/image", "observation/wrist_image")


@dataclass(frozen=True)
class Case:
    name: str
    write: Callable[[Path, dict[str, Any]], Path]
    floor_tasks: Callable[[Path], Sequence[Any]]
    floor: Callable[[Any, tuple[int, int] | None], int]
    convert: Callable[[Path, Path, int, str], int]
    floor_note: str


def _jpeg(episode: int, frame: int, camera: int, hw: tuple[int, int]) -> bytes:
    from convert_bench import camera_frame

    from cotrain.media.image import encode_jpeg

    return encode_jpeg(camera_frame(episode, frame, camera, hw), JPEG_QUALITY)


# --- MCAP -------------------------------------------------------------------------------------------


def _header(t_ns: int) -> dict[str, Any]:
    return {"stamp": {"sec": t_ns // 10**9, "nanosec": t_ns % 10**9}, "frame_id": "base"}


def _mcap_messages(episode: int, frames: int, hw: tuple[int, int]) -> list[tuple[int, str, str, dict[str, Any]]]:
    # Camera k at round(k * 1e9 / 30) ns: the converter's tick formula at --fps 30, so tick k shows frame k.
    cam_ns = np.round(np.arange(frames) * (1e9 / 30)).astype(np.int64)
    out = []
    for k, t in enumerate(cam_ns.tolist()):
        for c, (_, topic) in enumerate(CAMERA_TOPICS.items()):
            out.append((t, topic, "sensor_msgs/msg/CompressedImage",
                        {"header": _header(t), "format": "jpeg", "data": _jpeg(episode, k, c, hw)}))
    rng = np.random.default_rng(episode)
    for k, t in enumerate(range(0, int(cam_ns[-1]) + 10_000_000, 10_000_000)):  # 100 Hz, past the last frame
        pos = np.sin(k / 50 + np.arange(6) + episode).tolist()
        out.append((t, "/joint_states", "sensor_msgs/msg/JointState",
                    {"header": _header(t), "name": JOINTS, "position": pos, "velocity": rng.normal(size=6).tolist(),
                     "effort": []}))
        out.append((t, "/joint_commands", "std_msgs/msg/Float64MultiArray",
                    {"layout": {"dim": [], "data_offset": 0}, "data": [p + 0.01 for p in pos] + [0.5]}))
    return out


def write_mcap(root: Path, size: dict[str, Any]) -> Path:
    import_fixtures()
    from mcap_ros2.writer import Writer

    from tests.fixtures.mcap import BASE_NS, MSGDEFS

    root.mkdir(parents=True, exist_ok=True)
    for e in range(size["episodes"]):
        with (root / f"episode_{e:03d}.mcap").open("wb") as f:
            writer = Writer(f)
            schemas = {name: writer.register_msgdef(name, text) for name, text in MSGDEFS.items()}
            for t, topic, kind, msg in sorted(_mcap_messages(e, size["frames"] + e, size["hw"]), key=lambda m: m[:2]):
                writer.write_message(topic, schemas[kind], msg, log_time=BASE_NS + t, publish_time=BASE_NS + t)
            writer.finish()
    return root


def mcap_floor(path: Path, bound: tuple[int, int] | None) -> int:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    from cotrain.media.image import to_jpeg

    frames, cameras = 0, set(CAMERA_TOPICS.values())
    with path.open("rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        topics = ["/joint_states", "/joint_commands", *cameras]
        for _, channel, _, msg in reader.iter_decoded_messages(topics=topics, log_time_order=True):
            if channel.topic in cameras:
                to_jpeg(bytes(msg.data), bound, JPEG_QUALITY)
                frames += 1
            else:
                np.asarray(msg.position if channel.topic == "/joint_states" else msg.data, np.float64)
    return frames


def mcap_convert(data: Path, out: Path, workers: int, image_size: str) -> int:
    from cotrain.convert.pipeline import convert
    from cotrain.convert.spec import RunOptions
    from cotrain_converters.mcap.converter import MCAPOptions

    opts = MCAPOptions(embodiment="bench", fps=30, image_size=image_size, jpeg_quality=JPEG_QUALITY, task="pick",
                       state_topic="/joint_states", action_topic="/joint_commands",
                       image_topics=",".join(f"{k}={v}" for k, v in CAMERA_TOPICS.items()))
    report = convert("mcap", data, out, opts, RunOptions(workers=workers, progress=False))
    return report.samples * len(CAMERA_TOPICS)


# --- RLDS -------------------------------------------------------------------------------------------


def write_rlds_data(root: Path, size: dict[str, Any]) -> Path:
    import_fixtures()
    from tests.fixtures.rlds import basic_schema, write_rlds

    hw = size["hw"]

    def textured(e: int, ep: dict[str, Any]) -> None:
        for c, key in enumerate(RLDS_CAMERAS):
            ep[key] = [_jpeg(e, t, c, hw) for t in range(len(ep[key]))]

    episodes = size["episodes"]
    steps = tuple(size["frames"] + e for e in range(episodes))
    files = 4 if episodes % 4 == 0 else 1
    # The dataset folder is `root` itself (its one version folder inside), so SRC is `root`.
    write_rlds(root.parent, name=root.name, files=files, per_file=episodes // files, steps=steps,
               schema=basic_schema(*hw), mutate=textured)
    return root


def rlds_tasks(data: Path) -> list[Path]:
    return sorted(data.glob("*/*-train.tfrecord-*"))


def rlds_floor(path: Path, bound: tuple[int, int] | None) -> int:
    from cotrain.media.image import to_jpeg
    from cotrain_converters.rlds.tf_example import decode_int64s, parse_example
    from cotrain_converters.rlds.tfds_features import decode_steps, load_features
    from cotrain_converters.rlds.tfrecord import iter_records

    features = load_features(path.parent / "features.json")
    cameras, frames = {f"steps/{k}" for k in RLDS_CAMERAS}, 0
    for record, payload in enumerate(iter_records(path)):
        feats = parse_example(payload, path, record)
        steps = len(decode_int64s(feats["steps/is_first"], path, "steps/is_first", record))
        for key, spec in features.items():
            if key.startswith("steps/"):
                values = decode_steps(spec, feats[key], steps, path, record)
                for image in values if key in cameras else ():
                    to_jpeg(image, bound, JPEG_QUALITY)
                    frames += 1
    return frames


def rlds_convert(data: Path, out: Path, workers: int, image_size: str) -> int:
    from cotrain.convert.pipeline import convert
    from cotrain.convert.spec import RunOptions
    from cotrain_converters.rlds.converter import RldsOptions

    opts = RldsOptions(embodiment="bench", source_fps=30.0, image_size=image_size, jpeg_quality=JPEG_QUALITY)
    report = convert("rlds", data, out, opts, RunOptions(workers=workers, progress=False))
    return report.samples * len(RLDS_CAMERAS)


# --- registry ---------------------------------------------------------------------------------------


def _importable(*modules: str) -> bool:
    import_fixtures()
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except ModuleNotFoundError:
        return False


def available() -> list[Case]:
    """The cases whose converter and fixture writer are installed (both landed after this benchmark)."""
    cases = []
    if _importable("cotrain_converters.mcap.converter", "tests.fixtures.mcap", "mcap_ros2"):
        cases.append(Case("mcap", write_mcap, lambda d: sorted(d.glob("*.mcap")), mcap_floor, mcap_convert,
                          "mcap reader over state/action/camera topics + ROS 2 CDR decode of every message + "
                          "cotrain.media.image.to_jpeg of every camera frame"))
    if _importable("cotrain_converters.rlds.converter", "tests.fixtures.rlds"):
        cases.append(Case("rlds", write_rlds_data, rlds_tasks, rlds_floor, rlds_convert,
                          "TFRecord framing with CRC checks + tf.train.Example parse + decode of every step feature "
                          "+ cotrain.media.image.to_jpeg of every camera frame"))
    return cases
