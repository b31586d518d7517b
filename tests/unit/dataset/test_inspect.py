"""`inspect`, `validate` and `preview` on real conversions (ALOHA HDF5) and on a hand-built VL dataset.

Every corruption test damages a fresh copy of a converted dataset in one way and asserts the exact
problem lines `validate` reports; where the damage is inside a sample, the shard is rewritten and its
manifest hash updated, so only the sample check (not the sha256) can catch it.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cotrain.atomic import atomic_open
from cotrain.cli.app import app
from cotrain.convert.pipeline import convert
from cotrain.convert.spec import RobotOptions
from cotrain.dataset import keys
from cotrain.dataset.manifest import MANIFEST_NAME, Manifest, Provenance, ShardEntry, load_manifest
from cotrain.dataset.preview import choose_samples, render_preview
from cotrain.dataset.shards import ShardWriter, encode_json, encode_npy, index_shard, iter_samples
from cotrain.dataset.summary import stat_rows, summarise
from cotrain.dataset.validate import validate
from cotrain.errors import ConfigError, DataError
from cotrain.media.image import encode_jpeg
from tests.fixtures.aloha import scene, write_aloha

ROOT = Path(__file__).resolve().parents[3]
Members = dict[str, bytes]


# ----------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def aloha_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 episodes (20, 21, 22 frames), 2 cameras 48x64, horizon 8: shards of 41 and 22 samples."""
    base = tmp_path_factory.mktemp("aloha")
    src = write_aloha(base / "raw", episodes=3, frames=20)
    convert("aloha", src, base / "ds", RobotOptions(embodiment="aloha", horizon=8, shard_size=30))
    return base / "ds"


@pytest.fixture
def ds(aloha_ds: Path, tmp_path: Path) -> Path:
    """A private copy to damage."""
    return Path(shutil.copytree(aloha_ds, tmp_path / "ds"))


def _vl_image(height: int, width: int, seed: int) -> bytes:
    return encode_jpeg(scene(seed, height, width, seed))


def _vl_samples() -> list[tuple[str, Members]]:
    meta = encode_json({"dataset": "tiny_vl", "modality": keys.VISION_LANGUAGE})
    out = []
    for i in range(4):
        members = {keys.META: meta, "image.jpg": _vl_image(24, 32, i), keys.PROMPT: b"caption en",
                   keys.TARGET: f"a gradient, number {i}".encode()}
        out.append((f"000000_{i:06d}", members))
    turns = [{"role": "user", "content": "What colour is the corner?"}, {"role": "assistant", "content": "Green."}]
    out.append(("000001_000000", {keys.META: meta, "image.jpg": _vl_image(32, 32, 9),
                                  keys.CONVERSATION: encode_json(turns)}))
    return out


def write_vl_dataset(root: Path, samples: list[tuple[str, Members]] | None = None, **manifest: object) -> Path:
    """A vision-language dataset written directly: one shard, cameras ['image'], bound 32x32."""
    samples = _vl_samples() if samples is None else samples
    fields = {"name": "tiny_vl", "modality": keys.VISION_LANGUAGE, "cameras": ["image"], "image_size": [32, 32],
              **manifest}
    root.mkdir(parents=True)
    with atomic_open(root / "shard-000000.tar") as fh, ShardWriter(fh) as writer:
        for key, members in samples:
            writer.write(key, members)
    data = (root / "shard-000000.tar").read_bytes()
    written = Manifest(
        **fields, num_episodes=0, num_samples=len(samples),  # type: ignore[arg-type]  # the test's field dict is typed loosely
        shards=[ShardEntry(name="shard-000000.tar", samples=len(samples), bytes=len(data),
                           sha256=hashlib.sha256(data).hexdigest(), episodes=0)],
        provenance=Provenance(converter="handmade", arguments={}, source_fingerprint="0" * 64, cotrain_version="0"),
    )
    (root / MANIFEST_NAME).write_text(written.dumps())
    return root


