"""Fuzzing the training side with damaged inputs, through the real CLI entry point (`cotrain.cli.app.main`).

Three classes (issue 18, items 14-16), each generated from the small fixture datasets of
tests/fixtures/cotrain_data.py:
- bad mixture YAMLs, each through `mix check` and `train`;
- damaged converted datasets (samples, shards, shard indices, manifests), each first confirmed to be
  rejected by `cotrain validate`, then trained on with `bad_samples: raise` (a one-line error naming
  file, sample and member) and, for per-sample damage, `bad_samples: skip` (a counted skip);
- damaged run folders, resumed with `--resume`.
For every failure: exit code 1, exactly one `error:` line naming the file or field, no traceback,
nothing half-written (no run folder for a rejected config, the run folder unchanged for a refused
resume). The commands run in this process (the same `main` as `python -m cotrain`; a subprocess per
input would cost a torch import each); `test_subprocess_cli_prints_one_line` runs a few as processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from cotrain.atomic import atomic_open
from cotrain.dataset import keys
from cotrain.dataset.shard_index import index_name, write_index
from cotrain.dataset.shards import ShardWriter, encode_npy, iter_samples
from tests.fixtures.cotrain_data import write_dataset
from tests.helpers import run_cli, tree_digest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHARD = "shard-000000.tar"
TRAIN = ["--model", "tiny", "--steps", "1", "--warmup-steps", "1", "--set", "progress=false",
         "--set", "tensorboard=false"]


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def error_line(self) -> str:
        """The single `error:` line of a clean failure (asserting the failure is clean)."""
        assert self.code == 1, f"exit {self.code}: {self.err[-2000:]}"
        assert "Traceback" not in self.err + self.out, self.err
        lines = [line for line in self.err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, self.err
        return lines[0]


def cli(*args: str) -> Outcome:
    """`cotrain ARGS` in this process; an exception escaping `main` is a traceback and fails the test."""
    from cotrain.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["cotrain", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return Outcome(code, out.getvalue(), err.getvalue())


def write_mix(path: Path, dataset: Path | str = "robot", **overrides: object) -> Path:
    doc: dict[str, object] = {"name": "fuzz", "seed": 1, "batch_size": 4, "image_size": 16,
                              "sources": {"robot": {"path": str(dataset)}},
                              "phases": [{"name": "a", "steps": 10, "weights": {"robot": 1.0}}]}
    doc.update(overrides)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzzdata")
    # 4 samples in one shard with a batch of 4: every sample is drawn at step 0.
    write_dataset(root / "robot", samples=4, per_shard=4, state_dim=4, action_dim=3, horizon=2, image_hw=(8, 8))
    write_dataset(root / "big", samples=12, per_shard=6, state_dim=4, action_dim=3, horizon=2, image_hw=(8, 8))
    return root


# ---------------------------------------------------------------- mixture YAMLs (item 14)

def _mix(**overrides: object) -> Callable[[Path, Path], str]:
    return lambda path, data: yaml.safe_dump({**yaml.safe_load(write_mix(path, data / "robot").read_text()),
                                              **overrides}, sort_keys=False)


def _phase(**fields: object) -> Callable[[Path, Path], str]:
    return _mix(phases=[{"name": "a", "steps": 10, "weights": {"robot": 1.0}, **fields}])


def _source(**fields: object) -> Callable[[Path, Path], str]:
    return lambda path, data: _mix(sources={"robot": {"path": str(data / "robot"), **fields}})(path, data)


def _text(text: str) -> Callable[[Path, Path], str]:
    return lambda path, data: text


NAN, INF = float("nan"), float("inf")
YAML_CASES: dict[str, tuple[Callable[[Path, Path], str], str]] = {
    "weight_nan": (_phase(weights={"robot": NAN}), "phases.0.weights.robot"),
    "weight_inf": (_phase(weights={"robot": INF}), "phases.0.weights.robot"),
    "weight_minus_inf": (_phase(weights={"robot": -INF}), "phases.0.weights.robot"),
    "weight_negative": (_phase(weights={"robot": -1.0}), "phases.0.weights"),
    "weight_huge": (_phase(weights={"robot": 1e300}), "phases.0.weights"),
    "weight_text": (_phase(weights={"robot": "lots"}), "phases.0.weights.robot"),
    "weight_zero": (_phase(weights={"robot": 0.0}), "phases.0.weights"),
    "weight_unknown_source": (_phase(weights={"robt": 1.0}), "unknown source 'robt'"),
    "steps_1e15": (_phase(steps=10**15), "phases.0.steps"),
    "steps_zero": (_phase(steps=0), "phases.0.steps"),
    "steps_float": (_phase(steps=1.5), "phases.0.steps"),
    "steps_total_over_bound": (_mix(phases=[{"name": n, "steps": 9_000_000, "weights": {"robot": 1}} for n in "ab"]),
                               "phases: 18000000 steps"),
    "ramp_longer_than_phase": (_phase(ramp_steps=11), "ramp_steps 11"),
    "batch_1e9": (_mix(batch_size=10**9), "batch_size"),
    "batch_zero": (_mix(batch_size=0), "batch_size"),
    "batch_bool_text": (_mix(batch_size="eight"), "batch_size"),
    "image_size_100000": (_mix(image_size=100_000), "image_size"),
    "image_size_tiny": (_mix(image_size=2), "image_size"),
    "seed_2_80": (_mix(seed=2**80), "seed"),
    "seed_negative": (_mix(seed=-1), "seed"),
    "horizon_huge": (_mix(horizon=10**9), "horizon"),
    "max_cameras_huge": (_mix(max_cameras=10**6), "max_cameras"),
    "clip_inf": (_mix(clip=INF), "clip"),
    "quantile_floor_nan": (_mix(quantile_floor=NAN), "quantile_floor"),
    "normalization_unknown": (_mix(normalization="minmax"), "normalization"),
    "bad_samples_unknown": (_mix(bad_samples="ignore"), "bad_samples"),
    "loss_weight_nan": (_source(loss_weight=NAN), "sources.robot.loss_weight"),
    "balance_inf": (_source(balance=INF), "sources.robot.balance"),
    "max_epochs_nan": (_source(max_epochs=NAN), "sources.robot.max_epochs"),
    "source_unknown_field": (_source(weight=1), "sources.robot.weight"),
    "source_path_and_mixture": (_source(mixture="other.yaml"), "sources.robot"),
    "source_missing_dataset": (_mix(sources={"robot": {"path": "nowhere"}}), "sources.robot"),
    "source_not_a_mapping": (_mix(sources=["robot"]), "sources"),
    "phases_empty": (_mix(phases=[]), "phases"),
    "unknown_top_field": (_mix(batch=4), "batch"),
    "top_level_list": (_text("- a\n- b\n"), "expected a mapping"),
    "empty_file": (_text(""), "expected a mapping"),
    "invalid_yaml": (_text("name: [unclosed\n"), "invalid YAML"),
    "tabs_yaml": (_text("name: x\n\tbatch_size: 4\n"), "invalid YAML"),
    "self_include": (lambda path, data: _mix(sources={"me": {"mixture": path.name}},
                                             phases=[{"name": "a", "steps": 1, "weights": {"me": 1}}])(path, data),
                     "includes itself"),
}


def _yaml_file(tmp_path: Path, data: Path, case: str) -> Path:
    path = tmp_path / "mix.yaml"
    make, _ = YAML_CASES[case]
    text = make(path, data)
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_bad_mixture_yaml(case: str, data: Path, tmp_path: Path) -> None:
    path = _yaml_file(tmp_path, data, case)
    want = YAML_CASES[case][1]
    for command in (["mix", "check", str(path)], ["train", str(path), *TRAIN, "--out", str(tmp_path / "run")]):
        line = cli(*command).error_line()
        assert want in line and str(path) in line, (command[0], line)
        assert not (tmp_path / "run").exists()  # nothing written for a rejected mixture


@pytest.mark.parametrize("case", ["directory", "missing", "binary"])
def test_mixture_path_that_is_not_a_yaml_file(case: str, tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    if case == "directory":
        path.mkdir()
    elif case == "binary":
        path.write_bytes(b"\xff\xfe\x00junk")
    for command in (["mix", "check", str(path)], ["train", str(path), *TRAIN, "--out", str(tmp_path / "run")]):
        assert str(path) in cli(*command).error_line()
    assert not (tmp_path / "run").exists()


TRAIN_OPTION_CASES = {
    "steps_1e12": (["--steps", str(10**12)], "steps"),
    "seed_2_80": (["--set", f"seed={2**80}"], "seed"),
    "lr_nan": (["--lr", "nan"], "optim.lr"),
    "lr_inf": (["--lr", "inf"], "optim.lr"),
    "workers_huge": (["--workers", "1000000"], "data.num_workers"),
    "max_text_tokens_huge": (["--set", "max_text_tokens=10000000"], "model.max_text_tokens"),
    "dotted_max_text_tokens_huge": (["--set", "model.max_text_tokens=10000000"], "model.max_text_tokens"),
    "unknown_dotted_key": (["--set", "optim.momentum=0.9"], "optim.momentum: Extra inputs"),
}


@pytest.mark.parametrize("case", sorted(TRAIN_OPTION_CASES))
def test_bad_train_options(case: str, data: Path, tmp_path: Path) -> None:
    args, want = TRAIN_OPTION_CASES[case]
    mix = write_mix(tmp_path / "mix.yaml", data / "robot")
    line = cli("train", str(mix), *TRAIN, *args, "--out", str(tmp_path / "run")).error_line()
    assert f"train config: {want}" in line, line
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- damaged datasets (item 15)

Members = dict[str, bytes]


def _rewrite(ds: Path, change: Callable[[int, Members], Members], *, index: bool = True) -> None:
    """Rewrite the first shard with `change(i, members)` applied to each sample, keeping the manifest's
    sizes and hashes (and, with `index`, the sidecar) true to it: only the intended damage remains."""
    samples = list(iter_samples(ds / SHARD))
    with atomic_open(ds / SHARD) as fh, ShardWriter(fh) as writer:
        for i, raw in enumerate(samples):
            key = raw.pop("__key__")
            writer.write(key, change(i, raw))
    if index:
        write_index(ds / SHARD)
    _fix_manifest(ds)


def _fix_manifest(ds: Path, **fields: object) -> None:
    doc = json.loads((ds / "manifest.json").read_text())
    for entry in doc["shards"]:
        if (ds / entry["name"]).is_file():
            data = (ds / entry["name"]).read_bytes()
            entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    doc.update(fields)
    (ds / "manifest.json").write_text(json.dumps(doc))


def _member(ext: str, value: Callable[[Members], bytes | None], which: int = 1) -> Callable[[Path], None]:
    def damage(ds: Path) -> None:
        def change(i: int, members: Members) -> Members:
            if i != which:
                return members
            new = value(members)
            return {k: v for k, v in members.items() if k != ext} if new is None else {**members, ext: new}
        _rewrite(ds, change)
    return damage


def _array(ext: str, edit: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    return _member(ext, lambda m: encode_npy(edit(np.load(io.BytesIO(m[ext])))))


def _set(arr: np.ndarray, value: float) -> np.ndarray:
    arr = arr.copy()
    arr.flat[1] = value
    return arr


def _stale_index(ds: Path) -> None:
    """Swap two samples in the shard, then restore the old sidecar: same size and count, wrong members."""
    old = (ds / index_name(SHARD)).read_bytes()
    samples = list(iter_samples(ds / SHARD))
    samples[0], samples[1] = samples[1], samples[0]
    with atomic_open(ds / SHARD) as fh, ShardWriter(fh) as writer:
        for raw in samples:
            writer.write(raw.pop("__key__"), raw)
    (ds / index_name(SHARD)).write_bytes(old)
    _fix_manifest(ds)


def _stats(path: tuple[str, ...], value: str) -> Callable[[Path], None]:
    """Write a NaN or Infinity literal (as Python's json writes them) at the first number under `path`."""
    def damage(ds: Path) -> None:
        doc = json.loads((ds / "manifest.json").read_text())
        at = doc["stats"]
        for part in path:
            at = at[part]
        while isinstance(at[0], list):
            at = at[0]
        at[0] = "__BAD__"
        (ds / "manifest.json").write_text(json.dumps(doc).replace('"__BAD__"', value))
    return damage


def _outside_shard(ds: Path) -> None:
    shutil.copy(ds / SHARD, ds.parent / f"{ds.name}-outside.tar")
    doc = json.loads((ds / "manifest.json").read_text())
    doc["shards"][0]["name"] = f"../{ds.name}-outside.tar"
    (ds / "manifest.json").write_text(json.dumps(doc))


def _truncate(ds: Path) -> None:
    data = (ds / SHARD).read_bytes()
    (ds / SHARD).write_bytes(data[: len(data) // 2])


def _bump(ds: Path, shard_too: bool) -> None:
    doc = json.loads((ds / "manifest.json").read_text())
    doc["num_samples"] += 3
    if shard_too:
        doc["shards"][0]["samples"] += 3
    (ds / "manifest.json").write_text(json.dumps(doc))


def _jpeg_cut(m: Members) -> bytes:
    return m[keys.camera_member("front")][:40]


SAMPLE, SHARD_WIDE, MANIFEST = "sample", "shard", "manifest"  # what the damage spoils (see the test)
# case -> (damage, what it spoils, what the error names)
DATASET_CASES: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "state_wrong_shape": (_array(keys.STATE, lambda a: np.append(a, 1.0).astype(np.float32)), SAMPLE, "state.npy"),
    "state_2d": (_array(keys.STATE, lambda a: a[None]), SAMPLE, "state.npy"),
    "state_nan": (_array(keys.STATE, lambda a: _set(a, np.nan)), SAMPLE, "NaN"),
    "actions_inf": (_array(keys.ACTIONS, lambda a: _set(a, np.inf)), SAMPLE, "Inf"),
    "actions_nan": (_array(keys.ACTIONS, lambda a: _set(a, np.nan)), SAMPLE, "NaN"),
    "actions_wrong_dims": (_array(keys.ACTIONS, lambda a: a[:, :2].copy()), SAMPLE, "actions.npy"),
    "actions_wrong_horizon": (_array(keys.ACTIONS, lambda a: np.concatenate([a, a])), SAMPLE, "actions.npy"),
    "actions_valid_wrong_shape": (_array(keys.ACTIONS_VALID, lambda a: a[:1].copy()), SAMPLE, "actions_valid.npy"),
    "state_not_npy": (_member(keys.STATE, lambda m: b"not an array"), SAMPLE, "state.npy"),
    "state_missing": (_member(keys.STATE, lambda m: None), SAMPLE, "state.npy"),
    "camera_missing": (_member(keys.camera_member("front"), lambda m: None), SAMPLE, "front"),
    "jpeg_truncated": (_member(keys.camera_member("front"), _jpeg_cut), SAMPLE, "sample 1"),
    "instruction_not_utf8": (_member(keys.INSTRUCTION, lambda m: b"\xff\xfe task"), SAMPLE, "sample 1"),
    "stale_shard_index": (_stale_index, SAMPLE, "index is stale"),
    "num_samples_too_large": (lambda ds: _bump(ds, False), MANIFEST, "num_samples 7, but its shards hold 4"),
    "shard_samples_too_large": (lambda ds: _bump(ds, True), SHARD_WIDE, "holds 4 samples, the manifest lists 7"),
    "stats_nan": (_stats(("state", "mean"), "NaN"), MANIFEST, "stats.state.mean.0"),
    "stats_inf": (_stats(("actions", "q99"), "Infinity"), MANIFEST, "stats.actions.q99.0"),
    "stats_per_timestep_nan": (_stats(("actions", "per_timestep", "std"), "NaN"), MANIFEST, "per_timestep"),
    "shard_outside_root": (_outside_shard, MANIFEST, "not a plain file name"),
    "shard_truncated": (_truncate, SAMPLE, SHARD),
}


def _damaged(data: Path, tmp_path: Path, case: str) -> Path:
    ds = tmp_path / "robot"
    shutil.copytree(data / "robot", ds)
    DATASET_CASES[case][0](ds)
    return ds


@pytest.mark.parametrize("case", sorted(DATASET_CASES))
def test_damaged_dataset_is_an_error_or_a_counted_skip(case: str, data: Path, tmp_path: Path) -> None:
    """Each damage is first shown to fail `cotrain validate`; the trainer then never uses it silently:
    - `bad_samples: raise`: one line naming the dataset, the sample or field, and the problem; no step
      taken, no checkpoint;
    - a damaged sample with `bad_samples: skip`: replaced, and counted in the loader state;
    - a damaged shard: an error either way (its samples cannot be placed); a damaged manifest: refused
      when the mixture loads, by `mix check` too."""
    _, spoils, want = DATASET_CASES[case]
    ds = _damaged(data, tmp_path, case)
    report = cli("validate", str(ds))
    assert report.code != 0 and "Traceback" not in report.err, report.err
    mix = write_mix(tmp_path / "raise.yaml", ds)
    line = cli("train", str(mix), *TRAIN, "--out", str(tmp_path / "raise")).error_line()
    assert want in line and str(ds) in line, line
    metrics = tmp_path / "raise" / "metrics.jsonl"
    assert not (tmp_path / "raise" / "checkpoints").exists() and (not metrics.is_file() or not metrics.read_text())
    if spoils == MANIFEST:
        assert want in cli("mix", "check", str(mix)).error_line()
        assert not (tmp_path / "raise").exists()
        return
    skip = write_mix(tmp_path / "skip.yaml", ds, bad_samples="skip")
    done = cli("train", str(skip), *TRAIN, "--out", str(tmp_path / "skip"))
    if spoils == SHARD_WIDE:
        assert want in done.error_line()
        return
    assert done.code == 0 and "Traceback" not in done.err, done.err
    loader = json.loads((tmp_path / "skip" / "checkpoints" / "step_00000001" / "loader_rank0.json").read_text())
    assert loader["skipped"]["robot"] >= 1, loader


def test_damaged_sidecar_falls_back_to_a_scan(data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A sidecar that is not JSON is not corrupt data: the loader says so and scans the shard (correct
    spans), which `validate` also reports; training uses the real samples."""
    ds = tmp_path / "robot"
    shutil.copytree(data / "robot", ds)
    (ds / index_name(SHARD)).write_text("{not json")
    assert cli("validate", str(ds)).code != 0
    done = cli("train", str(write_mix(tmp_path / "m.yaml", ds)), *TRAIN, "--out", str(tmp_path / "run"))
    assert done.code == 0, done.err
    assert any("scanning the shard instead" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- damaged run folders (item 16)

@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-step run as a kill after step 2's checkpoint leaves it: checkpoints 1 and 2, LATEST at 2,
    metrics rows 0 and 1."""
    root = tmp_path_factory.mktemp("fuzzrun")
    mix = write_mix(root / "mix.yaml", data / "big")
    done = cli("train", str(mix), "--model", "tiny", "--steps", "3", "--save-every", "1", "--warmup-steps", "1",
               "--set", "keep_checkpoints=3", "--set", "progress=false", "--set", "tensorboard=false",
               "--out", str(root / "run"))
    assert done.code == 0, done.err
    ckpts = root / "run" / "checkpoints"
    shutil.rmtree(ckpts / "step_00000003")
    (ckpts / "LATEST").write_text(json.dumps({"dir": "step_00000002"}) + "\n")
    metrics = root / "run" / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()[:2]))
    return root


def _ckpt(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "step_00000002"


def _write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        path = run_dir / rel
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return damage


def _cut(rel: str, keep: int) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / rel).write_bytes((run_dir / rel).read_bytes()[:keep])


def _remove(rel: str) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / rel).unlink()


