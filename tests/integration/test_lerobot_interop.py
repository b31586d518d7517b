"""cotrain <-> LeRobot: the batch adapter, `cotrain export lerobot-dataset`, and LeRobot itself on both.

The tests that call `run_lerobot` run scripts from tests/integration/lerobot_compat/ in a LeRobot 0.4.4
environment (its python from $COTRAIN_LEROBOT_PYTHON, else <repo>/.venv-lerobot/bin/python; build it
with `make lerobot-env`) and skip, saying so, when there is none. The others need only cotrain.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cotrain.convert.pipeline import convert
from cotrain.dataset import keys
from cotrain.dataset.sequential import Dataset
from cotrain.errors import ConfigError, DataError
from cotrain.interop.lerobot_batch import LeRobotBatchAdapter
from cotrain.interop.lerobot_dataset_export import export_lerobot_dataset
from cotrain.media.image import decode_image
from cotrain.mix.loader import MixtureLoader
from cotrain.mix.resolve import load_mixture
from cotrain_converters.lerobot.converter import LeRobotOptions
from tests.fixtures.cotrain_data import write_dataset
from tests.fixtures.lerobot import write_lerobot_v30
from tests.helpers import NO_LEROBOT, ROOT, find_lerobot_python, run_cli

HORIZON = 8
COMPAT = ROOT / "tests" / "integration" / "lerobot_compat"
MEMBERS = (keys.STATE, keys.ACTIONS, keys.ACTIONS_VALID, keys.INSTRUCTION)


def lerobot_python() -> Path:
    """The LeRobot environment's python, or a skip that says how to build it."""
    path = find_lerobot_python()
    if path is None:
        pytest.skip(NO_LEROBOT)
    return path


