"""Discrete action tokens: FAST (DCT + BPE) and uniform bins, tokenizer directories, the tokens converter.

Stated bounds (docs/action_tokens.md): FAST rounds each orthonormal DCT coefficient to 1/scale, so
the mean squared error in normalised units is at most (0.5 / scale)^2 and every value is within
0.5 * sqrt(H) / scale (0.2 for H = 16, scale 10); on smooth chunks (sums of low-frequency sines) the
MSE is below 1e-3. Bins are within half a bin, 1 / bins, of the clipped normalised value.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cotrain.action_tokens import DecodeStats, evaluate_tokenizer, fit_tokenizer, get_kind, load_tokenizer
from cotrain.action_tokens.binning import BinningTokenizer
from cotrain.action_tokens.fast import FastTokenizer, dct_matrix
from cotrain.action_tokens.io import NormSpec, TokenizerConfig, save_tokenizer
from cotrain.convert.pipeline import convert
from cotrain.convert.spec import RobotOptions
from cotrain.dataset.manifest import load_manifest
from cotrain.dataset.sequential import Dataset
from cotrain.dataset.shards import decode_npy
from cotrain.errors import ConfigError, DataError
from cotrain_converters.tokens import TokensOptions
from tests.fixtures.aloha import write_aloha
from tests.helpers import ROOT, run_cli

H, D = 16, 7


def smooth_chunks(n: int, seed: int) -> np.ndarray:
    """[n, H, D] sums of three low-frequency sines (0.25 .. 1.25 cycles per chunk) within [-0.9, 0.9]."""
    rng = np.random.default_rng(seed)
    t = np.arange(H)[:, None] / H
    out = np.zeros((n, H, D))
    for i in range(n):
        amp, phase = rng.uniform(-0.3, 0.3, (3, D)), rng.uniform(0, 2 * np.pi, (3, D))
        out[i] = sum(amp[k] * np.sin(2 * np.pi * (0.25 + 0.5 * k) * t + phase[k]) for k in range(3))
    return out


def unit_config(kind: str, vocab: int, **kw: object) -> TokenizerConfig:
    return TokenizerConfig(kind=kind, horizon=H, action_dim=D, vocab_size=vocab,
                           norm=NormSpec(q01=[-1.0] * D, q99=[1.0] * D), **kw)  # type: ignore[arg-type]  # the test's keyword dict is typed loosely


@pytest.fixture(scope="module")
def fast_unit() -> FastTokenizer:
    tokenizer = get_kind("fast").fit(smooth_chunks(1500, seed=0), unit_config("fast", 1024, scale=10.0))
    assert isinstance(tokenizer, FastTokenizer)
    return tokenizer


def test_dct_is_scipy_orthonormal_dct2() -> None:
    # scipy.fft.dct(x, type=2, norm="ortho"): y_k = f_k * 2 * sum_n x_n cos(pi k (2n + 1) / 2N),
    # f_0 = sqrt(1 / 4N), f_k = sqrt(1 / 2N); written out independently of dct_matrix.
    x = np.random.default_rng(1).normal(size=H)
    y = [(math.sqrt(1 / (4 * H)) if k == 0 else math.sqrt(1 / (2 * H)))
         * 2 * sum(x[n] * math.cos(math.pi * k * (2 * n + 1) / (2 * H)) for n in range(H)) for k in range(H)]
    assert np.allclose(dct_matrix(H) @ x, y, atol=1e-12)
    assert np.allclose(dct_matrix(H) @ dct_matrix(H).T, np.eye(H), atol=1e-12)


def test_fast_round_trip_bound_on_smooth_chunks(fast_unit: FastTokenizer) -> None:
    stats = DecodeStats()
    errors = []
    for chunk in smooth_chunks(300, seed=1):  # held out: not the fitted chunks
        errors.append(fast_unit.decode_normalized(fast_unit.encode_normalized(chunk), stats) - chunk)
    err = np.stack(errors)
    assert float(np.mean(err**2)) < 1e-3
    assert float(np.abs(err).max()) <= 0.5 * math.sqrt(H) / 10
    assert stats.to_json() == {"sequences": 300, "relaxed": 0, "padded": 0, "truncated": 0, "invalid_tokens": 0}


def test_fast_never_clamps_extreme_chunks(fast_unit: FastTokenizer) -> None:
    cfg = fast_unit.config
    assert (cfg.min_token, cfg.max_token) == (-40, 40)  # ceil(10 * sqrt(16))
    alternating = np.where(np.arange(H)[:, None] % 2 == 0, 1.0, -1.0) * np.ones((H, D))
    for chunk in (np.ones((H, D)), -np.ones((H, D)), alternating):
        rec = fast_unit.decode_normalized(fast_unit.encode_normalized(chunk))
        assert np.abs(rec - chunk).max() <= 0.5 * math.sqrt(H) / 10


def test_fast_compresses_compared_with_bins(fast_unit: FastTokenizer) -> None:
    bins = get_kind("bins").fit(np.zeros((0, H, D)), unit_config("bins", 256))
    chunks = smooth_chunks(200, seed=2)
    fast_counts = [len(fast_unit.encode_normalized(c)) for c in chunks]
    assert {len(bins.encode_normalized(c)) for c in chunks} == {H * D}
    assert np.mean(fast_counts) < H * D / 4  # measured ~20 tokens for 112 values


def test_relaxed_decoding_is_counted_not_zeroed(fast_unit: FastTokenizer) -> None:
    chunk = smooth_chunks(1, seed=3)[0]
    ids = fast_unit.encode_normalized(chunk)
    stats = DecodeStats()
    short = fast_unit.decode_normalized(ids[:-2], stats)
    long = fast_unit.decode_normalized(np.concatenate([ids, ids[:3]]), stats)
    bad = fast_unit.decode_normalized(np.concatenate([ids[:1], [99999], ids[1:]]), stats)
    assert stats.to_json() == {"sequences": 3, "relaxed": 3, "padded": 1, "truncated": 1, "invalid_tokens": 1}
    for rec in (short, long, bad):
        assert rec.shape == (H, D) and np.abs(rec).max() > 0.1  # repaired, not replaced by zeros
    # the dropped id only removes high-frequency tail values: the low frequencies survive
    assert np.abs(short - chunk).mean() < 0.2
    assert np.allclose(bad, fast_unit.decode_normalized(ids), atol=1e-9)


def test_bins_round_trip_and_relaxed_decoding() -> None:
    config = TokenizerConfig(kind="bins", horizon=H, action_dim=D, vocab_size=256,
                             norm=NormSpec(q01=[-2.0] * D, q99=[2.0] * (D - 1) + [-2.0]))  # last dim constant
    tok = BinningTokenizer(config)
    chunk = smooth_chunks(1, seed=4)[0] * 2
    chunk[:, -1] = -2.0
    ids = tok.encode(chunk)
    assert ids.dtype == np.int32 and ids.shape == (H * D,) and ids.min() >= 0 and ids.max() <= 255
    assert np.abs(tok.decode(ids) - chunk).max() <= 2.0 / 256 + 1e-12  # half a bin of a span of 4
    stats = DecodeStats()
    rec = tok.decode_normalized(np.concatenate([[300, -1], ids[2:-5]]), stats)
    assert stats.to_json() == {"sequences": 1, "relaxed": 1, "padded": 1, "truncated": 0, "invalid_tokens": 2}
    assert rec.shape == (H, D) and rec[0, 0] == 0.0 and rec[-1, -1] == 0.0


@pytest.fixture(scope="module")
def smooth_robot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ALOHA episodes whose 14 joints follow slow sines (0.3 to 1.5 Hz at 50 Hz)."""
    import h5py

    root = tmp_path_factory.mktemp("smooth")
    raw = write_aloha(root / "raw", episodes=4, frames=40, cameras=("cam_high",), size=(8, 8))
    rng = np.random.default_rng(7)
    for path in sorted(raw.glob("*.hdf5")):
        with h5py.File(path, "r+") as f:
            t = np.arange(f["action"].shape[0])[:, None] / 50.0
            freq, phase = rng.uniform(0.3, 1.5, (2, 14)), rng.uniform(0, 2 * np.pi, (2, 14))
            qpos = (np.sin(2 * np.pi * freq[0] * t + phase[0]) + 0.3 * np.sin(2 * np.pi * freq[1] * t + phase[1]))
            for key in ("observations/qpos", "action"):
                del f[key]
                f.create_dataset(key, data=qpos.astype(np.float32))
    convert("aloha", raw, root / "robot", RobotOptions(embodiment="aloha", shard_size=50))
    return root / "robot"


