"""The MCAP converter on logs written with the real mcap writers: exact nearest-before resampling,
camera frames, instructions, episode markers, JSON and protobuf channels, the topic map, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cotrain.convert.pipeline import convert
from cotrain.dataset.sequential import Dataset
from cotrain.errors import ConfigError, DataError
from cotrain.media.image import decode_image
from cotrain_converters.mcap.converter import MCAPOptions
from cotrain_converters.mcap.decode import image_from_message
from cotrain_converters.mcap.topics import field_value, parse_field_path, to_vector
from tests.fixtures import mcap as fx
from tests.helpers import episodes_of, run_cli

ROS2 = {"state_topic": "/joint_states", "action_topic": "/joint_commands",
        "image_topics": "front=/cam_front/image_raw/compressed,/cam_wrist/image_raw",
        "instruction_topic": "/instruction"}
STREAMS = {"state": fx.STATE, "action": fx.ACTION, "front": fx.FRONT, "wrist": fx.WRIST}


@pytest.fixture(scope="module")
def ros2_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_ros2(tmp_path_factory.mktemp("mcap") / "run.mcap")


def _convert(src: Path, out: Path, **options: Any) -> Dataset:
    options = {"embodiment": "arm", "fps": 10.0, "horizon": 3, **options}
    convert("mcap", src, out, MCAPOptions(**options))
    return Dataset.open(out)


def _latest(stream: tuple[int, int], tick_ms: float, duration_ms: int) -> int:
    """Brute force: the index of the stream's last message at or before the tick."""
    return max(k for k, t in enumerate(fx.times_ms(stream, duration_ms)) if t <= tick_ms)


def _expected_ticks(window: tuple[int, int], duration_ms: int, fps: float) -> list[float]:
    """The clock of an episode [w0, w1): from the latest first message to the earliest last one."""
    inside = [[t for t in fx.times_ms(s, duration_ms) if window[0] <= t < window[1]] for s in STREAMS.values()]
    start, end = max(ts[0] for ts in inside), min(ts[-1] for ts in inside)
    return [start + k * 1000 / fps for k in range(int((end - start) * fps / 1000) + 1)]


def _check_lowdim(samples: list[dict[str, Any]], ticks: list[float], duration_ms: int) -> None:
    assert len(samples) == len(ticks)
    for t, (sample, tick) in enumerate(zip(samples, ticks, strict=True)):
        k_state = _latest(fx.STATE, tick, duration_ms)
        np.testing.assert_array_equal(sample["state.npy"], np.float32(fx.state_position(k_state)))
        ks = [_latest(fx.ACTION, ticks[min(t + h, len(ticks) - 1)], duration_ms) for h in range(3)]
        np.testing.assert_array_equal(sample["actions.npy"], np.float32([fx.action_data(k) for k in ks]))
        assert sample["meta.json"]["timestamp"] == pytest.approx(t / 10)


def test_ros2_topics_are_resampled_nearest_before_on_one_clock(ros2_log: Path, tmp_path: Path) -> None:
    samples = episodes_of(_convert(ros2_log, tmp_path / "out", **ROS2))["run"]
    # Clock: wrist starts last (50 ms), front ends first (920 ms) -> ticks 50, 150, ..., 850 ms.
    ticks = _expected_ticks((0, 1000), 1000, 10)
    assert ticks == [50 + 100 * k for k in range(9)]
    _check_lowdim(samples, ticks, 1000)
    # Hand-checked anchors: at 50 ms the state is message 1 (40 ms), the action message 1 (35 ms);
    # at 150 ms state message 3 (120 ms) and action message 4 (125 ms).
    assert samples[0]["state.npy"].tolist() == fx.state_position(1)
    assert samples[1]["state.npy"].tolist() == fx.state_position(3)
    assert samples[1]["actions.npy"][0].tolist() == fx.action_data(4)
    assert samples[-1]["actions_valid.npy"].tolist() == [True, False, False]
    assert [s["meta.json"]["source_frame_index"] for s in samples] == list(range(9))
    # The instruction switches at 610 ms: ticks 50..550 have the first text, 650.. the second.
    assert [s["instruction.txt"] for s in samples] == ["pick up the red cube"] * 6 + ["place it in the bin"] * 3
    assert {s["meta.json"]["fps"] for s in samples} == {10.0}


