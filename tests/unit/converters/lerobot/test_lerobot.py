"""The LeRobot converter on v2.1 / v3.0 folders written with pyarrow, pandas and PyAV, and on a real v3.0 recording."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cotrain.convert.pipeline import convert
from cotrain.dataset import keys
from cotrain.dataset.manifest import load_manifest
from cotrain.dataset.sequential import Dataset
from cotrain.errors import DataError
from cotrain.media.image import decode_image
from cotrain.media.video import video_info
from cotrain_converters.lerobot.converter import LeRobotOptions
from tests.fixtures.lerobot import (
    NAMES,
    TASKS,
    episode_length,
    frame_colour,
    frame_image,
    frame_task,
    write_lerobot_v21,
    write_lerobot_v30,
    write_video,
)
from tests.helpers import SHARED_DATA, run_cli

H = 4
SIZE = (48, 64)
REAL = SHARED_DATA / "lerobot-v30-so101"


def opts(**kw: Any) -> LeRobotOptions:
    return LeRobotOptions(embodiment="so101", horizon=H, **kw)


def by_episode(out: Path) -> dict[str, list[dict[str, Any]]]:
    episodes: dict[str, list[dict[str, Any]]] = {}
    for sample in Dataset.open(out).iter_decoded():
        episodes.setdefault(sample[keys.META]["episode"], []).append(sample)
    return episodes


def parquet_rows(path: Path, episode: int | None = None) -> dict[str, np.ndarray]:
    """state, action, task_index of one episode, read independently of the converter."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if episode is not None:
        mask = np.asarray(table.column("episode_index").to_pylist()) == episode
        table = table.filter(mask)
    return {"state": np.asarray(table.column("observation.state").to_pylist(), np.float32),
            "action": np.asarray(table.column("action").to_pylist(), np.float32),
            "task_index": np.asarray(table.column("task_index").to_pylist())}


def assert_chunks(samples: list[dict[str, Any]], rows: dict[str, np.ndarray]) -> None:
    t = len(rows["state"])
    assert len(samples) == t
    for i, s in enumerate(samples):
        assert s[keys.META]["frame_index"] == i
        np.testing.assert_array_equal(s[keys.STATE], rows["state"][i])
        steps = np.minimum(np.arange(i, i + H), t - 1)
        np.testing.assert_array_equal(s[keys.ACTIONS], rows["action"][steps])
        np.testing.assert_array_equal(s[keys.ACTIONS_VALID], np.arange(i, i + H) < t)


def median_colour(jpeg: bytes) -> np.ndarray:
    return np.median(decode_image(jpeg).reshape(-1, 3), axis=0)


def assert_frame_is(jpeg: bytes, episode: int, frame: int) -> None:
    """The decoded frame shows the colour code of (episode, frame); neighbours differ by >= 13 levels."""
    got = median_colour(jpeg)
    assert np.all(np.abs(got - frame_colour(episode, frame)) <= 6), (episode, frame, got, frame_colour(episode, frame))