def _write_tar(path: Path, samples: list[tuple[str, Members]]) -> None:
    """Plain tarfile, so tests can write what ShardWriter refuses (e.g. a `.pickle` member)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for key, members in samples:
            for ext in sorted(members):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(members[ext])
                tar.addfile(info, io.BytesIO(members[ext]))


def _rehash(root: Path) -> None:
    """Make the manifest's byte sizes and hashes agree with the files again."""
    raw = json.loads((root / MANIFEST_NAME).read_text())
    for entry in raw["shards"]:
        path = root / entry["name"]
        if path.is_file():
            entry["bytes"] = path.stat().st_size
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (root / MANIFEST_NAME).write_text(json.dumps(raw))


def rewrite_shard(root: Path, name: str, edit: Callable[[str, Members], Members]) -> None:
    """Rewrite every sample of one shard through `edit(key, members)`, then fix the manifest hashes."""
    samples = []
    for sample in iter_samples(root / name):
        key = sample.pop("__key__")
        samples.append((key, edit(key, sample)))
    _write_tar(root / name, samples)
    _rehash(root)


def only(key: str, change: Callable[[Members], Members]) -> Callable[[str, Members], Members]:
    return lambda k, members: change(dict(members)) if k == key else members


def lines(root: Path) -> list[str]:
    report = validate(root)
    assert report.num_problems == len(report.problems)
    return [str(p) for p in report.problems]


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})  # rich tables must not wrap
    return result.exit_code, result.output


# ----------------------------------------------------------------------------- inspect


def test_inspect_json_equals_manifest(aloha_ds: Path) -> None:
    code, out = cli("inspect", str(aloha_ds), "--json")
    assert code == 0
    data, raw = json.loads(out), json.loads((aloha_ds / MANIFEST_NAME).read_text())
    assert (data["modality"], data["embodiment"], data["name"]) == ("robot", "aloha", raw["name"])
    assert (data["episodes"], data["samples"], data["shards"]) == (3, 63, 2) == (
        raw["num_episodes"], raw["num_samples"], len(raw["shards"]))
    assert data["bytes"] == sum(s["bytes"] for s in raw["shards"]) == sum(
        (aloha_ds / s["name"]).stat().st_size for s in raw["shards"])
    assert data["dimensions"] == {
        "state_dim": 14, "state_names": raw["state_names"], "action_dim": 14, "action_names": raw["action_names"],
        "horizon": 8, "fps": 50.0, "cameras": ["cam_high", "cam_left_wrist"], "image_size": None,
    }
    assert data["stats"] == raw["stats"]  # all of it: q02/q98 and the per-timestep action stats too
    assert len(data["stats"]["actions"]["per_timestep"]["mean"]) == 8
    assert data["provenance"] == raw["provenance"] and data["skipped_episodes"] == [] == raw["skipped_episodes"]
    assert data["extra"] == {"compressed_images": False}


def test_inspect_reads_only_the_manifest(ds: Path) -> None:
    for shard in ds.glob("shard-*.tar"):
        shard.unlink()
    assert summarise(ds).to_json()["samples"] == 63


def test_inspect_table_and_skipped_episodes(tmp_path: Path) -> None:
    import h5py

    src = write_aloha(tmp_path / "raw", episodes=3, frames=20)
    with h5py.File(src / "episode_1.hdf5", "r+") as f:
        f["observations/qpos"][4, 2] = np.nan
    convert("aloha", src, tmp_path / "ds", RobotOptions(embodiment="aloha", horizon=8, on_bad_episode="skip"))
    manifest = load_manifest(tmp_path / "ds")
    code, out = cli("inspect", str(tmp_path / "ds"))
    assert code == 0
    assert "skipped episode episode_1: " in out and "NaN in observations/qpos dimension 2" in out
    state = manifest.stats.state
    assert state is not None
    first = stat_rows(state, manifest.state_names)[0]
    assert (first.name, first.values) == ("left_waist", (state.mean[0], state.std[0], state.min[0], state.max[0],
                                                         state.q01[0], state.q99[0]))

    def row(label: str) -> list[str]:
        line = next(line for line in out.splitlines() if line.strip("│┃ ").startswith(label + " "))
        return [cell.strip() for cell in line.strip("│┃ ").replace("┃", "│").split("│")]

    assert row("left_waist") == ["left_waist", *(f"{v:.4g}" for v in first.values)]
    assert row("samples") == ["samples", "42"]  # episodes 0 and 2: 20 + 22 frames
    assert row("episodes") == ["episodes", "2"] and row("skipped episodes") == ["skipped episodes", "1"]
    assert validate(tmp_path / "ds").ok