def _foreign_latest(run_dir: Path) -> None:
    other = run_dir.parent / "other"
    shutil.copytree(run_dir, other)
    (run_dir / "checkpoints" / "LATEST").write_text(json.dumps({"dir": "../../other/checkpoints/step_00000002"}))


def _linked_latest(run_dir: Path) -> None:
    other = run_dir.parent / "other"
    shutil.copytree(run_dir, other)
    (run_dir / "checkpoints" / "step_00000009").symlink_to(other / "checkpoints" / "step_00000002")
    (run_dir / "checkpoints" / "LATEST").write_text(json.dumps({"dir": "step_00000009"}))


def _state(**fields: object) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        path = _ckpt(run_dir) / "trainer_state.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
    return damage


def _moved_past_the_end(run_dir: Path) -> None:
    """A consistent checkpoint of step 9 in a 3-step run (the step-1e9 case of the issue, as a folder
    name can hold it): resuming would train nothing and exit 0."""
    (run_dir / "checkpoints" / "step_00000002").rename(run_dir / "checkpoints" / "step_00000009")
    state = run_dir / "checkpoints" / "step_00000009" / "trainer_state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "step": 9}))
    (run_dir / "checkpoints" / "LATEST").write_text(json.dumps({"dir": "step_00000009"}))


