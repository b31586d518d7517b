"""LBM / VLA Foundry shards: exact re-keying of arrays, masks, images and text; stats; errors."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cotrain.convert.pipeline import convert
from cotrain.dataset.manifest import load_manifest
from cotrain.dataset.sequential import Dataset
from cotrain.errors import ConfigError, DataError
from cotrain_converters.lbm import LbmOptions, default_keys
from tests.fixtures.lbm import CAMERAS, PARAPHRASES, TASK, write_lbm, write_tar
from tests.helpers import run_cli

H = 15  # 16-step windows: anchor + 14 future steps


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lbm(tmp_path_factory.mktemp("lbm") / "raw")


@pytest.fixture(scope="module")
def converted(src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "lbm"
    convert("lbm", src, out, LbmOptions(shard_size=25))
    return out


def source_samples(root: Path) -> dict[str, dict[str, bytes]]:
    """Source samples by key, read with tarfile and grouped by hand (independent of cotrain's reader)."""
    out: dict[str, dict[str, bytes]] = {}
    for tar_path in sorted((root / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for info in tar.getmembers():
                key, ext = info.name.split(".", 1)
                out.setdefault(key, {})[ext] = tar.extractfile(info).read()  # type: ignore[union-attr]  # regular members only
    return out


def lowdim(members: dict[str, bytes]) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(members["lowdim.npz"]), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_rekeys_state_actions_masks_images_exactly(src: Path, converted: Path) -> None:
    source = source_samples(src)
    samples = list(Dataset.open(converted).iter_decoded())
    assert len(samples) == len(source) == 47
    for s in samples:
        members = source[s["meta.json"]["source_key"]]
        arrays = lowdim(members)
        state = np.concatenate([arrays[k][1] for k in default_keys("actual")])
        np.testing.assert_array_equal(s["state.npy"], state.astype(np.float32))
        valid = arrays["future_mask"][1:16]
        np.testing.assert_array_equal(s["actions_valid.npy"], valid)
        chunk = np.concatenate([arrays[k][1:16] for k in default_keys("action")], axis=1).astype(np.float32)
        last = int(np.flatnonzero(valid)[-1])
        np.testing.assert_array_equal(s["actions.npy"][: last + 1], chunk[: last + 1])
        np.testing.assert_array_equal(s["actions.npy"][last + 1 :], np.repeat(chunk[last : last + 1], H - last - 1, 0))
        for cam in CAMERAS:
            assert s[f"{cam}.jpg"] == members[f"{cam}_t0.jpg"]  # passed through, not re-encoded
        meta, out_meta = json.loads(members["metadata.json"]), s["meta.json"]
        assert (out_meta["episode"], out_meta["frame_index"]) == (meta["episode_id"], meta["anchor_timestep"])
        assert s["instruction.txt"] == TASK and s["meta.json"]["instructions"]["randomized"] == PARAPHRASES


def test_padded_tail_is_invalid(converted: Path) -> None:
    by_anchor = {(s["meta.json"]["episode"], s["meta.json"]["frame_index"]): s
                 for s in Dataset.open(converted).iter_decoded()}
    # Episode 2 has 9 steps: from anchor 3, window steps 1..6 are inside and the other 9 are padding.
    valid = by_anchor[("episode_2", 3)]["actions_valid.npy"]
    assert valid.tolist() == [True] * 6 + [False] * 9
    assert by_anchor[("episode_0", 0)]["actions_valid.npy"].all()  # 18 steps: anchor 0 sees 15 real steps


def test_manifest_and_stats(src: Path, converted: Path) -> None:
    m = load_manifest(converted)
    assert (m.modality, m.embodiment, m.horizon, m.fps) == ("robot", "lbm_bimanual_panda", H, None)
    assert m.cameras == list(CAMERAS) and m.num_samples == 47
    assert m.state_names[:3] == ["poses_left_panda_xyz_x", "poses_left_panda_xyz_y", "poses_left_panda_xyz_z"]
    assert m.state_names[-1] == "grippers_right_panda_hand" and len(m.action_names) == 20
    assert m.num_episodes == 5  # episode groups per source shard: shard 0 = e0 + e1, shard 1 = e1 + e2, shard 2 = e2
    assert sorted(m.extra["source_stats"]) == sorted(default_keys("actual") + default_keys("action"))
    samples = list(Dataset.open(converted).iter_decoded())
    chunks = np.stack([s["actions.npy"] for s in samples]).astype(np.float64)
    valid = np.stack([s["actions_valid.npy"] for s in samples])
    per = m.stats.actions.per_timestep  # type: ignore[union-attr]  # the converter wrote action stats
    assert [c[0] for c in per["count"]] == valid.sum(0).tolist()
    for h in (0, 7, 14):
        np.testing.assert_allclose(per["mean"][h], chunks[valid[:, h], h].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(per["max"][h], chunks[valid[:, h], h].max(0), rtol=1e-6)
    states = np.stack([s["state.npy"] for s in samples]).astype(np.float64)
    np.testing.assert_allclose(m.stats.state.mean, states.mean(0), rtol=1e-5, atol=1e-6)  # type: ignore[union-attr]  # the converter wrote state stats


def test_desired_actions_randomized_text_and_camera_selection(src: Path, tmp_path: Path) -> None:
    opts = LbmOptions(action_source="desired", instruction_set="randomized", horizon=4,
                      cameras="wrist_left_minus=wrist", state_keys="robot__actual__joint_position__left::panda")
    convert("lbm", src, tmp_path / "o", opts)
    ds = Dataset.open(tmp_path / "o")
    assert ds.manifest.horizon == 4 and ds.manifest.cameras == ["wrist"]
    assert ds.manifest.state_names == [f"joint_position_left_panda_{i}" for i in range(7)]
    source = source_samples(src)
    for s in ds.iter_decoded():
        arrays = lowdim(source[s["meta.json"]["source_key"]])
        joints = arrays["robot__actual__joint_position__left::panda"][1]
        np.testing.assert_array_equal(s["state.npy"], joints.astype(np.float32))
        desired = np.concatenate([arrays[k][1:5] for k in default_keys("desired")], axis=1).astype(np.float32)
        assert s["actions.npy"].shape == (4, 20)
        valid = s["actions_valid.npy"]
        np.testing.assert_array_equal(s["actions.npy"][valid], desired[valid])
        assert s["instruction.txt"] == PARAPHRASES[s["meta.json"]["frame_index"] % 5]
        assert set(s) >= {"wrist.jpg"} and "scene_right_0.jpg" not in s


def test_no_images_and_task_override(src: Path, tmp_path: Path) -> None:
    convert("lbm", src, tmp_path / "o", LbmOptions(no_images=True, task="do something useful"))
    s = next(Dataset.open(tmp_path / "o").iter_decoded())
    assert not [k for k in s if k.endswith(".jpg")] and s["instruction.txt"] == "do something useful"


def test_missing_lowdim_key_names_sample_and_suggests(src: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        convert("lbm", src, tmp_path / "o", LbmOptions(state_keys="robot__actual__poses__left::panda__xyzz"))
    text = str(err.value)
    assert "shard-000000.tar" in text and "episode episode_0" in text
    assert "lowdim.npz has no array 'robot__actual__poses__left::panda__xyzz'" in text
    assert "did you mean 'robot__actual__poses__left::panda__xyz'" in text and "\n" not in text


def test_sample_without_anchor_camera_is_an_error(src: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    write_lbm(bad, lengths=(3,), stats=False)
    shard = bad / "shards" / "shard-000000.tar"
    samples = list(source_samples(bad).items())
    samples[2][1].pop("wrist_left_minus_t0.jpg")
    write_tar(shard, samples)
    with pytest.raises(DataError, match=r"episode episode_0, frame 2, key '.*wrist_left_minus_t0.jpg'.*"
                                        r"no wrist_left_minus_t0 image, "
                                         r"but the dataset or metadata.json camera_names has that camera "
                                         r"\(images here: scene_right_0\)"):
        convert("lbm", bad, tmp_path / "o", LbmOptions())


def test_count_mismatch_and_missing_manifest(src: Path, tmp_path: Path) -> None:
    bad = write_lbm(tmp_path / "bad", lengths=(4,), stats=False)
    (bad / "manifest.jsonl").write_text(json.dumps({"shard": "shards/shard-000000.tar", "num_sequences": 5}) + "\n")
    with pytest.raises(DataError, match=r"shard-000000.tar: holds 4 samples but manifest.jsonl says num_sequences=5"):
        convert("lbm", bad, tmp_path / "o", LbmOptions())
    (bad / "manifest.jsonl").unlink()
    with pytest.raises(DataError, match="no manifest.jsonl"):
        convert("lbm", bad, tmp_path / "o2", LbmOptions())


def test_fps_is_refused(src: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--fps: LBM samples are windows"):
        convert("lbm", src, tmp_path / "o", LbmOptions(fps=5))


def test_cli(src: Path, tmp_path: Path) -> None:
    proc = run_cli("convert", "lbm", str(src), str(tmp_path / "o"), "--action-source", "desired", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["samples"] == 47
    assert load_manifest(tmp_path / "o").provenance.arguments["action_source"] == "desired"


# --- What real producers write (issue 18) ---------------------------------------------------------


def test_manifest_naming_shards_by_stem_reads_like_vla_foundry(src: Path, converted: Path, tmp_path: Path) -> None:
    stems = write_lbm(tmp_path / "stems", stems=True)
    assert json.loads((stems / "manifest.jsonl").read_text().splitlines()[0])["shard"] == "shard_000000"
    convert("lbm", stems, tmp_path / "o", LbmOptions(shard_size=25))
    got = [(s["meta.json"]["source_shard"], s["state.npy"]) for s in Dataset.open(tmp_path / "o").iter_decoded()]
    want = [s["state.npy"] for s in Dataset.open(converted).iter_decoded()]
    assert len(got) == len(want) == 47 and got[0][0] == "shard_000000"
    for (_, a), b in zip(got, want):
        np.testing.assert_array_equal(a, b)  # the same data, whichever way the manifest names shards


def test_stem_without_its_tar_names_what_was_tried(tmp_path: Path) -> None:
    bad = write_lbm(tmp_path / "stems", lengths=(4,), stems=True, stats=False)
    (bad / "shard_000000.tar").rename(bad / "shard_000000")  # the reader would look for shard_000000.tar
    with pytest.raises(DataError, match=r"manifest.jsonl, key 'entry 1': shard 'shard_000000.tar' \(the stem "
                                        r"'shard_000000' \+ .tar, as VLA Foundry reads it\) not found"):
        convert("lbm", bad, tmp_path / "o", LbmOptions())


@pytest.mark.parametrize("entry", ["../outside/shard-000000.tar", "{abs}", "shards/../../outside/shard-000000",
                                   "link"])
def test_shard_paths_never_leave_the_dataset(tmp_path: Path, entry: str) -> None:
    outside = write_lbm(tmp_path / "outside", lengths=(4,), stats=False)
    (outside / "shards" / "shard-000000.tar").rename(outside / "shard-000000.tar")
    bad = write_lbm(tmp_path / "bad", lengths=(4,), stats=False)
    if entry == "link":  # a shard inside the folder that is a symlink to a tar outside it
        (bad / "link.tar").symlink_to(outside / "shard-000000.tar")
    entry = entry.replace("{abs}", str(outside / "shard-000000.tar"))
    (bad / "manifest.jsonl").write_text(json.dumps({"shard": entry, "num_sequences": 4}) + "\n")
    with pytest.raises(DataError, match=r"manifest.jsonl, key 'entry 1': shard .* (is absolute|leads outside the "
                                        r"dataset folder)"):
        convert("lbm", bad, tmp_path / "o", LbmOptions())
    assert not (tmp_path / "o").exists()


def test_symlinked_camera_member_is_refused_not_dropped(tmp_path: Path) -> None:
    bad = write_lbm(tmp_path / "bad", lengths=(3,), stats=False)
    samples = list(source_samples(bad).items())
    key = samples[0][0]
    samples[0][1]["wrist_left_minus_t0.jpg"] = f"{key}.wrist_left_minus_t-1.jpg"  # type: ignore[assignment]  # deliberately a wrong value
    write_tar(bad / "shards" / "shard-000000.tar", samples)  # type: ignore[arg-type]  # as above
    with pytest.raises(DataError, match=rf"shard-000000.tar, key '{key}.wrist_left_minus_t0.jpg': member "
                                        rf"'{key}.wrist_left_minus_t0.jpg' is a symbolic link member"):
        convert("lbm", bad, tmp_path / "o", LbmOptions())


def test_layout_camera_missing_from_first_sample_is_an_error(tmp_path: Path) -> None:
    bad = write_lbm(tmp_path / "bad", lengths=(3,), stats=False)
    samples = list(source_samples(bad).items())
    samples[0][1].pop("wrist_left_minus_t0.jpg")  # metadata.json camera_names still lists the camera
    write_tar(bad / "shards" / "shard-000000.tar", samples)
    with pytest.raises(DataError, match=r"episode episode_0, frame 0, .*no wrist_left_minus_t0 image"):
        convert("lbm", bad, tmp_path / "o", LbmOptions())


def test_corrupt_anchor_jpeg_fails_or_is_skipped(tmp_path: Path) -> None:
    bad = write_lbm(tmp_path / "bad", lengths=(5, 4), samples_per_shard=5, stats=False)
    samples = list(source_samples(bad).items())
    jpeg = samples[2][1]["scene_right_0_t0.jpg"]
    samples[2][1]["scene_right_0_t0.jpg"] = jpeg[: len(jpeg) // 2]
    write_tar(bad / "shards" / "shard-000000.tar", samples[:5])
    with pytest.raises(DataError) as err:
        convert("lbm", bad, tmp_path / "o", LbmOptions())
    assert str(err.value).startswith(f"{bad / 'shards' / 'shard-000000.tar'}, episode episode_0, frame 2, "
                                     "key 'scene_right_0_t0.jpg': sample ")
    assert "undecodable image" in str(err.value) and not (tmp_path / "o").exists()
    report = convert("lbm", bad, tmp_path / "skip", LbmOptions(on_bad_episode="skip"))
    assert report.samples == 4 and len(report.skipped) == 1 and "undecodable image" in report.skipped[0]