def test_inspect_without_manifest_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no manifest.json"):
        summarise(tmp_path)


# ----------------------------------------------------------------------------- validate: clean data


def test_validate_fresh_conversion_ok(aloha_ds: Path) -> None:
    report = validate(aloha_ds)
    assert (report.ok, report.shards, report.samples, report.problems) == (True, 2, 63, [])
    code, out = cli("validate", str(aloha_ds), "--json")
    assert code == 0
    assert json.loads(out) == {"ok": True, "root": str(aloha_ds), "shards": 2, "samples": 63,
                               "num_problems": 0, "problems": []}
    code, out = cli("validate", str(aloha_ds))
    assert code == 0 and out.strip().endswith("2 shards, 63 samples checked: OK")


def test_conversion_writes_sidecar_indices_that_validate_checks(ds: Path) -> None:
    from cotrain.dataset.shard_index import ShardIndex, index_name, parse_index

    manifest = load_manifest(ds)
    for entry in manifest.shards:  # one per shard, equal to a scan of it
        side = parse_index((ds / index_name(entry.name)).read_bytes(), "x", entry.bytes, entry.samples)
        assert side == ShardIndex.from_rows(index_shard(ds / entry.name)) and len(side) == entry.samples
    name = index_name("shard-000000.tar")
    doc = json.loads((ds / name).read_text())
    doc["offsets"][3] += 512  # well formed, right size and count, wrong span
    (ds / name).write_text(json.dumps(doc))
    (ds / "shard-000009.tar.idx.json").write_text("{}")
    assert lines(ds) == [
        "shard-000009.tar.idx.json: unexpected shard index: its shard is not listed in the manifest",
        "shard-000000.tar.idx.json: does not match its shard's members; delete it (readers then scan the shard) "
        "or reconvert",
    ]
    doc["keys"][0] = "../evil"
    doc["offsets"][3] -= 512
    (ds / name).write_text(json.dumps(doc))
    assert lines(ds)[1] == "shard-000000.tar.idx.json: invalid sample key '../evil'"


def test_validate_workers_give_the_same_report(ds: Path) -> None:
    short_state = encode_npy(np.zeros(3, np.float32))
    rewrite_shard(ds, "shard-000001.tar", only("000002_000003", lambda m: {**m, keys.STATE: short_state}))
    (ds / "shard-000000.tar").unlink()
    assert validate(ds, workers=2) == validate(ds)
    assert [str(p) for p in validate(ds, workers=2).problems] == [
        "shard-000000.tar: missing (the manifest lists it with 41 samples)",
        "shard-000001.tar, sample 000002_000003: state.npy shape (3,), expected (14,)",
    ]


# ----------------------------------------------------------------------------- validate: shard damage


def test_flipped_byte_is_a_hash_mismatch(ds: Path) -> None:
    path = ds / "shard-000000.tar"
    data = bytearray(path.read_bytes())
    last = max(span.offset + span.size for _, spans in index_shard(path) for span in spans.values())
    end = -(-last // 512) * 512  # the end-of-archive marker starts at the next 512-byte block
    data[-1] ^= 0xFF  # in the end-of-archive padding: every sample still reads
    path.write_bytes(bytes(data))
    expected = load_manifest(ds).shards[0].sha256
    assert lines(ds) == [
        f"shard-000000.tar: non-zero byte at {len(data) - 1}, after the tar's end-of-archive marker at byte "
        f"{end}",
        f"shard-000000.tar: sha256 {hashlib.sha256(data).hexdigest()}, manifest says {expected}",
    ]


def test_flipped_byte_inside_a_member(ds: Path) -> None:
    path = ds / "shard-000000.tar"
    key, spans = index_shard(path)[5]
    data = bytearray(path.read_bytes())
    data[spans[keys.META].offset + 2] ^= 0x20  # `{"dataset"...` -> `{"Dataset"...` is still valid JSON
    data[spans[keys.STATE].offset + 5] ^= 0xFF  # inside the npy magic: no longer a readable array
    path.write_bytes(bytes(data))
    got = lines(ds)
    assert len(got) == 2
    assert got[0] == f"shard-000000.tar, sample {key}: state.npy is not an npy array (starts with b'\\x93NUMP\\xa6')"
    assert got[1].startswith("shard-000000.tar: sha256 ")


def test_truncated_shard(ds: Path) -> None:
    path = ds / "shard-000000.tar"
    key, spans = index_shard(path)[10]
    cut = spans["cam_high.jpg"].offset + spans["cam_high.jpg"].size // 2
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:cut])
    got = lines(ds)
    assert f"shard-000000.tar: size {cut} bytes, manifest says {size}" in got
    assert got[0] == f"shard-000000.tar, sample {key}: truncated or corrupt tar: unexpected end of data"
    assert "shard-000000.tar: 10 samples, manifest says 41" in got  # the cut sample is not counted
    assert len(got) == 4
    assert any(line.startswith("shard-000000.tar: sha256 ") for line in got)