CK = "checkpoints/step_00000002"
RUN_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "model_truncated": (_cut(f"{CK}/model.safetensors", 300), "model.safetensors"),
    "model_empty": (_write(f"{CK}/model.safetensors", b""), "model.safetensors"),
    "model_garbage": (
        _write(f"{CK}/model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}junk"),
        "model.safetensors",
    ),
    "optimizer_missing": (_remove(f"{CK}/optimizer.safetensors"), "optimizer.safetensors"),
    "optimizer_truncated": (_cut(f"{CK}/optimizer.safetensors", 100), "optimizer.safetensors"),
    "optimizer_json_not_json": (_write(f"{CK}/optimizer.json", "{"), "optimizer.json"),
    "optimizer_json_no_groups": (_write(f"{CK}/optimizer.json", "{}"), "optimizer.json"),
    "rng_truncated": (_cut(f"{CK}/rng_rank0.safetensors", 20), "rng_rank0.safetensors"),
    "trainer_state_not_json": (_write(f"{CK}/trainer_state.json", "step: 2"), "trainer_state.json"),
    "trainer_state_list": (_write(f"{CK}/trainer_state.json", "[2]"), "trainer_state.json"),
    "trainer_state_step_1e9": (_state(step=10**9), "trainer_state.json"),
    "trainer_state_step_text": (_state(step="2"), "trainer_state.json"),
    "trainer_state_seconds_negative": (_state(train_seconds=-5.0), "trainer_state.json"),
    "trainer_state_seconds_text": (_state(train_seconds="12"), "trainer_state.json"),
    "loader_state_not_json": (_write(f"{CK}/loader_rank0.json", "\x00\x01"), "loader_rank0.json"),
    "loader_state_empty_object": (_write(f"{CK}/loader_rank0.json", "{}"), "loader_rank0.json"),
    "checkpoint_past_the_run": (_moved_past_the_end, "step 9 is outside this run's 0..3 steps"),
    "latest_not_json": (_write("checkpoints/LATEST", "step_00000002"), "LATEST"),
    "latest_wrong_type": (_write("checkpoints/LATEST", '{"dir": 2}'), "LATEST"),
    "latest_other_run": (_foreign_latest, "LATEST"),
    "latest_symlink_to_other_run": (_linked_latest, "LATEST"),
    "train_config_not_json": (_write("train_config.json", "{'a': 1}"), "train_config.json"),
    "model_config_not_json": (_write("model_config.json", "not json"), "model_config.json"),
    "model_config_wrong": (_write("model_config.json", '{"preset": 1}'), "model_config.json"),
    "tokenizer_garbage": (_write("tokenizer.json", "{}"), "tokenizer.json"),
    "metrics_middle_line_garbage": (
        lambda r: (r / "metrics.jsonl").write_text('{"step": 0}\n{oops\n{"step": 1}\n'),
        "metrics.jsonl",
    ),
}


