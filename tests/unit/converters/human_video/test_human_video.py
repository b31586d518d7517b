"""Human video: EgoDex hand geometry, confidence masks, grip, frames, captions; generic video + keypoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cotrain.convert.pipeline import convert
from cotrain.dataset.manifest import load_manifest
from cotrain.dataset.sequential import Dataset
from cotrain.errors import ConfigError, DataError
from cotrain.media.image import decode_image
from cotrain_converters.human_video.egodex import EgodexOptions
from cotrain_converters.human_video.hand_pose import rotation_from_6d, rotation_to_6d
from cotrain_converters.human_video.video_keypoints import VideoKeypointsOptions
from tests.fixtures.egodex import (
    frame_level,
    pose,
    rot_x,
    rot_y,
    rot_z,
    write_egodex,
    write_egodex_episode,
    write_keypoint_video,
)

T = 12


def samples(out: Path) -> list[dict]:
    return list(Dataset.open(out).iter_decoded())


def level(jpeg: bytes) -> float:
    return float(decode_image(jpeg).mean())


def hands_at(wrist_l: np.ndarray, wrist_r: np.ndarray, aperture_l: np.ndarray, aperture_r: np.ndarray) -> dict:
    """Joints of both hands: thumb tip offset from the wrist by the aperture along world x, index tip at the wrist."""
    joints = {}
    for side, wrist, ap in (("left", wrist_l, aperture_l), ("right", wrist_r, aperture_r)):
        thumb = wrist.copy()
        thumb[:, :3, 3] += np.stack([ap, 0 * ap, 0 * ap], axis=1)
        joints.update({f"{side}Hand": wrist, f"{side}ThumbTip": thumb, f"{side}IndexFingerTip": wrist.copy()})
    return joints


def one_episode(tmp_path: Path, camera: np.ndarray, joints: dict, **kw: object) -> Path:
    src = tmp_path / "src"
    write_egodex_episode(src / "test" / "pour_water" / "0", camera, joints, **kw)  # type: ignore[arg-type]  # the test's keyword dict is typed loosely
    return src


@pytest.fixture(scope="module")
def egodex_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_egodex(tmp_path_factory.mktemp("egodex") / "raw", frames=T)


def test_identity_camera_state_chunks_and_grip(tmp_path: Path) -> None:
    n = 8
    t = np.arange(n)
    wrist_l = np.stack([pose(None, (0.1 * i, 0.0, 0.0)) for i in t])
    wrist_r = np.stack([pose(rot_z(0.1 * i), (0.0, 0.2, -0.5)) for i in t])
    joints = hands_at(wrist_l, wrist_r, 0.01 * (t + 1), np.full(n, 0.03))
    src = one_episode(tmp_path, np.stack([np.eye(4)] * n), joints)
    convert("egodex", src, tmp_path / "o", EgodexOptions(horizon=3))

    def row(i: int) -> list[float]:
        c, s = np.cos(0.1 * i), np.sin(0.1 * i)
        return [0.1 * i, 0, 0, 1, 0, 0, 0, 1, 0, 0.01 * (i + 1), 0, 0.2, -0.5, c, -s, 0, s, c, 0, 0.03]

    out = samples(tmp_path / "o")
    assert len(out) == n
    for i, s in enumerate(out):
        np.testing.assert_allclose(s["state.npy"], row(i), atol=1e-6)
        steps = [min(i + h + 1, n - 1) for h in range(3)]
        np.testing.assert_allclose(s["actions.npy"], [row(j) for j in steps], atol=1e-6)
        assert s["actions_valid.npy"].tolist() == [i + h + 1 < n for h in range(3)]


def test_rotated_moving_camera_uses_the_anchor_frame(tmp_path: Path) -> None:
    n, a = 6, 0.3
    camera = np.stack([pose(rot_y(np.pi / 2), (0.05 * i, 0.0, 0.0)) for i in range(n)])
    wrist_l = np.stack([pose(None, (1.0, 0.0, 0.0))] * n)
    wrist_r = np.stack([pose(rot_x(a), (0.0, 1.0, 0.0))] * n)
    src = one_episode(tmp_path, camera, hands_at(wrist_l, wrist_r, np.full(n, 0.02), np.full(n, 0.04)))
    convert("egodex", src, tmp_path / "o", EgodexOptions(horizon=4, no_images=True))
    c, s_ = np.cos(a), np.sin(a)
    for i, s in enumerate(samples(tmp_path / "o")):
        # inv(R_y(90)) maps world x to camera z and world z to -camera x; the camera sits at x = 0.05 i.
        left = [0, 0, 1 - 0.05 * i, 0, 0, -1, 0, 1, 0, 0.02]
        right = [0, 1, -0.05 * i, 0, -s_, -c, 0, c, -s_, 0.04]
        np.testing.assert_allclose(s["state.npy"], left + right, atol=1e-6)
        # Static hands, so every future step equals the anchor's pose: the camera is frozen at frame i.
        valid = s["actions_valid.npy"]
        np.testing.assert_allclose(s["actions.npy"][valid], np.tile(left + right, (int(valid.sum()), 1)), atol=1e-6)


def expected_chunks(hdf5: Path, indices: np.ndarray, horizon: int) -> np.ndarray:
    """Independent reference: np.linalg.inv of the anchor camera times each future wrist pose."""
    import h5py

    with h5py.File(hdf5) as f:
        cam = f["transforms/camera"][()].astype(np.float64)
        tr = {j: f[f"transforms/{j}"][()].astype(np.float64) for j in f["transforms"]}
    out = np.zeros((len(indices), horizon, 20))
    for t, anchor in enumerate(indices):
        for h in range(horizon):
            j = indices[min(t + h + 1, len(indices) - 1)]
            parts = []
            for side in ("left", "right"):
                rel = np.linalg.inv(cam[anchor]) @ tr[f"{side}Hand"][j]
                grip = np.linalg.norm(tr[f"{side}ThumbTip"][j][:3, 3] - tr[f"{side}IndexFingerTip"][j][:3, 3])
                parts += [*rel[:3, 3], *rel[:2, :3].ravel(), grip]
            out[t, h] = parts
    return out


def test_general_motion_matches_reference_with_resampling(egodex_src: Path, tmp_path: Path) -> None:
    convert("egodex", egodex_src, tmp_path / "o", EgodexOptions(horizon=5, fps=15))
    out = [s for s in samples(tmp_path / "o") if s["meta.json"]["episode"] == "test/stack_cups/1"]
    indices = np.array([s["meta.json"]["source_frame_index"] for s in out])
    assert indices.tolist() == list(range(0, T, 2))
    ref = expected_chunks(egodex_src / "test" / "stack_cups" / "1.hdf5", indices, 5)
    np.testing.assert_allclose(np.stack([s["actions.npy"] for s in out]), ref, atol=2e-5)
    for s, i in zip(out, indices):
        assert abs(level(s["ego.jpg"]) - frame_level(int(i))) < 3  # the decoded frame is source frame i


def test_confidence_masks_steps_and_stats_count_them(egodex_src: Path, tmp_path: Path) -> None:
    convert("egodex", egodex_src, tmp_path / "o", EgodexOptions(horizon=4, no_images=True))
    out = samples(tmp_path / "o")
    low = T // 2  # the fixture's rightThumbTip confidence is 0.05 at this frame of every episode
    for s in out:
        t = s["meta.json"]["frame_index"]
        assert s["actions_valid.npy"].tolist() == [t + h + 1 < T and t + h + 1 != low for h in range(4)]
    per = load_manifest(tmp_path / "o").stats.actions.per_timestep  # type: ignore[union-attr]  # the converter wrote action stats
    valid = np.stack([s["actions_valid.npy"] for s in out])
    chunks = np.stack([s["actions.npy"] for s in out]).astype(np.float64)
    assert [c[0] for c in per["count"]] == valid.sum(0).tolist()
    np.testing.assert_allclose(per["mean"][2], chunks[valid[:, 2], 2].mean(0), rtol=1e-5, atol=1e-6)
    convert("egodex", egodex_src, tmp_path / "all", EgodexOptions(horizon=4, no_images=True, min_confidence=0))
    for s in samples(tmp_path / "all"):
        t = s["meta.json"]["frame_index"]
        assert s["actions_valid.npy"].tolist() == [t + h + 1 < T for h in range(4)]


def test_manifest_names_modality_and_description(egodex_src: Path, tmp_path: Path) -> None:
    convert("egodex", egodex_src, tmp_path / "o", EgodexOptions(horizon=2))
    m = load_manifest(tmp_path / "o")
    assert (m.modality, m.embodiment, m.cameras, m.num_episodes, m.num_samples) == ("human_video", "human_hand",
                                                                                     ["ego"], 4, 4 * T)
    assert m.action_names[:10] == ["left_x", "left_y", "left_z", *(f"left_r6d_{i}" for i in range(6)), "left_grip"]
    assert m.state_names == m.action_names and len(m.action_names) == 20
    first = samples(tmp_path / "o")[0]
    assert first["instruction.txt"] == "The person does basic pick place number 0."  # which_llm_description = 1


@pytest.mark.parametrize(("attrs", "text"), [
    ({"which_llm_description": "2", "llm_description": "a", "llm_description2": "b", "description": "c"}, "b"),
    ({"description": b"pick the mug"}, "pick the mug"),
    ({}, "pour water"),  # the task folder name
])
def test_description_choice(tmp_path: Path, attrs: dict, text: str) -> None:
    joints = hands_at(*(np.stack([np.eye(4)] * 3),) * 2, np.ones(3), np.ones(3))
    src = one_episode(tmp_path, np.stack([np.eye(4)] * 3), joints, attrs=attrs, video_frames=0)
    convert("egodex", src, tmp_path / "o", EgodexOptions(no_images=True))
    assert samples(tmp_path / "o")[0]["instruction.txt"] == text


def test_captions_only(egodex_src: Path, tmp_path: Path) -> None:
    convert("egodex", egodex_src, tmp_path / "o", EgodexOptions(captions_only=True, caption_frames=3,
                                                                caption_prompt="What are the hands doing?"))
    m = load_manifest(tmp_path / "o")
    assert (m.modality, m.embodiment, m.horizon, m.num_samples) == ("vision_language", None, None, 4)
    assert m.extra["source_modality"] == "human_video" and m.cameras == ["ego_0", "ego_1", "ego_2"]
    assert m.stats.actions is None and m.stats.state is None
    s = samples(tmp_path / "o")[3]
    assert s["prompt.txt"] == "What are the hands doing?" and s["target.txt"] == "The person does stack cups number 1."
    assert not {"actions.npy", "state.npy", "instruction.txt"} & set(s)
    assert s["meta.json"]["frame_indices"] == [2, 6, 10]
    for i, frame in enumerate([2, 6, 10]):
        assert abs(level(s[f"ego_{i}.jpg"]) - frame_level(frame)) < 3
    with pytest.raises(ConfigError, match="--no-images"):
        convert("egodex", egodex_src, tmp_path / "x", EgodexOptions(captions_only=True, no_images=True))


def test_missing_joint_names_file_and_joint(tmp_path: Path) -> None:
    joints = hands_at(*(np.stack([np.eye(4)] * 4),) * 2, np.ones(4), np.ones(4))
    del joints["rightIndexFingerTip"]
    src = one_episode(tmp_path, np.stack([np.eye(4)] * 4), joints)
    with pytest.raises(DataError) as err:
        convert("egodex", src, tmp_path / "o", EgodexOptions())
    assert "pour_water/0.hdf5, episode test/pour_water/0, key 'transforms/rightIndexFingerTip': missing joint " \
           "'rightIndexFingerTip'" in str(err.value)


def test_bad_episode_is_skipped_and_listed(egodex_src: Path, tmp_path: Path) -> None:
    import shutil

    src = tmp_path / "src"
    shutil.copytree(egodex_src, src)
    joints = hands_at(*(np.stack([np.eye(4)] * 4),) * 2, np.ones(4), np.ones(4))
    del joints["leftThumbTip"]
    write_egodex_episode(src / "test" / "stack_cups" / "2", np.stack([np.eye(4)] * 4), joints)
    convert("egodex", src, tmp_path / "o", EgodexOptions(on_bad_episode="skip", no_images=True))
    m = load_manifest(tmp_path / "o")
    assert m.num_samples == 4 * T and [e.episode for e in m.skipped_episodes] == ["test/stack_cups/2"]
    assert "missing joint 'leftThumbTip'" in m.skipped_episodes[0].reason


def test_video_length_mismatch(tmp_path: Path) -> None:
    joints = hands_at(*(np.stack([np.eye(4)] * 5),) * 2, np.ones(5), np.ones(5))
    src = one_episode(tmp_path, np.stack([np.eye(4)] * 5), joints, video_frames=7)
    with pytest.raises(DataError, match=r"0\.mp4, episode test/pour_water/0: video has 7 frames but 0\.hdf5 has 5"):
        convert("egodex", src, tmp_path / "o", EgodexOptions())
    convert("egodex", src, tmp_path / "poses", EgodexOptions(no_images=True))  # poses alone are consistent


def test_joint_length_missing_confidence_and_nan(tmp_path: Path) -> None:
    eye = np.stack([np.eye(4)] * 5)
    joints = hands_at(eye, eye.copy(), np.ones(5), np.ones(5))
    joints["leftHand"] = eye[:4]
    src = one_episode(tmp_path / "a", eye, joints, video_frames=0)
    with pytest.raises(DataError, match="transforms/leftHand has 4 frames but transforms/camera has 5"):
        convert("egodex", src, tmp_path / "o1", EgodexOptions(no_images=True))
    joints = hands_at(eye, eye.copy(), np.ones(5), np.ones(5))
    conf = {j: np.ones(5) for j in joints if j != "leftThumbTip"}
    src = one_episode(tmp_path / "b", eye, joints, confidences=conf, video_frames=0)
    with pytest.raises(DataError, match="missing 'confidences/leftThumbTip'; convert with --min-confidence 0"):
        convert("egodex", src, tmp_path / "o2", EgodexOptions(no_images=True))
    convert("egodex", src, tmp_path / "o3", EgodexOptions(no_images=True, min_confidence=0))
    joints["rightHand"] = joints["rightHand"].copy()
    joints["rightHand"][3, 1, 3] = np.nan  # matmul spreads it to every translation component: first is dim 10
    src = one_episode(tmp_path / "c", eye, joints, video_frames=0)
    with pytest.raises(DataError, match=r"frame 3, key 'transforms': NaN in transforms dimension 10"):
        convert("egodex", src, tmp_path / "o4", EgodexOptions(no_images=True))


def test_rotation_6d_convention_and_inverse() -> None:
    a = 0.4
    np.testing.assert_allclose(rotation_to_6d(rot_z(a)), [np.cos(a), -np.sin(a), 0, np.sin(a), np.cos(a), 0])
    rots = np.stack([rot_z(0.3 * i) @ rot_y(0.2 * i) @ rot_x(-0.5 * i) for i in range(5)])
    np.testing.assert_allclose(rotation_from_6d(rotation_to_6d(rots)), rots, atol=1e-12)


KP = np.arange(10 * 3 * 2, dtype=np.float32).reshape(10, 3, 2) ** 1.5 / 10


def test_keypoints_delta_absolute_and_segments(tmp_path: Path) -> None:
    segments = [{"start_frame": 0, "end_frame": 3, "text": "reach for the cup"},
                {"start_frame": 2, "end_frame": 6, "text": "grasp the cup"}]
    write_keypoint_video(tmp_path / "src", "clip", KP, segments=segments)
    convert("video-keypoints", tmp_path / "src", tmp_path / "d", VideoKeypointsOptions(horizon=3))
    convert("video-keypoints", tmp_path / "src", tmp_path / "a",
            VideoKeypointsOptions(horizon=3, action_mode="absolute"))
    flat = KP.reshape(10, -1)
    texts = ["reach for the cup"] * 4 + ["grasp the cup"] * 3 + [""] * 3
    for t, (d, a) in enumerate(zip(samples(tmp_path / "d"), samples(tmp_path / "a"))):
        steps = [min(t + h + 1, 9) for h in range(3)]
        np.testing.assert_array_equal(d["state.npy"], flat[t])
        np.testing.assert_allclose(d["actions.npy"], flat[steps] - flat[t], rtol=1e-6)
        np.testing.assert_array_equal(a["actions.npy"], flat[steps])
        assert d["actions_valid.npy"].tolist() == [t + h + 1 < 10 for h in range(3)]
        assert d["instruction.txt"] == texts[t]
        assert abs(level(d["video.jpg"]) - frame_level(t)) < 3
    m = load_manifest(tmp_path / "d")
    assert m.state_names == ["kp0_c0", "kp0_c1", "kp1_c0", "kp1_c1", "kp2_c0", "kp2_c1"]
    assert (m.modality, m.cameras, m.extra["action_mode"]) == ("human_video", ["video"], "delta")


def test_keypoints_from_parquet(tmp_path: Path) -> None:
    write_keypoint_video(tmp_path / "src", "nested", KP, fmt="parquet")
    write_keypoint_video(tmp_path / "src", "other", KP[:6] + 1, fmt="parquet")
    convert("video-keypoints", tmp_path / "src", tmp_path / "o", VideoKeypointsOptions(horizon=2, no_images=True))
    out = samples(tmp_path / "o")
    assert [s["meta.json"]["episode"] for s in out] == ["nested"] * 10 + ["other"] * 6
    np.testing.assert_array_equal(np.stack([s["state.npy"] for s in out]),
                                  np.concatenate([KP.reshape(10, -1), KP[:6].reshape(6, -1) + 1]))


def test_keypoint_captions_per_segment(tmp_path: Path) -> None:
    segments = [{"start_frame": 0, "end_frame": 3, "text": "reach"}, {"start_frame": 5, "end_frame": 9, "text": "lift"}]
    write_keypoint_video(tmp_path / "src", "clip", KP, segments=segments)
    convert("video-keypoints", tmp_path / "src", tmp_path / "o", VideoKeypointsOptions(captions_only=True))
    out = samples(tmp_path / "o")
    assert [(s["target.txt"], s["meta.json"]["frame_indices"]) for s in out] == [("reach", [2]), ("lift", [7])]
    assert abs(level(out[1]["video_0.jpg"]) - frame_level(7)) < 3
    write_keypoint_video(tmp_path / "bare", "clip", KP)
    with pytest.raises(DataError, match="nothing to caption: no segments file clip.jsonl and no --task"):
        convert("video-keypoints", tmp_path / "bare", tmp_path / "x", VideoKeypointsOptions(captions_only=True))


@pytest.mark.parametrize(("case", "message"), [
    ("nan", r"clip\.mp4, episode clip, frame 4, key 'keypoints': NaN in keypoints dimension 3"),
    ("length", r"clip\.mp4, episode clip: video has 12 frames but its keypoints have 10"),
    ("ragged", r"clip\.parquet, episode clip, key 'keypoints': column 'keypoints' rows must all hold the same"),
    ("both", r"clip\.mp4: needs exactly one keypoint file beside it, found both of clip\.npz and clip\.parquet"),
    ("segment", r"clip\.jsonl, episode clip, frame 10: line 1: end_frame 10 is past the video's last frame 9"),
    ("key", r"clip\.npz, episode clip, key 'keypoints': no array 'keypoints' \(it has: points\)"),
])
def test_keypoint_errors(tmp_path: Path, case: str, message: str) -> None:
    src = tmp_path / "src"
    if case == "nan":
        bad = KP.copy()
        bad[4, 1, 1] = np.nan
        write_keypoint_video(src, "clip", bad)
    elif case == "length":
        write_keypoint_video(src, "clip", KP, video_frames=12)
    elif case == "ragged":
        row = KP[0].ravel()
        write_keypoint_video(src, "clip", [row] * 3 + [row[:4]] + [row] * 6, fmt="parquet")
    elif case == "both":
        write_keypoint_video(src, "clip", KP)
        write_keypoint_video(src, "clip", KP, fmt="parquet")
    elif case == "segment":
        write_keypoint_video(src, "clip", KP, segments=[{"start_frame": 2, "end_frame": 10, "text": "x"}])
    else:
        write_keypoint_video(src, "clip", KP, key="points")
    with pytest.raises(DataError, match=message):
        convert("video-keypoints", src, tmp_path / "o", VideoKeypointsOptions(horizon=2))