def test_camera_frames_are_the_messages_at_or_before_each_tick(ros2_log: Path, tmp_path: Path) -> None:
    samples = episodes_of(_convert(ros2_log, tmp_path / "out", **ROS2))["run"]
    for k, sample in enumerate(samples):
        # front (20 + 100k ms) is 30 ms before tick k; its JPEG is stored byte for byte.
        assert sample["front.jpg"] == fx.front_jpeg(k)
        # wrist (raw rgb8, padded rows) is exactly at tick k (50 + 100k ms): "at or before" includes it.
        got = decode_image(sample["cam_wrist.jpg"]).astype(np.int16)
        assert got.shape == (*fx.SIZE, 3)
        assert np.abs(got - fx.frame(k, seed=2)).mean() < 4.0
        assert np.abs(got - fx.frame(k + 1, seed=2)).mean() > 20.0


def test_bgr8_images_come_out_in_rgb_and_upsampling_repeats_frames(tmp_path: Path) -> None:
    src = fx.write_ros2(tmp_path / "bgr.mcap", duration_ms=400, wrist_encoding="bgr8")
    samples = episodes_of(_convert(src, tmp_path / "out", fps=20.0, cameras="cam_wrist=hand,front", **ROS2))["bgr"]
    assert sorted(k for k in samples[0] if k.endswith(".jpg")) == ["front.jpg", "hand.jpg"]
    # 20 Hz clock over 50..320 ms: front messages (10 Hz) repeat on consecutive ticks.
    assert [_latest(fx.FRONT, 50 + 50 * t, 400) for t in range(len(samples))] == [0, 0, 1, 1, 2, 2]
    assert [s["front.jpg"] for s in samples] == [fx.front_jpeg(k) for k in (0, 0, 1, 1, 2, 2)]
    got = decode_image(samples[2]["hand.jpg"]).astype(np.int16)
    assert np.abs(got - fx.frame(1, seed=2)).mean() < 4.0


def test_manifest_names_come_from_joint_state_names(ros2_log: Path, tmp_path: Path) -> None:
    ds = _convert(ros2_log, tmp_path / "out", no_images=True, **{**ROS2, "state_fields": "position, velocity"})
    m = ds.manifest
    assert m.state_names == ["shoulder.position", "elbow.position", "shoulder.velocity", "elbow.velocity"]
    assert m.action_names == ["data[0]", "data[1]", "data[2]"]
    assert (m.fps, m.cameras, m.embodiment, m.num_samples) == (10.0, [], "arm", 9)
    assert m.extra["topics"]["images"] == {"front": "/cam_front/image_raw/compressed",
                                           "cam_wrist": "/cam_wrist/image_raw"}
    sample = next(ds.iter_decoded())
    assert sample["state.npy"].tolist() == fx.state_position(1) + fx.state_velocity(1)
    assert not any(key.endswith(".jpg") for key in sample)


def test_field_paths_take_indices_and_slices(ros2_log: Path, tmp_path: Path) -> None:
    ds = _convert(ros2_log, tmp_path / "out", no_images=True, **{**ROS2, "state_fields": "position[1],velocity[0:1]",
                                                                  "action_fields": "data[:2]"})
    assert ds.manifest.state_names == ["position[1]", "velocity[0:1]"]
    sample = next(ds.iter_decoded())
    assert sample["state.npy"].tolist() == [fx.state_position(1)[1], fx.state_velocity(1)[0]]
    assert sample["actions.npy"][0].tolist() == fx.action_data(1)[:2]


def test_a_folder_is_one_episode_per_file_in_name_order(tmp_path: Path) -> None:
    fx.write_ros2(tmp_path / "logs" / "b_second.mcap", duration_ms=600)
    fx.write_ros2(tmp_path / "logs" / "a_first.mcap", duration_ms=400)
    (tmp_path / "logs" / "notes.txt").write_text("not a log")
    eps = episodes_of(_convert(tmp_path / "logs", tmp_path / "out", no_images=True, **ROS2))
    assert list(eps) == ["a_first", "b_second"]
    for name, duration in (("a_first", 400), ("b_second", 600)):
        _check_lowdim(eps[name], _expected_ticks((0, duration), duration, 10), duration)