def _resume(root: Path, run_dir: Path, mixture: str | None = None, steps: int = 3) -> Outcome:
    """`train --resume` of the run as the `run` fixture made it (same steps: the config must match)."""
    return cli(
        "train",
        mixture or str(root / "mix.yaml"),
        "--model",
        "tiny",
        "--steps",
        str(steps),
        "--save-every",
        "1",
        "--warmup-steps",
        "1",
        "--set",
        "keep_checkpoints=3",
        "--set",
        "progress=false",
        "--set",
        "tensorboard=false",
        "--out",
        str(run_dir),
        "--resume",
    )


def _copy_run(run: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(run / "run", run_dir, symlinks=True)
    return run_dir


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_damaged_run_folder_refuses_to_resume(case: str, run: Path, tmp_path: Path) -> None:
    run_dir = _copy_run(run, tmp_path)
    damage, want = RUN_CASES[case]
    damage(run_dir)
    before = tree_digest(run_dir)
    line = _resume(run, run_dir).error_line()
    assert want in line, line
    assert tree_digest(run_dir) == before  # nothing written, nothing lost


def test_partial_metrics_line_is_dropped_on_resume(run: Path, tmp_path: Path) -> None:
    run_dir = _copy_run(run, tmp_path)
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 2, "loss": 0.')  # a kill in mid-write of step 2's row
    done = _resume(run, run_dir)
    assert done.code == 0, done.err
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]


