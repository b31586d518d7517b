"""`make demo`'s main job at a tiny size, and the ALOHA writer it uses, round-tripped through the converter."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from cotrain.dataset.sequential import Dataset
from cotrain.media.image import decode_image
from tests.helpers import episodes_of


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _recordings(count: int = 2):
    from cotrain.lab.sim.generate import CorpusConfig, record_role
    from cotrain.lab.sim.render import Renderer

    return record_role("cross_embodiment", "sim_gripper", count, CorpusConfig(image_size=32, verbs=("pick",)),
                       Renderer(32))


@pytest.mark.parametrize("compressed", [True, False])
def test_aloha_writer_round_trips_through_the_converter(tmp_path: Path, compressed: bool) -> None:
    from cotrain.convert.pipeline import convert
    from cotrain.lab.sim.aloha_writer import write_aloha_folder
    from cotrain_converters.hdf5.aloha import AlohaOptions

    recs = _recordings()
    files = write_aloha_folder(tmp_path / "raw", recs, compressed=compressed)
    assert [f.name for f in files] == ["episode_0.hdf5", "episode_1.hdf5"]
    with h5py.File(files[0]) as f:
        assert f["observations/qpos"].shape == recs[0].state.shape and f["action"].dtype == np.float32
        assert bool(f.attrs["compress"]) is compressed
        if compressed:
            assert f["compress_len"].shape == (1, recs[0].length)
            row = f["observations/images/top"][0]
            assert bytes(row[:3]) == b"\xff\xd8\xff" and int(f["compress_len"][0, 0]) == np.flatnonzero(row)[-1] + 1
        else:
            assert np.array_equal(f["observations/images/top"][()], recs[0].images["top"])
    opts = AlohaOptions(name="grip", embodiment="sim_gripper", task="pick up the red star", horizon=4)
    convert("aloha", tmp_path / "raw", tmp_path / "grip", opts)
    episodes = episodes_of(Dataset.open(tmp_path / "grip"))
    assert sorted(episodes) == ["episode_0", "episode_1"]
    for rec, (_, samples) in zip(recs, sorted(episodes.items())):
        assert len(samples) == rec.length and {s["instruction.txt"] for s in samples} == {"pick up the red star"}
        assert np.array_equal(np.stack([s["state.npy"] for s in samples]), rec.state)
        assert np.array_equal(np.stack([s["actions.npy"][0] for s in samples]), rec.action)
        image = decode_image(samples[5]["top.jpg"])
        assert np.abs(image.astype(int) - rec.images["top"][5].astype(int)).mean() < 8  # JPEG q90 (wood texture)
    if compressed:  # same-size JPEG rows pass through the converter byte for byte
        with h5py.File(files[1]) as f:
            row = f["observations/images/top"][3]
        assert episodes["episode_1"][3]["top.jpg"] == bytes(row[: np.flatnonzero(row)[-1] + 1])


@pytest.mark.slow
def test_demo_main_job_at_a_tiny_size(tmp_path: Path, one_thread: None, capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    from cotrain.lab.demo.corpus import DemoCorpusConfig
    from cotrain.lab.demo.run import DemoConfig, main_job

    small = DemoCorpusConfig(target_episodes=3, heldout_episodes=2, gripper_episodes=2, human_episodes=2, vl_images=4,
                             heldout_vl_images=2, image_size=32)
    # 32 px keeps the test fast; the shipped backbone takes 64 px, so this runs the same path from random init
    cfg = DemoConfig(small, 3, 6, 4, model="tiny", init_from="none")
    main_job(Console(width=200, force_terminal=False), tmp_path, cfg)
    printed = capsys.readouterr().out
    raw = tmp_path / "corpus"
    assert (raw / "lerobot" / "sim_arm" / "meta" / "info.json").is_file()
    assert sorted(p.name for p in (raw / "aloha").iterdir()) == ["pick_blue_star", "pick_green_ball", "pick_red_star"]
    assert (raw / "coco" / "annotations" / "captions_train2017.json").is_file()
    assert list((raw / "egodex" / "train" / "pick").glob("*.mp4"))
    star = Dataset.open(tmp_path / "data" / "gripper_red_star")
    assert {s["instruction.txt"] for s in star.iter_decoded()} == {"pick up the red star"}
    assert star.manifest.embodiment == "sim_gripper" and star.manifest.action_names == ["joint_0", "joint_1", "joint_2"]
    mix = yaml.safe_load((tmp_path / "mixture.yaml").read_text())
    assert [p["name"] for p in mix["phases"]] == ["cotrain", "target"]
    assert "gripper_red_star" in mix["phases"][0]["weights"] and "human" not in mix["phases"][1]["weights"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 8 and rows[0]["proportions"]["human"] > 0 and rows[-1]["proportions"]["human"] == 0
    offline = json.loads((tmp_path / "run" / "offline.json").read_text())
    assert set(offline["datasets"]) >= {"target", "human", "captions", "subtasks", "heldout_target", "heldout_captions"}
    sim = json.loads((tmp_path / "run" / "sim.json").read_text())
    assert sim["overall"]["episodes"] == 4
    for png in ("schedule.png", "loss_per_source.png", "sim_success.png"):
        assert (tmp_path / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert "per-source metrics" in printed and "gripper_red_star" in printed and "ALOHA HDF5" in printed
    assert "closed loop in the simulator" in printed and "4 episodes in" in printed
    assert "tracking" in printed and f"{sim['overall']['mean_closest']:.3f}" in printed
    assert f"plot: {tmp_path / 'plots' / 'schedule.png'}" in printed