def test_corrupt_member_header(ds: Path) -> None:
    # Python's stream reader stops quietly at a bad header after the first; validate must not.
    path = ds / "shard-000000.tar"
    key, spans = index_shard(path)[20]
    header = spans[keys.ACTIONS].offset - 512
    data = bytearray(path.read_bytes())
    data[header + 3] ^= 0x01  # one bit of the member name: the header checksum no longer matches
    path.write_bytes(bytes(data))
    got = lines(ds)
    assert got[0] == (f"shard-000000.tar: unreadable member header at byte {header}; "
                      f"the last {len(data) - header} bytes were not read")
    assert got[1].startswith("shard-000000.tar: sha256 ") and got[2] == "shard-000000.tar: 20 samples, manifest says 41"
    assert len(got) == 3


def test_deleted_shard(ds: Path) -> None:
    (ds / "shard-000001.tar").unlink()
    report = validate(ds)
    assert [str(p) for p in report.problems] == ["shard-000001.tar: missing (the manifest lists it with 22 samples)"]
    assert (report.shards, report.samples) == (1, 41)


def test_unexpected_tar_files(ds: Path) -> None:
    shutil.copy(ds / "shard-000000.tar", ds / "shard-000007.tar")
    (ds / "shard-000001.tar.tmp").write_bytes(b"partial")
    (ds / "README.md").write_text("notes are fine")
    assert lines(ds) == ["shard-000001.tar.tmp: unexpected tar file: not listed in the manifest",
                         "shard-000007.tar: unexpected tar file: not listed in the manifest"]


def test_manifest_counts_must_add_up(ds: Path) -> None:
    raw = json.loads((ds / MANIFEST_NAME).read_text())
    raw["num_samples"], raw["num_episodes"] = 64, 2
    (ds / MANIFEST_NAME).write_text(json.dumps(raw))
    assert lines(ds) == ["manifest.json: num_samples 64, but its shards hold 63",
                         "manifest.json: num_episodes 2, but its shards hold 3"]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_stats_are_rejected(ds: Path, literal: str) -> None:
    """Python's json writes NaN/Infinity literals; stats holding one would normalise every sample of
    the source to NaN, so the manifest does not load (validate, inspect and the loader alike)."""
    raw = json.loads((ds / MANIFEST_NAME).read_text())
    raw["stats"]["actions"]["q01"][2] = "__X__"
    (ds / MANIFEST_NAME).write_text(json.dumps(raw).replace('"__X__"', literal))
    with pytest.raises(DataError, match=r"manifest\.json: field 'stats\.actions\.q01\.2': Input should be a finite"):
        validate(ds)


# ----------------------------------------------------------------------------- validate: sample damage


def test_wrong_action_shape_with_correct_hash(ds: Path) -> None:
    def shorten(m: Members) -> Members:
        return {**m, keys.ACTIONS: encode_npy(np.zeros((4, 14), np.float32))}

    rewrite_shard(ds, "shard-000001.tar", only("000002_000012", shorten))
    assert lines(ds) == ["shard-000001.tar, sample 000002_000012: actions.npy shape (4, 14), expected (8, 14)"]