def test_marker_topic_splits_episodes_without_sharing_messages(tmp_path: Path) -> None:
    src = fx.write_ros2(tmp_path / "session.mcap", markers_ms=(0, 400, 700))
    eps = episodes_of(_convert(src, tmp_path / "out", episode_marker="/episode_start", **ROS2))
    assert list(eps) == ["session#0", "session#1", "session#2"]
    windows = {"session#0": (0, 400), "session#1": (400, 700), "session#2": (700, 1000)}
    for name, window in windows.items():
        ticks = _expected_ticks(window, 1000, 10)
        _check_lowdim(eps[name][: len(ticks)], ticks, 1000)
        assert len(eps[name]) == len(ticks)
    # Episode 1 reads only [400, 700): its clock starts at the wrist camera's first message in it (450 ms).
    assert _expected_ticks((400, 700), 1000, 10) == [450, 550]
    assert eps["session#1"][0]["state.npy"].tolist() == fx.state_position(11)  # 440 ms
    assert eps["session#1"][0]["front.jpg"] == fx.front_jpeg(4)  # 420 ms
    # Instructions carry over from before the window (10 ms), until the 610 ms one.
    assert {s["instruction.txt"] for s in eps["session#0"]} == {"pick up the red cube"}
    assert [s["instruction.txt"] for s in eps["session#1"]] == ["pick up the red cube"] * 2
    assert {s["instruction.txt"] for s in eps["session#2"]} == {"place it in the bin"}


def test_json_channels_with_key_paths_and_base64_images(tmp_path: Path) -> None:
    src = fx.write_json(tmp_path / "arm.mcap")
    ds = _convert(src, tmp_path / "out", state_topic="/arm/state", state_fields="arm.joints,gripper",
                  action_topic="/arm/command", action_fields="target", image_topics="/camera", task="wipe")
    samples = episodes_of(ds)["arm"]
    # state 0, 50, ..; action 10, 60, ..; camera 0, 100, .. up to 450/460/400 ms -> ticks 10..310 ms.
    assert len(samples) == 4
    for k, sample in enumerate(samples):
        tick = 10 + 100 * k
        ks, ka, kc = (_latest(s, tick, 500) for s in (fx.JSON_STATE, fx.JSON_ACTION, fx.JSON_CAMERA))
        state = fx.json_state(ks)
        assert sample["state.npy"].tolist() == [*state["arm"]["joints"], state["gripper"]]  # type: ignore[index]  # nested JSON test data
        assert sample["actions.npy"][0].tolist() == fx.json_action(ka)["target"]
        assert sample["camera.jpg"] == fx.jpeg(fx.frame(kc, seed=3))
        assert sample["instruction.txt"] == "wipe"
    assert ds.manifest.state_names == ["arm.joints[0]", "arm.joints[1]", "arm.joints[2]", "gripper"]


def test_files_without_chunks_or_statistics_read_the_same(tmp_path: Path) -> None:
    # No chunk index and no statistics: topics and times come from one linear scan instead.
    options = {"state_topic": "/arm/state", "state_fields": "arm.joints", "action_topic": "/arm/command",
               "action_fields": "target", "image_topics": "/camera"}
    plain = fx.write_json(tmp_path / "a" / "arm.mcap", use_chunking=False, use_statistics=False)
    indexed = fx.write_json(tmp_path / "b" / "arm.mcap")
    got, want = ([[s["state.npy"].tolist(), s["camera.jpg"]] for s in _convert(src, out, **options).iter_decoded()]
                 for src, out in ((plain, tmp_path / "o1"), (indexed, tmp_path / "o2")))
    assert len(got) == 4 and got == want


def test_protobuf_channels_runtime_message_and_struct(tmp_path: Path) -> None:
    src = fx.write_protobuf(tmp_path / "pb.mcap")
    ds = _convert(src, tmp_path / "out", state_topic="/arm/state", state_fields="joints,gripper.width",
                  action_topic="/arm/command", action_fields="target")
    samples = episodes_of(ds)["pb"]
    assert len(samples) == 5  # ticks 10..410 ms (state ends 450, action 460)
    for k, sample in enumerate(samples):
        ks, ka = _latest(fx.JSON_STATE, 10 + 100 * k, 500), _latest(fx.JSON_ACTION, 10 + 100 * k, 500)
        state = fx.json_state(ks)
        assert sample["state.npy"].tolist() == [*state["arm"]["joints"], state["gripper"]]  # type: ignore[index]  # nested JSON test data
        assert sample["actions.npy"][0].tolist() == fx.json_action(ka)["target"]
        assert sample["instruction.txt"] == ""
    assert ds.manifest.action_names == ["target[0]", "target[1]"]


