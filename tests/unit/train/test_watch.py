"""Watching training: held-out validation curves, bad-sample counts, and the W&B sink (offline, real wandb)."""

from __future__ import annotations

import json
import logging
import shutil
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cotrain.dataset import keys
from cotrain.errors import ConfigError
from cotrain.train.config import TrainConfig
from cotrain.train.loop import train
from tests.fixtures.cotrain_data import write_dataset
from tests.helpers import run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"progress": False, "tensorboard": False, "warmup_steps": 2, "lr": 1e-3}
TRAINING_KEYS = ("loss", "flow", "text", "grad_norm", "lr", "proportions", "loss_source")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("watchdata")
    write_dataset(root / "robot", samples=32, state_dim=4, action_dim=3, horizon=4, cameras=("front",))
    write_dataset(root / "vl", samples=16, modality=keys.VISION_LANGUAGE, cameras=("image",))
    # Held out: the same embodiment with other values, and other captions.
    write_dataset(root / "robot_heldout", samples=12, state_dim=4, action_dim=3, horizon=4, cameras=("front",), tag=5)
    write_dataset(root / "vl_heldout", samples=8, modality=keys.VISION_LANGUAGE, cameras=("image",), tag=7)
    return root


def write_mix(root: Path, name: str = "mix.yaml", **overrides: object) -> Path:
    doc: dict[str, object] = {
        "name": "watch-test", "seed": 3, "batch_size": 4, "image_size": 32,
        "sources": {"robot": {"path": "robot"}, "vl": {"path": "vl", "loss_weight": 0.5}},
        "phases": [{"name": "a", "steps": 100, "weights": {"robot": 0.75, "vl": 0.25}}],
    }
    doc.update(overrides)
    path = root / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def config(mix: Path, out: Path, **fields: object) -> TrainConfig:
    return TrainConfig(**{"mixture": str(mix), "model": "tiny", "steps": 6, "out": str(out), "save_every": 2,
                          "keep_checkpoints": 3, **FAST, **fields})


def rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def tensorboard_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_validation_curves_match_offline_eval_and_leave_training_alone(data: Path, tmp_path: Path) -> None:
    from cotrain.eval.offline import evaluate_dataset
    from cotrain.eval.policy import load_run
    from cotrain.train.validation import Validator

    plain = train(config(write_mix(data), tmp_path / "plain"))
    mix = write_mix(data, "val.yaml", val={"heldout": {"path": "robot_heldout"}})
    watched = train(config(mix, tmp_path / "watched", eval_every=2, val_data=(str(data / "vl_heldout"),),
                           val_max_samples=6, tensorboard=True))
    a, b = plain.history, watched.history
    assert [r["step"] for r in b] == list(range(6)) and b == rows(tmp_path / "watched")
    for key in TRAINING_KEYS:  # validation between steps changes nothing about training
        assert [r[key] for r in a] == [r[key] for r in b], key
    assert [r["step"] for r in b if "val" in r] == [1, 3, 5]
    val = b[5]["val"]
    assert set(val) == {"heldout", "vl_heldout"} and b[5]["val_time_s"] > 0
    assert val["heldout"]["samples"] == 6 and val["heldout"]["actions"]["normalized"]["mse"] > 0
    assert "text" in val["vl_heldout"] and "actions" not in val["vl_heldout"]
    assert b[1]["val"]["vl_heldout"]["text"]["ce"] != val["vl_heldout"]["text"]["ce"]  # a curve, not a constant
    # The curve's last point is `cotrain eval` of the final checkpoint: same samples, same noise.
    ckpt = load_run(tmp_path / "watched" / "checkpoints" / "step_00000006")
    seed = Validator.seed_for(3)
    for name, path in (("heldout", data / "robot_heldout"), ("vl_heldout", data / "vl_heldout")):
        assert evaluate_dataset(ckpt, path, max_samples=6, batch_size=16, flow_steps=ckpt.cfg.flow_steps,
                                seed=seed) == val[name], name
    scalars = tensorboard_scalars(tmp_path / "watched")
    mse = val["heldout"]["actions"]["normalized"]["mse"]
    assert scalars["val/heldout/actions/normalized/mse"][5] == pytest.approx(mse)
    assert sorted(scalars["val/vl_heldout/text/ce"]) == [1, 3, 5]
    assert sorted(scalars["bad_samples/robot"]) == list(range(6))