def run_lerobot(script: str, *args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([str(lerobot_python()), str(COMPAT / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two converted LeRobot datasets of different embodiments (6 and 4 dims, one camera each, named
    differently) and a mixture of both."""
    root = tmp_path_factory.mktemp("lrinterop")
    for name, dims, cam, seed, emb in (("so101", 6, "front", 0, "so101"), ("arm4", 4, "wrist", 1, "arm4")):
        src = write_lerobot_v30(root / f"src_{name}", episodes=3, frames=14, cameras=(), image_cameras=(cam,),
                                dims=dims, size=(32, 32), seed=seed, task_switch_frame=9)
        convert("lerobot", src, root / name, LeRobotOptions(embodiment=emb, horizon=HORIZON))
    write_mixture(root, steps=6)
    return root


def write_mixture(root: Path, steps: int, name: str = "mix.yaml") -> Path:
    doc = {"name": "two", "seed": 3, "batch_size": 8, "image_size": 32,
           "sources": {"so101": {"path": "so101"}, "arm4": {"path": "arm4"}},
           "phases": [{"name": "main", "steps": steps, "weights": {"so101": 0.5, "arm4": 0.5}}]}
    path = root / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def members(root: Path) -> list[dict[str, bytes]]:
    return [{k: v for k, v in s.items() if not k.startswith("__")} for s in Dataset.open(root).iter_raw()]


# -- the batch adapter ---------------------------------------------------------------------------

def test_adapter_keys_shapes_padding_and_units(data: Path) -> None:
    loader = MixtureLoader(load_mixture(data / "mix.yaml"), end_step=3)
    adapter = LeRobotBatchAdapter.for_loader(loader)
    assert adapter.cameras == ("cam0",)  # the sources name their cameras differently: slots are named
    samples = {(s, smp["__key__"]): smp for s, name in enumerate(["so101", "arm4"])
               for smp in Dataset.open(data / name).iter_decoded()}
    for batch in loader:
        out = adapter(batch)
        assert sorted(out) == ["action", "action_is_pad", "observation.images.cam0", "observation.state", "source",
                               "task"]
        assert out["observation.images.cam0"].shape == (8, 3, 32, 32)
        assert out["observation.images.cam0"].dtype == out["observation.state"].dtype == out["action"].dtype
        assert out["observation.state"].shape == (8, 6) and out["action"].shape == (8, HORIZON, 6)
        assert out["action_is_pad"].dtype.is_floating_point is False
        np.testing.assert_array_equal(out["action_is_pad"].numpy(), ~batch["actions_valid"].numpy())
        np.testing.assert_array_equal(out["observation.images.cam0"].numpy() * 255,
                                      batch["images"][:, 0].numpy().astype(np.float32))
        arm4 = out["source"].numpy() == 1
        assert arm4.any() and (~arm4).any()
        assert not out["observation.state"][arm4, 4:].any() and not out["action"][arm4][..., 4:].any()
        robot = adapter.to_robot_units(out["action"], out["source"]).numpy()
        for i, (s, key) in enumerate(zip(out["source"].tolist(), batch["key"])):
            smp = samples[(s, key)]
            assert out["task"][i] == smp[keys.INSTRUCTION]
            raw = smp[keys.ACTIONS]
            unclipped = np.abs(out["action"][i, :, : raw.shape[1]].numpy()) < loader.mixture.spec.clip
            np.testing.assert_allclose(robot[i, :, : raw.shape[1]][unclipped], raw[unclipped], rtol=1e-5, atol=1e-5)


def test_adapter_features_and_normalisation_for_lerobot(data: Path) -> None:
    loader = MixtureLoader(load_mixture(data / "mix.yaml"), end_step=1)
    adapter = LeRobotBatchAdapter.for_loader(loader, cameras=["scene"])
    feats = adapter.features()
    assert {k: (f.kind, f.shape) for k, f in feats.items()} == {
        "observation.images.scene": ("VISUAL", (3, 32, 32)), "observation.state": ("STATE", (6,)),
        "action": ("ACTION", (6,))}
    assert adapter.normalization_mapping() == {"VISUAL": "MEAN_STD", "STATE": "IDENTITY", "ACTION": "IDENTITY"}
    assert adapter.image_stats()["observation.images.scene"]["mean"].shape == (3, 1, 1)
    with pytest.raises(ConfigError, match="1 distinct names"):
        LeRobotBatchAdapter.for_loader(loader, cameras=["a", "b"])


def test_adapter_imports_no_heavy_stack() -> None:
    """The LeRobot side imports the adapter and the loader from a checkout: neither may pull in
    cotrain's converters' or trainer's dependencies."""
    code = ("import sys, cotrain.interop.lerobot_batch, cotrain.mix.loader, cotrain.mix.resolve; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'lerobot', 'pandas', 'pyarrow', 'datasets', "
            "'transformers', 'typer', 'webdataset', 'av', 'h5py'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert proc.stdout.strip() == "[]"


# -- export lerobot-dataset ----------------------------------------------------------------------

def test_export_round_trips_through_convert_lerobot_byte_for_byte(data: Path, tmp_path: Path) -> None:
    proc = run_cli("export", "lerobot-dataset", str(data / "so101"), str(tmp_path / "lr"), "--json", check=True)
    assert json.loads(proc.stdout) == {"out": str(tmp_path / "lr"), "sources": ["so101"], "episodes": 3,
                                       "frames": 45, "tasks": 2, "cameras": ["front"]}
    info = json.loads((tmp_path / "lr/meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and "source" not in info["features"]
    convert("lerobot", tmp_path / "lr", tmp_path / "back", LeRobotOptions(embodiment="so101", horizon=HORIZON))
    before, after = members(data / "so101"), members(tmp_path / "back")
    assert len(before) == len(after) == 3 * 14 + 3
    for a, b in zip(before, after):
        for member in (*MEMBERS, "front.jpg"):
            assert a[member] == b[member], member


def test_export_of_real_so101_data_equals_the_original_columns(tmp_path: Path, shared_data: Path) -> None:
    """The real SO-101 recording: converted, exported and converted again, state and actions keep their
    bytes, and the exported frame columns equal the recording's own."""
    import pyarrow.parquet as pq

    real = shared_data / "lerobot-v30-so101"
    convert("lerobot", real, tmp_path / "c", LeRobotOptions(embodiment="so101", no_images=True))
    export_lerobot_dataset(tmp_path / "c", tmp_path / "lr")
    convert("lerobot", tmp_path / "lr", tmp_path / "back", LeRobotOptions(embodiment="so101"))
    before, after = members(tmp_path / "c"), members(tmp_path / "back")
    assert len(before) == len(after) == 1492
    assert all(a[m] == b[m] for a, b in zip(before, after) for m in MEMBERS)
    original = pq.read_table(real / "data/chunk-000/file-000.parquet")
    exported = pq.read_table(tmp_path / "lr/data/chunk-000/file-000.parquet")
    for column in ("observation.state", "action", "frame_index", "episode_index", "index", "task_index"):
        want = np.stack(original.column(column).to_numpy(zero_copy_only=False)).astype(np.float32)
        got = np.stack(exported.column(column).to_numpy(zero_copy_only=False)).astype(np.float32)
        np.testing.assert_array_equal(got, want, err_msg=column)


def test_export_mixture_pads_dims_and_tags_sources(data: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    summary = export_lerobot_dataset(data / "mix.yaml", tmp_path / "lr")
    assert summary.sources == ["so101", "arm4"] and summary.episodes == 6
    table = pq.read_table(tmp_path / "lr/data/chunk-000/file-000.parquet")
    source = table.column("source").to_numpy()
    state = np.stack(table.column("observation.state").to_numpy(zero_copy_only=False))
    assert (source[:45] == 0).all() and (source[45:] == 1).all()
    assert not state[source == 1, 4:].any()
    info = json.loads((tmp_path / "lr/meta/info.json").read_text())
    assert [s["name"] for s in info["cotrain"]["sources"]] == ["so101", "arm4"]
    assert info["features"]["observation.state"]["names"] == [f"state_{i}" for i in range(6)]
    convert("lerobot", tmp_path / "lr", tmp_path / "back", LeRobotOptions(embodiment="mixed", horizon=HORIZON))
    back = members(tmp_path / "back")
    for k, original in enumerate(members(data / "so101") + members(data / "arm4")):
        got_state = _npy(back[k][keys.STATE])
        got_actions = _npy(back[k][keys.ACTIONS])
        want_state, want_actions = _npy(original[keys.STATE]), _npy(original[keys.ACTIONS])
        assert got_state[: len(want_state)].tobytes() == want_state.tobytes()
        assert got_actions[:, : want_actions.shape[1]].tobytes() == np.ascontiguousarray(want_actions).tobytes()
        camera = "front" if k < 45 else "wrist"
        assert back[k][f"{camera}.jpg"] == original[f"{camera}.jpg"]


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def test_export_errors_are_one_line_and_leave_nothing(data: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    proc = run_cli("export", "lerobot-dataset", str(data / "so101"), str(tmp_path / "taken"))
    assert proc.returncode == 1 and "exists; pass --overwrite" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    with pytest.raises(ConfigError, match="overlaps source 'so101'"):
        export_lerobot_dataset(data / "so101", data / "so101" / "lr", overwrite=True)
    # Samples without episode structure (written straight in the shard format) cannot become episodes.
    flat = write_dataset(tmp_path / "flat", samples=12, horizon=3)
    with pytest.raises(DataError, match="no integer episode_index"):
        export_lerobot_dataset(flat, tmp_path / "out")
    vl = write_dataset(tmp_path / "vl", samples=5, modality="vision_language", cameras=("image",))
    with pytest.raises(ConfigError, match="modality vision_language"):
        export_lerobot_dataset(vl, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat", "taken", "vl"]


def test_export_refuses_chunks_it_cannot_rebuild(data: Path, tmp_path: Path) -> None:
    """A converted dataset whose action chunk is not the next H per-frame actions would lose data."""
    import shutil
    import tarfile

    ds = tmp_path / "ds"
    shutil.copytree(data / "so101", ds)
    shard = ds / Dataset.open(ds).manifest.shards[0].name
    edited = tmp_path / "edited.tar"
    with tarfile.open(shard) as src, tarfile.open(edited, "w", format=tarfile.USTAR_FORMAT) as dst:
        for info in src.getmembers():
            payload = src.extractfile(info).read()  # type: ignore[union-attr]  # regular members only
            if info.name == "000000_000003.actions.npy":
                chunk = _npy(payload).copy()
                chunk[2] += 1.0
                buf = io.BytesIO()
                np.save(buf, chunk, allow_pickle=False)
                payload = buf.getvalue()
            info.size = len(payload)
            dst.addfile(info, io.BytesIO(payload))
    shard.write_bytes(edited.read_bytes())
    (ds / (shard.name + ".idx.json")).unlink(missing_ok=True)
    with pytest.raises(DataError, match=r"episode 0, frame 3, key 'actions.npy': the action chunk is not"):
        export_lerobot_dataset(ds, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- LeRobot itself ------------------------------------------------------------------------------

def test_lerobot_dataset_reads_the_export_as_the_source(data: Path, tmp_path: Path) -> None:
    export_lerobot_dataset(data / "mix.yaml", tmp_path / "lr")
    run_lerobot("read_exported_dataset.py", str(tmp_path / "lr"), str(tmp_path / "dump.npz"),
                "--horizon", str(HORIZON), home=tmp_path / "hf")
    dump = np.load(tmp_path / "dump.npz", allow_pickle=False)
    original = [(s, smp) for s, name in enumerate(["so101", "arm4"])
                for smp in Dataset.open(data / name).iter_decoded()]
    assert len(dump["index"]) == len(original) == 90
    assert json.loads(str(dump["info"]))["num_episodes"] == 6
    tasks = json.loads(str(dump["task"]))
    for i, (s, smp) in enumerate(original):
        ds, da = len(smp[keys.STATE]), smp[keys.ACTIONS].shape[1]
        assert dump["source"][i] == s and dump["frame_index"][i] == smp[keys.META]["frame_index"]
        assert dump["observation.state"][i, :ds].tobytes() == smp[keys.STATE].tobytes()
        assert dump["action"][i, :da].tobytes() == smp[keys.ACTIONS][0].tobytes()
        valid = ~dump["chunk_is_pad"][i]
        np.testing.assert_array_equal(valid, smp[keys.ACTIONS_VALID])
        assert dump["chunk"][i][valid][:, :da].tobytes() == smp[keys.ACTIONS][valid].tobytes()
        assert tasks[i] == smp[keys.INSTRUCTION]
        camera = "front" if s == 0 else "wrist"
        np.testing.assert_array_equal(dump[f"observation.images.{camera}"][i], decode_image(smp[f"{camera}.jpg"]))
        other = "wrist" if s == 0 else "front"
        assert not dump[f"observation.images.{other}"][i].any()  # a source without the camera: black


@pytest.mark.slow
def test_lerobot_act_trains_on_a_two_source_mixture(data: Path, tmp_path: Path) -> None:
    """LeRobot's ACT (random-init ResNet18, small transformer), LeRobot's processors and AdamW preset,
    fed by MixtureLoader through the adapter: the loss falls clearly within 200 CPU steps."""
    mixture = write_mixture(data, steps=200, name="train.yaml")
    proc = run_lerobot("train_act_on_mixture.py", str(mixture), "--steps", "200", "--out", str(tmp_path / "l.json"),
                       "--cotrain-root", str(ROOT), home=tmp_path / "hf", timeout=600)
    result = json.loads((tmp_path / "l.json").read_text())
    losses, l1 = np.asarray(result["losses"]), np.asarray(result["l1_losses"])
    assert len(losses) == 200 and np.isfinite(losses).all(), proc.stdout
    assert losses[-25:].mean() < 0.2 * losses[:25].mean(), proc.stdout
    assert l1[-25:].mean() < 0.75 * l1[:25].mean(), proc.stdout
