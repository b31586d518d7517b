"""Dense annotations: segment files (JSONL, LeRobot language columns, AgiBot) and scripted primitives.

Robot inputs are real ALOHA HDF5 files (h5py) converted by the aloha converter; LeRobot language
columns are written with pyarrow in the lerobot schema (`datasets/language.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cotrain.annotate.primitives import (
    DimMap,
    PrimitiveRules,
    describe_move,
    detect_dims,
    move_vector,
    parse_dims,
    trajectory_primitives,
)
from cotrain.annotate.segments import DEFAULT_PROMPT, AnnotateOptions, EpisodeFrames, Segment, annotate, match_segments
from cotrain.convert.pipeline import convert
from cotrain.convert.spec import RobotOptions, RunOptions
from cotrain.dataset.manifest import load_manifest
from cotrain.dataset.sequential import Dataset
from cotrain.errors import ConfigError, DataError
from tests.fixtures.aloha import write_aloha
from tests.helpers import run_cli, tree_digest

EP_LEN = {"episode_0": 20, "episode_1": 21, "episode_2": 22}  # write_aloha: frames + episode number


@pytest.fixture(scope="module")
def robot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("robot")
    raw = write_aloha(root / "raw", episodes=3, frames=20, cameras=("cam_high",), size=(16, 16))
    # shard_size 20: one shard per episode, so annotation units (= input shards) are several
    convert("aloha", raw, root / "robot", RobotOptions(embodiment="aloha", shard_size=20, task="stack the cube"))
    return root / "robot"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


SEGMENTS = [
    {"episode": "episode_0", "start": 0, "end": 10, "text": "reach the cube"},
    {"episode": "episode_0", "start": 8, "end": 25, "text": "grasp the cube"},  # overlaps; ends past frame 20
    {"episode": 1, "start_s": 0.1, "end_s": 0.2, "text": "lift"},  # index 1 = episode_1; 50 fps: frames 5..9
    {"episode": "episode_1", "start": 15, "end": 15, "text": "nothing"},  # empty
    {"episode": "episode_7", "start": 0, "end": 3, "text": "ghost"},  # no such episode
]


def _targets(out: Path) -> dict[tuple[str, int], str]:
    return {(s["meta.json"]["episode"], s["meta.json"]["frame_index"]): s["target.txt"]
            for s in Dataset.open(out).iter_decoded()}


def test_jsonl_exact_targets_and_counts(robot: Path, tmp_path: Path) -> None:
    ann = _jsonl(tmp_path / "segments.jsonl", SEGMENTS)
    _, report = annotate(robot, tmp_path / "out", AnnotateOptions(from_file=str(ann)))
    expected = {("episode_0", f): "reach the cube" for f in range(8)}
    expected.update({("episode_0", f): "grasp the cube" for f in range(8, 20)})
    expected.update({("episode_1", f): "lift" for f in range(5, 10)})
    assert _targets(tmp_path / "out") == expected
    assert report is not None
    counts = {k: v for k, v in report.items() if k not in ("problems", "source")}
    assert counts == {
        "uncovered": "skip", "episodes": 3, "episodes_annotated": 2, "episodes_unannotated": 1,
        "unannotated_episode_ids": ["episode_2"], "segments": 4, "segments_out_of_range": 1,
        "segments_overlapping": 1, "segments_empty": 1, "segments_unmatched": 1, "annotation_episodes_unmatched": 1,
        "unmatched_episode_ids": ["episode_7"], "frames": 63, "frames_annotated": 25, "frames_uncovered": 38,
        "samples": 25, "problems_total": 3,
    }
    assert report["source"]["format"] == "jsonl" and report["source"]["file"] == "segments.jsonl"
    assert any("'grasp the cube' (segments.jsonl line 2) outside the episode's frames [0, 20)" in p
               for p in report["problems"])
    assert any("empty segment [15, 15) 'nothing'" in p for p in report["problems"])
    manifest = load_manifest(tmp_path / "out")
    assert manifest.modality == "annotation" and manifest.num_samples == 25 and manifest.num_episodes == 2
    assert manifest.extra["annotation"] == report and manifest.name == "out"


def test_sample_members_copied_through(robot: Path, tmp_path: Path) -> None:
    ann = _jsonl(tmp_path / "a.jsonl", SEGMENTS[:1])
    annotate(robot, tmp_path / "out", AnnotateOptions(from_file=str(ann), prompt="Task: {instruction}. Subtask:"))
    source = {s["__key__"]: s for s in Dataset.open(robot).iter_raw()}
    samples = list(Dataset.open(tmp_path / "out").iter_raw())
    assert len(samples) == 10
    for s in samples:
        meta = json.loads(s["meta.json"])
        src = source[meta["source_key"]]
        assert s["cam_high.jpg"] == src["cam_high.jpg"] and s["state.npy"] == src["state.npy"]
        assert s["instruction.txt"] == b"stack the cube"
        assert s["prompt.txt"] == b"Task: stack the cube. Subtask:"
        assert meta["modality"] == "annotation" and meta["annotation"] == {"source": "jsonl", "segment": [0, 10],
                                                                           "seconds": False}
        assert sorted(k for k in s if not k.startswith("__")) == [
            "cam_high.jpg", "instruction.txt", "meta.json", "prompt.txt", "state.npy", "target.txt"]
    stats = load_manifest(tmp_path / "out").stats.state
    assert stats is not None and stats.count == 10


def test_uncovered_empty_keeps_every_frame(robot: Path, tmp_path: Path) -> None:
    ann = _jsonl(tmp_path / "a.jsonl", SEGMENTS)
    _, report = annotate(robot, tmp_path / "out", AnnotateOptions(from_file=str(ann), uncovered="empty"))
    targets = _targets(tmp_path / "out")
    assert len(targets) == 63 and report is not None and report["samples"] == 63
    assert sum(t == "" for t in targets.values()) == 38 and targets[("episode_2", 21)] == ""
    assert load_manifest(tmp_path / "out").num_episodes == 3
    first = next(Dataset.open(tmp_path / "out").iter_decoded())
    assert first["prompt.txt"] == DEFAULT_PROMPT


def test_integer_episode_prefers_matching_id_over_index() -> None:
    episodes = [EpisodeFrames("5", 0, (0,), (0,)), EpisodeFrames("0", 1, (0,), (0,))]
    segs = [Segment(0, 0, 1, "a", "x"), Segment(5, 0, 1, "b", "x"), Segment(1, 0, 1, "c", "x"),
            Segment("9", 0, 1, "d", "x")]
    matched, unmatched = match_segments(episodes, segs)
    # 0 and 5 name episodes "0" and "5"; 1 names no episode, so it is episode_index 1 ("0"); "9" nothing
    assert matched == {"0": [0, 2], "5": [1]} and unmatched == ["9"]


def _write_lerobot_language(root: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    persistent_row = pa.struct([("role", pa.string()), ("content", pa.string()), ("style", pa.string()),
                                ("timestamp", pa.float32()), ("camera", pa.string()),
                                ("tool_calls", pa.list_(pa.string()))])
    event_row = pa.struct([("role", pa.string()), ("content", pa.string()), ("style", pa.string()),
                           ("camera", pa.string()), ("tool_calls", pa.list_(pa.string()))])

    def row(content: str, style: str, ts: float) -> dict:
        return {"role": "assistant", "content": content, "style": style, "timestamp": ts, "camera": None,
                "tool_calls": None}

    persistent = {0: [row("reach", "subtask", 0.0), row("make a plan", "plan", 0.0), row("grasp", "subtask", 0.2),
                      row("too late", "subtask", 5.0)],
                  1: [row("push", "subtask", 0.1)]}
    events = {(1, 3): [{"role": "user", "content": "stop there", "style": "interjection", "camera": None,
                        "tool_calls": None}]}
    cols: dict[str, list] = {k: [] for k in ("episode_index", "frame_index", "timestamp", "index", "task_index",
                                             "language_persistent", "language_events")}
    for ep, length in ((0, 20), (1, 21)):
        for f in range(length):
            for key, value in (("episode_index", ep), ("frame_index", f), ("timestamp", f / 50),
                               ("index", len(cols["index"])), ("task_index", 0),
                               ("language_persistent", persistent[ep]), ("language_events", events.get((ep, f), []))):
                cols[key].append(value)
    types = {"episode_index": pa.int64(), "frame_index": pa.int64(), "timestamp": pa.float32(), "index": pa.int64(),
             "task_index": pa.int64(), "language_persistent": pa.list_(persistent_row),
             "language_events": pa.list_(event_row)}
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "meta").mkdir()
    pq.write_table(pa.table({k: pa.array(v, type=types[k]) for k, v in cols.items()}),
                   root / "data" / "chunk-000" / "file-000.parquet")
    features = {"language_persistent": {"dtype": "language", "shape": [1], "names": None},
                "language_events": {"dtype": "language", "shape": [1], "names": None}}
    (root / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v3.0", "fps": 50, "features": features}))
    return root


def test_lerobot_persistent_subtasks(robot: Path, tmp_path: Path) -> None:
    lerobot = _write_lerobot_language(tmp_path / "lerobot")
    _, report = annotate(robot, tmp_path / "out", AnnotateOptions(from_file=str(lerobot)))
    expected = {("episode_0", f): "reach" for f in range(10)}
    expected.update({("episode_0", f): "grasp" for f in range(10, 20)})
    expected.update({("episode_1", f): "push" for f in range(5, 21)})
    assert _targets(tmp_path / "out") == expected
    assert report is not None and report["source"]["format"] == "lerobot"
    assert (report["segments"], report["segments_out_of_range"], report["unannotated_episode_ids"]) == (
        4, 1, ["episode_2"])
    assert any("'too late'" in p and "subtask row at 5 s" in p for p in report["problems"])


def test_lerobot_event_style(robot: Path, tmp_path: Path) -> None:
    lerobot = _write_lerobot_language(tmp_path / "lerobot")
    annotate(robot, tmp_path / "out", AnnotateOptions(from_file=str(lerobot), style="interjection"))
    assert _targets(tmp_path / "out") == {("episode_1", 3): "stop there"}


def test_lerobot_without_language_columns(robot: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "plain"
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "meta").mkdir()
    (root / "meta" / "info.json").write_text("{}")
    pq.write_table(pa.table({"episode_index": [0], "frame_index": [0], "timestamp": [0.0]}),
                   root / "data" / "chunk-000" / "file-000.parquet")
    with pytest.raises(DataError, match="no column 'language_persistent': this LeRobot dataset has no language"):
        annotate(robot, tmp_path / "out", AnnotateOptions(from_file=str(root)))
    assert not (tmp_path / "out").exists()


def test_agibot_task_info(robot: Path, tmp_path: Path) -> None:
    folder = tmp_path / "agibot" / "task_info"
    folder.mkdir(parents=True)
    entries = [
        {"episode_id": 0, "task_id": 327, "task_name": "Stack", "init_scene_text": "A cube on a table.",
         "lable_info": {"action_config": [  # AgiBot's own spelling
             {"start_frame": 0, "end_frame": 12, "action_text": "拿起方块",
              "english_action_text": "Pick up the cube", "skill": "Pick"},
             {"start_frame": 12, "end_frame": 21, "action_text": "Place the cube", "skill": "Place"}]}},
        {"episode_id": 2, "label_info": {"action_config": [
            {"start_frame": 0, "end_frame": 22, "action_text": "Wipe"}]}},
        {"episode_id": 649078, "label_info": {"action_config": [
            {"start_frame": 0, "end_frame": 5, "action_text": "x"}]}},
    ]
    (folder / "task_327.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    _, report = annotate(robot, tmp_path / "out", AnnotateOptions(from_file=str(tmp_path / "agibot")))
    expected = {("episode_0", f): "Pick up the cube" for f in range(12)}
    expected.update({("episode_0", f): "Place the cube" for f in range(12, 20)})
    expected.update({("episode_2", f): "Wipe" for f in range(22)})
    assert _targets(tmp_path / "out") == expected
    assert report is not None and report["source"]["format"] == "agibot"
    assert (report["segments_out_of_range"], report["segments_overlapping"], report["unannotated_episode_ids"],
            report["unmatched_episode_ids"]) == (1, 0, ["episode_1"], ["649078"])


@pytest.mark.parametrize(("line", "fragment"), [
    ('{"episode": "episode_0", "start": 0, "end": 3, "text": 5}',
     "episode episode_0, key 'text': line 2: 'text' must be a string, got 5"),
    ('{"episode": "episode_0", "start": 0.5, "end": 3, "text": "a"}',
     "line 2: 'start' and 'end' must be integer frames"),
    ('{"episode": "episode_0", "text": "a"}', "line 2: needs 'start'/'end' (frames) or 'start_s'/'end_s' (seconds)"),
    ("{not json", "bad.jsonl: line 2: invalid JSON"),
])
def test_malformed_jsonl_names_line(robot: Path, tmp_path: Path, line: str, fragment: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(SEGMENTS[0]) + "\n" + line + "\n")
    with pytest.raises(DataError) as err:
        annotate(robot, tmp_path / "out", AnnotateOptions(from_file=str(path)))
    assert fragment in str(err.value) and str(path) in str(err.value)


def test_needs_exactly_one_source(robot: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give exactly one of --from FILE"):
        annotate(robot, tmp_path / "o1", AnnotateOptions())
    ann = _jsonl(tmp_path / "a.jsonl", SEGMENTS[:1])
    with pytest.raises(ConfigError, match="give exactly one of --from FILE"):
        annotate(robot, tmp_path / "o2", AnnotateOptions(from_file=str(ann), scripted=True))


def test_changed_annotation_file_is_not_already_done(robot: Path, tmp_path: Path) -> None:
    ann = _jsonl(tmp_path / "a.jsonl", SEGMENTS[:1])
    annotate(robot, tmp_path / "out", AnnotateOptions(from_file=str(ann)))
    report, _ = annotate(robot, tmp_path / "out", AnnotateOptions(from_file=str(ann)))
    assert report.already_done
    _jsonl(ann, SEGMENTS[:2])
    with pytest.raises(ConfigError, match="annotated from an earlier version of"):
        annotate(robot, tmp_path / "out", AnnotateOptions(from_file=str(ann)))
    annotate(robot, tmp_path / "out", AnnotateOptions(from_file=str(ann)), RunOptions(overwrite=True))
    assert len(_targets(tmp_path / "out")) == 20


def test_workers_give_the_same_bytes(robot: Path, tmp_path: Path) -> None:
    ann = _jsonl(tmp_path / "a.jsonl", SEGMENTS)
    opts = AnnotateOptions(from_file=str(ann), name="ann", shard_size=25)
    annotate(robot, tmp_path / "serial", opts)
    annotate(robot, tmp_path / "pool", opts, RunOptions(workers=2))
    assert tree_digest(tmp_path / "serial") == tree_digest(tmp_path / "pool")


# --- scripted primitives -------------------------------------------------------------------------

XYZ = DimMap(0, 1, 2, 3, 4, 5, 6)
RULES = PrimitiveRules()


@pytest.mark.parametrize(("delta", "phrase"), [
    ([0.1, 0, 0, 0, 0, 0, 0], "move forward"),
    ([-0.1, 0, 0, 0, 0, 0, 0], "move backward"),
    ([0, 0.05, 0.05, 0, 0, 0, 0], "move left and up"),  # sum 0.1 > 0.09: rescaled to 0.045 each
    ([0.1, 0.02, 0, 0, 0, 0, 0], "move forward"),  # rescaled to 0.075, 0.015: the small one drops
    ([0, -0.04, -0.02, 0, 0, 0, 0], "move right"),
    ([0, 0, 0, 0.5, 0, 0, 0], "tilt up"),  # rotations / 10 -> 0.05
    ([0, 0, 0, 0, -0.5, 0, 0], "tilt down"),  # pitch counts when roll is 0
    ([0, 0, 0, 0, 0, 0.4, 0], "rotate counterclockwise"),
    ([0, 0, 0, 0, 0, -0.4, 0], "rotate clockwise"),
    ([0, 0, 0, 0, 0, -6.2, 0], "stop"),  # yaw 3.1 -> -3.1 wraps to +0.08 rad: no turn
    ([0, 0, 0.02, 0.2, 0, 0, 0.02], "stop"),  # everything under the threshold
    ([0, 0, 0, 0, 0, 0, 0.5], "open gripper"),
    ([-0.05, 0, 0.05, 0.4, 0, -0.4, -0.5], "move backward and up, tilt up, rotate clockwise, close gripper"),
])
def test_move_phrases(delta: list[float], phrase: str) -> None:
    assert describe_move(move_vector(np.array(delta), XYZ, RULES), RULES) == phrase


def test_gripper_convention_and_missing_dims() -> None:
    close_high = PrimitiveRules(gripper_increase="close")
    assert describe_move(move_vector(np.array([0, 0, 0, 0, 0, 0, 0.5]), XYZ, close_high), close_high) == "close gripper"
    xyz_only = DimMap(0, 1, 2)  # no rotation or gripper dims: those never produce phrases
    assert describe_move(move_vector(np.array([0, 0.1, 0, 9, 9, 9, 9]), xyz_only, RULES), RULES) == "move left"


def test_trajectory_window_and_last_frame() -> None:
    x = 0.02 * np.minimum(np.arange(15), 9)  # moves forward 0.02 per step for 9 steps, then stops
    traj = np.zeros((15, 7))
    traj[:, 0] = x
    traj[6:, 6] = 1.0  # the gripper opens at frame 6
    phrases = trajectory_primitives(traj, XYZ, RULES)
    # window 4: frame t compares x[t + 3] with x[t]; t = 3..5 see the gripper open within the window
    assert phrases == (["move forward"] * 3 + ["move forward, open gripper"] * 3 + ["move forward"] * 2
                       + ["stop"] * 7)
    assert trajectory_primitives(traj[:1], XYZ, RULES) == ["stop"]


def test_detect_dims_from_names() -> None:
    assert detect_dims(["eef_pos_x", "eef_pos_y", "eef_pos_z", "roll", "pitch", "yaw", "gripper"], "state") == XYZ
    assert detect_dims(["eef_pos.0", "eef_pos.1", "eef_pos.2", "eef_euler.2", "gripper_pos"], "state") == DimMap(
        0, 1, 2, yaw=3, gripper=4)
    aloha = ["left_waist", "left_shoulder", "left_gripper", "right_gripper"]
    with pytest.raises(ConfigError) as err:
        detect_dims(aloha, "state")
    assert str(err.value).startswith("cannot tell which state dimensions are x, y, z from the names [left_waist, "
                                     "left_shoulder, left_gripper, right_gripper]; set --dims")
    with pytest.raises(ConfigError, match="state dimensions left_x, right_x could each be 'x'"):
        detect_dims(["left_x", "right_x", "y", "z"], "state")


def test_parse_dims() -> None:
    names = ["a", "b", "c", "d"]
    assert parse_dims("x=a,y=1,z=c,gripper=d", names, "state") == DimMap(0, 1, 2, gripper=3)
    assert parse_dims("ecot", [], "state") == XYZ
    with pytest.raises(ConfigError, match=r"ROLE one of x, y, z, roll, pitch, yaw, gripper \(did you mean 'yaw'\?\)"):
        parse_dims("x=0,y=1,z=2,yow=3", names, "state")
    with pytest.raises(ConfigError, match="no dimension named 'e'"):
        parse_dims("x=e,y=1,z=2", names, "state")
    with pytest.raises(ConfigError, match="z=7 is out of range; the state has 4 dimensions"):
        parse_dims("x=0,y=1,z=7", names, "state")


@pytest.fixture(scope="module")
def designed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ALOHA episode whose left arm joints stand in for x, y, z and left_gripper for the gripper."""
    import h5py

    root = tmp_path_factory.mktemp("designed")
    raw = write_aloha(root / "raw", episodes=1, frames=12, cameras=("cam_high",), size=(8, 8))
    qpos = np.zeros((12, 14), np.float32)
    qpos[:, 0] = 0.02 * np.arange(12)  # "x" grows 0.02 per frame
    qpos[6:, 6] = 1.0  # left_gripper opens at frame 6
    with h5py.File(raw / "episode_0.hdf5", "r+") as f:
        for key in ("observations/qpos", "action"):
            del f[key]
            f.create_dataset(key, data=qpos)
    convert("aloha", raw, root / "robot", RobotOptions(embodiment="aloha"))
    return root / "robot"


