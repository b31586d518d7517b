"""The trainer on CPU with the tiny preset over real mixture shards: run layout, resume, bad configs, DDP."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cotrain.dataset import keys
from cotrain.errors import ConfigError
from cotrain.train.config import TrainConfig
from cotrain.train.loop import train
from tests.fixtures.cotrain_data import write_dataset
from tests.helpers import ROOT, run_cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")


FAST = {"progress": False, "tensorboard": False, "warmup_steps": 2, "lr": 1e-3}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("traindata")
    write_dataset(root / "robot", samples=40, state_dim=4, action_dim=3, horizon=4, cameras=("front", "wrist"))
    write_dataset(root / "other", samples=24, state_dim=2, action_dim=2, horizon=3, tag=2, embodiment="arm2")
    write_dataset(root / "vl", samples=24, modality=keys.VISION_LANGUAGE, cameras=("image",))
    return root


def write_mix(root: Path, name: str = "mix.yaml", **overrides: object) -> Path:
    doc: dict[str, object] = {
        "name": "train-test", "seed": 3, "batch_size": 8, "image_size": 32,
        "sources": {"robot": {"path": "robot"}, "other": {"path": "other"}, "vl": {"path": "vl", "loss_weight": 0.5}},
        "phases": [{"name": "a", "steps": 100, "weights": {"robot": 0.5, "other": 0.25, "vl": 0.25}}],
    }
    doc.update(overrides)
    path = root / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def config(data: Path, out: Path, **fields: object) -> TrainConfig:
    return TrainConfig(**{"mixture": str(write_mix(data)), "model": "tiny", "steps": 6, "out": str(out),
                          "save_every": 3, **FAST, **fields})


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_checkpoints_and_metrics(data: Path, tmp_path: Path) -> None:
    import importlib.util

    from safetensors.torch import load_file

    tensorboard = importlib.util.find_spec("tensorboard") is not None  # not a declared dependency yet
    result = train(config(data, tmp_path / "run", keep_checkpoints=1, tensorboard=tensorboard))
    run = tmp_path / "run"
    assert (result.start_step, result.end_step) == (0, 6) and result.parameters["total"] < 5_000_000
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert ckpts == ["step_00000006"]  # keep_checkpoints=1 pruned step 3
    assert json.loads((run / "checkpoints" / "LATEST").read_text()) == {"dir": "step_00000006"}
    ckpt = run / "checkpoints" / "step_00000006"
    for name in ("model.safetensors", "optimizer.safetensors", "optimizer.json", "trainer_state.json",
                 "loader_rank0.json", "rng_rank0.safetensors", "norm_stats.json", "tokenizer.json",
                 "model_config.json", "train_config.json"):
        assert (ckpt / name).is_file(), name
    assert not list((run / "checkpoints").glob(".tmp*"))
    weights = load_file(str(ckpt / "model.safetensors"))
    assert "blocks.0.expert.self_attn.q_proj.weight" in weights and "action_out_proj.weight" in weights
    opt = load_file(str(ckpt / "optimizer.safetensors"))
    assert opt["action_out_proj.weight::exp_avg"].shape == weights["action_out_proj.weight"].shape
    assert float(opt["action_out_proj.weight::step"]) == 6.0
    assert json.loads((ckpt / "loader_rank0.json").read_text())["step"] == 6
    stats = json.loads((run / "norm_stats.json").read_text())
    assert stats["sources"]["robot"]["embodiment"] == "bot" and stats["normalization"] == "quantile"
    assert stats["sources"]["vl"]["actions"] is None
    logged = rows(run)
    assert [r["step"] for r in logged] == list(range(6)) and logged == result.history
    first = logged[0]
    assert sum(first["proportions"].values()) == pytest.approx(1.0)
    assert set(first["loss_source"]) <= {"robot", "other", "vl"} and first["flow"] > 0 and first["text"] > 0
    assert first["loss_modality"].keys() <= {"robot", "vision_language"} and "mfu" not in first  # CPU: no MFU
    assert 0 <= first["data_wait"] < 1 and first["samples_per_s"] > 0 and first["lr"] == pytest.approx(5e-4)
    assert list((run / "tensorboard").glob("events.out.tfevents.*")) or not tensorboard


def test_resume_after_kill_equals_uninterrupted(data: Path, tmp_path: Path) -> None:
    mix = write_mix(data)
    common = [str(mix), "--model", "tiny", "--steps", "24", "--save-every", "4", "--warmup-steps", "2",
              "--lr", "1e-3", "--set", "progress=false", "--set", "tensorboard=false"]
    whole = run_cli("train", *common, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    killed = tmp_path / "killed"
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "cotrain", "train", *common, "--out", str(killed)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step_00000008").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert len(rows(killed)) < 24
    resumed = run_cli("train", *common, "--out", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = rows(tmp_path / "whole"), rows(killed)
    assert [r["step"] for r in b] == list(range(24))
    for key in ("loss", "flow", "text", "grad_norm", "lr", "proportions", "loss_source"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    # The loop's clock continues from the checkpoint the run resumed at: never back to 0, and the
    # time the killed process spent after that checkpoint is not counted.
    state = json.loads((killed / "checkpoints" / "step_00000024" / "trainer_state.json").read_text())
    elapsed = [r["elapsed_s"] for r in b]
    assert all(0 < x < y for x, y in zip(elapsed, elapsed[1:])) and elapsed[-1] <= state["train_seconds"]


def test_grad_accum_gives_the_same_steps(data: Path, tmp_path: Path) -> None:
    one = train(config(data, tmp_path / "one", steps=3))
    two = train(config(data, tmp_path / "two", steps=3, grad_accum=2))
    for r1, r2 in zip(one.history, two.history):
        assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-5)
        assert r1["grad_norm"] == pytest.approx(r2["grad_norm"], rel=1e-4)


def test_several_flow_draws_per_sample_train_and_split_across_micro_batches(data: Path, tmp_path: Path) -> None:
    """flow_samples=3: the K draws of a sample stay with its row when the batch is split."""
    one = train(config(data, tmp_path / "one", steps=3, **{"model.flow_samples": 3}))
    two = train(config(data, tmp_path / "two", steps=3, grad_accum=2, **{"model.flow_samples": 3}))
    single = train(config(data, tmp_path / "single", steps=3))
    for r1, r2 in zip(one.history, two.history):
        assert r1["flow"] == pytest.approx(r2["flow"], rel=1e-5)
        assert r1["grad_norm"] == pytest.approx(r2["grad_norm"], rel=1e-4)
    assert one.history[0]["flow"] != pytest.approx(single.history[0]["flow"], rel=1e-3)
    stored = json.loads((tmp_path / "one" / "model_config.json").read_text())
    assert stored["flow_samples"] == 3


def test_length_split_runs_two_passes_with_the_same_losses(data: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from cotrain.train import loop, microbatch

    monkeypatch.setattr(microbatch, "SPLIT_GAIN", 0.999)  # these short test texts: split on any saving
    passes: list[list[int]] = []
    real = loop.micro_batches

    def spy(*args: object, **kw: object) -> list[Any]:
        groups = real(*args, **kw)  # type: ignore[arg-type]  # passed through unchanged
        passes.append([len(g) for g in groups])
        return groups

    monkeypatch.setattr(loop, "micro_batches", spy)
    one = train(config(data, tmp_path / "one", steps=4))
    assert all(p == [8] for p in passes)
    passes.clear()
    cfg = config(data, tmp_path / "split", steps=4)
    split = train(cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"length_split": True})}))
    assert any(len(p) == 2 for p in passes) and all(sum(p) == 8 for p in passes)  # captions vs instructions
    for r1, r2 in zip(one.history, split.history, strict=True):
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-5)
        assert r2["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-4)
        assert r2["loss_source"] == pytest.approx(r1["loss_source"], rel=1e-5)


def test_cpu_bf16_autocast_trains_close_to_fp32_and_is_stored(data: Path, tmp_path: Path) -> None:
    fp32 = train(config(data, tmp_path / "fp32", steps=3))
    bf16 = train(config(data, tmp_path / "bf16", steps=3, precision="bf16"))
    for r1, r2 in zip(fp32.history, bf16.history):
        assert r2["loss"] == pytest.approx(r1["loss"], rel=0.05)
        assert r2["loss"] != r1["loss"]  # it did run in bf16
    stored = json.loads((tmp_path / "bf16" / "train_config.json").read_text())
    assert stored["parallel"]["precision"] == "bf16"


def test_bad_configurations_fail_before_training(data: Path, tmp_path: Path) -> None:
    def err(**fields: object) -> str:
        with pytest.raises(ConfigError) as info:
            train(config(data, tmp_path / "bad", **fields))
        assert not (tmp_path / "bad").exists()
        return str(info.value)

    assert "unknown model preset 'tinyy' (did you mean 'tiny'?)" in err(model="tinyy")
    assert "source 'robot' (robot): 3 action dims do not fit the model's 2" in err(action_dim=2)
    assert "source 'vl' (vision_language): contributes no loss (text loss weight is 0)" in err(text_loss_weight=0)
    assert "--grad-accum 3 does not divide the per-rank batch of 8" in err(grad_accum=3)
    assert "preset 'paligemma' loads pretrained weights: pass --init-from DIR" in err(model="paligemma")
    train(config(data, tmp_path / "done", steps=1))
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        train(config(data, tmp_path / "done", steps=1))
    with pytest.raises(ConfigError, match=r"--resume: optim.lr was 0.001 in .*, now 0.002"):
        train(config(data, tmp_path / "done", steps=1, resume=True, lr=2e-3))
    cli = run_cli("train", str(write_mix(data)), "--model", "pali", "--steps", "1", "--out", str(tmp_path / "x"))
    assert cli.returncode == 1
    assert cli.stderr.strip().splitlines() == ["error: unknown model preset 'pali' (did you mean 'paligemma'?); "
                                               "valid: paligemma, paligemma-random, paligemma2, pi0, pi05, small, "
                                               "tiny, tiny-conv"]


@pytest.fixture(scope="module")
def tokens(data: Path) -> Path:
    """An action-token dataset made the real way: fit a bins tokenizer, run the tokens converter."""
    from cotrain.action_tokens import fit_tokenizer
    from cotrain.convert.pipeline import convert
    from cotrain_converters.tokens import TokensOptions

    fit_tokenizer([data / "robot"], data / "bins", kind="bins")
    convert("tokens", data / "robot", data / "tok", TokensOptions(tokenizer=str(data / "bins"), name="tok"))
    return data / "tok"


def test_policy_predict_matches_the_loader_path(data: Path, tmp_path: Path) -> None:
    import numpy as np
    import torch

    import cotrain
    from cotrain.dataset.manifest import load_manifest
    from cotrain.dataset.reader import SourceReader
    from cotrain.eval.policy import load_run
    from cotrain.mix.transform import SampleTransform

    train(config(data, tmp_path / "run", steps=3))
    policy = cotrain.Policy.load(tmp_path / "run")
    manifest = load_manifest(data / "robot")
    raw = SourceReader(str(data / "robot"), manifest).read(5)
    images = {cam: raw[f"{cam}.jpg"] for cam in manifest.cameras}  # JPEG bytes, as stored
    chunk = policy.predict(images, raw["state.npy"], raw["instruction.txt"], "bot", seed=7)
    assert chunk.shape == (4, 3) and chunk.dtype == np.float32
    # the same computation through the training transform and collator
    run = load_run(tmp_path / "run")
    spec = policy.run.norm
    transform = SampleTransform.build(0, "robot", manifest, image_size=32, horizon=4, loss_weight=1.0,
                                      normalization=spec["normalization"], floor=spec["floor"], clip=spec["clip"])
    inputs = run.inputs([transform(raw)])
    noise = torch.randn((1, 4, 3), generator=torch.Generator().manual_seed(7))
    expected = transform.action_norm.inverse(run.model.sample_actions(inputs, noise)[0].numpy())
    np.testing.assert_allclose(chunk, expected, rtol=1e-5, atol=1e-5)
    assert np.array_equal(chunk, policy.predict(images, raw["state.npy"], raw["instruction.txt"], "robot", seed=7))
    with pytest.raises(ConfigError, match="unknown embodiment 'nope'; the run knows: arm2, bot, other, robot, vl"):
        policy.predict(images, raw["state.npy"], "x", "nope")
    with pytest.raises(ConfigError, match="state has 2 values; 'robot' has 4"):
        policy.predict(images, [0.0, 1.0], "x", "bot")
    with pytest.raises(ConfigError, match="camera 'top' is not one of this embodiment's: front, wrist"):
        policy.predict({"top": raw["front.jpg"]}, raw["state.npy"], "x", "bot")


def test_checkpoint_weights_round_trip_and_mismatch(data: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from cotrain.eval.policy import load_run
    from cotrain.train.checkpoint import load_model_weights

    result = train(config(data, tmp_path / "run", steps=2))
    saved = load_file(str(result.last_checkpoint / "model.safetensors"))
    loaded = load_run(tmp_path / "run").model.state_dict()
    assert saved.keys() == {k for k in loaded if "rotary" not in k}
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    other = load_run(tmp_path / "run").model
    other.action_out_proj = torch.nn.Linear(other.expert_width, 5)
    with pytest.raises(ConfigError, match="weights do not match the model"):
        load_model_weights(result.last_checkpoint, other)


def test_action_tokens_train_and_eval(data: Path, tokens: Path, tmp_path: Path) -> None:
    mix = write_mix(data, "tokmix.yaml", sources={"robot": {"path": "robot"}, "tok": {"path": "tok"},
                                                  "vl": {"path": "vl"}},
                    phases=[{"name": "a", "steps": 100, "weights": {"robot": 0.25, "tok": 0.5, "vl": 0.25}}])
    cfg = TrainConfig(mixture=str(mix), model="tiny", steps=25, out=str(tmp_path / "run"), save_every=25,
                      **{**FAST, "lr": 3e-3})
    result = train(cfg)
    first, last = result.history[0], result.history[-1]
    assert first["action_tokens"] > 4.0 and last["action_tokens"] < 0.7 * first["action_tokens"]
    assert last["loss_modality"].keys() >= {"action_tokens"}
    report = json.loads(run_cli("eval", str(tmp_path / "run"), "--data", str(tokens), "--data", str(data / "vl"),
                                "--max-samples", "8", "--json", check=True).stdout)
    tok, vl = report["datasets"]["tok"], report["datasets"]["vl"]
    assert report["step"] == 25 and tok["modality"] == "action_tokens" and tok["samples"] == 8
    assert tok["action_tokens"]["tokens"] == 8 * (4 * 3 + 1)  # bins: H x D ids + <eos> per sample
    assert 0.0 <= tok["action_tokens"]["accuracy"] <= 1.0 and tok["actions"]["cells"] > 0
    assert vl["text"]["tokens"] == sum(len(f"caption {i}") + 1 for i in (0, 3, 7, 10, 13, 16, 20, 23))
    assert "actions" not in vl and vl["text"]["perplexity"] == pytest.approx(math.exp(vl["text"]["ce"]))
    from cotrain.eval.offline import evaluate_run

    with pytest.raises(ConfigError, match="the run has no norm stats for embodiment 'arm2' with 2 action dims; "
                                          "it knows: bot"):
        evaluate_run(tmp_path / "run", [data / "other"], max_samples=2)
    bad = write_mix(data, "bad.yaml", sources={"tok": {"path": "tok"}},
                    phases=[{"name": "a", "steps": 1, "weights": {"tok": 1}}])
    with pytest.raises(ConfigError, match=r"source 'tok' \(action_tokens\): its tokenizer has 256 ids, the model "
                                          r"takes 100 \(raise it: --set action_vocab_size=256\)"):
        train(TrainConfig(mixture=str(bad), steps=1, out=str(tmp_path / "bad"), action_vocab_size=100, **FAST))
    with pytest.raises(ConfigError, match=r"has no action-token vocabulary \(pass --set action_vocab_size=256\)"):
        train(TrainConfig(mixture=str(bad), steps=1, out=str(tmp_path / "bad"), action_vocab_size=0, **FAST))


def test_eval_text_ce_falls_with_training(data: Path, tmp_path: Path) -> None:
    mix = write_mix(data, "vl.yaml", sources={"vl": {"path": "vl"}},
                    phases=[{"name": "a", "steps": 100, "weights": {"vl": 1}}])
    for steps in (1, 30):
        train(TrainConfig(mixture=str(mix), steps=steps, out=str(tmp_path / f"run{steps}"), save_every=100,
                          **{**FAST, "lr": 3e-3}))
    from cotrain.eval.offline import evaluate_run

    early = evaluate_run(tmp_path / "run1", [data / "vl"], max_samples=12)
    late = evaluate_run(tmp_path / "run30" / "checkpoints" / "step_00000030", [data / "vl"], max_samples=12)
    assert (early["step"], late["step"]) == (1, 30)
    assert late["datasets"]["vl"]["text"]["ce"] < 0.5 * early["datasets"]["vl"]["text"]["ce"]
    assert late["datasets"]["vl"]["text"]["accuracy"] > early["datasets"]["vl"]["text"]["accuracy"]
    with pytest.raises(ConfigError, match="robot: 3 action dims; the model takes 1"):
        evaluate_run(tmp_path / "run30", [data / "robot"], max_samples=2)


def _torchrun(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           str(port), "-m", "cotrain", "train", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_process_gloo_ddp_and_fsdp_match_one_process(data: Path, tmp_path: Path) -> None:
    mix = write_mix(data)
    reference = train(config(data, tmp_path / "one", steps=6)).history
    common = [str(mix), "--steps", "6", "--save-every", "3", "--warmup-steps", "2", "--lr", "1e-3",
              "--set", "progress=false", "--set", "tensorboard=false"]
    _torchrun(29541, *common, "--out", str(tmp_path / "ddp"))
    ddp = rows(tmp_path / "ddp")
    assert [r["proportions"] for r in ddp] == [r["proportions"] for r in reference]
    for a, b in zip(ddp, reference):  # noise is drawn per global batch, so ranks change nothing but sums
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["grad_norm"] == pytest.approx(
            b["grad_norm"], rel=1e-5
        )
    ckpt = tmp_path / "ddp" / "checkpoints" / "step_00000006"
    assert {p.name for p in ckpt.glob("loader_rank*.json")} == {"loader_rank0.json", "loader_rank1.json"}
    # elastic resume: the 2-rank checkpoint of step 3, continued by one process, gives the same steps 3..5
    import shutil

    shutil.rmtree(ckpt)
    (tmp_path / "ddp" / "checkpoints" / "LATEST").write_text('{"dir": "step_00000003"}\n')
    resumed = train(config(data, tmp_path / "ddp", steps=6, resume=True))
    assert resumed.start_step == 3 and [r["step"] for r in rows(tmp_path / "ddp")] == list(range(6))
    for a, b in zip(rows(tmp_path / "ddp")[3:], reference[3:]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    # FSDP2 (one unit per MoT block and SigLIP layer) on CPU/gloo: same first steps (warmup: lr independent of length)
    # FSDP2 (one unit per MoT block and SigLIP layer) on CPU/gloo, then its step-3 checkpoint (full state dicts
    # gathered from the shards) resumed by one process: the same steps again
    _torchrun(29542, *common, "--fsdp", "--out", str(tmp_path / "fsdp"))
    for a, b in zip(rows(tmp_path / "fsdp"), reference):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    shutil.rmtree(tmp_path / "fsdp" / "checkpoints" / "step_00000006")
    (tmp_path / "fsdp" / "checkpoints" / "LATEST").write_text('{"dir": "step_00000003"}\n')
    train(config(data, tmp_path / "fsdp", steps=6, resume=True))
    for a, b in zip(rows(tmp_path / "fsdp")[3:], reference[3:]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_paligemma_from_a_local_checkpoint_frozen_and_lora(data: Path, tmp_path: Path) -> None:
    import shutil

    import numpy as np
    import torch
    from safetensors.torch import load_file

    import cotrain
    from tests.unit.model.test_model import write_paligemma

    pg = tmp_path / "pg"
    write_paligemma(pg)
    hf = load_file(str(pg / "model.safetensors"))  # hub layout: language_model.model.*, vision_tower.*
    common = {"model": "paligemma", "init_from": str(pg), "expert_width": 32, "expert_mlp": 64, "horizon": 4,
              "steps": 2}
    with pytest.raises(ConfigError, match=r"image_size is 48 but the checkpoint .* takes 32x32 images"):
        train(TrainConfig(mixture=str(write_mix(data, "m48.yaml", image_size=48)), out=str(tmp_path / "x"),
                          **{**FAST, **common}))
    frozen = train(config(data, tmp_path / "frozen", freeze="backbone", **common))
    pytest.importorskip("peft")
    lora = train(config(data, tmp_path / "lora", lora_rank=4, **common))
    # rank 4 on q,k,v,o,gate,up,down of 2 layers (64 wide, q 32, kv 16, mlp 128): 4 * (in + out) each
    assert lora.parameters["trainable"] - frozen.parameters["trainable"] == 2 * 4 * (96 + 80 + 80 + 96 + 192 * 3)
    for result in (frozen, lora):
        saved = load_file(str(result.last_checkpoint / "model.safetensors"))
        base = ".base_layer" if result is lora else ""
        assert torch.equal(saved[f"blocks.1.backbone.self_attn.q_proj{base}.weight"],
                           hf["language_model.model.layers.1.self_attn.q_proj.weight"])  # frozen: untouched
        assert torch.equal(saved["vision_tower.encoder.layers.0.mlp.fc1.weight"],
                           hf["vision_tower.encoder.layers.0.mlp.fc1.weight"])
    saved = load_file(str(lora.last_checkpoint / "model.safetensors"))
    assert saved["blocks.0.backbone.mlp.down_proj.lora_B.default.weight"].abs().sum() > 0  # adapters trained
    model_cfg = json.loads((tmp_path / "lora" / "model_config.json").read_text())
    assert model_cfg["pretrained"] and model_cfg["action_dim"] == 32 and model_cfg["lora_rank"] == 4
    shutil.rmtree(pg)  # the run must be self-contained: Policy rebuilds from its stored config
    policy = cotrain.Policy.load(tmp_path / "lora")
    chunk = policy.predict([np.zeros((24, 32, 3), np.uint8)] * 2, np.zeros(4), "pick", "bot")
    assert chunk.shape == (4, 3) and np.isfinite(chunk).all()


def test_eval_image_gain_pairs_each_sample_with_another_samples_images(data: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A policy that memorised its scenes (actions looked up by image) is perfect on its own images and
    as wrong as the donor's actions on swapped ones; a vision-blind policy gains nothing."""
    import torch

    from cotrain.eval.offline import evaluate_dataset
    from cotrain.eval.policy import load_run

    train(config(data, tmp_path / "run", steps=1))
    run = load_run(tmp_path / "run")
    memory: dict[float, torch.Tensor] = {}
    order: list[float] = []
    valid: list[torch.Tensor] = []

    def memorised(inputs, noise, steps=None):  # every flat fixture image has its own grey level
        scene = [round(float(v), 1) for v in inputs.images.float().mean(dim=(1, 2, 3, 4))]
        if not memory:  # the first call sees every sample with its own images (one batch)
            order.extend(scene)
            valid.append(inputs.actions_valid.clone())
            memory.update(zip(scene, inputs.actions.clone()))
        return torch.stack([memory[s] for s in scene])

    monkeypatch.setattr(run.model, "sample_actions", memorised)
    report = evaluate_dataset(run, data / "robot", max_samples=40, batch_size=64, flow_steps=1, seed=0)["actions"]
    targets = torch.stack([memory[s] for s in order])[:, :, :3]
    n = len(order)
    assert n == 40 and len(set(order)) == 40 and report["normalized"]["mse"] == 0.0
    donors = targets[[(i + n // 2) % n for i in range(n)]]
    cells = valid[0][:, :, None].expand_as(targets)  # the sample's own valid steps count, not the donor's
    expected = float(((donors - targets) ** 2)[cells].mean())
    assert report["normalized"]["mse_shuffled_images"] == pytest.approx(expected, rel=1e-5) and expected > 0.5
    assert report["image_gain"] == pytest.approx(expected, rel=1e-5)

    monkeypatch.setattr(run.model, "sample_actions", lambda inputs, noise, steps=None: torch.zeros_like(inputs.actions))
    blind = evaluate_dataset(run, data / "robot", max_samples=40, batch_size=16, flow_steps=1, seed=0)["actions"]
    assert blind["image_gain"] == 0.0 and blind["normalized"]["mse_shuffled_images"] == blind["normalized"]["mse"] > 0


def test_text_budget_is_sized_from_the_data_and_never_cuts_silently(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """Instructions of 43-44 bytes overflow the tiny preset's 32 byte-tokens: the budget grows to the
    longest text (read from the shard indices), is stored with the run, and a smaller explicit budget
    is warned about once, with the rate, and counted per step."""
    import logging

    write_dataset(tmp_path / "long", samples=12, per_shard=6, horizon=2, cameras=("front",), image_hw=(8, 8),
                  instruction="pick up the red block and place it in bin {i}")
    mix = tmp_path / "mix.yaml"
    mix.write_text(
        yaml.safe_dump(
            {
                "name": "long",
                "batch_size": 4,
                "image_size": 16,
                "sources": {"long": {"path": "long"}},
                "phases": [{"name": "a", "steps": 10, "weights": {"long": 1.0}}],
            }
        )
    )
    fit = {"mixture": str(mix), "model": "tiny", "steps": 2, **FAST}
    result = train(TrainConfig(out=str(tmp_path / "fit"), **fit))
    stored = json.loads((tmp_path / "fit" / "model_config.json").read_text())
    assert stored["max_text_tokens"] == 1 + 44 + 1  # <bos>, the longest instruction's bytes, "\n"
    assert [r["truncated"] for r in result.history] == [0, 0]
    from cotrain.eval.policy import Policy

    assert Policy.load(tmp_path / "fit").run.layout.max_tokens == 46  # a loaded policy uses the stored budget

    with caplog.at_level(logging.WARNING):
        short = train(TrainConfig(out=str(tmp_path / "short"), max_text_tokens=40, **fit))
    said = [r.getMessage() for r in caplog.records if "max_text_tokens=40" in r.getMessage()]
    # 10 of 12 instructions are 44 bytes (bins 2-11 need 46 tokens), bins 0 and 1 need 45: all cut at 40
    assert len(said) == 2 and "text of 12 of 12 samples (100.0%) is longer than max_text_tokens=40" in said[0]
    assert "step 0: the text of 4 of 4 samples so far (100.0%)" in said[1]
    assert [r["truncated"] for r in short.history] == [4, 4]
    assert json.loads((tmp_path / "short" / "model_config.json").read_text())["max_text_tokens"] == 40


def test_a_run_folder_with_an_old_flat_train_config_still_loads(data: Path, tmp_path: Path) -> None:
    """Runs written before TrainConfig was nested: `--resume`, Policy.load and `cotrain eval` keep working."""
    from cotrain.eval.offline import evaluate_run
    from cotrain.eval.policy import Policy
    from cotrain.train.config import load_train_config
    from tests.unit.train.test_train_config import OLD_FLAT

    run, mix = tmp_path / "run", write_mix(data)
    cfg = TrainConfig(mixture=str(mix), steps=2, out=str(run), optim={"lr": 1e-3, "warmup_steps": 2},
                      checkpoint={"every": 2}, logging={"progress": False, "tensorboard": False})
    train(cfg)
    assert json.loads((run / "train_config.json").read_text())["optim"]["lr"] == 1e-3  # stored nested now
    old = json.dumps({**OLD_FLAT, "mixture": str(mix), "out": str(run)})
    for path in (run / "train_config.json", *run.glob("checkpoints/step_*/train_config.json")):
        path.write_text(old)  # as an earlier version wrote it
    assert load_train_config(run / "train_config.json") == cfg
    resumed = train(cfg.model_copy(update={"resume": True, "data": cfg.data.model_copy(update={"num_workers": 1})}))
    assert (resumed.start_step, resumed.end_step) == (2, 2)  # same run; a worker count may change on resume
    with pytest.raises(ConfigError, match=r"--resume: optim.lr was 0.001 in .*train_config.json, now 0.002"):
        train(cfg.model_copy(update={"resume": True, "optim": cfg.optim.model_copy(update={"lr": 2e-3})}))
    policy = Policy.load(run)
    assert policy.run.step == 2
    assert evaluate_run(run, [data / "robot"], max_samples=2)["step"] == 2