def test_validation_restores_the_mode_and_the_weights(data: Path, tmp_path: Path) -> None:
    import torch

    from cotrain.train.setup import prepare_run
    from cotrain.train.validation import Validator, plan_validation

    cfg = config(write_mix(data), tmp_path / "run", eval_every=3, val_data=(str(data / "robot_heldout"),),
                 val_max_samples=4)
    run = prepare_run(cfg)
    validator = Validator(run, plan_validation(cfg))
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.wrapped.train()
    assert [s for s in range(6) if validator.due(s)] == [2, 5]
    first = validator.metrics(2)["val"]
    assert run.wrapped.training and all(m.training for m in run.model.modules())
    assert all(torch.equal(before[k], v) for k, v in run.model.state_dict().items())
    assert validator.metrics(2)["val"] == first  # same samples, same noise: deterministic


def _corrupt_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for shard in sorted(dst.glob("shard-*.tar")):  # break every JPEG header of the first shard
        raw = bytearray(shard.read_bytes())
        at = raw.find(b"\xff\xd8\xff")
        while at >= 0:
            raw[at: at + 4] = b"\x00" * 4
            at = raw.find(b"\xff\xd8\xff", at)
        shard.write_bytes(bytes(raw))
        break
    return dst


def test_bad_samples_are_counted_and_warned_about_once(data: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "d"
    _corrupt_copy(data / "robot", root / "robot")
    shutil.copytree(data / "vl", root / "vl")
    mix = write_mix(root, bad_samples="skip")
    with caplog.at_level(logging.WARNING, logger="cotrain.train.bad_samples"):
        result = train(config(mix, tmp_path / "run", steps=4, max_bad_fraction=0.05, checkpoints=False))
    counts = [r["bad_samples"]["robot"] for r in result.history]
    assert counts == sorted(counts) and counts[-1] >= 1  # cumulative
    assert all(r["bad_samples"]["vl"] == 0 and r["bad_fraction"]["vl"] == 0 for r in result.history)
    last = result.history[-1]
    draws = sum(r["proportions"]["robot"] for r in result.history) * 4
    assert last["bad_fraction"]["robot"] == pytest.approx(counts[-1] / draws)
    warned = [r.getMessage() for r in caplog.records if "bad and replaced" in r.getMessage()]
    assert len(warned) == 1 and "'robot'" in warned[0] and "max_bad_fraction 0.05" in warned[0]


def test_bad_configurations_fail_before_the_run_directory_is_written(data: Path, tmp_path: Path) -> None:
    mix = write_mix(data)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"--eval-every 2: no held-out data; pass --val-data DIR or add a val:"):
        train(config(mix, out, eval_every=2))
    with pytest.raises(ConfigError, match=rf"--val-data {tmp_path}/nope: .*no manifest.json"):
        train(config(mix, out, eval_every=2, val_data=(str(tmp_path / "nope"),)))
    write_dataset(tmp_path / "wide", samples=4, state_dim=4, action_dim=5, horizon=4)
    with pytest.raises(ConfigError, match=r"val\.wide: .*5 action dims; the model takes 3"):
        train(config(write_mix(data, "wide.yaml", val={"wide": {"path": str(tmp_path / "wide")}}), out, eval_every=2))
    write_dataset(tmp_path / "alien", samples=4, state_dim=2, action_dim=2, horizon=4, embodiment="alien")
    with pytest.raises(ConfigError, match=r"no norm stats for embodiment 'alien'"):
        train(config(mix, out, eval_every=2, val_data=(str(tmp_path / "alien"),)))
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"val\.h\.pth: unknown field \(did you mean 'path'\?\); valid: path"):
        train(config(write_mix(data, "typo.yaml", val={"h": {"pth": "robot_heldout"}}), out, eval_every=2))
    proc = run_cli("train", str(mix), "--steps", "2", "--out", str(out), "--val-data", str(data / "vl_heldout"))
    assert proc.returncode != 0 and "--val-data is only read with --eval-every N" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_missing_wandb_names_the_extra(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # what `import wandb` does when it is not installed
    with pytest.raises(ConfigError, match=r"--wandb needs the wandb package: pip install 'cotrain\[wandb\]'"):
        train(config(write_mix(data), tmp_path / "run", wandb="offline"))
    assert not (tmp_path / "run").exists()


# ---- W&B, offline, read back from the run's own files -------------------------------------------------


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of a `.wandb` file, decoded with wandb's own protobuf types.

    The file is W&B's LevelDB-log framing (a 7-byte header `:W&B` + magic + version, then 32 KiB blocks of
    records: crc32 of type byte + data, length, type FULL/FIRST/MIDDLE/LAST); wandb 0.31 ships no Python
    reader of it any more, so this walks the framing and checks every checksum.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:  # a block's trailer: zero padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", raw[pos: pos + 7])
        if kind == 0 and length == 0:
            break
        chunk = raw[pos + 7: pos + 7 + length]
        assert zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF == crc, f"bad checksum at byte {pos}"
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def offline_run(run_dir: Path, index: int = -1) -> tuple[Path, list[Any]]:
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    files = list(runs[index].glob("run-*.wandb"))
    assert len(files) == 1
    return runs[index], list(wandb_records(files[0]))