def test_nan_in_state(ds: Path) -> None:
    def poison(m: Members) -> Members:
        state = np.load(io.BytesIO(m[keys.STATE]))
        state[3] = np.nan
        return {**m, keys.STATE: encode_npy(state)}

    rewrite_shard(ds, "shard-000000.tar", only("000001_000007", poison))
    assert lines(ds) == [
        "shard-000000.tar, sample 000001_000007: state.npy: NaN at dimension 3 (1 of 14 values not finite)"]


def test_inf_in_actions_and_wrong_dtypes(ds: Path) -> None:
    def damage(m: Members) -> Members:
        actions = np.load(io.BytesIO(m[keys.ACTIONS]))
        actions[2, 5] = -np.inf
        valid = np.load(io.BytesIO(m[keys.ACTIONS_VALID])).astype(np.uint8)
        return {**m, keys.ACTIONS: encode_npy(actions.astype(np.float64)), keys.ACTIONS_VALID: encode_npy(valid)}

    rewrite_shard(ds, "shard-000000.tar", only("000000_000001", damage))
    where = "shard-000000.tar, sample 000000_000001: "
    assert lines(ds) == [where + "actions.npy dtype float64, expected float32",
                         where + "actions_valid.npy dtype uint8, expected bool",
                         where + "actions.npy: Inf at step 2, dimension 5 (1 of 112 values not finite)"]


def test_missing_camera_and_bad_jpeg(ds: Path) -> None:
    def drop(m: Members) -> Members:
        m.pop("cam_high.jpg")
        return m

    def cut(m: Members) -> Members:
        return {**m, "cam_left_wrist.jpg": m["cam_left_wrist.jpg"][:200]}

    rewrite_shard(ds, "shard-000000.tar", only("000000_000004", drop))
    rewrite_shard(ds, "shard-000000.tar", only("000001_000000", cut))
    got = lines(ds)
    assert got[0] == "shard-000000.tar, sample 000000_000004: cam_high.jpg missing (camera 'cam_high' of the manifest)"
    assert got[1].startswith("shard-000000.tar, sample 000001_000000: cam_left_wrist.jpg does not decode: ")
    assert len(got) == 2


def test_pickle_member_is_refused_unread(ds: Path) -> None:
    rewrite_shard(ds, "shard-000001.tar", only("000002_000000", lambda m: {**m, "extra.pickle": b"\x80\x04K\x01."}))
    assert lines(ds) == ["shard-000001.tar, sample 000002_000000: forbidden member 'extra.pickle' "
                         "(pickle-capable formats are refused)"]