def test_symlinked_temporary_checkpoint_folder(run: Path, tmp_path: Path) -> None:
    run_dir = _copy_run(run, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    (run_dir / "checkpoints" / ".tmp_step_00000003").symlink_to(elsewhere, target_is_directory=True)
    done = _resume(run, run_dir)
    assert done.code == 0, done.err
    assert [p.name for p in elsewhere.iterdir()] == ["keep.txt"]  # nothing written through the link
    final = run_dir / "checkpoints" / "step_00000003"
    assert final.is_dir() and not final.is_symlink() and (final / "model.safetensors").is_file()


def test_mixture_by_relative_and_absolute_path_is_the_same_run(run: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = _copy_run(run, tmp_path)
    monkeypatch.chdir(run)
    assert _resume(run, run_dir, mixture="mix.yaml").code == 0  # stored as an absolute path
    other = tmp_path / "other.yaml"
    shutil.copy(run / "mix.yaml", other)  # the same content in another file is another mixture
    assert "--resume: mixture was" in _resume(run, run_dir, mixture=str(other)).error_line()


def test_subprocess_cli_prints_one_line(data: Path, tmp_path: Path) -> None:
    """The same failures through `python -m cotrain`, as a user sees them."""
    mix = tmp_path / "mix.yaml"
    mix.write_text(YAML_CASES["weight_nan"][0](mix, data))
    for args in (["mix", "check", str(mix)], ["mix", "check", str(tmp_path)]):
        proc = run_cli(*args)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr


def test_inputs_tried_are_counted() -> None:
    """How many inputs this suite feeds the CLI (reported in the issue's closing note)."""
    counts = {
        "mixture_yaml": len(YAML_CASES) + 3,
        "train_options": len(TRAIN_OPTION_CASES),
        "dataset": len(DATASET_CASES) + 1,
        "run_folder": len(RUN_CASES) + 3,
    }
    print(f"fuzz inputs tried: {counts} = {sum(counts.values())}")
    assert sum(counts.values()) >= 90
