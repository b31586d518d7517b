"""The ALOHA converter on h5py-written episode files, raw and JPEG-compressed: exact values, options, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from cotrain.convert.pipeline import convert
from cotrain.dataset.sequential import Dataset
from cotrain.errors import DataError
from cotrain.media.image import decode_image
from cotrain_converters.hdf5.aloha import AlohaOptions
from tests.fixtures.aloha import write_aloha
from tests.helpers import episodes_of, run_cli

RAW_CAMS = ("cam_high", "cam_left_wrist")
# ALOHA's recording order; HDF5 lists the datasets by name (cam_high, cam_left_wrist, cam_low).
RECORD_CAMS = ("cam_high", "cam_low", "cam_left_wrist")


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_aloha(tmp_path_factory.mktemp("aloha") / "raw", cameras=RAW_CAMS)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_aloha(tmp_path_factory.mktemp("aloha") / "compressed", cameras=RECORD_CAMS, compressed=True)


def _convert(src: Path, out: Path, **options: Any) -> Dataset:
    convert("aloha", src, out, AlohaOptions(embodiment="aloha", **options))
    return Dataset.open(out)


def _source(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        out = {"qpos": f["observations/qpos"][()], "action": f["action"][()]}
        for cam in f["observations/images"]:
            out[cam] = f[f"observations/images/{cam}"][()]
        if "compress_len" in f:
            out["compress_len"] = f["compress_len"][()]
    return out


def _assert_frame(jpeg: bytes, frames: np.ndarray, t: int, tolerance: float = 6.0) -> None:
    """The decoded JPEG is source frame t (close in pixels) and no other frame of the episode.

    The tolerance is a mean absolute error in grey levels: about 4 after our quality-90 encode, about
    8 for the fixture's quality-50 compressed frames; neighbouring frames differ by 10 or more.
    """
    errors = np.abs(decode_image(jpeg).astype(np.int16)[None] - frames.astype(np.int16)).mean(axis=(1, 2, 3))
    assert errors[t] < tolerance and int(np.argmin(errors)) == t


def _copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / src.name))


def test_raw_round_trip_is_exact(raw: Path, tmp_path: Path) -> None:
    ds = _convert(raw, tmp_path / "out")
    eps = episodes_of(ds)
    assert list(eps) == ["episode_0", "episode_1", "episode_2"]
    for name, samples in eps.items():
        src = _source(raw / f"{name}.hdf5")
        n = len(src["action"])
        assert len(samples) == n == 20 + int(name[-1])
        for t, s in enumerate(samples):
            np.testing.assert_array_equal(s["state.npy"], src["qpos"][t])
            np.testing.assert_array_equal(s["actions.npy"], src["action"][np.minimum(np.arange(t, t + 16), n - 1)])
            np.testing.assert_array_equal(s["actions_valid.npy"], np.arange(t, t + 16) < n)
            assert s["meta.json"]["timestamp"] == pytest.approx(t / 50)
        for t in (0, n // 2, n - 1):
            for cam in RAW_CAMS:
                _assert_frame(samples[t][f"{cam}.jpg"], src[cam], t)
    manifest = ds.manifest
    assert manifest.cameras == list(RAW_CAMS) and manifest.fps == 50.0
    assert manifest.state_names[:7] == ["left_waist", "left_shoulder", "left_elbow", "left_forearm_roll",
                                        "left_wrist_angle", "left_wrist_rotate", "left_gripper"]
    assert manifest.extra == {"compressed_images": False}


def _jpeg_rows(src: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
    """The true JPEG bytes per camera; the fixture writes compress_len rows in name order."""
    return {cam: [src[cam][t, : int(src["compress_len"][row, t])].tobytes() for t in range(len(src[cam]))]
            for row, cam in enumerate(sorted(RECORD_CAMS))}


def test_compressed_round_trip_keeps_the_jpeg_bytes(compressed: Path, tmp_path: Path) -> None:
    ds = _convert(compressed, tmp_path / "out", horizon=4)
    raw = _source(write_aloha(tmp_path / "raw", episodes=1, cameras=RECORD_CAMS) / "episode_0.hdf5")
    for name, samples in episodes_of(ds).items():
        src = _source(compressed / f"{name}.hdf5")
        np.testing.assert_array_equal(np.stack([s["state.npy"] for s in samples]), src["qpos"])
        np.testing.assert_array_equal(np.stack([s["actions.npy"][0] for s in samples]), src["action"])
        for cam, jpegs in _jpeg_rows(src).items():
            assert [s[f"{cam}.jpg"] for s in samples] == jpegs  # passed through, not re-encoded
            if name == "episode_0":  # and they are the recorded pictures (same seed as the raw fixture)
                for t in (0, 9, 19):
                    _assert_frame(jpegs[t], raw[cam], t, tolerance=10.0)
    assert ds.manifest.extra == {"compressed_images": True}
    assert ds.manifest.cameras == sorted(RECORD_CAMS)


def test_compress_len_in_recording_order_still_decodes_each_camera(compressed: Path, tmp_path: Path) -> None:
    # aloha's record_episodes.py writes compress_len rows in its camera_names order, not in name order.
    src = _copy(compressed, tmp_path)
    truth = _jpeg_rows(_source(src / "episode_1.hdf5"))
    order = [sorted(RECORD_CAMS).index(c) for c in RECORD_CAMS]
    for path in src.glob("*.hdf5"):
        with h5py.File(path, "r+") as f:
            f["compress_len"][...] = f["compress_len"][()][order]
    samples = episodes_of(_convert(src, tmp_path / "out"))["episode_1"]
    for cam in RECORD_CAMS:
        assert [s[f"{cam}.jpg"] for s in samples] == truth[cam]


def test_camera_selection_and_renaming(raw: Path, tmp_path: Path) -> None:
    ds = _convert(raw, tmp_path / "out", cameras="cam_high=top")
    assert ds.manifest.cameras == ["top"]
    sample = episodes_of(ds)["episode_2"][3]
    assert sorted(k for k in sample if k.endswith(".jpg")) == ["top.jpg"]
    _assert_frame(sample["top.jpg"], _source(raw / "episode_2.hdf5")["cam_high"], 3)


@pytest.mark.parametrize(("bound", "size"), [("32", (24, 32)), ("30x100", (30, 40)), ("96", (72, 96))])
def test_image_size_bound_keeps_the_aspect_ratio(raw: Path, tmp_path: Path, bound: str, size: tuple[int, int]) -> None:
    ds = _convert(raw, tmp_path / "out", image_size=bound, cameras="cam_left_wrist")
    first = next(ds.iter_decoded())
    assert decode_image(first["cam_left_wrist.jpg"]).shape == (*size, 3)  # source frames are 48x64
    assert ds.manifest.image_size == [int(v) for v in (bound.split("x") * 2)[:2]]


def test_fps_25_takes_every_second_frame(raw: Path, tmp_path: Path) -> None:
    ds = _convert(raw, tmp_path / "out", fps=25)
    assert ds.manifest.fps == 25.0
    for name, samples in episodes_of(ds).items():
        src = _source(raw / f"{name}.hdf5")
        n = len(src["action"])
        idx = np.arange(0, n, 2)  # 20 frames at 50 Hz span 0.38 s: ticks 0, 0.04, ..., 0.36 -> 10 frames
        assert [s["meta.json"]["source_frame_index"] for s in samples] == idx.tolist()
        for t, s in enumerate(samples):
            np.testing.assert_array_equal(s["state.npy"], src["qpos"][idx[t]])
            np.testing.assert_array_equal(s["actions.npy"], src["action"][idx[np.minimum(np.arange(t, t + 16),
                                                                                       len(idx) - 1)]])
            assert s["meta.json"]["timestamp"] == pytest.approx(t / 25)
        _assert_frame(samples[3]["cam_high.jpg"], src["cam_high"], 6)


def test_horizon_4_pads_with_the_last_action(raw: Path, tmp_path: Path) -> None:
    samples = episodes_of(_convert(raw, tmp_path / "out", horizon=4, no_images=True))["episode_0"]
    action = _source(raw / "episode_0.hdf5")["action"]
    assert len(samples) == 20
    np.testing.assert_array_equal(samples[17]["actions.npy"], action[[17, 18, 19, 19]])
    assert samples[17]["actions_valid.npy"].tolist() == [True, True, True, False]
    np.testing.assert_array_equal(samples[19]["actions.npy"], action[[19, 19, 19, 19]])
    assert samples[19]["actions_valid.npy"].tolist() == [True, False, False, False]
    assert samples[16]["actions_valid.npy"].tolist() == [True] * 4
    assert not any(k.endswith(".jpg") for k in samples[0])


def test_depth_streams_are_not_cameras(compressed: Path, tmp_path: Path) -> None:
    # act-plus-plus's compress_data.py keeps *_depth raw and leaves it out of compress_len.
    src = _copy(compressed, tmp_path)
    for path in src.glob("*.hdf5"):
        with h5py.File(path, "r+") as f:
            n = f["action"].shape[0]
            f.create_dataset("observations/images/cam_high_depth", data=np.full((n, 48, 64), 900, np.uint16))
    ds = _convert(src, tmp_path / "out")
    assert ds.manifest.cameras == sorted(RECORD_CAMS)


def test_missing_action_is_an_error_or_skipped(raw: Path, tmp_path: Path) -> None:
    src = _copy(raw, tmp_path)
    with h5py.File(src / "episode_1.hdf5", "r+") as f:
        del f["action"]
    with pytest.raises(DataError) as err:
        _convert(src, tmp_path / "out")
    assert str(err.value) == f"{src / 'episode_1.hdf5'}, episode episode_1, key 'action': missing dataset 'action'"
    assert not (tmp_path / "out").exists()
    ds = _convert(src, tmp_path / "skip", on_bad_episode="skip", no_images=True)
    assert list(episodes_of(ds)) == ["episode_0", "episode_2"]
    assert [(s.episode, s.reason) for s in ds.manifest.skipped_episodes] == [("episode_1", str(err.value))]


def test_compress_len_with_wrong_rows_is_an_error(compressed: Path, tmp_path: Path) -> None:
    src = _copy(compressed, tmp_path)
    with h5py.File(src / "episode_2.hdf5", "r+") as f:
        rows = f["compress_len"][()]
        del f["compress_len"]
        f.create_dataset("compress_len", data=rows[:2])
    with pytest.raises(DataError) as err:
        _convert(src, tmp_path / "out")
    assert (err.value.episode, err.value.key) == ("episode_2", "compress_len")
    assert err.value.problem == ("compress_len has shape (2, 22), expected (3, 22) "
                                 "(one row per compressed camera, one column per frame)")


def test_a_row_that_is_not_a_jpeg_names_the_frame(compressed: Path, tmp_path: Path) -> None:
    src = _copy(compressed, tmp_path)
    with h5py.File(src / "episode_0.hdf5", "r+") as f:
        f["observations/images/cam_low"][9] = 0  # a frame the recorder never filled
    with pytest.raises(DataError) as err:
        _convert(src, tmp_path / "out")
    assert (err.value.episode, err.value.frame, err.value.key) == ("episode_0", 9, "observations/images/cam_low")


def test_truncated_file_is_an_error(raw: Path, tmp_path: Path) -> None:
    src = _copy(raw, tmp_path)
    data = (src / "episode_2.hdf5").read_bytes()
    (src / "episode_2.hdf5").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        _convert(src, tmp_path / "out", no_images=True)
    assert (err.value.file, err.value.episode) == (str(src / "episode_2.hdf5"), "episode_2")
    assert err.value.problem.startswith("unreadable or truncated HDF5 file: ")


def test_cli_reports_missing_action_in_one_line(raw: Path, tmp_path: Path) -> None:
    src = _copy(raw, tmp_path)
    with h5py.File(src / "episode_0.hdf5", "r+") as f:
        del f["action"]
    proc = run_cli("convert", "aloha", str(src), str(tmp_path / "out"), "--embodiment", "aloha", "--fps", "25")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {src / 'episode_0.hdf5'}, episode episode_0, key 'action': missing dataset 'action'"]
    assert not (tmp_path / "out").exists()
