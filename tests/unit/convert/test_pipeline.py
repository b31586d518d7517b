"""The conversion guarantees, checked on ALOHA HDF5 fixtures (the pipeline is converter-agnostic)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cotrain.convert.finalize import finalize
from cotrain.convert.pipeline import convert
from cotrain.convert.robot import RobotEpisode, robot_converter
from cotrain.convert.spec import CONVERTERS, Converter, DatasetInfo, RobotOptions, RunOptions, Unit
from cotrain.dataset.manifest import load_manifest
from cotrain.dataset.sequential import Dataset
from cotrain.errors import ConfigError, DataError
from tests.fixtures.aloha import write_aloha
from tests.helpers import ROOT, run_cli, tree_digest


def opts(**kw: object) -> RobotOptions:
    return RobotOptions(**{"embodiment": "aloha", "shard_size": 30, **kw})  # type: ignore[arg-type]  # the test's field dict is typed loosely


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_aloha(tmp_path_factory.mktemp("aloha") / "raw", episodes=5, frames=16)


def test_same_input_same_bytes(src: Path, tmp_path: Path) -> None:
    convert("aloha", src, tmp_path / "a", opts())
    convert("aloha", src, tmp_path / "b", opts())
    a, b = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert a == b and "manifest.json" in a and len(a) >= 3


def test_workers_equal_serial(src: Path, tmp_path: Path) -> None:
    convert("aloha", src, tmp_path / "serial", opts())
    convert("aloha", src, tmp_path / "pool", opts(), RunOptions(workers=2))
    assert tree_digest(tmp_path / "serial") == tree_digest(tmp_path / "pool")


def test_parts_then_merge_equal_single_run(src: Path, tmp_path: Path) -> None:
    convert("aloha", src, tmp_path / "single", opts())
    for part in range(3):
        report = convert("aloha", src, tmp_path / "parts", opts(), RunOptions(num_parts=3, part=part))
        assert not report.finalized
    assert not (tmp_path / "parts" / "manifest.json").exists()
    run_cli("merge-manifests", str(tmp_path / "parts"), check=True)
    assert tree_digest(tmp_path / "single") == tree_digest(tmp_path / "parts")


def test_merge_refuses_missing_part(src: Path, tmp_path: Path) -> None:
    convert("aloha", src, tmp_path / "o", opts(), RunOptions(num_parts=2, part=0))
    proc = run_cli("merge-manifests", str(tmp_path / "o"))
    assert proc.returncode == 1
    assert "shards are not converted yet" in proc.stderr and "Traceback" not in proc.stderr


def test_stats_match_numpy(src: Path, tmp_path: Path) -> None:
    import h5py

    convert("aloha", src, tmp_path / "o", opts(horizon=4))
    stats = load_manifest(tmp_path / "o").stats
    qpos, act, chunks = [], [], [[] for _ in range(4)]
    for path in sorted(src.glob("episode_*.hdf5")):
        with h5py.File(path) as f:
            qpos.append(f["observations/qpos"][()])
            a = f["action"][()]
            act.append(a)
            for h in range(4):
                chunks[h].append(a[h:])
    q, a = np.concatenate(qpos).astype(np.float64), np.concatenate(act).astype(np.float64)
    assert stats.state is not None and stats.actions is not None
    np.testing.assert_allclose(stats.state.mean, q.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.state.std, q.std(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.state.q01, np.quantile(q, 0.01, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.actions.q99, np.quantile(a, 0.99, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.actions.min, a.min(0), rtol=1e-6)
    step3 = np.concatenate(chunks[3]).astype(np.float64)
    np.testing.assert_allclose(stats.actions.per_timestep["mean"][3], step3.mean(0), rtol=1e-5, atol=1e-6)
    assert stats.actions.per_timestep["count"][3] == [float(len(step3))]


def test_samples_round_trip(src: Path, tmp_path: Path) -> None:
    import h5py

    convert("aloha", src, tmp_path / "o", opts(horizon=4))
    samples = list(Dataset.open(tmp_path / "o").iter_decoded())
    with h5py.File(src / "episode_1.hdf5") as f:
        qpos, action = f["observations/qpos"][()], f["action"][()]
    ep1 = [s for s in samples if s["meta.json"]["episode"] == "episode_1"]
    assert len(ep1) == len(qpos) == 17
    last = ep1[-1]
    np.testing.assert_array_equal(last["state.npy"], qpos[-1])
    np.testing.assert_array_equal(last["actions.npy"][0], action[-1])
    np.testing.assert_array_equal(last["actions.npy"][3], action[-1])  # padded by repetition
    assert last["actions_valid.npy"].tolist() == [True, False, False, False]
    np.testing.assert_array_equal(ep1[5]["actions.npy"], action[5:9])
    keys = [s["__key__"] for s in samples]
    assert len(set(keys)) == len(keys) and all("." not in k for k in keys)


def _kill_when(args: list[str], appears: str, out: Path) -> None:
    """Start a conversion and SIGKILL it as soon as a path matching `appears` exists under OUT."""
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if out.exists() and any(out.glob(appears)):
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_resume_after_kill_gives_same_bytes(tmp_path: Path) -> None:
    big = write_aloha(tmp_path / "big", episodes=8, frames=24, size=(96, 128))
    convert("aloha", big, tmp_path / "ref", opts(shard_size=40))
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "cotrain", "convert", "aloha", str(big), str(out), "--embodiment", "aloha",
            "--shard-size", "40"]
    # Kill inside a unit, then right after the first shard, then during a later unit.
    _kill_when(args, ".cotrain-work/units/*.tar.tmp", out)
    assert not (out / "manifest.json").exists()
    _kill_when(args, ".cotrain-work/shards/shard-000000.tar.json", out)
    assert not (out / "manifest.json").exists()
    assert not [p for p in out.glob("shard-*.tar") if p.stat().st_size == 0]
    # A shard counts as finished once its sidecar is recorded (the rename comes just before it).
    recorded = {p.name.removesuffix(".json") for p in out.glob(".cotrain-work/shards/*.json")}
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar") if p.name in recorded}
    assert finished, "the kill came too late to test resumption"
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True)
    assert tree_digest(out) == tree_digest(tmp_path / "ref")
    for name, mtime in finished.items():  # shards finished before the kill were not redone
        assert (out / name).stat().st_mtime_ns == mtime


def test_resume_reuses_finished_shards(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    convert("aloha", src, out, opts(), RunOptions(num_parts=2, part=0))
    first = convert("aloha", src, out, opts(), RunOptions(num_parts=2, part=0))
    assert first.shards_written == 0 and first.shards_reused >= 1


def test_rerun_with_other_arguments_is_refused(src: Path, tmp_path: Path) -> None:
    convert("aloha", src, tmp_path / "o", opts())
    again = convert("aloha", src, tmp_path / "o", opts())
    assert again.already_done
    with pytest.raises(ConfigError, match="--overwrite"):
        convert("aloha", src, tmp_path / "o", opts(horizon=8))
    convert("aloha", src, tmp_path / "o", opts(horizon=8), RunOptions(overwrite=True))
    assert load_manifest(tmp_path / "o").horizon == 8


def test_refuses_foreign_output_folder(src: Path, tmp_path: Path) -> None:
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="cotrain did not write"):
        convert("aloha", src, tmp_path / "o", opts())
    assert (tmp_path / "o" / "notes.txt").read_text() == "mine"


def _with_nan(src: Path, dst: Path) -> Path:
    import shutil

    import h5py

    shutil.copytree(src, dst)
    with h5py.File(dst / "episode_3.hdf5", "r+") as f:
        f["action"][7, 2] = np.nan
    return dst


def test_bad_input_leaves_nothing_and_says_where(src: Path, tmp_path: Path) -> None:
    bad = _with_nan(src, tmp_path / "bad")
    out = tmp_path / "o"
    with pytest.raises(DataError) as err:
        convert("aloha", bad, out, opts(), RunOptions(workers=2))
    msg = str(err.value)
    assert "episode_3.hdf5" in msg and "episode episode_3" in msg and "frame 7" in msg and "NaN" in msg
    assert "\n" not in msg
    assert not out.exists()


def test_bad_input_cli_one_line_no_traceback(src: Path, tmp_path: Path) -> None:
    bad = _with_nan(src, tmp_path / "bad")
    proc = run_cli("convert", "aloha", str(bad), str(tmp_path / "o"), "--embodiment", "aloha")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_skip_bad_episode_lists_it(src: Path, tmp_path: Path) -> None:
    bad = _with_nan(src, tmp_path / "bad")
    report = convert("aloha", bad, tmp_path / "o", opts(on_bad_episode="skip"))
    manifest = load_manifest(tmp_path / "o")
    assert [s.episode for s in manifest.skipped_episodes] == ["episode_3"]
    assert "frame 7" in manifest.skipped_episodes[0].reason
    assert manifest.num_episodes == 4 and report.samples == manifest.num_samples
    assert "episode_3" not in {s["meta.json"]["episode"] for s in Dataset.open(tmp_path / "o").iter_decoded()}


def test_unknown_option_values_are_clear(src: Path, tmp_path: Path) -> None:
    proc = run_cli("convert", "aloha", str(src), str(tmp_path / "o"), "--embodiment", "x", "--horizon", "0")
    assert proc.returncode == 1 and "--horizon 0" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("convert", "aloha", str(src), str(tmp_path / "o"), "--embodiment", "x", "--cameras", "nope")
    assert proc.returncode == 1 and "no camera 'nope'" in proc.stderr
    proc = run_cli("convert", "alloha", str(src), str(tmp_path / "o"))
    assert proc.returncode != 0 and "alloha" in proc.stderr


@pytest.mark.ray
def test_ray_backend_equals_serial(src: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the optional ray extra is not installed")
    import ray

    convert("aloha", src, tmp_path / "serial", opts())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        convert("aloha", src, tmp_path / "ray", opts(), RunOptions(backend="ray", workers=2))
    finally:
        ray.shutdown()
    assert tree_digest(tmp_path / "serial") == tree_digest(tmp_path / "ray")


def test_no_pickle_members_written(src: Path, tmp_path: Path) -> None:
    import tarfile

    convert("aloha", src, tmp_path / "o", opts())
    for shard in (tmp_path / "o").glob("*.tar"):
        with tarfile.open(shard) as tar:
            exts = {m.name.split(".", 1)[1] for m in tar.getmembers()}
        assert exts <= {"meta.json", "state.npy", "actions.npy", "actions_valid.npy", "instruction.txt",
                        "cam_high.jpg", "cam_left_wrist.jpg"}, exts
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["schema_version"] == 1
    assert os.path.getsize(tmp_path / "o" / "manifest.json") > 0


def test_concatenated_unit_tars_equal_one_writer(tmp_path: Path) -> None:
    """Shard assembly copies unit tars verbatim; the result is byte-identical to writing the samples once."""
    import io

    from cotrain.dataset.shards import ShardWriter, concat_tars

    samples = [(f"{u:06d}_{i:06d}", {"meta.json": b"{}", "x.txt": bytes([65 + i]) * (100 + 700 * i)})
               for u in range(3) for i in range(u + 1)]
    whole = io.BytesIO()
    with ShardWriter(whole) as writer:
        for key, members in samples:
            writer.write(key, members)
    parts = []
    for u in range(3):
        path = tmp_path / f"u{u}.tar"
        with open(path, "wb") as fh, ShardWriter(fh) as writer:
            for key, members in samples:
                if key.startswith(f"{u:06d}_"):
                    writer.write(key, members)
            parts.append((path, writer.data_bytes))
    joined = io.BytesIO()
    size, sha = concat_tars(parts, joined)
    assert joined.getvalue() == whole.getvalue() and size == len(whole.getvalue())
    import hashlib

    assert sha == hashlib.sha256(whole.getvalue()).hexdigest()


def test_fast_tar_headers_equal_tarfile(tmp_path: Path) -> None:
    """ShardWriter writes headers itself; the bytes must equal tarfile's GNU output, long names included."""
    import io
    import tarfile

    from cotrain.dataset.shards import ShardWriter

    members = {"meta.json": b"{}", "front.jpg": b"\xff\xd8\xff" + b"x" * 1000, "state.npy": b"",
               "a" * 120 + ".txt": b"long name"}
    ours = io.BytesIO()
    with ShardWriter(ours) as writer:
        writer.write("000001_000002", members)
        writer.write("000001_000003", {"meta.json": b"[1]"})
    ref = io.BytesIO()
    with tarfile.open(fileobj=ref, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for key, group in (("000001_000002", members), ("000001_000003", {"meta.json": b"[1]"})):
            for ext in sorted(group):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = (
                    len(group[ext]), 0, 0o644, 0, 0, "", "")
                tar.addfile(info, io.BytesIO(group[ext]))
    assert ours.getvalue() == ref.getvalue()


def test_decode_npy_fast_path_equals_np_load() -> None:
    import io

    from cotrain.dataset.shards import _NPY_HEADER, decode_npy

    def saved(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        return buf.getvalue()

    fast = [np.zeros((16, 7), np.float32), np.arange(8, dtype=np.int64), np.array(2.5, np.float32),
            np.array([True, False]), np.zeros((0, 3), np.float32), np.arange(24, dtype=np.uint8).reshape(2, 3, 4)]
    slow = [np.zeros(3, ">f4"), np.asfortranarray(np.arange(6, dtype=np.float32).reshape(3, 2)),
            np.zeros(2, np.complex64)]
    for arrays, expect_fast in ((fast, True), (slow, False)):
        for a in arrays:
            data = saved(a)
            header = data[10:10 + int.from_bytes(data[8:10], "little")]
            assert bool(_NPY_HEADER.fullmatch(header)) == expect_fast, header
            got = decode_npy(data)
            assert got.dtype == a.dtype and got.shape == a.shape and np.array_equal(got, a) and got.flags.writeable
    with pytest.raises(ValueError):  # a truncated array is not read past its end, on either path
        decode_npy(saved(np.zeros((4, 4), np.float32))[:-3])
    hostile = io.BytesIO()  # an object array, as a hostile shard could carry it: refused, never unpickled
    np.save(hostile, np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects") as err:
        decode_npy(hostile.getvalue())
    assert "allow_pickle" not in str(err.value)  # numpy's advice to unpickle is not repeated


def _plugin_converter() -> Converter:
    """A third-party converter as entry points load it: its refs are plain dicts, or left out."""

    def list_units(src: Path, options: RobotOptions) -> list[Unit]:
        return [Unit(0, "listed", 6, {"frames": 6, "offset": [1.5, -2.0]}), Unit(1, "default", 4)]

    def describe(src: Path, options: RobotOptions, units: object) -> DatasetInfo:
        # an int rate and a tuple size, as a plugin may give them: plan.json stores them as JSON
        return DatasetInfo(modality="robot", embodiment=options.embodiment, state_names=["s0", "s1"],
                           action_names=["a0", "a1"], fps=10, horizon=options.horizon, image_size=(4, 6))

    def load_episode(src: Path, options: RobotOptions, unit: Unit) -> RobotEpisode:
        frames = unit.ref.get("frames", 4)
        offset = np.asarray(unit.ref.get("offset", [0.0, 0.0]))
        state = np.arange(frames * 2, dtype=np.float64).reshape(frames, 2) + offset
        return RobotEpisode(episode_id=unit.id, source_file=str(src), state=state, actions=state + 1,
                            timestamps_s=np.arange(frames) / 10.0, tasks=["move"])

    return robot_converter("plain-ref", "a plugin with untyped refs", RobotOptions, list_units, describe, load_episode)


def test_plugin_converter_with_untyped_refs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The framework carries a unit's `ref` without reading it: plain-dict and default refs keep working,
    and the plan's dataset info round-trips through plan.json for a part run and its merge."""
    monkeypatch.setitem(CONVERTERS._items, "plain-ref", _plugin_converter())
    (tmp_path / "src").mkdir()
    options = opts(horizon=2, shard_size=5)
    report = convert("plain-ref", tmp_path / "src", tmp_path / "one", options)
    assert (report.shards_written, report.samples, report.episodes) == (2, 10, 2)
    manifest = load_manifest(tmp_path / "one")
    assert (manifest.fps, manifest.image_size, manifest.num_samples) == (10.0, [4, 6], 10)
    assert convert("plain-ref", tmp_path / "src", tmp_path / "one", options).already_done
    for part in range(2):
        convert("plain-ref", tmp_path / "src", tmp_path / "parts", options, RunOptions(num_parts=2, part=part))
    finalize(tmp_path / "parts")
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "parts")
    first = next(Dataset.open(tmp_path / "one").iter_decoded())
    assert (first["meta.json"]["episode"], first["state.npy"].tolist()) == ("listed", [1.5, -1.0])