def test_yaml_topic_map_with_cli_override(ros2_log: Path, tmp_path: Path) -> None:
    topics = tmp_path / "arm.yaml"
    topics.write_text("state: {topic: /joint_states, fields: [position]}\naction: /joint_commands\n"
                      "images: {front: /cam_front/image_raw/compressed}\n"
                      "instruction: {topic: /instruction, field: data}\n")
    ds = _convert(ros2_log, tmp_path / "out", topics=topics, state_fields="velocity")
    samples = episodes_of(ds)["run"]
    # Only the front camera now: the clock runs from its first message (20 ms) to its last (920 ms).
    assert len(samples) == 10 and samples[1]["state.npy"].tolist() == fx.state_velocity(3)  # 120 ms
    assert ds.manifest.cameras == ["front"] and samples[0]["instruction.txt"] == "pick up the red cube"
    assert ds.manifest.extra["topics"]["state"] == {"topic": "/joint_states", "fields": ["velocity"]}


def test_cli_converts_with_a_topic_file(ros2_log: Path, tmp_path: Path) -> None:
    topics = tmp_path / "arm.yaml"
    topics.write_text("state: /joint_states\naction: /joint_commands\nimages: [/cam_wrist/image_raw]\n")
    proc = run_cli("convert", "mcap", str(ros2_log), str(tmp_path / "out"), "--embodiment", "arm", "--fps", "10",
                   "--topics", str(topics), "--json", check=True)
    assert json.loads(proc.stdout)["samples"] == 10  # wrist camera only: ticks 50..950 ms
    assert Dataset.open(tmp_path / "out").manifest.cameras == ["cam_wrist"]
    missing = run_cli("convert", "mcap", str(ros2_log), str(tmp_path / "out2"), "--embodiment", "arm",
                      "--topics", str(topics))
    assert missing.returncode != 0 and "--fps" in missing.stderr


# --- bad input --------------------------------------------------------------------------------------


def _error(src: Path, tmp_path: Path, exc: type[Exception] = DataError, **options: Any) -> str:
    with pytest.raises(exc) as err:
        _convert(src, tmp_path / "out", **{**ROS2, **options})
    assert not (tmp_path / "out").exists()
    return str(err.value)


def test_missing_topic_lists_the_available_ones(ros2_log: Path, tmp_path: Path) -> None:
    assert _error(ros2_log, tmp_path, state_topic="/joint_state") == (
        f"{ros2_log}, key '/joint_state': state topic /joint_state not in file (did you mean '/joint_states'?); "
        "available: /cam_front/image_raw/compressed, /cam_wrist/image_raw, /instruction, "
        "/joint_commands, /joint_states")


def test_unsupported_schema_encoding_is_named(tmp_path: Path) -> None:
    src = fx.write_ros2idl(tmp_path / "idl.mcap")
    assert _error(src, tmp_path, action_topic="/joint_states", image_topics=None, instruction_topic=None) == (
        f"{src}, key '/joint_states': state topic /joint_states: message encoding 'cdr' with schema encoding "
        "'ros2idl' is not supported (supported: cdr+ros2msg (ROS 2), protobuf+protobuf, json)")


def test_missing_field_path_suggests_the_field(ros2_log: Path, tmp_path: Path) -> None:
    message = _error(ros2_log, tmp_path, state_fields="positon")
    assert message == (f"{ros2_log}, key '/joint_states': state message at log_time {fx.BASE_NS} ns has no field "
                       "'positon' in path 'positon' (did you mean 'position'?); fields: header, name, position, "
                       "velocity, effort")


def test_schema_without_default_field_and_non_numeric_field(ros2_log: Path, tmp_path: Path) -> None:
    assert _error(ros2_log, tmp_path, action_topic="/instruction") == (
        f"{ros2_log}, key '/instruction': no field path for action topic /instruction (std_msgs/msg/String): "
        "pass --action-fields (fields: data)")
    assert "field 'data' is a str, not a number or a list of numbers" in _error(
        ros2_log, tmp_path, action_topic="/instruction", action_fields="data")


def test_empty_episode_raises_or_is_skipped(tmp_path: Path) -> None:
    src = fx.write_ros2(tmp_path / "s.mcap", duration_ms=600, markers_ms=(0, 650))
    assert _error(src, tmp_path, episode_marker="/episode_start") == (
        f"{src}, episode s#1, key '/joint_states': empty episode: no messages on state topic /joint_states")
    ds = _convert(src, tmp_path / "out", episode_marker="/episode_start", on_bad_episode="skip", **ROS2)
    assert list(episodes_of(ds)) == ["s#0"] and len(ds.manifest.skipped_episodes) == 1