SCRIPTED = ["move forward"] * 3 + ["move forward, open gripper"] * 3 + ["move forward"] * 4 + ["stop"] * 2


@pytest.mark.parametrize("source", ["state", "actions"])
def test_scripted_end_to_end(designed: Path, tmp_path: Path, source: str) -> None:
    opts = AnnotateOptions(scripted=True, scripted_from=source, dims="x=left_waist,y=1,z=2,gripper=left_gripper")
    _, report = annotate(designed, tmp_path / "out", opts)
    samples = list(Dataset.open(tmp_path / "out").iter_decoded())
    assert [s["target.txt"] for s in samples] == SCRIPTED
    assert report is not None and report["source"]["dims"] == {"x": "left_waist", "y": "left_shoulder",
                                                                "z": "left_elbow", "gripper": "left_gripper"}
    assert samples[0]["meta.json"]["annotation"] == {"source": "scripted"}


def test_scripted_fails_clearly_without_dims(designed: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot tell which state dimensions are x, y, z from the names "
                                          r"\[left_waist, left_shoulder, .*\]; set --dims"):
        annotate(designed, tmp_path / "out", AnnotateOptions(scripted=True))
    assert not (tmp_path / "out").exists()


def test_cli_annotate_json_and_problems(robot: Path, tmp_path: Path) -> None:
    ann = _jsonl(tmp_path / "a.jsonl", SEGMENTS)
    proc = run_cli("annotate", str(robot), str(tmp_path / "out"), "--from", str(ann), "--uncovered", "empty", "--json",
                   check=True)
    data = json.loads(proc.stdout)
    assert data["conversion"]["samples"] == 63 and data["annotation"]["segments_overlapping"] == 1
    proc = run_cli("annotate", str(robot), str(tmp_path / "out2"), "--from", str(ann))
    assert proc.returncode == 0
    assert "unannotated episode ids: episode_2" in proc.stderr and proc.stderr.count("problem: ") == 3
    bad = run_cli("annotate", str(robot), str(tmp_path / "out3"), "--scripted")
    assert bad.returncode == 1 and bad.stderr.startswith("error: cannot tell which state dimensions are x, y, z")


