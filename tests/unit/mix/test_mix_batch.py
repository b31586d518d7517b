"""Typed batches, one batch builder, named seed streams: the draws and bytes are those of before.

The digests below were recorded from the loader as it was before `mix/batch.py` and `seeds.py`
existed (commit 0795f40), over a mixture whose shards hold both kinds of bad sample: npy members
that fail while reading (first pass) and a JPEG that fails while decoding (second pass).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace as NS

import pytest
import torch
import yaml

from cotrain.mix.collate import Batch
from cotrain.mix.loader import MixtureLoader, SlotKey, build_planner
from cotrain.mix.resolve import load_mixture
from tests.fixtures.cotrain_data import write_dataset
from tests.helpers import ROOT

FIELDS = sorted("images camera_mask state state_mask actions action_mask actions_valid has_actions source "
                "loss_weight skipped action_tokens action_tokens_mask instruction prompt target conversation "
                "modality embodiment key step".split())
RECORDED = [  # (keys "source:key", skipped per row, digest of every field) per step, from commit 0795f40
    ("1:000002_000014 0:000000_000008 1:000001_000005 0:000001_000017 1:000002_000013 0:000000_000000 "
     "1:000002_000010 0:000003_000039", [0] * 8, "55f228fbcd42b272"),
    ("0:000000_000007 1:000001_000008 0:000002_000023 1:000001_000006 0:000000_000006 1:000000_000003 "
     "0:000003_000031 1:000003_000015", [0] * 8, "725df2cb8a71332b"),
    ("1:000000_000004 0:000003_000033 1:000001_000009 0:000001_000017 1:000002_000012 0:000000_000009 "
     "1:000002_000011 0:000003_000036", [0, 0, 0, 1, 0, 0, 0, 0], "0bc5a67b33804a95"),
    ("1:000000_000002 0:000000_000002 1:000000_000003 0:000002_000022 1:000001_000007 0:000002_000020 "
     "1:000003_000016 0:000001_000016", [0, 0, 1, 0, 0, 0, 0, 0], "c13e706a3ed5d6fb"),
    ("0:000001_000014 1:000000_000001 0:000001_000018 1:000001_000008 0:000002_000021 1:000000_000003 "
     "0:000000_000005 1:000001_000007", [0] * 8, "fc9d1889e1c3e076"),
    ("0:000003_000034 1:000002_000014 0:000001_000017 1:000000_000001 0:000000_000001 1:000000_000004 "
     "0:000003_000038 1:000002_000012", [0, 0, 1, 0, 0, 0, 0, 0], "028fab1002542d94"),
]


def digest(batch: Batch) -> str:
    h = hashlib.sha256()
    for name in FIELDS:
        value = getattr(batch, name)
        h.update(name.encode())
        h.update(value.contiguous().numpy().tobytes() if isinstance(value, torch.Tensor) else repr(value).encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def bad_mix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("badmix")
    write_dataset(root / "target", samples=40, state_dim=4, action_dim=3, tag=1)
    write_dataset(root / "vl", samples=17, per_shard=5, modality="vision_language", cameras=("image",))
    shard = root / "vl" / "shard-000000.tar"  # the first JPEG's header broken: fails while decoding
    raw = bytearray(shard.read_bytes())
    at = raw.find(b"\xff\xd8\xff")
    raw[at: at + 64] = b"\0" * 64
    shard.write_bytes(bytes(raw))
    shard = root / "target" / "shard-000001.tar"  # the first 12 npy magics broken: fail while reading
    shard.write_bytes(shard.read_bytes().replace(b"\x93NUMPY", b"\0NUMPY", 12))
    doc = {"name": "t", "seed": 5, "batch_size": 8, "image_size": 32, "bad_samples": "skip",
           "sources": {"target": {"path": "target"}, "vl": {"path": "vl"}},
           "phases": [{"name": "only", "steps": 6, "weights": {"target": 0.5, "vl": 0.5}}]}
    (root / "m.yaml").write_text(yaml.safe_dump(doc))
    return root / "m.yaml"


@pytest.mark.parametrize("workers", [0, 1])
def test_batches_and_replacements_are_those_recorded_before(bad_mix: Path, workers: int) -> None:
    loader = MixtureLoader(load_mixture(bad_mix), num_workers=workers)
    got = [(" ".join(f"{s}:{k}" for s, k in zip(b.source.tolist(), b.key)), b.skipped.tolist(), digest(b))
           for b in loader]
    assert got == RECORDED
    assert loader.state_dict()["skipped"] == {"target": 2, "vl": 1}


def test_batch_is_typed_and_keeps_mapping_access(bad_mix: Path) -> None:
    loader = MixtureLoader(load_mixture(bad_mix), end_step=1)
    key = loader.rank_keys(0)[0]
    assert isinstance(key, SlotKey) and key.step == 0 and key.position == 0 and key.draw >= 0
    assert key.sample == build_planner(loader.mixture).batch(0)[0].index
    batch = next(iter(loader))
    assert isinstance(batch, Batch) and batch.step == 0
    assert batch.images.shape == (8, 1, 3, 32, 32) and batch.state.shape == (8, 4)
    assert batch["state"] is batch.state and "state" in batch and "nope" not in batch
    assert batch.get("nope") is None and set(batch.keys()) == set(FIELDS)
    with pytest.raises(KeyError):
        batch["nope"]


def test_builder_sample_equals_its_row(bad_mix: Path) -> None:
    """`BatchBuilder.sample` (one sample alone) replaces bad samples exactly as `build` does."""
    loader = MixtureLoader(load_mixture(bad_mix), end_step=3)
    batch = list(loader)[2]
    samples = [loader.builder.sample(key) for key in loader.rank_keys(2)]
    assert [s["skipped"] for s in samples] == batch.skipped.tolist() == [0, 0, 0, 1, 0, 0, 0, 0]
    plain = loader.collator(samples)
    assert plain.key == batch.key and bool((plain.state == batch.state).all())


def test_train_and_validation_noise_are_those_recorded_before() -> None:
    """The named streams (seeds.TRAIN_NOISE, VALIDATION_NOISE) draw what the literals drew."""
    from cotrain.train.loop import _noise
    from cotrain.train.validation import Validator

    run = NS(seed=7, mixture=NS(spec=NS(batch_size=4)), model_cfg=NS(time_beta=(1.5, 1.0), flow_samples=1),
             info=NS(rank=1))
    noise, t = _noise(run, 3, (2, 3, 2))  # type: ignore[arg-type]
    assert noise.flatten().tolist()[:3] == [-0.6189369559288025, -0.3045274317264557, 0.426922470331192]
    assert t.tolist() == [0.5564820766448975, 0.3453711271286011]
    assert Validator.seed_for(7) == 2087519501


def test_dry_runs_do_not_import_the_data_loader(bad_mix: Path, tmp_path: Path) -> None:
    """`cotrain mix check | simulate | plot` plan without torch's DataLoader, readers or transforms."""
    code = (
        "import sys\n"
        "from cotrain.cli.app import app\n"
        f"for args in (['mix', 'check', {str(bad_mix)!r}], ['mix', 'simulate', {str(bad_mix)!r}, '--steps', '6'],\n"
        f"             ['mix', 'plot', {str(bad_mix)!r}, '--out', {str(tmp_path / 'p.png')!r}]):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as exc:\n"
        "        assert not exc.code, (args, exc.code)\n"
        "bad = [m for m in ('torch.utils.data', 'cotrain.mix.loader', 'cotrain.mix.batch', 'cotrain.dataset.reader')\n"
        "       if m in sys.modules]\n"
        "print('loaded:', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "loaded: []" in out.stdout
    assert (tmp_path / "p.png").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_train_steps_are_those_recorded_before(tmp_path: Path) -> None:
    """Three tiny-model steps on typed batches: the losses and gradient norms that commit 0795f40
    printed for the same data (checked there bit for bit, old and new checkout in one session; here
    to 1e-6, since another CPU's kernels may round differently)."""
    from cotrain.train.config import TrainConfig
    from cotrain.train.loop import train

    write_dataset(tmp_path / "robot", samples=40, state_dim=4, action_dim=3, horizon=4, cameras=("front", "wrist"))
    write_dataset(tmp_path / "vl", samples=24, modality="vision_language", cameras=("image",))
    doc = {"name": "tt", "seed": 3, "batch_size": 8, "image_size": 32,
           "sources": {"robot": {"path": "robot"}, "vl": {"path": "vl", "loss_weight": 0.5}},
           "phases": [{"name": "a", "steps": 100, "weights": {"robot": 0.6, "vl": 0.4}}]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(doc))
    cfg = TrainConfig(mixture=str(tmp_path / "m.yaml"), model="tiny", steps=3, out=str(tmp_path / "run"),
                      save_every=3, progress=False, tensorboard=False, warmup_steps=2, lr=1e-3)
    history = train(cfg).history
    recorded = [(2.621058940887451, 5.118751049041748), (2.600590705871582, 4.143795013427734),
                (2.630390167236328, 3.2426021099090576)]
    assert [(r["loss"], r["grad_norm"]) for r in history] == [
        (pytest.approx(loss, rel=1e-6), pytest.approx(norm, rel=1e-6)) for loss, norm in recorded]
