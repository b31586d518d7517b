"""The robomimic converter on h5py-written files in robomimic's layout: exact round trips, options, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from cotrain.convert.pipeline import convert
from cotrain.dataset.sequential import Dataset
from cotrain.errors import ConfigError, DataError
from cotrain.media.image import decode_image
from cotrain_converters.hdf5.robomimic import RobomimicOptions
from tests.fixtures.robomimic import (
    DEMO_FRAMES,
    ENV_NAME,
    ISAACLAB_DEMOS,
    ISAACLAB_ENV,
    LANGUAGE,
    demo_arrays,
    isaaclab_arrays,
    write_isaaclab,
    write_robomimic,
)
from tests.helpers import episodes_of, run_cli

NUMERIC_ORDER = ["demo_0", "demo_1", "demo_2", "demo_10"]
DEFAULT_STATE = ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"]


@pytest.fixture(scope="module")
def lift(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_robomimic(tmp_path_factory.mktemp("robomimic") / "lift.hdf5")


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "lift.hdf5"
    dst.write_bytes(src.read_bytes())
    return dst


def _convert(src: Path, out: Path, **options: Any) -> Dataset:
    convert("robomimic", src, out, RobomimicOptions(embodiment="franka", **options))
    return Dataset.open(out)


def _expected_state(arrays: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    return np.concatenate([arrays[f"obs/{k}"] for k in keys], axis=1).astype(np.float32)


def test_round_trip_is_exact_and_demos_sort_numerically(lift: Path, tmp_path: Path) -> None:
    with h5py.File(lift, "r") as f:  # h5py lists by name, so the file order is demo_0, demo_1, demo_10, demo_2
        assert list(f["data"].keys()) == ["demo_0", "demo_1", "demo_10", "demo_2"]
    ds = _convert(lift, tmp_path / "out", horizon=6)
    eps = episodes_of(ds)
    assert list(eps) == NUMERIC_ORDER
    for index, demo in enumerate(NUMERIC_ORDER):
        n, src, samples = DEMO_FRAMES[demo], demo_arrays(demo, DEMO_FRAMES[demo]), eps[demo]
        assert len(samples) == n
        state = _expected_state(src, DEFAULT_STATE)
        actions = src["actions"].astype(np.float32)
        for t, s in enumerate(samples):
            assert s["meta.json"]["episode_index"] == index and s["meta.json"]["frame_index"] == t
            np.testing.assert_array_equal(s["state.npy"], state[t])
            steps = np.minimum(np.arange(t, t + 6), n - 1)
            np.testing.assert_array_equal(s["actions.npy"], actions[steps])
            np.testing.assert_array_equal(s["actions_valid.npy"], np.arange(t, t + 6) < n)
            assert s["instruction.txt"] == LANGUAGE.get(demo, ENV_NAME)
        assert samples[-1]["actions_valid.npy"].tolist() == [True] + [False] * 5
        assert samples[1]["meta.json"]["timestamp"] == pytest.approx(0.05)  # control_freq 20


def test_frames_match_source_pixels(lift: Path, tmp_path: Path) -> None:
    ds = _convert(lift, tmp_path / "out", filter_key="valid")
    src = demo_arrays("demo_1", DEMO_FRAMES["demo_1"])
    samples = episodes_of(ds)["demo_1"]
    for t in (0, 7, len(samples) - 1):
        for cam in ("agentview", "robot0_eye_in_hand"):
            frame = decode_image(samples[t][f"{cam}.jpg"]).astype(np.int16)
            source = src[f"obs/{cam}_image"].astype(np.int16)
            assert frame.shape == (84, 84, 3)
            errors = np.abs(frame[None] - source).mean(axis=(1, 2, 3))
            assert errors[t] < 5.0  # JPEG quality 90 on a synthetic scene: about 3 grey levels
            assert int(np.argmin(errors)) == t and np.sort(errors)[1] > 2 * errors[t]  # the frame, no neighbour


def test_manifest_describes_the_dataset(lift: Path, tmp_path: Path) -> None:
    manifest = _convert(lift, tmp_path / "out", no_images=True).manifest
    assert manifest.state_names == [f"robot0_eef_pos_{i}" for i in range(3)] + [
        f"robot0_eef_quat_{i}" for i in range(4)] + ["robot0_gripper_qpos_0", "robot0_gripper_qpos_1"]
    assert manifest.action_names == [f"action_{i}" for i in range(7)]
    assert manifest.cameras == [] and manifest.fps == 20.0 and manifest.embodiment == "franka"
    assert (manifest.num_episodes, manifest.num_samples) == (4, sum(DEMO_FRAMES.values()))
    assert manifest.extra == {"env_name": "Lift", "filter_key": None, "source_fps": 20.0, "state_keys": DEFAULT_STATE,
                              "state_keys_source": "default: robomimic end-effector pose + gripper"}


@pytest.mark.parametrize(("key", "demos"), [("train", ["demo_0", "demo_2", "demo_10"]), ("valid", ["demo_1"])])
def test_filter_key_selects_the_masked_demos(lift: Path, tmp_path: Path, key: str, demos: list[str]) -> None:
    ds = _convert(lift, tmp_path / "out", filter_key=key, no_images=True)
    assert list(episodes_of(ds)) == demos
    assert ds.manifest.extra["filter_key"] == key


def test_unknown_filter_key_lists_the_available_ones(lift: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        _convert(lift, tmp_path / "out", filter_key="trian")
    assert str(err.value) == (f"{lift}, key 'mask/trian': no filter key 'trian' (did you mean 'train'?); "
                              "available: train, valid")
    assert not (tmp_path / "out").exists()


def test_state_keys_option_concatenates_in_the_given_order(lift: Path, tmp_path: Path) -> None:
    ds = _convert(lift, tmp_path / "out", state_keys="robot0_joint_pos, object", filter_key="valid", no_images=True)
    src = demo_arrays("demo_1", DEMO_FRAMES["demo_1"])
    expected = _expected_state(src, ["robot0_joint_pos", "object"])
    got = np.stack([s["state.npy"] for s in episodes_of(ds)["demo_1"]])
    np.testing.assert_array_equal(got, expected)
    assert ds.manifest.state_names == [f"robot0_joint_pos_{i}" for i in range(7)] + [f"object_{i}" for i in range(10)]


def test_default_state_without_robot0_keys_is_all_2d_obs_sorted(lift: Path, tmp_path: Path) -> None:
    src = _copy(lift, tmp_path)
    with h5py.File(src, "r+") as f:
        for demo in DEMO_FRAMES:
            for key in DEFAULT_STATE:
                del f[f"data/{demo}/obs/{key}"]
    ds = _convert(src, tmp_path / "out", filter_key="valid", no_images=True)
    expected = _expected_state(demo_arrays("demo_1", DEMO_FRAMES["demo_1"]), ["object", "robot0_joint_pos"])
    np.testing.assert_array_equal(np.stack([s["state.npy"] for s in episodes_of(ds)["demo_1"]]), expected)


def test_task_option_overrides_and_source_rate_comes_from_control_freq(tmp_path: Path) -> None:
    src = write_robomimic(tmp_path / "slow.hdf5", demos={"demo_3": 12}, masks={}, control_freq=10)
    ds = _convert(src, tmp_path / "out", task="stack the blocks", no_images=True)
    samples = episodes_of(ds)["demo_3"]
    assert {s["instruction.txt"] for s in samples} == {"stack the blocks"}
    assert ds.manifest.fps == 10.0 and samples[3]["meta.json"]["timestamp"] == pytest.approx(0.3)
    resampled = episodes_of(_convert(src, tmp_path / "out5", fps=5, no_images=True))["demo_3"]
    assert [s["meta.json"]["source_frame_index"] for s in resampled] == [0, 2, 4, 6, 8, 10]


def test_task_falls_back_to_libero_problem_info_and_reads_other_ep_meta_keys(tmp_path: Path) -> None:
    src = write_robomimic(tmp_path / "libero.hdf5", demos={"demo_0": 5, "demo_1": 5}, language={}, masks={})
    with h5py.File(src, "r+") as f:
        f["data"].attrs["problem_info"] = json.dumps({"problem_name": "libero_tabletop_manipulation",
                                                      "language_instruction": "open the top drawer"})
        f["data/demo_1"].attrs["ep_meta"] = json.dumps({"language_instruction": "close the drawer"})
    eps = episodes_of(_convert(src, tmp_path / "out", no_images=True))
    assert {d: {s["instruction.txt"] for s in samples} for d, samples in eps.items()} == {
        "demo_0": {"open the top drawer"}, "demo_1": {"close the drawer"}}


def test_bad_ep_meta_json_is_a_data_error(lift: Path, tmp_path: Path) -> None:
    src = _copy(lift, tmp_path)
    with h5py.File(src, "r+") as f:
        f["data/demo_2"].attrs["ep_meta"] = "{lang: unquoted}"
    with pytest.raises(DataError) as err:
        _convert(src, tmp_path / "out", no_images=True)
    assert (err.value.episode, err.value.key) == ("demo_2", "ep_meta")
    assert err.value.problem.startswith("attribute 'ep_meta' is not valid JSON: ")


def test_camera_selection_rename_and_rotation(lift: Path, tmp_path: Path) -> None:
    ds = _convert(lift, tmp_path / "out", filter_key="valid", cameras="agentview=front", rotate_images_180=True)
    assert ds.manifest.cameras == ["front"]
    sample = episodes_of(ds)["demo_1"][4]
    assert sorted(k for k in sample if k.endswith(".jpg")) == ["front.jpg"]
    source = demo_arrays("demo_1", DEMO_FRAMES["demo_1"])["obs/agentview_image"][4].astype(np.int16)
    frame = decode_image(sample["front.jpg"]).astype(np.int16)
    assert np.abs(frame - source[::-1, ::-1]).mean() < 5.0
    assert np.abs(frame - source).mean() > 30.0


def _drop(key: str):  # noqa: ANN202
    def mutate(f: h5py.File) -> None:
        del f[key]
    return mutate


def _shorten(key: str):  # noqa: ANN202
    def mutate(f: h5py.File) -> None:
        data = f[key][()]
        del f[key]
        f.create_dataset(key, data=data[:-1])
    return mutate


def _nan_action(f: h5py.File) -> None:
    f["data/demo_2/actions"][5, 3] = np.nan


def _wrong_num_samples(f: h5py.File) -> None:
    f["data/demo_10"].attrs["num_samples"] = 99


BAD_INPUTS = [
    (_drop("data/demo_2/obs/robot0_eef_quat"), "demo_2", None, "obs/robot0_eef_quat",
     "missing dataset 'robot0_eef_quat'"),
    (_shorten("data/demo_10/obs/robot0_gripper_qpos"), "demo_10", None, "obs/robot0_gripper_qpos",
     "21 frames but actions has 22"),
    (_shorten("data/demo_1/obs/agentview_image"), "demo_1", None, "obs/agentview_image",
     "22 frames but actions has 23"),
    (_drop("data/demo_0/actions"), "demo_0", None, "actions", "missing dataset 'actions'"),
    (_nan_action, "demo_2", 5, "actions", "NaN in actions dimension 3"),
    (_wrong_num_samples, "demo_10", None, "num_samples", "attribute num_samples is 99 but actions has 22 frames"),
]


@pytest.mark.parametrize(("mutate", "episode", "frame", "key", "problem"), BAD_INPUTS,
                         ids=["missing-obs-key", "obs-length", "image-length", "missing-actions", "nan", "num-samples"])
def test_bad_input_names_file_demo_and_key(lift: Path, tmp_path: Path, mutate: Any, episode: str,
                                           frame: int | None, key: str, problem: str) -> None:
    src = _copy(lift, tmp_path)
    with h5py.File(src, "r+") as f:
        mutate(f)
    with pytest.raises(DataError) as err:
        _convert(src, tmp_path / "out")
    assert (err.value.file, err.value.episode, err.value.frame, err.value.key) == (str(src), episode, frame, key)
    assert problem in err.value.problem
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_truncated_file_is_a_data_error(lift: Path, tmp_path: Path) -> None:
    src = tmp_path / "cut.hdf5"
    data = lift.read_bytes()
    src.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError) as err:
        _convert(src, tmp_path / "out")
    assert err.value.file == str(src)
    assert err.value.problem.startswith("unreadable or truncated HDF5 file: ") and "truncated file" in err.value.problem


def test_corrupt_compressed_block_names_demo_and_key(lift: Path, tmp_path: Path) -> None:
    src = _copy(lift, tmp_path)
    with h5py.File(src, "r") as f:
        chunk = f["data/demo_2/obs/robot0_eef_quat"].id.get_chunk_info(0)
    with open(src, "r+b") as fh:  # zero the gzip stream of the only chunk: the file opens, the read fails
        fh.seek(chunk.byte_offset)
        fh.write(bytes(chunk.size))
    with pytest.raises(DataError) as err:
        _convert(src, tmp_path / "out", no_images=True)
    assert (err.value.episode, err.value.key) == ("demo_2", "obs/robot0_eef_quat")
    assert err.value.problem.startswith("cannot read dataset: ")


def test_skip_lists_the_bad_demo_in_the_manifest(lift: Path, tmp_path: Path) -> None:
    src = _copy(lift, tmp_path)
    with h5py.File(src, "r+") as f:
        _nan_action(f)
    ds = _convert(src, tmp_path / "out", on_bad_episode="skip", no_images=True)
    assert list(episodes_of(ds)) == ["demo_0", "demo_1", "demo_10"]
    [skipped] = ds.manifest.skipped_episodes
    assert skipped.episode == "demo_2"
    assert skipped.reason == f"{src}, episode demo_2, frame 5, key 'actions': NaN in actions dimension 3"
    assert ds.manifest.num_episodes == 3


def test_cli_converts_and_reports_bad_input_in_one_line(lift: Path, tmp_path: Path) -> None:
    ok = run_cli("convert", "robomimic", str(lift), str(tmp_path / "ok"), "--embodiment", "franka",
                 "--filter-key", "valid", "--state-keys", "object", "--no-images", check=True)
    assert ok.returncode == 0
    assert Dataset.open(tmp_path / "ok").manifest.state_names == [f"object_{i}" for i in range(10)]
    bad = run_cli("convert", "robomimic", str(lift), str(tmp_path / "bad"), "--embodiment", "franka",
                  "--state-keys", "robot0_eef_pos,robot0_eef_vel")
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert lines == [f"error: {lift}, episode demo_0, key 'obs/robot0_eef_vel': obs key 'robot0_eef_vel' not found "
                     "(did you mean 'robot0_eef_pos'?); obs keys: agentview_image, object, robot0_eef_pos, "
                     "robot0_eef_quat, robot0_eye_in_hand_image, robot0_gripper_qpos, robot0_joint_pos"]


# --- What real producers write: Isaac Lab (issue 18) -------------------------------------------------


@pytest.fixture(scope="module")
def isaaclab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_isaaclab(tmp_path_factory.mktemp("isaaclab") / "stack.hdf5")


def test_isaaclab_defaults_to_end_effector_pose_and_gripper(isaaclab: Path, tmp_path: Path) -> None:
    ds = _convert(isaaclab, tmp_path / "out")
    m = ds.manifest
    assert m.extra["state_keys"] == ["eef_pos", "eef_quat", "gripper_pos"] and len(m.state_names) == 9
    assert m.extra["state_keys_source"] == "default: Isaac Lab end-effector pose + gripper"
    assert m.cameras == ["table_cam", "wrist_cam"] and m.extra["env_name"] == ISAACLAB_ENV
    episodes = episodes_of(ds)
    assert list(episodes) == list(ISAACLAB_DEMOS)  # demo_0, demo_2, demo_5: gaps kept, numeric order
    for demo, frames in ISAACLAB_DEMOS.items():
        arrays = isaaclab_arrays(demo, frames, eef=True)
        obs = arrays["obs"]
        want = np.concatenate([obs[k] for k in ("eef_pos", "eef_quat", "gripper_pos")], axis=1)  # type: ignore[index]  # nested test data
        got = np.stack([s["state.npy"] for s in episodes[demo]])
        np.testing.assert_array_equal(got, want.astype(np.float32))
        np.testing.assert_array_equal(np.stack([s["actions.npy"][0] for s in episodes[demo]]), arrays["actions"])
        assert all(s["instruction.txt"] == ISAACLAB_ENV for s in episodes[demo])


def test_isaaclab_joint_space_file_uses_joint_positions(tmp_path: Path) -> None:
    src = write_isaaclab(tmp_path / "joints.hdf5", demos={"demo_1": 8, "demo_4": 9}, eef=False)
    m = _convert(src, tmp_path / "out", no_images=True).manifest
    assert m.extra["state_keys"] == ["joint_pos"]
    assert m.extra["state_keys_source"] == "default: Isaac Lab joint positions"


def test_fallback_never_takes_an_action_or_a_group_into_the_state(tmp_path: Path) -> None:
    src = write_isaaclab(tmp_path / "plain.hdf5", demos={"demo_0": 8}, eef=False)
    with h5py.File(src, "a") as f:
        del f["data/demo_0/obs/joint_pos"]  # no default set is complete now
    m = _convert(src, tmp_path / "out", no_images=True).manifest
    assert m.extra["state_keys"] == ["cube_positions", "joint_vel", "object"]  # not obs/actions, not datagen_info
    assert m.extra["state_keys_source"] == "default: every 1-D/2-D obs dataset except actions"
    assert len(m.state_names) == 9 + 9 + 39


@pytest.mark.parametrize("keys", ["eef_pos,actions", "last_action", "processed_actions"])
def test_action_keys_are_refused_in_the_state(isaaclab: Path, tmp_path: Path, keys: str) -> None:
    with pytest.raises(ConfigError, match=r"--state-keys: '\w+' holds an action .* leak the label"):
        _convert(isaaclab, tmp_path / "out", state_keys=keys)


def test_nested_state_key_is_flattened(isaaclab: Path, tmp_path: Path) -> None:
    ds = _convert(isaaclab, tmp_path / "out", no_images=True, state_keys="datagen_info/eef_pose/franka,gripper_pos")
    assert len(ds.manifest.state_names) == 16 + 2
    first = next(ds.iter_decoded())
    pose = isaaclab_arrays("demo_0", 12)["obs"]["datagen_info"]["eef_pose"]["franka"][0]  # type: ignore[index]  # nested test data
    np.testing.assert_array_equal(first["state.npy"][:16], pose.reshape(-1))


def test_cli_prints_the_state_keys(isaaclab: Path, tmp_path: Path) -> None:
    proc = run_cli("convert", "robomimic", str(isaaclab), str(tmp_path / "out"), "--embodiment", "franka",
                   "--no-images", "--json")
    assert proc.returncode == 0, proc.stderr
    assert ("state = obs/eef_pos, obs/eef_quat, obs/gripper_pos (9 dims; default: Isaac Lab end-effector pose + "
            "gripper)") in proc.stderr