@pytest.fixture(scope="module")
def fitted(smooth_robot: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tok") / "fast"
    fit_tokenizer([smooth_robot], out, vocab_size=512)
    return out


def test_fit_writes_a_self_contained_directory(smooth_robot: Path, fitted: Path, tmp_path: Path) -> None:
    assert sorted(p.name for p in fitted.iterdir()) == ["config.json", "tokenizer.json"]
    config = json.loads((fitted / "config.json").read_text())
    stats = load_manifest(smooth_robot).stats.actions
    assert stats is not None
    assert {k: config[k] for k in ("kind", "horizon", "action_dim", "scale", "min_token", "max_token")} == {
        "kind": "fast", "horizon": 16, "action_dim": 14, "scale": 10.0, "min_token": -40, "max_token": 40}
    assert config["norm"] == {"q01": stats.q01, "q99": stats.q99} and config["vocab_size"] <= 512
    assert config["fitted_on"] == [{"name": "raw", "chunks": 166}]  # 40 + 41 + 42 + 43 frames
    again = tmp_path / "again"
    fit_tokenizer([smooth_robot], again, vocab_size=512)
    assert (again / "tokenizer.json").read_bytes() == (fitted / "tokenizer.json").read_bytes()
    assert (again / "config.json").read_bytes() == (fitted / "config.json").read_bytes()
    with pytest.raises(ConfigError, match="is not empty .* pass --overwrite"):
        fit_tokenizer([smooth_robot], again)
    with pytest.raises(ConfigError, match="--vocab-size 200: must exceed 256"):
        fit_tokenizer([smooth_robot], tmp_path / "small", vocab_size=200)


def test_loads_offline_in_a_fresh_process(smooth_robot: Path, fitted: Path) -> None:
    chunk = next(Dataset.open(smooth_robot).iter_decoded())["actions.npy"]
    expected = load_tokenizer(fitted).encode(chunk).tolist()
    code = ("import sys, json, numpy as np; from cotrain.action_tokens import load_tokenizer; "
            "t = load_tokenizer(sys.argv[1]); print(json.dumps(t.encode(np.array(json.loads(sys.argv[2]))).tolist()))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": "/nonexistent"}
    proc = subprocess.run([sys.executable, "-c", code, str(fitted), json.dumps(chunk.tolist())], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120, check=True)
    assert json.loads(proc.stdout) == expected


def test_evaluate_fast_and_bins(smooth_robot: Path, fitted: Path, tmp_path: Path) -> None:
    report = evaluate_tokenizer(fitted, [smooth_robot])
    assert report["chunks"] == 166 and report["values_per_chunk"] == 224
    assert report["normalized"]["max_abs"] <= 0.5 * math.sqrt(16) / 10 and report["normalized"]["mse"] < 1e-3
    assert report["decode"]["relaxed"] == 0 and report["tokens_per_chunk"]["mean"] < 224 / 4
    assert report["tokens_per_chunk"]["p50"] <= report["tokens_per_chunk"]["p95"] <= report["tokens_per_chunk"]["max"]
    assert 0 < report["clipped_fraction"] < 0.05  # values beyond q01/q99 are clipped, and reported
    fit_tokenizer([smooth_robot], tmp_path / "bins", kind="bins")
    bins = evaluate_tokenizer(tmp_path / "bins", [smooth_robot])
    assert bins["tokens_per_chunk"] == {"mean": 224.0, "p50": 224.0, "p95": 224.0, "max": 224, "min": 224}
    assert bins["normalized"]["max_abs"] <= 1 / 256 + 1e-9 and bins["compression"] == 1.0


def test_tokens_converter(smooth_robot: Path, fitted: Path, tmp_path: Path) -> None:
    convert("tokens", smooth_robot, tmp_path / "tok", TokensOptions(tokenizer=str(fitted), name="tok"))
    tokenizer = load_tokenizer(fitted)
    source = {s["__key__"]: s for s in Dataset.open(smooth_robot).iter_raw()}
    samples = list(Dataset.open(tmp_path / "tok").iter_raw())
    assert len(samples) == 166
    for s in samples:
        meta = json.loads(s["meta.json"])
        src = source[meta["source_key"]]
        tokens = decode_npy(s["action_tokens.npy"])
        assert tokens.dtype == np.int32
        assert tokens.tolist() == tokenizer.encode(decode_npy(src["actions.npy"])[:16]).tolist()
        assert meta["modality"] == "action_tokens" and meta["dataset"] == "tok"
        for member in ("cam_high.jpg", "state.npy", "actions.npy", "actions_valid.npy", "instruction.txt"):
            assert s[member] == src[member]
    manifest, original = load_manifest(tmp_path / "tok"), load_manifest(smooth_robot)
    assert manifest.modality == "action_tokens" and manifest.stats == original.stats
    assert manifest.extra["tokenizer"]["kind"] == "fast" and len(manifest.extra["tokenizer"]["sha256"]) == 64


def test_tokens_converter_rejects_a_mismatched_tokenizer(smooth_robot: Path, tmp_path: Path) -> None:
    save_tokenizer(BinningTokenizer(unit_config("bins", 256)), tmp_path / "bins7")
    with pytest.raises(DataError, match=r"chunks are \[16, 14\] but the tokenizer takes \[16, 7\]"):
        convert("tokens", smooth_robot, tmp_path / "out", TokensOptions(tokenizer=str(tmp_path / "bins7")))
    with pytest.raises(DataError, match="no config.json: not a tokenizer directory"):
        load_tokenizer(tmp_path)


def test_damaged_tokenizer_directory(fitted: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((fitted / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] + 1}))
    (broken / "tokenizer.json").write_bytes((fitted / "tokenizer.json").read_bytes())
    with pytest.raises(DataError, match="key 'vocab_size': vocabulary has .* ids but config.json says"):
        load_tokenizer(broken)


def test_cli_fit_eval_and_convert(smooth_robot: Path, fitted: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_tok"
    fit = run_cli("tokenizer", "fit", str(smooth_robot), "--out", str(out), "--vocab-size", "512", "--json", check=True)
    assert json.loads(fit.stdout)["chunks"] == 166
    # a separate process fits the same bytes (no hash- or thread-order dependence)
    assert (out / "tokenizer.json").read_bytes() == (fitted / "tokenizer.json").read_bytes()
    ev = run_cli("tokenizer", "eval", str(out), str(smooth_robot), "--json", check=True)
    assert json.loads(ev.stdout)["decode"]["relaxed"] == 0
    conv = run_cli("convert", "tokens", str(smooth_robot), "--tokenizer", str(out), str(tmp_path / "ds"), "--json",
                   check=True)
    assert json.loads(conv.stdout)["samples"] == 166