def history(records: list[Any]) -> dict[int, dict[str, float]]:
    out = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            items = {".".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            out[int(items.pop("_step"))] = {k: v for k, v in items.items() if not k.startswith("_")}
    return out


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import wandb  # the wandb extra; `make test` installs it

    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", "")
    # Anything that still tried the network would fail at once here instead of hanging.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    yield wandb
    wandb.teardown()  # stop the wandb-core service this process started


@pytest.mark.slow  # ~30 s: a CLI resume in a subprocess starts torch and a wandb service again
@pytest.mark.timeout(240)
def test_wandb_offline_run_holds_every_metric_and_the_run_files(data: Path, tmp_path: Path, offline_wandb: Any) -> None:
    mix = write_mix(data, "val.yaml", val={"heldout": {"path": "robot_heldout"}})
    run_dir = tmp_path / "run"
    cfg = config(mix, run_dir, wandb="offline", wandb_project="watch", wandb_tags=("t1",), tensorboard=True,
                 eval_every=2, val_data=(str(data / "vl_heldout"),), val_max_samples=4)
    first = train(cfg)
    offline_wandb.teardown()  # wandb-core closes the run's .wandb file when its service stops
    run_id = json.loads((run_dir / "wandb_run.json").read_text())["id"]
    folder, records = offline_run(run_dir)
    kinds = {r.WhichOneof("record_type") for r in records}
    assert {"run", "history", "files"} <= kinds
    meta = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (meta.run_id, meta.project, meta.display_name, list(meta.tags)) == (run_id, "watch", "run", ["t1"])
    # One fan-out: every TensorBoard scalar is in W&B's history at the same step, with the same value.
    logged = history(records)
    scalars = tensorboard_scalars(run_dir)
    assert sorted(logged) == list(range(6))
    assert set(scalars) == set().union(*(logged[s].keys() for s in logged))
    for tag, by_step in scalars.items():
        for step, value in by_step.items():
            assert logged[step][tag] == pytest.approx(value, rel=1e-6), (tag, step)
    assert "val/heldout/actions/normalized/mse" in logged[5] and "val/vl_heldout/text/ce" in logged[3]
    # The resolved configuration and the run's files are attached.
    config_items = {i.key: json.loads(i.value_json) for i in meta.config.update}
    assert config_items["train"]["validation"]["every"] == 2  # nested as TrainConfig is
    assert config_items["mixture"]["val"] == {"heldout": {"path": "robot_heldout"}}
    assert config_items["model"]["horizon"] == 4
    saved = {f.path for r in records if r.WhichOneof("record_type") == "files" for f in r.files.files}
    assert saved >= {"mixture.yaml", "norm_stats.json", "train_config.json", "model_config.json"}
    assert (folder / "files" / "mixture.yaml").read_text() == mix.read_text()
    assert (folder / "files" / "norm_stats.json").read_bytes() == (run_dir / "norm_stats.json").read_bytes()
    # Nothing tried the network (every proxy points at a closed port).
    assert "127.0.0.1:9" not in "".join(p.read_text(errors="replace") for p in folder.glob("logs/*.log"))

    # A crash after the step-4 checkpoint, then resume: the same W&B run, the validation schedule goes on.
    shutil.rmtree(run_dir / "checkpoints" / "step_00000006")
    (run_dir / "checkpoints" / "LATEST").unlink()
    proc = run_cli("train", str(mix), "--steps", "6", "--out", str(run_dir), "--resume", "--save-every", "2",
                   "--warmup-steps", "2", "--lr", "1e-3", "--eval-every", "2", "--val-data", str(data / "vl_heldout"),
                   "--wandb", "offline", "--wandb-project", "watch", "--set", "val_max_samples=4",
                   "--set", "keep_checkpoints=3", "--set", "progress=false", "--set", "wandb_tags=[t1]", "--json")
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)  # W&B wrote nothing into the --json output
    again = rows(run_dir)
    for key in (*TRAINING_KEYS, "val", "bad_samples"):  # exact resume, validation included
        assert [r.get(key) for r in again] == [r.get(key) for r in first.history], key
    assert json.loads((run_dir / "wandb_run.json").read_text())["id"] == run_id
    _, resumed = offline_run(run_dir)
    assert next(r.run for r in resumed if r.WhichOneof("record_type") == "run").run_id == run_id
    assert sorted(history(resumed)) == [4, 5] and "val/heldout/actions/normalized/mse" in history(resumed)[5]