def test_cli_options_mirror_the_models() -> None:
    import typer

    from cotrain.cli.app import app

    command = typer.main.get_command(app).commands["annotate"]  # type: ignore[attr-defined]
    params = {p.name: p for p in command.params if p.name not in ("src", "out", "json_output")}
    # Annotation reads JPEGs from shards and decodes no video, so it has no --decode-threads.
    assert set(params) == set(AnnotateOptions.model_fields) | (set(RunOptions.model_fields) - {"decode_threads"})
    # Built from the models: their defaults, and the flags the command always had.
    assert params["prompt"].default == DEFAULT_PROMPT and params["window"].default == 4
    assert params["from_file"].opts == ["--from"] and params["progress"].secondary_opts == ["--no-progress"]


def test_lerobot_v31_language_goes_into_annotation_samples(tmp_path: Path) -> None:
    """A v3.1 dataset as lerobot-annotate leaves it: converted with `convert lerobot`, then annotated from
    its own language columns (persistent subtasks; an interjection event beside a speech tool call)."""
    from cotrain_converters.lerobot.converter import LeRobotOptions
    from tests.fixtures.lerobot import write_lerobot_v30

    src = write_lerobot_v30(tmp_path / "src", episodes=3, frames=12, size=(16, 16), language=True)
    convert("lerobot", src, tmp_path / "robot", LeRobotOptions(embodiment="so101", horizon=2))
    _, report = annotate(tmp_path / "robot", tmp_path / "out", AnnotateOptions(from_file=str(src)))
    expected = {("0", f): "reach" for f in range(6)}  # "grasp" from 0.2 s = frame 6 at 30 fps
    expected.update({("0", f): "grasp" for f in range(6, 12)})
    expected.update({("1", f): "push" for f in range(3, 13)})
    assert _targets(tmp_path / "out") == expected
    assert report is not None and report["source"]["format"] == "lerobot"
    assert report["unannotated_episode_ids"] == ["2"]
    sample = next(Dataset.open(tmp_path / "out").iter_decoded())
    assert sample["front.jpg"][:3] == b"\xff\xd8\xff" and sample["instruction.txt"]  # robot members carried over
    annotate(tmp_path / "robot", tmp_path / "events", AnnotateOptions(from_file=str(src), style="interjection"))
    assert _targets(tmp_path / "events") == {("1", 3): "stop there"}