@pytest.fixture(scope="module")
def v21(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lerobot_v21(tmp_path_factory.mktemp("lerobot") / "v21", episodes=2, frames=20, size=SIZE,
                             cameras=("front",), image_cameras=("wrist",), names_style="dict", task_switch_frame=15)


@pytest.fixture(scope="module")
def v21_out(v21: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lerobot_out") / "v21"
    convert("lerobot", v21, out, opts())
    return out


@pytest.fixture(scope="module")
def v30(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 3 episodes of 12, 13, 14 frames; episodes 0 and 1 share file-000, episode 2 is alone in file-001.
    return write_lerobot_v30(tmp_path_factory.mktemp("lerobot") / "v30", episodes=3, frames=12, size=SIZE,
                             episodes_per_file=2)


def copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / "src"))


# --- v2.1 ---------------------------------------------------------------------------------------


def test_v21_manifest(v21_out: Path) -> None:
    m = load_manifest(v21_out)
    assert (m.num_episodes, m.num_samples) == (2, 20 + 21)
    assert m.fps == 30.0 and m.horizon == H and m.embodiment == "so101"
    assert m.cameras == ["front", "wrist"]  # observation.images.front -> front
    assert m.state_names == NAMES and m.action_names == NAMES  # from {"motors": [...]}
    assert m.extra["codebase_version"] == "v2.1"


def test_v21_state_actions_chunks_tasks_exact(v21: Path, v21_out: Path) -> None:
    episodes = by_episode(v21_out)
    assert sorted(episodes) == ["0", "1"]
    for e in (0, 1):
        rows = parquet_rows(v21 / f"data/chunk-000/episode_{e:06d}.parquet")
        samples = episodes[str(e)]
        assert_chunks(samples, rows)
        for f, s in enumerate(samples):
            task = TASKS[frame_task(e, f, 15)]  # the task switches at frame 15
            assert s[keys.INSTRUCTION] == task and s[keys.META]["task"] == task
            assert s[keys.META]["timestamp"] == round(f / 30, 6) and s[keys.META]["fps"] == 30.0


def test_v21_video_frames_close_to_source(v21_out: Path) -> None:
    for e, samples in ((int(k), v) for k, v in by_episode(v21_out).items()):
        for f, s in enumerate(samples):
            decoded = decode_image(s["front.jpg"]).astype(np.int16)
            assert decoded.shape == (*SIZE, 3)
            assert np.abs(decoded - frame_image(e, f, SIZE)).mean() < 4
            assert_frame_is(s["front.jpg"], e, f)


def test_v21_image_in_parquet(v21_out: Path) -> None:
    """`image` features (PNG HF Image structs inside the parquet) become JPEG frames of the right source."""
    for e, samples in ((int(k), v) for k, v in by_episode(v21_out).items()):
        for f, s in enumerate(samples):
            decoded = decode_image(s["wrist.jpg"]).astype(np.int16)
            assert np.abs(decoded - frame_image(e, f, SIZE)).mean() < 3
            assert_frame_is(s["wrist.jpg"], e, f)


def test_v21_resample_picks_matching_frames(v21: Path, tmp_path: Path) -> None:
    convert("lerobot", v21, tmp_path / "o", opts(fps=15, cameras="front"))
    samples = by_episode(tmp_path / "o")["1"]
    assert [s[keys.META]["source_frame_index"] for s in samples] == list(range(0, 21, 2))
    for s in samples:
        assert_frame_is(s["front.jpg"], 1, s[keys.META]["source_frame_index"])
    assert load_manifest(tmp_path / "o").cameras == ["front"]


# --- v3.0 ---------------------------------------------------------------------------------------


def test_v30_concatenated_videos_give_each_episode_its_frames(v30: Path, tmp_path: Path) -> None:
    convert("lerobot", v30, tmp_path / "o", opts())
    m = load_manifest(tmp_path / "o")
    assert (m.num_episodes, m.num_samples, m.cameras) == (3, 12 + 13 + 14, ["front"])
    episodes = by_episode(tmp_path / "o")
    for e in range(3):
        rows = parquet_rows(v30 / f"data/chunk-000/file-{e // 2:03d}.parquet", episode=e)
        assert_chunks(episodes[str(e)], rows)
        for f, s in enumerate(episodes[str(e)]):
            assert_frame_is(s["front.jpg"], e, f)
            assert s[keys.INSTRUCTION] == TASKS[e % 2]


def test_v30_per_frame_tasks_and_inline_images(tmp_path: Path) -> None:
    src = write_lerobot_v30(tmp_path / "src", episodes=2, frames=10, size=SIZE, cameras=(), image_cameras=("top",),
                            task_switch_frame=4, names_style="none")
    convert("lerobot", src, tmp_path / "o", opts())
    m = load_manifest(tmp_path / "o")
    assert m.cameras == ["top"] and m.state_names == [f"state_{i}" for i in range(6)]
    assert m.action_names == [f"action_{i}" for i in range(6)]
    for e, samples in ((int(k), v) for k, v in by_episode(tmp_path / "o").items()):
        assert [s[keys.INSTRUCTION] for s in samples] == [TASKS[frame_task(e, f, 4)] for f in range(len(samples))]
        for f, s in enumerate(samples):
            assert_frame_is(s["top.jpg"], e, f)


def test_v30_av1(tmp_path: Path) -> None:
    import av

    try:
        src = write_lerobot_v30(tmp_path / "src", episodes=2, frames=10, size=SIZE, codec="av1")
    except av.error.FFmpegError as exc:  # pragma: no cover  (libsvtav1 missing from this PyAV build)
        pytest.skip(f"PyAV cannot encode AV1 with libsvtav1 here: {exc}")
    assert video_info(src / "videos/observation.images.front/chunk-000/file-000.mp4")["codec"] in ("av1", "libdav1d")
    convert("lerobot", src, tmp_path / "o", opts())
    for e, samples in ((int(k), v) for k, v in by_episode(tmp_path / "o").items()):
        assert len(samples) == episode_length(e, 10)
        for f, s in enumerate(samples):
            assert_frame_is(s["front.jpg"], e, f)


def test_v30_key_options(v30: Path, tmp_path: Path) -> None:
    convert("lerobot", v30, tmp_path / "o", opts(state_key="action", action_key="observation.state", no_images=True))
    rows = parquet_rows(v30 / "data/chunk-000/file-001.parquet", episode=2)
    samples = by_episode(tmp_path / "o")["2"]
    np.testing.assert_array_equal(np.stack([s[keys.STATE] for s in samples]), rows["action"])
    np.testing.assert_array_equal(np.stack([s[keys.ACTIONS][0] for s in samples]), rows["state"])
    with pytest.raises(DataError, match=r"no feature 'observation\.stat' \(did you mean 'observation\.state'\?\).*"
                                        r"--state-key"):
        convert("lerobot", v30, tmp_path / "bad", opts(state_key="observation.stat"))


def test_v30_tasks_parquet_with_named_index(v30: Path, tmp_path: Path) -> None:
    import pandas as pd

    src = copy(v30, tmp_path)
    frame = pd.DataFrame({"task_index": [1, 0]}, index=pd.Index(["second task", "first task"], name="task"))
    frame.to_parquet(src / "meta/tasks.parquet")
    convert("lerobot", src, tmp_path / "o", opts(no_images=True))
    episodes = by_episode(tmp_path / "o")
    assert {s[keys.INSTRUCTION] for s in episodes["0"]} == {"first task"}
    assert {s[keys.INSTRUCTION] for s in episodes["1"]} == {"second task"}


# --- the real v3.0 recording (AV1 videos listed, absent) ----------------------------------------


def test_real_dataset_no_images_via_cli(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "so101"
    proc = run_cli("convert", "lerobot", str(REAL), str(out), "--embodiment", "so101", "--no-images",
                   "--horizon", str(H), "--json", check=True)
    report = json.loads(proc.stdout)
    assert (report["samples"], report["episodes"]) == (1492, 4)
    m = load_manifest(out)
    assert m.state_names == ["shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos", "wrist_flex.pos",
                             "wrist_roll.pos", "gripper.pos"]
    assert (m.fps, m.cameras, m.extra["robot_type"]) == (30.0, [], "so101_follower")
    table = pq.read_table(REAL / "data/chunk-000/file-000.parquet")
    for name, column in (("state", "observation.state"), ("actions", "action")):
        values = np.asarray(table.column(column).to_pylist(), np.float64)
        stats = getattr(m.stats, name)
        assert values.shape == (1492, 6) and stats.count == 1492
        for field, expected in (("mean", values.mean(0)), ("std", values.std(0)), ("min", values.min(0)),
                                ("max", values.max(0)), ("q01", np.quantile(values, 0.01, axis=0)),
                                ("q99", np.quantile(values, 0.99, axis=0))):
            np.testing.assert_allclose(getattr(stats, field), expected, rtol=1e-6, atol=1e-5, err_msg=field)
    episodes = by_episode(out)
    assert [len(episodes[str(e)]) for e in range(4)] == [373, 374, 372, 373]
    assert_chunks(episodes["1"], parquet_rows(REAL / "data/chunk-000/file-000.parquet", episode=1))
    assert {s[keys.INSTRUCTION] for s in episodes["3"]} == {"Pick the orange cube and place it in the box"}
    assert not any(name.endswith(".jpg") for s in episodes["0"] for name in s)


def test_real_dataset_missing_video_names_first_file(tmp_path: Path) -> None:
    proc = run_cli("convert", "lerobot", str(REAL), str(tmp_path / "o"), "--embodiment", "so101")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "videos/observation.images.front/chunk-000/file-000.mp4, episode 0, key 'observation.images.front': " \
           "video file listed in the metadata is missing; pass --no-images" in lines[0]
    assert not (tmp_path / "o").exists()


# --- bad input ----------------------------------------------------------------------------------


def test_missing_video_fails_before_work_and_camera_selection_skips_it(v21: Path, tmp_path: Path) -> None:
    src = copy(v21, tmp_path)
    (src / "videos/chunk-000/observation.images.front/episode_000001.mp4").unlink()
    with pytest.raises(DataError) as err:
        convert("lerobot", src, tmp_path / "o", opts())
    assert str(err.value).startswith(str(src / "videos/chunk-000/observation.images.front/episode_000001.mp4")
                                     + ", episode 1, key 'observation.images.front': video file")
    assert not (tmp_path / "o").exists()
    convert("lerobot", src, tmp_path / "wrist_only", opts(cameras="wrist"))
    assert load_manifest(tmp_path / "wrist_only").cameras == ["wrist"]


def test_missing_v30_data_file(v30: Path, tmp_path: Path) -> None:
    src = copy(v30, tmp_path)
    (src / "data/chunk-000/file-001.parquet").unlink()
    with pytest.raises(DataError) as err:
        convert("lerobot", src, tmp_path / "o", opts())
    assert str(err.value) == (f"{src / 'data/chunk-000/file-001.parquet'}, episode 2: "
                              "frame parquet file listed in the metadata is missing")


def test_truncated_video_names_episode_and_frame(v21: Path, tmp_path: Path) -> None:
    src = copy(v21, tmp_path)
    write_video(src / "videos/chunk-000/observation.images.front/episode_000001.mp4",
                [frame_image(1, f, SIZE) for f in range(15)], 30)  # the episode has 21 frames
    with pytest.raises(DataError) as err:
        convert("lerobot", src, tmp_path / "o", opts())
    assert str(err.value) == (f"{src / 'videos/chunk-000/observation.images.front/episode_000001.mp4'}, episode 1, "
                              "frame 15: truncated video: it ends after 15 frames, frame 15 was needed")
    report = convert("lerobot", src, tmp_path / "skip", opts(on_bad_episode="skip"))
    assert report.samples == 20 and len(report.skipped) == 1 and "truncated video" in report.skipped[0]


def test_v30_video_range_shorter_than_episode(v30: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = copy(v30, tmp_path)
    path = src / "meta/episodes/chunk-000/file-000.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[1]["videos/observation.images.front/to_timestamp"] -= 2 / 30  # episode 1 has 13 frames
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError, match=r"meta/episodes/chunk-000/file-000\.parquet, episode 1, "
                                        r"key 'observation\.images\.front': video time range "
                                        r"0\.400\.\.0\.767 s holds 11\.0 frames at 30 fps but the episode has 13"):
        convert("lerobot", src, tmp_path / "o", opts())


def test_nan_in_state(v21: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = copy(v21, tmp_path)
    path = src / "data/chunk-000/episode_000000.parquet"
    table = pq.read_table(path)
    state = table.column("observation.state").to_pylist()
    state[5][2] = float("nan")
    i = table.column_names.index("observation.state")
    pq.write_table(table.set_column(i, "observation.state", pa.array(state, table.schema.field(i).type)), path)
    with pytest.raises(DataError) as err:
        convert("lerobot", src, tmp_path / "o", opts(no_images=True))
    assert str(err.value) == (f"{path}, episode 0, frame 5, key 'observation.state': "
                              "NaN in observation.state dimension 2")


def test_unknown_version(v21: Path, tmp_path: Path) -> None:
    src = copy(v21, tmp_path)
    info = json.loads((src / "meta/info.json").read_text())
    info["codebase_version"] = "v9.9"
    (src / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DataError) as err:
        convert("lerobot", src, tmp_path / "o", opts())
    assert str(err.value) == (f"{src / 'meta/info.json'}, key 'codebase_version': "
                              "unknown format version v9.9; supported v2.1, v3.0, v3.1")


# --- decoder threads ------------------------------------------------------------------------------


def output_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".tar", ".json")}


def test_decoder_thread_limits_do_not_change_the_output(v21: Path, v21_out: Path, tmp_path: Path) -> None:
    from cotrain.convert.spec import RunOptions

    one = tmp_path / "one"
    convert("lerobot", v21, one, opts(), RunOptions(decode_threads=1))
    pool = tmp_path / "pool"
    convert("lerobot", v21, pool, opts(), RunOptions(workers=2))  # each worker gets a share of the cores
    assert output_bytes(one) == output_bytes(v21_out) == output_bytes(pool)


def test_iter_video_frames_applies_the_thread_setting(v21: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import av

    from cotrain.media.video import DECODE_THREADS_ENV, decode_threads_set, iter_video_frames

    opened: list[Any] = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(real_open(*a, **k)) or opened[-1])
    monkeypatch.delenv(DECODE_THREADS_ENV, raising=False)
    video = next((v21 / "videos").rglob("*.mp4"))
    with decode_threads_set(1):
        frames = iter_video_frames(video, [0, 1])
        next(frames)
        assert opened[-1].streams.video[0].codec_context.thread_count == 1
        frames.close()
    assert DECODE_THREADS_ENV not in __import__("os").environ  # restored after the block


def test_decode_threads_env_errors_and_worker_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    from cotrain.convert.backend import usable_cores, worker_decode_threads
    from cotrain.errors import ConfigError
    from cotrain.media.video import DECODE_THREADS_ENV, decode_threads

    monkeypatch.setenv(DECODE_THREADS_ENV, "two")
    with pytest.raises(ConfigError, match="COTRAIN_DECODE_THREADS='two': expected a whole number"):
        decode_threads()
    monkeypatch.setenv(DECODE_THREADS_ENV, "3")
    assert decode_threads() == 3
    assert worker_decode_threads(3, workers=8, backend="process") == 3  # an explicit request wins
    assert worker_decode_threads(0, workers=1, backend="process") == 0  # one worker: FFmpeg decides
    assert worker_decode_threads(0, workers=2, backend="process") == max(1, usable_cores() // 2)
    assert worker_decode_threads(0, workers=10**6, backend="process") == 1
    assert worker_decode_threads(0, workers=4, backend="ray") == 1  # a Ray task reserves one CPU


def test_v30_episode_rows_use_row_group_statistics(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cotrain_converters.lerobot.converter import _episode_rows, _may_hold

    ids = [0] * 12 + [1] * 13 + [2] * 14
    table = pa.table({"episode_index": ids, "frame_index": [i for n in (12, 13, 14) for i in range(n)],
                      "action": [[float(i)] for i in range(len(ids))]})
    path = tmp_path / "file-000.parquet"
    pq.write_table(table, path, row_group_size=5)  # episode 1 spans row groups 2..4 of 8
    with pq.ParquetFile(path) as pf:
        touched = [g for g in range(pf.num_row_groups) if _may_hold(pf.metadata.row_group(g), 1)]
        rows = _episode_rows(pf, ["action", "episode_index", "frame_index"], 1)
    assert touched == [2, 3, 4]
    assert rows.column("frame_index").to_pylist() == list(range(13))
    assert rows.column("action").to_pylist() == [[float(i)] for i in range(12, 25)]


# --- What real producers write (issue 18) ---------------------------------------------------------


def test_v30_to_timestamp_of_the_last_frame_is_accepted(tmp_path: Path) -> None:
    # to_timestamp = from + (N-1)/fps: one frame short of LeRobot's end-exclusive range, all N frames in the mp4.
    src = write_lerobot_v30(tmp_path / "src", episodes=3, frames=12, size=SIZE, episodes_per_file=2,
                            to_timestamp="last_frame")
    convert("lerobot", src, tmp_path / "o", opts())
    episodes = by_episode(tmp_path / "o")
    assert [len(episodes[str(e)]) for e in range(3)] == [12, 13, 14]
    for e in range(3):
        for f, s in enumerate(episodes[str(e)]):
            assert_frame_is(s["front.jpg"], e, f)  # the last frame is the episode's own, not the next one's


def test_v30_last_frame_end_with_frames_really_missing_still_fails(tmp_path: Path) -> None:
    src = write_lerobot_v30(tmp_path / "src", episodes=3, frames=12, size=SIZE, episodes_per_file=2,
                            to_timestamp="last_frame")
    video = src / "videos/observation.images.front/chunk-000/file-001.mp4"  # episode 2 alone, 14 frames
    write_video(video, [frame_image(2, f, SIZE) for f in range(13)], 30)
    with pytest.raises(DataError) as err:
        convert("lerobot", src, tmp_path / "o", opts())
    assert str(err.value) == (f"{video}, episode 2, frame 13: truncated video: it ends after 13 frames, "
                              "frame 13 was needed")


def test_v31_with_language_columns_converts(tmp_path: Path) -> None:
    src = write_lerobot_v30(tmp_path / "src", episodes=3, frames=12, size=SIZE, language=True)
    convert("lerobot", src, tmp_path / "o", opts())
    m = load_manifest(tmp_path / "o")
    assert m.extra["codebase_version"] == "v3.1" and (m.num_episodes, m.num_samples) == (3, 39)
    assert m.extra["language_columns"] == ["language_persistent", "language_events"]
    assert m.cameras == ["front"]  # language features are neither cameras nor state
    for e, samples in ((int(k), v) for k, v in by_episode(tmp_path / "o").items()):
        assert_chunks(samples, parquet_rows(src / "data/chunk-000/file-000.parquet", episode=e))


def test_inline_image_paths_stay_inside_and_corrupt_jpegs_fail(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.fixtures.vl import encode

    src = write_lerobot_v30(tmp_path / "src", episodes=2, frames=6, size=SIZE, cameras=(), image_cameras=("top",))
    path = src / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    col = table.column_names.index("observation.images.top")
    secret = tmp_path / "secret.png"
    secret.write_bytes(encode(frame_image(0, 0, SIZE), "PNG"))

    def write_images(change: dict[int, dict[str, object]]) -> None:
        images = table.column(col).to_pylist()
        for row, value in change.items():
            images[row] = value
        pq.write_table(table.set_column(col, table.schema.field(col), pa.array(images, table.schema.field(col).type)),
                       path)

    for ref in ("../../../secret.png", str(secret)):
        write_images({3: {"bytes": None, "path": ref}})
        with pytest.raises(DataError, match=r"file-000\.parquet, episode 0, frame 3, key 'observation\.images\.top': "
                                            r"image path .* outside the dataset folder"):
            convert("lerobot", src, tmp_path / "o", opts())
    jpeg = encode(frame_image(1, 2, SIZE), "JPEG")
    write_images({6 + 2: {"bytes": jpeg[: len(jpeg) // 2], "path": None}})
    with pytest.raises(DataError, match=r"file-000\.parquet, episode 1, frame 2, key 'observation\.images\.top': "
                                        r"undecodable image"):
        convert("lerobot", src, tmp_path / "o", opts())
    report = convert("lerobot", src, tmp_path / "skip", opts(on_bad_episode="skip"))
    assert report.samples == 6 and len(report.skipped) == 1 and "undecodable image" in report.skipped[0]
