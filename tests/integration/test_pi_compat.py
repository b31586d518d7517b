"""pi0 / pi0.5 against LeRobot's own implementation (LeRobot 0.4.4 in a separate Python environment).

tests/integration/lerobot_compat/lerobot_reference.py builds tiny random-weight PI0 and PI05 policies with
LeRobot's classes, saves them with `save_pretrained` and records their outputs on fixed inputs and
noise; cotrain loads the saved directories (`--model pi0|pi05 --init-from DIR`) and must reproduce
them (fp32, CPU). The LeRobot environment is found through $COTRAIN_LEROBOT_PYTHON or
.venv-lerobot/bin/python (`make lerobot-env` builds it); without one these tests skip and say so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cotrain.errors import ConfigError
from cotrain.model.config import get_preset, with_overrides
from cotrain.model.factory import build_vla
from cotrain.model.flow_matching import interpolate, velocity_target
from cotrain.model.inputs import ModelInputs
from cotrain.model.text import build_byte_tokenizer
from tests.helpers import NO_LEROBOT, find_lerobot_python

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "tests" / "integration" / "lerobot_compat" / "lerobot_reference.py"
# fp32 on CPU; LeRobot runs eager attention with a -2.38e38 mask, cotrain SDPA with 0.7 * fp32 min.
TOL = {"prefix_embs": 1e-6, "velocity": 5e-6, "chunk": 5e-6, "loss": 2e-5}


LEROBOT = find_lerobot_python()


def run_lerobot(*args: str) -> None:
    proc = subprocess.run([str(LEROBOT), str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if LEROBOT is None:
        pytest.skip(NO_LEROBOT)
    out = tmp_path_factory.mktemp("lerobot_ref")
    run_lerobot("make", str(out))
    return out


def load_cotrain(path: Path, arch: str, **overrides: object):
    cfg = with_overrides(get_preset(arch), max_cameras=2, **overrides)
    model, cfg = build_vla(cfg, seed=0, tokenizer=build_byte_tokenizer(), init_from=path)
    return model.eval(), cfg


def model_inputs(ref: dict[str, torch.Tensor]) -> ModelInputs:
    b, h, d = ref["in.actions"].shape
    return ModelInputs(images=ref["in.images"], camera_mask=ref["in.camera_mask"], text_ids=ref["in.text_ids"],
                       text_valid=ref["in.text_valid"], text_kind=torch.zeros_like(ref["in.text_ids"]),
                       state=ref["in.state"], state_valid=torch.ones(b, dtype=torch.bool), actions=ref["in.actions"],
                       actions_valid=torch.ones(b, h, dtype=torch.bool), action_mask=torch.ones(b, d, dtype=torch.bool))


@torch.no_grad()
def cotrain_outputs(model, inputs: ModelInputs, ref: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    emb = model.embed_prefix(inputs)[0]
    cache = model.encode_prefix(inputs)
    t = ref["in.t"]
    x_t = interpolate(inputs.actions, ref["in.noise"], t)
    _, hs = model._joint(inputs, x_t, t, model.cfg.knowledge_insulation)
    loss = (velocity_target(inputs.actions, ref["in.noise"]) - model.velocity(hs)) ** 2
    return {"prefix_embs": emb, "velocity": model.denoise(cache, inputs.state, ref["in.x_t"], t),
            "chunk": model.sample_actions(inputs, ref["in.noise"]), "loss": loss}


def max_errors(ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], prefix: str = "out.") -> dict[str, float]:
    valid = ref[f"{prefix}prefix_valid"].bool()
    errs = {"prefix_embs": (ours["prefix_embs"] - ref[f"{prefix}prefix_embs"])[valid].abs().max().item()}
    for name in ("velocity", "chunk", "loss"):
        errs[name] = (ours[name] - ref[f"{prefix}{name}"]).abs().max().item()
    return errs


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["pi0", "pi05"])
@pytest.mark.parametrize("insulate", [False, True])
def test_lerobot_checkpoint_matches_lerobot(reference: Path, arch: str, insulate: bool) -> None:
    ref = load_file(str(reference / f"{arch}_ref.safetensors"))
    model, cfg = load_cotrain(reference / arch, arch, knowledge_insulation=insulate)
    assert (cfg.horizon, cfg.action_dim, cfg.expert_width, cfg.image_size) == (4, 8, 32, 32)
    errs = max_errors(cotrain_outputs(model, model_inputs(ref), ref), ref)
    print(arch, "insulated" if insulate else "joint", errs, file=sys.stderr)
    assert all(errs[k] <= TOL[k] for k in TOL), errs
    assert ref["out.chunk"].abs().mean() > 0.1  # the comparison is not between two near-zero tensors


def as_openpi(policy_dir: Path, out: Path, arch: str) -> Path:
    """The same weights in openpi's PyTorch-conversion layout (names without `model.`, openpi's config.json)."""
    import json

    from safetensors.torch import save_file

    out.mkdir(parents=True)
    tensors = {k.removeprefix("model."): v for k, v in load_file(str(policy_dir / "model.safetensors")).items()}
    tensors["paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"] = tensors.pop(
        "paligemma_with_expert.paligemma.lm_head.weight")
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({"action_dim": 8, "action_horizon": 4, "paligemma_variant": "gemma_2b",
                                                 "action_expert_variant": "gemma_300m", "precision": "float32"}))
    return out


@pytest.mark.parametrize("arch", ["pi0", "pi05"])
def test_openpi_layout_matches_lerobot(reference: Path, tmp_path: Path, arch: str) -> None:
    ref = load_file(str(reference / f"{arch}_ref.safetensors"))
    model, _ = load_cotrain(as_openpi(reference / arch, tmp_path / arch, arch), arch)
    errs = max_errors(cotrain_outputs(model, model_inputs(ref), ref), ref)
    assert all(errs[k] <= TOL[k] for k in TOL), errs


def test_pi05_prompt_matches_lerobot(reference: Path) -> None:
    import json

    from cotrain.model.text import pi05_prompt

    ref = json.loads((reference / "pi05_prompts.json").read_text())
    ours = [pi05_prompt(task, state) for task, state in zip(ref["tasks"], ref["state"])]
    assert ours == ref["prompts"]


def test_refuses_mis_shaped_and_unmapped_tensors(reference: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    for name, change in (("bad_shape", "reshape"), ("extra", "add")):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text((reference / "pi0" / "config.json").read_text())
        tensors = load_file(str(reference / "pi0" / "model.safetensors"))
        key = "model.action_out_proj.weight"
        if change == "reshape":
            tensors[key] = torch.zeros(9, 32)
        else:
            tensors["model.mystery.weight"] = torch.zeros(2)
        save_file(tensors, str(d / "model.safetensors"))
        with pytest.raises(ConfigError) as err:
            load_cotrain(d, "pi0")
        assert ("action_out_proj.weight" in str(err.value) and "[9, 32]" in str(err.value)) or \
            "model.mystery.weight" in str(err.value), str(err.value)
    with pytest.raises(ConfigError, match="use --model pi05"):
        load_cotrain(reference / "pi05", "pi0")


def pi_run(reference: Path, tmp: Path, arch: str, **fields: object) -> Path:
    """Train (in-process, the CLI's code path) `--model ARCH --init-from` the LeRobot checkpoint for 3 steps: a
    6-state / 5-action robot source mixed with a vision-language one (flow and text losses per sample)."""
    import shutil

    import yaml

    from cotrain.dataset import keys
    from cotrain.train.config import TrainConfig
    from cotrain.train.loop import train
    from tests.fixtures.cotrain_data import write_dataset

    init = tmp / f"{arch}_init"
    shutil.copytree(reference / arch, init)
    build_byte_tokenizer().save(init)
    if not (tmp / "mix.yaml").exists():
        write_dataset(tmp / "robot", samples=16, state_dim=6, action_dim=5, horizon=4, cameras=("cam0", "cam1"))
        write_dataset(tmp / "vl", samples=8, modality=keys.VISION_LANGUAGE, cameras=("image",))
        (tmp / "mix.yaml").write_text(yaml.safe_dump({
            "name": "pi", "seed": 1, "batch_size": 4, "image_size": 32,
            "sources": {"robot": {"path": "robot"}, "vl": {"path": "vl"}},
            "phases": [{"name": "a", "steps": 100, "weights": {"robot": 0.5, "vl": 0.5}}]}))
    run = tmp / f"{arch}_run"
    train(TrainConfig(mixture=str(tmp / "mix.yaml"), model=arch, init_from=str(init), steps=3, out=str(run),
                      progress=False, tensorboard=False, lr=1e-2, warmup_steps=1, **fields))
    return run


@pytest.mark.slow
def test_export_loads_in_lerobot_and_matches(reference: Path, tmp_path: Path) -> None:
    """cotrain train (KI, base stats, robot + VL) -> `cotrain export lerobot` -> LeRobot from_pretrained, both archs."""
    import json

    from cotrain.eval.policy import load_run
    from cotrain.interop.lerobot_policy import export_lerobot_policy
    from tests.helpers import run_cli

    triples = []
    for arch in ("pi0", "pi05"):
        run_dir = pi_run(reference, tmp_path, arch, knowledge_insulation=True, base_stats={"robot": "lerobot"})
        base = load_file(str(reference / arch / "policy_preprocessor_step_0_normalizer_processor.safetensors"))
        record = json.loads((run_dir / "norm_stats.json").read_text())
        assert record["base_stats"] == {"robot": "lerobot"}
        assert record["sources"]["robot"]["actions"]["q99"] == pytest.approx(base["action.q99"].tolist())
        assert record["sources"]["robot"]["state"]["mean"] == pytest.approx(base["observation.state.mean"].tolist())
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert all(m["flow"] is not None and m["text"] is not None for m in metrics), metrics
        out = tmp_path / f"{arch}_lerobot"
        with pytest.raises(ConfigError, match="--any-size"):
            export_lerobot_policy(run_dir, out)
        assert not out.exists()
        triples += [str(out), str(reference / f"{arch}_ref.safetensors"), str(tmp_path / f"{arch}_theirs.safetensors")]
    run_cli("export", "lerobot", str(tmp_path / "pi0_run"), str(tmp_path / "pi0_lerobot"), "--any-size", check=True)
    export_lerobot_policy(tmp_path / "pi05_run", tmp_path / "pi05_lerobot", any_size=True)  # the library call
    run_lerobot("check", *triples)
    for arch in ("pi0", "pi05"):
        theirs = load_file(str(tmp_path / f"{arch}_theirs.safetensors"))
        ref = load_file(str(reference / f"{arch}_ref.safetensors"))
        run = load_run(tmp_path / f"{arch}_run")
        ours = cotrain_outputs(run.model, model_inputs(ref), ref)
        assert not torch.allclose(ref["out.chunk"], ours["chunk"], atol=1e-3)  # training changed the model
        errs = max_errors(ours, theirs, prefix="")
        print(arch, "export", errs, file=sys.stderr)
        assert all(errs[k] <= TOL[k] for k in TOL), errs
        _, actions = run.normalizers(run.norm["sources"]["robot"])
        denorm = torch.from_numpy(actions.inverse(ours["chunk"][:, :, :5].numpy()))
        assert (denorm - theirs["denormalised"]).abs().max().item() <= 1e-4
        check_preprocessor(run, theirs, arch)


def check_preprocessor(run, theirs: dict[str, torch.Tensor], arch: str) -> None:
    """LeRobot's loaded preprocessor normalises the state as cotrain does and, for pi0.5, writes its prompt."""
    import numpy as np

    from cotrain.model.text import pi05_prompt

    raw = np.asarray([[0.3, -0.2, 0.1, 0.05, -0.4, 0.25]], np.float32)  # RAW_STATE of lerobot_reference.py
    state_norm, _ = run.normalizers(run.norm["sources"]["robot"])
    ours = state_norm(raw)
    assert np.abs(theirs["pre.state"].numpy() - ours).max() <= 1e-5
    ids = theirs["pre.tokens"][0][theirs["pre.mask"][0].bool()].tolist()
    tok = run.layout.tokenizer
    if arch == "pi05":
        padded = np.zeros(int(run.cfg.state_dim), np.float32)
        padded[: raw.shape[1]] = ours[0]
        assert ids == tok.encode(pi05_prompt("pick_up the cube", padded))
    else:
        assert ids == tok.encode("pick_up the cube\n")


def test_base_stats_from_openpi_assets(tmp_path: Path) -> None:
    """openpi's assets/<asset_id>/norm_stats.json replace a source's stats, cut to its dims; bad choices refused."""
    import json

    import yaml

    from cotrain.mix.resolve import load_mixture
    from cotrain.model.pi_stats import apply_base_stats, base_stats_assets
    from tests.fixtures.cotrain_data import write_dataset

    ckpt = tmp_path / "ckpt"
    stats = {"mean": [float(i) for i in range(8)], "std": [2.0] * 8, "q01": [-1.0] * 8, "q99": [3.0] * 8}
    for asset in ("physical-intelligence/libero", "trossen"):
        (ckpt / "assets" / asset).mkdir(parents=True)
        (ckpt / "assets" / asset / "norm_stats.json").write_text(json.dumps({"norm_stats": {"state": stats,
                                                                                              "actions": stats}}))
    assert sorted(base_stats_assets(ckpt)) == ["physical-intelligence/libero", "trossen"]
    write_dataset(tmp_path / "robot", samples=8, state_dim=4, action_dim=3)
    mix = tmp_path / "mix.yaml"
    mix.write_text(yaml.safe_dump({"name": "m", "seed": 1, "batch_size": 2, "image_size": 32,
                                   "sources": {"robot": {"path": "robot"}},
                                   "phases": [{"name": "a", "steps": 10, "weights": {"robot": 1.0}}]}))
    mixture = load_mixture(str(mix))
    out = apply_base_stats(mixture, str(ckpt), {"robot": "physical-intelligence/libero"})
    new = out.sources[0].manifest.stats
    assert new.state.mean == [0.0, 1.0, 2.0, 3.0] and new.actions.q99 == [3.0] * 3
    assert mixture.sources[0].manifest.stats.state.mean != new.state.mean  # the input is left alone
    for choice, message in (({"robot": "droid"}, "has no asset 'droid'; it has: physical-intelligence/libero, trossen"),
                            ({"arm": "trossen"}, "no source 'arm'")):
        with pytest.raises(ConfigError, match=message):
            apply_base_stats(mixture, str(ckpt), choice)
    short = {"mean": [0.0], "std": [1.0], "q01": [0.0], "q99": [1.0]}
    (ckpt / "assets" / "trossen" / "norm_stats.json").write_text(json.dumps({"norm_stats": {"state": short,
                                                                                             "actions": short}}))
    with pytest.raises(ConfigError, match="1 dims, the source has 4"):
        apply_base_stats(mixture, str(ckpt), {"robot": "trossen"})


# ---- pi0.5 architecture without LeRobot (a random tiny model with arch="pi05") --------------------------------

def tiny_pi05(**updates: object):
    from cotrain.model.text import TextLayout
    from tests.unit.model.test_model import SIZES

    tok = build_byte_tokenizer()
    cfg = with_overrides(get_preset("tiny"), **{**SIZES, "arch": "pi05", "max_text_tokens": 96, **updates})
    model, cfg = build_vla(cfg, seed=0, tokenizer=tok)
    layout = TextLayout(tok, cfg.backbone_config["text_config"]["vocab_size"], cfg.action_vocab_size,
                        cfg.action_token_skip, cfg.max_text_tokens, discrete_state=True)
    return model, layout


def test_pi05_state_prompt_cache_and_knowledge_insulation() -> None:
    from cotrain.model.adarms import AdaRMSNorm
    from cotrain.model.flow_matching import sample_time
    from cotrain.model.inputs import build_inputs
    from tests.unit.model.test_model import batch

    model, layout = tiny_pi05()
    assert not hasattr(model, "state_proj") and isinstance(model.expert_norm, AdaRMSNorm)
    data = batch()
    inputs, _ = build_inputs(data, layout)
    text = [layout.tokenizer.decode(row[valid].tolist()) for row, valid in zip(inputs.text_ids, inputs.text_valid)]
    assert "Task: pick the cube, State: " in text[0] and text[0].endswith(";\nAction: ")
    assert "State" not in text[2]  # the caption sample has no state: plain prompt
    g = torch.Generator().manual_seed(4)
    noise, t = torch.randn(4, 4, 3, generator=g), sample_time(4, g)
    model.eval()
    cached = model.sample_actions(inputs, noise, steps=3, use_cache=True)
    assert torch.allclose(cached, model.sample_actions(inputs, noise, steps=3, use_cache=False), atol=1e-5)
    model.train()
    plain = model(inputs, noise, t)
    ki_model, _ = tiny_pi05(knowledge_insulation=True)
    ki = ki_model(inputs, noise, t)
    assert torch.allclose(ki["flow"], plain["flow"], atol=1e-6)
    assert torch.isfinite(ki["text"]).all() and torch.isfinite(ki["action_tokens"]).all()
    ki["flow"].sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for b in ki_model.blocks for p in b.backbone.parameters())
    assert ki_model.blocks[0].expert.input_layernorm.dense.weight.grad.abs().sum() > 0
    # the dense layers start at zero (openpi), so the time MLP only gets gradient once they have moved
    assert ki_model.time_mlp_in.weight.grad.abs().sum() == 0