@pytest.mark.slow  # ~20 s: two torchrun processes
def test_fsdp_validation_on_two_processes_matches_one(data: Path, tmp_path: Path) -> None:
    """FSDP2 gathers the root's parameters only in its forward; validation calls other methods, so it
    gathers them itself on every rank."""
    import os
    import subprocess

    from tests.helpers import ROOT

    mix = write_mix(data, "val.yaml", val={"heldout": {"path": "robot_heldout"}})
    one = train(config(mix, tmp_path / "one", steps=4, save_every=4, eval_every=2, val_max_samples=4)).history
    args = [str(mix), "--steps", "4", "--save-every", "4", "--warmup-steps", "2", "--lr", "1e-3", "--eval-every", "2",
            "--set", "progress=false", "--set", "tensorboard=false", "--set", "val_max_samples=4", "--fsdp"]
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           "29561", "-m", "cotrain", "train", *args, "--out", str(tmp_path / "fsdp")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = rows(tmp_path / "fsdp")
    assert [r["step"] for r in two if "val" in r] == [1, 3]
    for a, b in zip(one, two):
        if "val" in a:
            got, want = b["val"]["heldout"]["actions"], a["val"]["heldout"]["actions"]
            assert got["normalized"]["mse"] == pytest.approx(want["normalized"]["mse"], rel=1e-5)
            assert got["image_gain"] == pytest.approx(want["image_gain"], rel=1e-4, abs=1e-6)
