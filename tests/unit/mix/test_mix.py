"""Mixture engine: exact composition, determinism, exact and elastic resume, rank disjointness."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cotrain.errors import ConfigError, DataError
from cotrain.mix.collate import Batch
from cotrain.mix.loader import MixtureLoader, build_planner
from cotrain.mix.report import simulate_mixture
from cotrain.mix.resolve import load_mixture
from cotrain.mix.schedule import Schedule
from tests.fixtures.cotrain_data import write_dataset
from tests.helpers import ROOT, run_cli


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mixdata")
    write_dataset(root / "target", samples=40, state_dim=4, action_dim=3, tag=1)
    write_dataset(root / "xemb", samples=23, per_shard=7, state_dim=6, action_dim=5, horizon=6,
                  cameras=("top", "wrist"), tag=2, embodiment="other")
    write_dataset(root / "vl", samples=17, per_shard=5, modality="vision_language", cameras=("image",))
    return root


def write_mix(root: Path, name: str = "mix.yaml", **overrides: object) -> Path:
    doc: dict[str, object] = {
        "name": "t", "seed": 5, "batch_size": 8, "image_size": 32,
        "sources": {"target": {"path": "target"}, "xemb": {"path": "xemb"}, "vl": {"path": "vl"}},
        "phases": [
            {"name": "pre", "steps": 12, "weights": {"target": 0.2, "xemb": 0.5, "vl": 0.3}},
            {"name": "fine", "steps": 12, "weights": {"target": 0.9, "vl": 0.1}, "ramp_steps": 4},
        ],
    }
    doc.update(overrides)
    path = root / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def keys_of(batch: dict) -> list[str]:
    return [f"{s}:{k}" for s, k in zip(batch["source"].tolist(), batch["key"])]


def test_composition_tracks_target_within_one_sample(data: Path) -> None:
    mixture = load_mixture(write_mix(data))
    planner, schedule = build_planner(mixture), Schedule(mixture.phases)
    realised, target = np.zeros(3), np.zeros(3)
    for step in range(40):  # past the schedule's end the last phase continues
        slots = planner.batch(step)
        assert len(slots) == 8
        realised += np.bincount([s.source for s in slots], minlength=3)
        target += 8 * np.asarray(schedule.weights_at(step))
        assert np.all(np.abs(realised - target) < 1.0 + 1e-9), (step, realised, target)
    # xemb is absent from the second phase: it never appears once the ramp is over
    assert all(s.source != 1 for step in range(16, 24) for s in planner.batch(step))


def test_ramp_weights_are_linear(data: Path) -> None:
    mixture = load_mixture(write_mix(data))
    schedule = Schedule(mixture.phases)
    pre, fine = np.array(mixture.phases[0].weights), np.array(mixture.phases[1].weights)
    for i in range(4):
        np.testing.assert_allclose(schedule.weights_at(12 + i), pre + (fine - pre) * (i + 1) / 5)
    np.testing.assert_allclose(schedule.weights_at(16), fine)
    np.testing.assert_allclose(schedule.weights_at(11), pre)


def test_each_epoch_is_a_permutation_reshuffled(data: Path) -> None:
    mixture = load_mixture(write_mix(data, phases=[{"name": "only", "steps": 30, "weights": {"vl": 1}}]))
    planner = build_planner(mixture)
    draws = sorted((s.draw, s.index) for step in range(30) for s in planner.batch(step))
    indices = [i for _, i in draws]
    first, second = indices[:17], indices[17:34]
    assert sorted(first) == list(range(17)) and sorted(second) == list(range(17))
    assert first != second


def test_plan_is_deterministic_and_seeded(data: Path) -> None:
    a = build_planner(load_mixture(write_mix(data)))
    b = build_planner(load_mixture(write_mix(data)))
    c = build_planner(load_mixture(write_mix(data, "m2.yaml", seed=6)))
    assert [a.batch(k) for k in range(24)] == [b.batch(k) for k in range(24)]
    assert [a.batch(k) for k in range(24)] != [c.batch(k) for k in range(24)]


def test_plan_is_stable_across_versions() -> None:
    """A checkpoint's loader state is just a step: resuming with a newer cotrain is exact only if the
    plan of (seed, schedule, step) never changes. Pinned here by a digest of 100 steps of a two-phase,
    ramped, three-source plan (sources of coprime sizes, so epochs wrap mid-batch)."""
    import hashlib

    from cotrain.mix.resolve import ResolvedPhase
    from cotrain.mix.sampler import Allocator, Planner
    from cotrain.mix.schedule import Schedule

    phases = (ResolvedPhase("a", 40, 0, (0.5, 0.3, 0.2)), ResolvedPhase("b", 40, 10, (0.1, 0.0, 0.9)))
    planner = Planner(7, ["target", "xemb", "vl"], [37, 101, 13], Allocator(Schedule(phases), 24, 3))
    plan = [(s.source, s.draw, s.index, s.epoch) for k in range(100) for s in planner.batch(k)]
    assert plan[:3] == [(0, 0, 12, 0), (1, 0, 61, 0), (0, 1, 14, 0)]
    assert hashlib.sha256(repr(plan).encode()).hexdigest()[:16] == "94f9da8b159daef7"


def test_loader_decodes_only_the_members_its_transform_reads(data: Path) -> None:
    from cotrain.dataset.reader import SourceReader

    loader = MixtureLoader(load_mixture(write_mix(data)))
    src = loader.mixture.sources[1]
    reader = SourceReader(src.url, src.manifest)
    full = reader.read(3)
    assert "meta.json" in full
    needed = loader.transforms[1].members
    assert "meta.json" not in needed and "state.npy" in needed
    part = reader.read(3, needed)
    assert set(part) == {k for k in full if k in needed or k.startswith("__")}
    # Nothing the transform uses was left out: the sample processes the same either way.
    a, b = loader.transforms[1](full), loader.transforms[1](part)
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k], k


@pytest.mark.parametrize("resume_at", [7, 12, 14])  # mid-phase, at the boundary, inside the ramp
def test_resume_equals_uninterrupted(data: Path, resume_at: int) -> None:
    mixture = load_mixture(write_mix(data))
    full = [keys_of(b) for b in MixtureLoader(mixture)]
    first = MixtureLoader(mixture)
    head = [keys_of(b) for b in itertools.islice(first, resume_at)]
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON checkpoint
    second = MixtureLoader(mixture)
    second.load_state_dict(state)
    tail = [keys_of(b) for b in second]
    assert head + tail == full and len(full) == 24


def test_ranks_are_disjoint_and_cover_the_global_batch(data: Path) -> None:
    mixture = load_mixture(write_mix(data))
    single = build_planner(mixture)
    ranks = [MixtureLoader(mixture, rank=r, world_size=4) for r in range(4)]
    for step in range(24):
        per_rank = [ld.rank_keys(step) for ld in ranks]
        flat = [(k.source, k.sample) for keys in per_rank for k in keys]
        assert len(flat) == len(set(flat)) == 8
        assert sorted(flat) == sorted((s.source, s.index) for s in single.batch(step))


def test_elastic_resume_4x2_to_2x1(data: Path) -> None:
    mixture = load_mixture(write_mix(data))
    reference = [sorted(keys_of(b)) for b in MixtureLoader(mixture)]
    wide = [MixtureLoader(mixture, rank=r, world_size=4, num_workers=2) for r in range(4)]
    iters = [iter(ld) for ld in wide]
    seen = [sorted(sum((keys_of(next(it)) for it in iters), [])) for _ in range(10)]
    for it in iters:
        it.close()  # type: ignore[attr-defined]  # a generator at run time
    state = wide[0].state_dict()
    narrow = [MixtureLoader(mixture, rank=r, world_size=2, num_workers=1) for r in range(2)]
    for ld in narrow:
        ld.load_state_dict(state)
    rest = [sorted(a + b) for a, b in zip(*[[keys_of(x) for x in ld] for ld in narrow])]
    assert seen + rest == reference


def test_torchrun_two_processes(data: Path, tmp_path: Path) -> None:
    mix = write_mix(data)
    out = tmp_path / "keys.json"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
                    str(ROOT / "tests" / "unit" / "mix" / "dist_mix_worker.py"), str(mix), str(out), "6"],
                   check=True, cwd=ROOT, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    reference = [sorted(keys_of(b)) for b in itertools.islice(MixtureLoader(load_mixture(mix)), 6)]
    r0, r1 = result["ranks"]
    assert [sorted(a + b) for a, b in zip(r0, r1)] == reference
    assert all(not set(a) & set(b) for a, b in zip(r0, r1))


def test_collation_pads_and_normalises(data: Path) -> None:
    mixture = load_mixture(write_mix(data))
    batch = next(iter(MixtureLoader(mixture)))
    assert tuple(batch["images"].shape) == (8, 2, 3, 32, 32)
    assert tuple(batch["state"].shape) == (8, 6) and tuple(batch["actions"].shape) == (8, 6, 5)
    for i, src in enumerate(batch["source"].tolist()):
        dims = {0: (4, 3, 1), 1: (6, 5, 2), 2: (0, 0, 1)}[src]
        assert batch["state_mask"][i].sum() == dims[0] and batch["action_mask"][i].sum() == dims[1]
        assert batch["camera_mask"][i].sum() == dims[2]
        assert bool(batch["has_actions"][i]) == (src != 2)
        if src == 0:  # horizon 4 source padded to 6: the two extra steps are invalid
            assert not batch["actions_valid"][i, 4:].any()
        if src == 2:
            assert batch["target"][i].startswith("caption ") and batch["prompt"][i] == "caption en"
    assert batch["state"].abs().max() <= 1.0


@pytest.mark.parametrize("workers", [0, 1])
def test_batch_normalisation_equals_the_per_sample_transform(data: Path, workers: int) -> None:
    """The loader normalises state and actions per source over the whole batch (collate.py); the
    values must be exactly those of `SampleTransform` on each sample alone, padding left at 0."""
    mixture = load_mixture(write_mix(data))
    loader = MixtureLoader(mixture, num_workers=workers)
    for step, batch in enumerate(itertools.islice(iter(loader), 3)):
        for i, key in enumerate(loader.rank_keys(step)):
            ref = loader.builder.sample(key)  # normalised on its own
            ds, da = len(ref["state"]), ref["actions"].shape[1]
            np.testing.assert_array_equal(batch["state"][i, :ds].numpy(), ref["state"])
            np.testing.assert_array_equal(batch["actions"][i, :, :da].numpy(), ref["actions"])
            assert not batch["state"][i, ds:].any() and not batch["actions"][i, :, da:].any()


def test_quantile_normalisation_maps_q01_q99_to_unit_range(data: Path) -> None:
    from cotrain.dataset.manifest import load_manifest
    from cotrain.mix.transform import build_normalizer

    stats = load_manifest(data / "target").stats.state
    norm = build_normalizer(stats, "quantile", 1e-3, 1.0, "state")
    assert norm is not None
    varying = np.array(stats.q99) - np.array(stats.q01) > 1e-3  # dim 1 is the constant source tag
    assert varying.tolist() == [True, False, True, True]
    np.testing.assert_allclose(norm(np.array(stats.q01)), -1.0, atol=1e-5)
    np.testing.assert_allclose(norm(np.array(stats.q99))[varying], 1.0, atol=1e-5)
    np.testing.assert_allclose(norm.inverse(norm(np.array(stats.mean))), stats.mean, rtol=1e-4, atol=1e-5)
    assert norm(np.array(stats.max) + 100).max() == 1.0  # clipped


def test_bad_sample_raise_and_skip(data: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(data, tmp_path / "d")
    shard = tmp_path / "d" / "vl" / "shard-000000.tar"
    raw = bytearray(shard.read_bytes())
    at = raw.find(b"\xff\xd8\xff")  # first JPEG in the shard: break its header
    raw[at: at + 64] = b"\x00" * 64
    shard.write_bytes(bytes(raw))
    phases = [{"name": "only", "steps": 6, "weights": {"vl": 1}}]
    for workers in (0, 1):  # in a worker the failed batch's image buffer is handed back (ring.py)
        with pytest.raises(DataError, match="bad sample .* of source 'vl'"):
            list(MixtureLoader(load_mixture(write_mix(tmp_path / "d", phases=phases)), num_workers=workers))
    loader = MixtureLoader(load_mixture(write_mix(tmp_path / "d", "skip.yaml", phases=phases, bad_samples="skip")))
    batches = list(loader)
    assert loader.state_dict()["skipped"]["vl"] >= 1
    again = MixtureLoader(load_mixture(write_mix(tmp_path / "d", "skip.yaml", phases=phases, bad_samples="skip")))
    assert [keys_of(b) for b in again] == [keys_of(b) for b in batches]  # replacement is deterministic
    # A replaced row holds exactly its replacement (written over whatever the failed sample left).
    for step, batch in enumerate(batches):
        plain = loader.collator([loader.builder.sample(key) for key in loader.rank_keys(step)])
        assert_same_batch(batch, plain)


def test_nested_mixture_and_balance(data: Path) -> None:
    inner = data / "inner.yaml"
    inner.write_text(
        yaml.safe_dump(
            {
                "name": "inner",
                "batch_size": 8,
                "sources": {"a": {"path": "target"}, "b": {"path": "xemb"}},
                "phases": [{"name": "p", "steps": 1, "weights": {"a": 3, "b": 1}}],
            }
        )
    )
    outer = write_mix(
        data,
        "outer.yaml",
        sources={"robots": {"mixture": "inner.yaml"}, "vl": {"path": "vl", "balance": 1.0}},
        phases=[{"name": "p", "steps": 4, "weights": {"robots": 0.5, "vl": 0.5}}],
    )
    mixture = load_mixture(outer)
    assert mixture.names == ["robots/a", "robots/b", "vl"]
    w = np.array([0.5 * 0.75, 0.5 * 0.25, 0.5 * 17 / 40])  # vl balanced by (17 / 40) ** 1
    np.testing.assert_allclose(mixture.phases[0].weights, w / w.sum())


def test_config_errors_name_the_field(data: Path) -> None:
    with pytest.raises(ConfigError, match=r"phases\.0\.weigths: unknown field \(did you mean 'weights'\?\)"):
        load_mixture(write_mix(data, "e1.yaml", phases=[{"name": "p", "steps": 1, "weigths": {"vl": 1}}]))
    with pytest.raises(ConfigError, match=r"unknown source 'xem' \(did you mean 'xemb'\?\)"):
        load_mixture(write_mix(data, "e2.yaml", phases=[{"name": "p", "steps": 1, "weights": {"xem": 1}}]))
    with pytest.raises(ConfigError, match="batch_size 8 does not divide over 3 ranks"):
        MixtureLoader(load_mixture(write_mix(data)), world_size=3)
    with pytest.raises(ConfigError, match="source 'vl' has 17 samples, fewer than the 18 readers"):
        MixtureLoader(load_mixture(write_mix(data, batch_size=18)), world_size=9, num_workers=2)
    with pytest.raises(ConfigError, match="sources.ghost: .*no manifest.json"):
        load_mixture(write_mix(data, "e3.yaml", sources={"ghost": {"path": "nowhere"}},
                               phases=[{"name": "p", "steps": 1, "weights": {"ghost": 1}}]))


def test_max_epochs_stop(data: Path) -> None:
    mix = write_mix(data, "ep.yaml", sources={"vl": {"path": "vl", "max_epochs": 1, "on_max_epochs": "stop"}},
                    phases=[{"name": "p", "steps": 10, "weights": {"vl": 1}}])
    with pytest.raises(DataError, match="passed max_epochs 1"):
        list(MixtureLoader(load_mixture(mix)))


def test_simulate_reports_exact_proportions(data: Path) -> None:
    report = simulate_mixture(load_mixture(write_mix(data)), 400, world_size=2, num_workers=2)
    fine = report.phases[1]
    assert fine.realised["xemb"] < 0.01 and abs(fine.realised["target"] - fine.target["target"]) < 1e-3
    assert report.worst_window["max_deviation"] < 0.005


def test_mix_cli_check_simulate_plot(data: Path, tmp_path: Path) -> None:
    mix = write_mix(data)
    proc = run_cli("mix", "check", str(mix), "--json", check=True)
    report = json.loads(proc.stdout)
    assert [p["name"] for p in report["phases"]] == ["pre", "fine"]
    assert report["phases"][0]["drawn"] == {"target": 19, "xemb": 48, "vl": 29}
    proc = run_cli("mix", "simulate", str(mix), "--steps", "50", "--world-size", "2", "--json", check=True)
    assert json.loads(proc.stdout)["steps"] == 50
    run_cli("mix", "plot", str(mix), "--out", str(tmp_path / "s.png"), check=True)
    from PIL import Image

    with Image.open(tmp_path / "s.png") as img:
        assert img.size[0] > 500
    bad = write_mix(data, "bad.yaml", batch_sise=3)
    proc = run_cli("mix", "check", str(bad))
    assert proc.returncode == 1 and "did you mean 'batch_size'" in proc.stderr and "Traceback" not in proc.stderr


def test_fsspec_url_sources_read_by_range(data: Path, tmp_path: Path) -> None:
    """Sources named by URL (here fsspec's in-memory filesystem) load exactly like local paths, with
    member indices from the shards' sidecars, or (for `vl`, copied without them) from a header scan."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for name in ("target", "xemb", "vl"):
        for path in (data / name).iterdir():
            if not (name == "vl" and path.name.endswith(".idx.json")):
                fs.pipe(f"/cotrain-test/{name}/{path.name}", path.read_bytes())
    local = load_mixture(write_mix(data))
    remote = load_mixture(write_mix(tmp_path, "remote.yaml", sources={
        n: {"path": f"memory://cotrain-test/{n}"} for n in ("target", "xemb", "vl")}))
    a = list(itertools.islice(MixtureLoader(local), 3))
    b = list(itertools.islice(MixtureLoader(remote), 3))
    assert [keys_of(x) for x in a] == [keys_of(x) for x in b]
    assert all(bool((x["images"] == y["images"]).all()) for x, y in zip(a, b))


def test_image_text_samples_with_fewer_images_are_masked(tmp_path: Path) -> None:
    from cotrain.dataset.manifest import load_manifest
    from cotrain.mix.transform import SampleTransform

    root = write_dataset(tmp_path / "multi", samples=4, modality="vision_language", cameras=("image_0", "image_1"))
    manifest = load_manifest(root)
    transform = SampleTransform.build(0, "multi", manifest, image_size=16, horizon=4, loss_weight=1.0,
                                      normalization="quantile", floor=1e-3, clip=1.0)
    from cotrain.dataset.reader import SourceReader

    sample = SourceReader(str(root), manifest).read(0)
    del sample["image_1.jpg"]
    out = transform(sample)
    assert out["camera_present"].tolist() == [True, False] and not out["images"][1].any()

    # Decoding into a batch row: every slot is written (a reused, unzeroed buffer holds no stale pixels).
    row = np.full((3, 16, 16, 3), 255, np.uint8)
    placed = transform(sample, images=row)
    assert np.shares_memory(placed["images"], row) and placed["images"].shape[0] == 2
    np.testing.assert_array_equal(row[0], out["images"][0])
    assert not row[1:].any()  # row 0 was 255 before: the equality above shows it was overwritten


def test_loader_batches_match_per_sample_collation(data: Path) -> None:
    """The loader decodes each sample straight into its batch row; the batch equals collating the
    per-sample transforms (the plain path) value for value."""
    loader = MixtureLoader(load_mixture(write_mix(data)))
    batch = next(iter(loader))
    plain = loader.collator([loader.builder.sample(key) for key in loader.rank_keys(0)])
    assert_same_batch(batch, plain)


def assert_same_batch(batch: Batch, expected: Batch) -> None:
    for name in expected.keys():
        if name == "step":
            continue
        value = expected[name]
        if hasattr(value, "shape"):
            assert value.shape == batch[name].shape and bool((batch[name] == value).all()), name
        else:
            assert batch[name] == value, name


def test_worker_batches_are_private_copies_equal_to_in_process_ones(data: Path) -> None:
    """Workers decode into a few reused shared buffers (ring.py): every batch, even one held while
    later ones arrive, equals the in-process batch. 24 steps over 2 workers reuse each buffer 4 times."""
    mixture = load_mixture(write_mix(data))
    plain = list(MixtureLoader(mixture))
    held = list(MixtureLoader(mixture, num_workers=2))
    assert len(held) == len(plain) == 24
    for got, want in zip(held, plain):
        assert_same_batch(got, want)
    assert any(b["images"].any() for b in held)  # images really travel, not only zeros


def test_proportions_hold_over_every_window_not_only_batches(tmp_path: Path) -> None:
    """Sources are spread evenly inside each batch, so any 1,000-sample stretch is within 0.005 of the mix."""
    for name, n in (("a", 500), ("b", 300), ("c", 200)):
        write_dataset(tmp_path / name, samples=n, per_shard=100, tag=len(name))
    mix = write_mix(tmp_path, batch_size=32, sources={n: {"path": n} for n in "abc"},
                    phases=[{"name": "p", "steps": 400, "weights": {"a": 0.5, "b": 0.3, "c": 0.2}}])
    report = simulate_mixture(load_mixture(mix), 400, window=1000)
    assert report.worst_window["window_samples"] == 1000
    assert report.worst_window["max_deviation"] < 0.005
    planner = build_planner(load_mixture(mix))
    rank_share = [s.source for s in planner.batch(7)[:16]]  # rank 0 of 2 gets a proportional mix too
    assert sorted(np.bincount(rank_share, minlength=3).tolist()) == sorted([8, 5, 3])


def test_reader_uses_sidecar_indices_and_scans_where_they_do_not_hold(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Shards with a sidecar index that matches the manifest are never scanned; a missing, stale or
    malformed sidecar falls back to one scan of that shard. Either way every member reads back
    exactly as tarfile finds it, in a permutation over all shards (how the sampler draws)."""
    import shutil
    import tarfile

    from cotrain.dataset import reader as reader_module
    from cotrain.dataset.manifest import load_manifest
    from cotrain.dataset.shard_index import index_name

    root = tmp_path / "xemb"
    shutil.copytree(data / "xemb", root)
    manifest = load_manifest(root)
    names = [s.name for s in manifest.shards]
    assert len(names) == 4 and all((root / index_name(n)).is_file() for n in names)  # 23 samples, 7 per shard
    (root / index_name(names[1])).unlink()
    (root / index_name(names[2])).write_text((root / index_name(names[3])).read_text())  # another shard's
    (root / index_name(names[3])).write_text("{not json")

    scans: list[str] = []
    real = reader_module.index_shard
    monkeypatch.setattr(reader_module, "index_shard", lambda path, *a: scans.append(Path(path).name) or real(path, *a))
    src = reader_module.SourceReader(str(root), manifest)
    got = {int(i): src.read_raw(int(i)) for i in np.random.default_rng(0).permutation(len(src))}
    assert sorted(scans) == names[1:]  # each once; the intact sidecar spared shard 0 its scan
    assert f"{index_name(names[3])}: not JSON" in caplog.text
    assert "samples; the manifest lists" in caplog.text  # the stale one: shard 3's size and count

    expected: list[dict[str, bytes]] = []
    for name in names:
        with tarfile.open(root / name) as tar:
            for info in tar.getmembers():
                key, ext = info.name.split(".", 1)
                if not expected or expected[-1]["__key__"] != key:
                    expected.append({"__key__": key})
                expected[-1][ext] = tar.extractfile(info).read()  # type: ignore[union-attr]  # regular members only
    assert [{k: v for k, v in got[i].items() if k != "__shard__"} for i in range(len(src))] == expected


@pytest.mark.parametrize("name", ["../outside.tar", "/etc/passwd", "sub/shard.tar", ".."])
def test_reader_refuses_shard_names_outside_the_dataset(tmp_path: Path, name: str) -> None:
    """Any reader of a dataset (the loader, `cotrain eval`), not only a mixture, refuses to open a
    shard the manifest names outside the dataset folder."""
    from cotrain.dataset.manifest import load_manifest
    from cotrain.dataset.reader import SourceReader

    ds = write_dataset(tmp_path / "ds", samples=4, per_shard=4)
    manifest = load_manifest(ds)
    bad = manifest.model_copy(update={"shards": [manifest.shards[0].model_copy(update={"name": name})]})
    with pytest.raises(DataError, match=r"manifest\.json: shard name .* is not a plain file name"):
        SourceReader(str(ds), bad)
    assert SourceReader(str(ds), manifest).read(3)["__key__"] == "000000_000003"