def test_unsupported_image_encoding_names_it(tmp_path: Path) -> None:
    src = fx.write_ros2(tmp_path / "depth.mcap", duration_ms=300, wrist_encoding="16UC1")
    assert _error(src, tmp_path) == (
        f"{src}, episode depth, frame 0, key '/cam_wrist/image_raw': image message at log_time "
        f"{fx.BASE_NS + 50 * fx.MS} ns: image encoding '16UC1' is not supported "
        "(supported: bgr8, bgra8, mono8, rgb8, rgba8)")


def test_truncated_and_foreign_files_are_reported(ros2_log: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(ros2_log.read_bytes()[: ros2_log.stat().st_size // 2])
    message = _error(cut, tmp_path)
    assert message.startswith(f"{cut}: unreadable, truncated or corrupt MCAP file (")
    assert message.endswith("`mcap recover` can often salvage a recording cut short")
    foreign = tmp_path / "notes.mcap"
    foreign.write_bytes(b"this is not an mcap file at all")
    assert "(InvalidMagic: not a valid MCAP file" in _error(foreign, tmp_path)


def test_changing_vector_width_and_disjoint_topics(tmp_path: Path) -> None:
    src = fx.write_json_topics(tmp_path / "w.mcap", {
        "/s": [(0, {"q": [1.0, 2.0]}), (10, {"q": [1.0, 2.0]}), (20, {"q": [1.0]})], "/a": [(0, {"u": 1.0})]})
    options = {"state_topic": "/s", "state_fields": "q", "action_topic": "/a", "action_fields": "u",
               "image_topics": None, "instruction_topic": None}
    assert _error(src, tmp_path, **options) == (
        f"{src}, episode w, key '/s': state message at log_time {fx.BASE_NS + 20 * fx.MS} ns gives 1 values, "
        "expected 2 like the first message")
    src = fx.write_json_topics(tmp_path / "d.mcap", {"/s": [(0, {"q": [1.0]}), (10, {"q": [2.0]})],
                                                    "/a": [(510, {"u": 1.0})]})
    assert _error(src, tmp_path / "e", **options) == (
        f"{src}, episode d: empty episode: action topic /a starts 0.500 s after state topic /s ends, so no tick "
        "has a message on every topic")


def test_instruction_topic_without_messages_asks_for_task(tmp_path: Path) -> None:
    src = fx.write_ros2(tmp_path / "quiet.mcap", duration_ms=300, instructions=((250, "late"),))
    ds = _convert(src, tmp_path / "out", **ROS2)  # ticks before the first instruction take it
    assert {s["instruction.txt"] for s in ds.iter_decoded()} == {"late"}
    src = fx.write_ros2(tmp_path / "q2.mcap", duration_ms=600, instructions=((550, "late"),), markers_ms=(0, 300))
    assert _error(src, tmp_path / "e", episode_marker="/episode_start") == (
        f"{src}, episode q2#0, key '/instruction': no message on instruction topic /instruction before this episode "
        "ends; pass --task to give the instruction")


def test_topic_map_errors_are_config_errors(ros2_log: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("state: /joint_states\naction: /joint_commands\nimagse: [/cam_wrist/image_raw]\n")
    assert _error(ros2_log, tmp_path, ConfigError, topics=bad, **dict.fromkeys(ROS2)) == (
        f"--topics {bad}: imagse: Extra inputs are not permitted (did you mean 'images'?)")
    assert _error(ros2_log, tmp_path, ConfigError, state_topic=None) == (
        "no state topic: pass --state-topic TOPIC or set `state:` in a --topics YAML file")
    assert "bad field path 'position[x]'" in _error(ros2_log, tmp_path, ConfigError, state_fields="position[x]")
    assert "name them NAME=TOPIC" in _error(ros2_log, tmp_path, ConfigError, image_topics="/a/image_raw,/a/compressed")


# --- message-level helpers --------------------------------------------------------------------------


def _raw(encoding: str, pixels: np.ndarray, pad: int = 3) -> dict[str, Any]:
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    data = np.concatenate([rows, np.full((h, pad), 255, np.uint8)], axis=1)  # padding must be dropped
    return {"encoding": encoding, "height": h, "width": w, "step": data.shape[1], "data": data.tobytes()}


def test_raw_image_encodings_decode_exactly() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 7
    alpha = np.full((2, 3, 1), 9, np.uint8)
    assert np.array_equal(image_from_message(_raw("rgb8", rgb)), rgb)
    assert np.array_equal(image_from_message(_raw("bgr8", rgb[..., ::-1].copy())), rgb)
    assert np.array_equal(image_from_message(_raw("rgba8", np.concatenate([rgb, alpha], axis=2))), rgb)
    assert np.array_equal(image_from_message(_raw("bgra8", np.concatenate([rgb[..., ::-1], alpha], axis=2))), rgb)
    mono = rgb[..., 0].copy()
    assert np.array_equal(image_from_message(_raw("mono8", mono)), np.repeat(mono[..., None], 3, axis=2))
    short = {**_raw("rgb8", rgb), "data": b"\x00" * 10}
    with pytest.raises(ValueError, match=r"rgb8 image of 2x3 with step 12 needs 24 bytes of data, got 10"):
        image_from_message(short)


def test_compressed_images_png_is_decoded_and_other_formats_are_refused() -> None:
    import io

    from PIL import Image

    pixels = fx.frame(3, seed=4)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    assert np.array_equal(image_from_message({"format": "png", "data": buf.getvalue()}), pixels)
    jpg = fx.jpeg(pixels)
    assert image_from_message({"format": "bgr8; jpeg compressed bgr8", "data": jpg}) == jpg
    with pytest.raises(ValueError, match=r"compressed image format 'h264' is not supported \(supported: jpeg, png\)"):
        image_from_message({"format": "h264", "data": b"\x00\x00\x01"})
    with pytest.raises(ValueError, match=r"format 'jpeg' but the data is neither JPEG nor PNG \(starts with 0001"):
        image_from_message({"format": "jpeg", "data": bytes(range(8))})
    with pytest.raises(ValueError, match=r"not an image message: .*; fields: data, position"):
        image_from_message({"position": [1.0], "data": b""})


def test_field_paths_on_json_like_values() -> None:
    msg = {"arm": {"joints": [1, 2, 3, 4]}, "flag": True, "name": "x"}
    assert field_value(msg, parse_field_path("arm.joints[1:3]")) == [2, 3]
    assert field_value(msg, parse_field_path("arm.joints[-1]")) == 4
    assert to_vector(True, parse_field_path("flag")).tolist() == [1.0]
    with pytest.raises(KeyError, match=r"cannot take \[7\] of field 'joints' in path 'arm.joints\[7\]' \(list of len"):
        field_value(msg, parse_field_path("arm.joints[7]"))
    with pytest.raises(KeyError, match=r"has no field 'x' in path 'arm.joints.x' \(it is a list\)"):
        field_value(msg, parse_field_path("arm.joints.x"))
    with pytest.raises(ValueError, match="bad field path 'arm..joints'"):
        parse_field_path("arm..joints")


def test_corrupt_jpeg_message_names_episode_frame_and_topic(tmp_path: Path) -> None:
    src = fx.write_ros2(tmp_path / "run.mcap", bad_front=(4,))
    message = _error(src, tmp_path)
    assert message.startswith(f"{src}, episode run, frame ") and "key '/cam_front/image_raw/compressed'" in message
    assert "undecodable image" in message and "\n" not in message
    report = convert("mcap", src, tmp_path / "skip", MCAPOptions(embodiment="arm", fps=10.0, horizon=3, **ROS2,
                                                                 on_bad_episode="skip"))
    assert report.samples == 0 and len(report.skipped) == 1 and "undecodable image" in report.skipped[0]


def test_flipped_byte_inside_a_chunk_fails_its_crc(tmp_path: Path) -> None:
    src = fx.write_ros2(tmp_path / "run.mcap", compression="none")
    data = bytearray(src.read_bytes())
    jpeg = fx.front_jpeg(5)
    at = data.find(jpeg[200:240]) + 10  # inside the entropy-coded data of one camera frame
    assert at > 10
    data[at] ^= 0x01  # one bit: the JPEG still decodes, to different pixels
    src.write_bytes(bytes(data))
    message = _error(src, tmp_path)
    assert message.startswith(f"{src}") and "CRCValidationError: crc validation failed in Chunk" in message
    assert "in the chunk of messages from log_time " in message