def test_links_and_extensionless_members(ds: Path) -> None:
    path = ds / "shard-000001.tar"
    with tarfile.open(path, "a", format=tarfile.GNU_FORMAT) as tar:
        link = tarfile.TarInfo("000002_000021.notes.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        bare = tarfile.TarInfo("000002_000021")
        tar.addfile(bare, io.BytesIO(b""))
    _rehash(ds)
    assert lines(ds) == [
        "shard-000001.tar, sample 000002_000021: member '000002_000021.notes.txt' is not a regular file",
        "shard-000001.tar, sample 000002_000021: member '000002_000021' has no extension",
    ]


def test_meta_missing_and_mismatched(ds: Path) -> None:
    def other(m: Members) -> Members:
        return {**m, keys.META: encode_json({"modality": "human_video", "embodiment": "franka"})}

    rewrite_shard(ds, "shard-000001.tar", only("000002_000001", other))
    rewrite_shard(ds, "shard-000001.tar", only("000002_000002", lambda m: {k: v for k, v in m.items()
                                                                       if k != keys.META}))
    assert lines(ds) == [
        "shard-000001.tar, sample 000002_000001: meta.json modality 'human_video', manifest says 'robot'",
        "shard-000001.tar, sample 000002_000001: meta.json embodiment 'franka', manifest says 'aloha'",
        "shard-000001.tar, sample 000002_000002: meta.json missing",
    ]


def test_duplicate_and_invalid_keys(ds: Path) -> None:
    renames = {"000002_000000": "000000_000003", "000002_000001": "bad key!"}
    samples = [(renames.get(s["__key__"], s["__key__"]), {k: v for k, v in s.items() if k != "__key__"})
               for s in iter_samples(ds / "shard-000001.tar")]
    _write_tar(ds / "shard-000001.tar", samples)
    _rehash(ds)
    assert lines(ds) == [
        "shard-000001.tar, sample bad key!: invalid sample key: use letters, digits, '_' or '-'",
        "shard-000001.tar, sample 000000_000003: duplicate key (also in shard-000000.tar)",
    ]


def test_max_problems_counts_everything(ds: Path) -> None:
    raw = json.loads((ds / MANIFEST_NAME).read_text())
    raw["horizon"] = 16  # the manifest now disagrees with every sample's chunk
    (ds / MANIFEST_NAME).write_text(json.dumps(raw))
    report = validate(ds, max_problems=5)
    assert (report.num_problems, len(report.problems), report.ok) == (126, 5, False)
    assert [str(p) for p in report.problems[:2]] == [
        "shard-000000.tar, sample 000000_000000: actions.npy shape (8, 14), expected (16, 14)",
        "shard-000000.tar, sample 000000_000000: actions_valid.npy shape (8,), expected (16,)",
    ]
    code, out = cli("validate", str(ds), "--max-problems", "3")
    assert code == 1
    assert out.splitlines()[-1] == (f"validate {ds}: 2 shards, 63 samples checked: "
                                    "126 problems (123 not listed; raise --max-problems)")
    assert len(out.splitlines()) == 4


def test_cli_exit_code_and_problem_lines(ds: Path) -> None:
    long_chunk = encode_npy(np.zeros((16, 14), np.float32))
    rewrite_shard(ds, "shard-000001.tar", only("000002_000012", lambda m: {**m, keys.ACTIONS: long_chunk}))
    proc = subprocess.run([sys.executable, "-m", "cotrain", "validate", str(ds)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "shard-000001.tar, sample 000002_000012: actions.npy shape (16, 14), expected (8, 14)",
        f"validate {ds}: 2 shards, 63 samples checked: 1 problem",
    ]
    code, out = cli("validate", str(ds), "--json")
    assert code == 1
    data = json.loads(out)
    assert (data["ok"], data["shards"], data["samples"]) == (False, 2, 63)
    assert data["problems"] == [{"file": "shard-000001.tar", "sample": "000002_000012",
                                 "problem": "actions.npy shape (16, 14), expected (8, 14)"}]


def test_cli_not_a_dataset(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "cotrain", "validate", str(tmp_path)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"error: {tmp_path}: no manifest.json: not a converted dataset, "
                                   "or its conversion did not finish")


# ----------------------------------------------------------------------------- validate: vision-language


def test_vl_dataset_ok(tmp_path: Path) -> None:
    report = validate(write_vl_dataset(tmp_path / "vl"))
    assert (report.ok, report.shards, report.samples) == (True, 1, 5)


def test_vl_sample_problems(tmp_path: Path) -> None:
    good = dict(_vl_samples()[0][1])
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(png, format="PNG")
    samples = [
        ("a", {k: v for k, v in good.items() if k != keys.TARGET}),
        ("b", {**good, "image.jpg": _vl_image(48, 64, 1)}),
        ("c", {**good, "image.jpg": png.getvalue()}),
        ("d", {**good, keys.TARGET: b"  "}),
        ("e", {k: v for k, v in good.items() if k not in (keys.PROMPT, keys.TARGET)}
         | {keys.CONVERSATION: encode_json({"role": "user"})}),
        ("f", {k: v for k, v in good.items() if k != "image.jpg"}),
        ("g", {**good, keys.PROMPT: b"\xff\xfe"}),
    ]
    got = lines(write_vl_dataset(tmp_path / "vl", samples))
    assert got == [
        "shard-000000.tar, sample a: vision-language sample needs prompt.txt and target.txt, or conversation.json",
        "shard-000000.tar, sample b: image.jpg is 48x64 (HxW), larger than the manifest's image_size 32x32",
        "shard-000000.tar, sample c: image.jpg is not a JPEG (starts with b'\\x89PNG')",
        "shard-000000.tar, sample d: target.txt is empty",
        "shard-000000.tar, sample e: conversation.json must be a non-empty list of turn objects",
        "shard-000000.tar, sample f: image.jpg missing (camera 'image' of the manifest)",
        "shard-000000.tar, sample g: prompt.txt is not UTF-8 text: "
        "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
    ]


def test_vl_image_lists_follow_num_images(tmp_path: Path) -> None:
    def sample(num_images: int, stored: int) -> Members:
        images = {f"image_{i}.jpg": _vl_image(24, 32, i) for i in range(stored)}
        return {**images, keys.META: encode_json({"modality": keys.VISION_LANGUAGE, "num_images": num_images}),
                keys.PROMPT: b"Are they alike?", keys.TARGET: b"yes"}

    samples = [("a", sample(1, 1)), ("b", sample(2, 2)), ("c", sample(2, 1)), ("d", sample(3, 2))]
    root = write_vl_dataset(tmp_path / "vl", samples, cameras=["image_0", "image_1"])
    assert lines(root) == [
        "shard-000000.tar, sample c: image_1.jpg missing (camera 'image_1' of the manifest)",
        "shard-000000.tar, sample d: meta.json num_images 3, the manifest lists 2 cameras",
    ]


def test_action_token_samples(tmp_path: Path) -> None:
    meta = encode_json({"modality": keys.ACTION_TOKENS_MODALITY})
    samples = [("a", {keys.META: meta, keys.ACTION_TOKENS: encode_npy(np.array([3, 1, 4], np.int32))}),
               ("b", {keys.META: meta, keys.ACTION_TOKENS: encode_npy(np.array([0.5, 1.5], np.float32))}),
               ("c", {keys.META: meta})]
    root = write_vl_dataset(tmp_path / "tok", samples, modality=keys.ACTION_TOKENS_MODALITY, cameras=[])
    assert lines(root) == [
        "shard-000000.tar, sample b: action_tokens.npy dtype float32 shape (2,), expected 1-D integers",
        "shard-000000.tar, sample c: action_tokens.npy missing",
    ]


# ----------------------------------------------------------------------------- preview


def _png_pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"))


def test_preview_robot(aloha_ds: Path, tmp_path: Path) -> None:
    result = render_preview(aloha_ds, tmp_path / "sub" / "p.png", samples=3, seed=7)
    assert len(result.keys) == 3 and result.keys == sorted(result.keys)
    pixels = _png_pixels(result.path)
    assert pixels.shape == (result.height_px, result.width_px, 3)
    assert result.width_px >= 1000 and result.height_px >= 600
    assert (pixels.min(axis=2) < 200).mean() > 0.1  # camera images and plots, not a blank page
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["p.png"]  # atomic: no temp file left


def test_preview_deterministic_by_seed(aloha_ds: Path, tmp_path: Path) -> None:
    a = render_preview(aloha_ds, tmp_path / "a.png", samples=2, seed=1)
    b = render_preview(aloha_ds, tmp_path / "b.png", samples=2, seed=1)
    c = render_preview(aloha_ds, tmp_path / "c.png", samples=2, seed=2)
    assert a.keys == b.keys and (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert c.keys != a.keys and (tmp_path / "c.png").read_bytes() != (tmp_path / "a.png").read_bytes()
    expected = sorted(int(i) for i in np.random.default_rng(1).choice(63, size=2, replace=False))
    assert choose_samples(63, 2, 1) == expected
    all_keys = [s["__key__"] for name in ("shard-000000.tar", "shard-000001.tar")
                for s in iter_samples(aloha_ds / name)]
    assert a.keys == [all_keys[i] for i in expected]


def test_preview_vl_and_cli(tmp_path: Path) -> None:
    root = write_vl_dataset(tmp_path / "vl")
    code, out = cli("preview", str(root), "--out", str(tmp_path / "vl.png"), "--samples", "10", "--seed", "0")
    assert code == 0 and out.startswith(f"wrote {tmp_path / 'vl.png'} (")
    assert sorted(out.strip().split(": ", 1)[1].split(", ")) == [k for k, _ in _vl_samples()]  # clamped to 5
    pixels = _png_pixels(tmp_path / "vl.png")
    assert pixels.shape[0] >= 5 * 200
    with pytest.raises(ConfigError, match="--samples 0: must be at least 1"):
        render_preview(root, tmp_path / "x.png", samples=0)
    (root / "shard-000000.tar").write_bytes(b"\1" * 700)
    with pytest.raises(
        DataError, match=r"shard-000000\.tar: unreadable member header at byte 0; .*; run `cotrain validate`"
    ):
        render_preview(root, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
