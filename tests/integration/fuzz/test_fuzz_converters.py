"""Fuzz `cotrain convert` with corrupt inputs generated from the producer-layout fixtures (issue 18).

Classes (items 11, 12, 18): JPEG frames cut short or with flipped bytes (LBM, RLDS, MCAP, LeRobot
inline images, img2dataset, HF parquet), tars cut at every member boundary and at seeded offsets
(LBM shards, img2dataset), flipped bytes inside MCAP chunk data, tar members that are links, and
paths that leave the source folder (`..`, absolute, symlinks) in LBM manifests, HF parquet and
LeRobot image structs.

Each input runs through the real CLI entry point in-process (`cotrain.cli.app.main` with its argv,
stdout and stderr; the exit code is the one the process would return), and must give: a non-zero
exit, exactly one stderr line, `error: <file>, <place>: ...` naming the corrupted file and where in
it, no traceback, and no OUT folder left behind. A flipped byte that a full decode (PIL, what
`cotrain validate` uses) does not notice is no corrupt input: those variants are counted apart and
must convert with exit 0. All variants come from seeded generators.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
import tarfile
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# Every test runs with seed 0; seed 1 (marked slow, still run by `make test`) doubles the variants.
SEEDS = pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
TRIED: Counter[str] = Counter()  # corrupt inputs run, per class
CLEAN_FLIPS: Counter[str] = Counter()  # flipped-byte variants a full decode accepts (not corrupt)


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    total = sum(TRIED.values())
    lines = [f"fuzz converters: {total} corrupt inputs, 0 tracebacks, 0 accepted"]
    lines += [f"  {name}: {count}" for name, count in sorted(TRIED.items())]
    lines += [f"  (flips that decode cleanly, converted with exit 0: {name} {n})" for name, n in CLEAN_FLIPS.items()]
    sys.__stdout__.write("\n" + "\n".join(lines) + "\n")


@dataclass(frozen=True)
class Outcome:
    code: int
    stderr: str
    crash: str | None  # the traceback of an exception the CLI let through


def cli(*args: str) -> Outcome:
    """`cotrain ARGS` in this process: main() as `python -m cotrain` runs it."""
    from cotrain.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    argv, code, crash = sys.argv, 0, None
    sys.argv = ["cotrain", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001  (what the real process would print as a traceback)
        code, crash = 1, traceback.format_exc()
    finally:
        sys.argv = argv
    return Outcome(code, err.getvalue(), crash)


def expect_refused(kind: str, args: list[str], out: Path, file: str, place: str) -> None:
    """One corrupt input: non-zero exit, one `error:` line naming `file` and the `place` (a regex: the
    episode, frame, key or byte offset), nothing in OUT."""
    TRIED[kind] += 1
    res = cli("convert", *args, str(out))
    where = f"{kind} {args}"
    assert res.crash is None, f"{where}: traceback\n{res.crash}"
    assert res.code != 0, f"{where}: corrupt input accepted (exit 0)"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{where}: stderr {res.stderr!r}"
    assert "Traceback" not in res.stderr
    assert f"{file}, " in lines[0] or f"{file}: " in lines[0], f"{where}: {lines[0]!r} should name {file!r}"
    assert re.search(place, lines[0]), f"{where}: {lines[0]!r} should name the place {place!r}"
    assert not out.exists(), f"{where}: {out} left behind"


def expect_accepted(kind: str, args: list[str], out: Path) -> None:
    CLEAN_FLIPS[kind] += 1
    res = cli("convert", *args, str(out))
    assert res.crash is None and res.code == 0, f"{kind}: {res.stderr}{res.crash}"
    shutil.rmtree(out)


def decodes(data: bytes) -> bool:
    """The reference: a full PIL decode, as `cotrain validate` checks written images."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception:  # noqa: BLE001
        return False
    return True


def jpeg_variants(jpeg: bytes, rng: np.random.Generator, *, cuts: int, flips: int) -> list[tuple[str, bytes]]:
    """JPEGs cut short at seeded points, and with one byte flipped in the headers (markers, tables)
    or the entropy-coded data."""
    out = [(f"cut@{c}", jpeg[:c]) for c in sorted({int(x) for x in rng.integers(2, len(jpeg) - 2, cuts)})]
    for p in rng.integers(2, len(jpeg), flips):
        flipped = bytearray(jpeg)
        flipped[int(p)] ^= int(rng.integers(1, 256))
        out.append((f"flip@{int(p)}", bytes(flipped)))
    return out


def jpeg(seed: int) -> bytes:
    from tests.fixtures.vl import encode, picture

    return encode(picture(seed), "JPEG")


# ------------------------------------------------------------------------------------------- LBM


def _lbm_samples(root: Path) -> list[tuple[str, dict[str, bytes | str]]]:
    samples: dict[str, dict[str, bytes | str]] = {}
    with tarfile.open(root / "shards" / "shard-000000.tar") as tar:
        for info in tar.getmembers():
            key, ext = info.name.split(".", 1)
            samples.setdefault(key, {})[ext] = tar.extractfile(info).read()  # type: ignore[union-attr]  # regular members only
    return list(samples.items())


@SEEDS
def test_lbm(tmp_path: Path, seed: int) -> None:
    from tests.fixtures.lbm import write_lbm, write_tar

    base = write_lbm(tmp_path / "base", lengths=(4,), samples_per_shard=4, stats=False)
    rng = np.random.default_rng([18, seed])
    src, shard = tmp_path / "src", tmp_path / "src" / "shards" / "shard-000000.tar"
    args = ["lbm", str(src)]

    def fresh() -> list[tuple[str, dict[str, bytes | str]]]:
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(base, src)
        return _lbm_samples(src)

    original = _lbm_samples(base)
    for k in range(len(original)):  # images cut or flipped, in every sample (the first sets the layout)
        cam = "scene_right_0_t0.jpg" if k % 2 else "wrist_left_minus_t0.jpg"
        for _name, data in jpeg_variants(original[k][1][cam], rng, cuts=3, flips=4):  # type: ignore[arg-type]  # the member holds JPEG bytes
            samples = fresh()
            samples[k][1][cam] = data
            write_tar(shard, samples)
            if decodes(data):
                expect_accepted("lbm jpeg", args, tmp_path / "out")
            else:
                expect_refused("lbm jpeg", args, tmp_path / "out", "shard-000000.tar",
                               rf"episode episode_0, frame {k}, key '{cam}': sample \S+: undecodable image")
    for k in range(len(original)):  # a camera member that is a symlink, in each sample
        samples = fresh()
        samples[k][1]["wrist_left_minus_t0.jpg"] = f"{samples[k][0]}.wrist_left_minus_t-1.jpg"
        write_tar(shard, samples)
        expect_refused("lbm symlink member", args, tmp_path / "out", "shard-000000.tar",
                       r"key '\S+\.wrist_left_minus_t0\.jpg': member .* is a symbolic link")
    data = (base / "shards" / "shard-000000.tar").read_bytes()
    with tarfile.open(base / "shards" / "shard-000000.tar") as tar:
        bounds = [m.offset for m in tar.getmembers()][1:]
    for cut in sorted({*bounds, *(int(x) for x in rng.integers(1, len(data) - 1024, 8))}):
        fresh()
        shard.write_bytes(data[:cut])  # a shard cut short: at member boundaries and inside members
        expect_refused("lbm truncated shard", args, tmp_path / "out", "shard-000000.tar", r"truncated tar: .*byte \d+")
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    shutil.copy(base / "shards" / "shard-000000.tar", outside / "shard-000000.tar")
    for entry in ["../outside/shard-000000.tar", "../outside/shard-000000", str(outside / "shard-000000.tar"),
                  "shards/../../outside/shard-000000.tar", "link", "linkdir/shard-000000.tar"]:
        fresh()
        (src / "link.tar").symlink_to(outside / "shard-000000.tar")
        (src / "linkdir").symlink_to(outside)
        (src / "manifest.jsonl").write_text(json.dumps({"shard": entry, "num_sequences": 4}) + "\n")
        expect_refused("lbm escaping shard path", args, tmp_path / "out", "manifest.jsonl",
                       r"key 'entry 1': shard .* outside the dataset folder")


# ------------------------------------------------------------------------------ LeRobot inline images


def _set_images(path: Path, change: Callable[[list[dict[str, object]]], None]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    col = table.column_names.index("observation.images.top")
    images = table.column(col).to_pylist()
    change(images)
    field = table.schema.field(col)
    pq.write_table(table.set_column(col, field, pa.array(images, field.type)), path)


@SEEDS
def test_lerobot_inline_images(tmp_path: Path, seed: int) -> None:
    from tests.fixtures.lerobot import write_lerobot_v30

    base = write_lerobot_v30(tmp_path / "base", episodes=2, frames=5, size=(32, 32), cameras=(), image_cameras=("top",))
    rows = Path("data/chunk-000/file-000.parquet")
    rng = np.random.default_rng([180, seed])
    src, args = tmp_path / "src", ["lerobot", str(tmp_path / "src"), "--embodiment", "so101", "--horizon", "2"]
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(jpeg(1))

    def fresh() -> None:
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(base, src)
        (src / "inside.jpg").symlink_to(outside)

    for row, (_name, data) in enumerate(jpeg_variants(jpeg(0), rng, cuts=5, flips=7)):
        row %= 11  # episode 0: rows 0-4, episode 1: rows 5-10
        fresh()
        _set_images(src / rows, lambda im, row=row, data=data: im.__setitem__(row, {"bytes": data, "path": None}))
        episode, frame = (0, row) if row < 5 else (1, row - 5)
        if decodes(data):
            expect_accepted("lerobot inline jpeg", args, tmp_path / "out")
        else:
            expect_refused("lerobot inline jpeg", args, tmp_path / "out", "file-000.parquet",
                           rf"episode {episode}, frame {frame}, key 'observation\.images\.top': undecodable")
    for ref in ["../secret.jpg", "../../../secret.jpg", str(outside), "inside.jpg", "data/../../secret.jpg"]:
        fresh()
        _set_images(src / rows, lambda im, ref=ref: im.__setitem__(7, {"bytes": None, "path": ref}))
        expect_refused("lerobot escaping image path", args, tmp_path / "out", "file-000.parquet",
                       r"episode 1, frame 2, key 'observation\.images\.top': image path .* outside the dataset")


# ------------------------------------------------------------------------------------ HF parquet


@SEEDS
def test_hf_parquet(tmp_path: Path, seed: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.fixtures.vl import write_hf_captions

    write_hf_captions(tmp_path / "base", files=1, rows=4)
    name = "train-00000-of-00001.parquet"
    rng = np.random.default_rng([1800, seed])
    src, args = tmp_path / "src", ["hf-parquet", str(tmp_path / "src")]
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(jpeg(2))

    def write(row: int, value: dict[str, object]) -> None:
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(tmp_path / "base", src)
        (src / "inside.jpg").symlink_to(outside)
        table = pq.read_table(src / name)
        images = table.column("image").to_pylist()
        images[row] = value
        field = table.schema.field("image")
        pq.write_table(table.set_column(0, field, pa.array(images, field.type)), src / name)

    for k, (_, data) in enumerate(jpeg_variants(jpeg(3), rng, cuts=4, flips=6)):
        write(k % 4, {"bytes": data, "path": None})
        if decodes(data):
            expect_accepted("hf-parquet jpeg", args, tmp_path / "out")
        else:
            expect_refused("hf-parquet jpeg", args, tmp_path / "out", name,
                           rf"episode row {k % 4}, key 'image': undecodable image")
    for ref in ["../secret.jpg", str(outside), "inside.jpg", "sub/../../secret.jpg"]:
        write(2, {"bytes": None, "path": ref})
        expect_refused("hf-parquet escaping image path", args, tmp_path / "out", name,
                       r"episode row 2, key 'image': image path .* outside the dataset")


# ------------------------------------------------------------------------------------ img2dataset


@SEEDS
def test_img2dataset(tmp_path: Path, seed: int) -> None:
    from webdataset import TarWriter

    base = tmp_path / "base"
    base.mkdir()
    with TarWriter(str(base / "00000.tar")) as sink:
        for i in range(6):
            key = f"00000{i:04d}"
            sink.write({"__key__": key, "jpg": jpeg(i), "txt": f"caption {i}",
                        "json": json.dumps({"key": key, "status": "success"}, indent=4)})
    data = (base / "00000.tar").read_bytes()
    with tarfile.open(base / "00000.tar") as tar:
        members = tar.getmembers()
    data_end = members[-1].offset_data + -(-members[-1].size // 512) * 512
    rng = np.random.default_rng([18000, seed])
    cuts = {m.offset for m in members} | {data_end} | {int(x) for x in rng.integers(1, data_end, 12)}
    src, args = tmp_path / "src", ["img2dataset", str(tmp_path / "src")]
    for cut in sorted(cuts):  # every member boundary, the end-of-archive marker, seeded offsets
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir()
        (src / "00000.tar").write_bytes(data[:cut])
        expect_refused("img2dataset truncated tar", args, tmp_path / "out", "00000.tar", r"truncated tar: .*byte \d+")
    for k, (_, bad) in enumerate(jpeg_variants(jpeg(2), rng, cuts=3, flips=5)):
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir()
        with TarWriter(str(src / "00000.tar")) as sink:
            for i in range(3):
                sink.write({"__key__": f"00000{i:04d}", "jpg": bad if i == k % 3 else jpeg(i), "txt": f"caption {i}"})
        if decodes(bad):
            expect_accepted("img2dataset jpeg", args, tmp_path / "out")
        else:
            expect_refused("img2dataset jpeg", args, tmp_path / "out", "00000.tar",
                           rf"episode key 00000{k % 3:04d}, key 'jpg': undecodable image")


# ------------------------------------------------------------------------------------------- RLDS


@SEEDS
def test_rlds(tmp_path: Path, seed: int) -> None:
    from tests.fixtures import rlds as fx

    rng = np.random.default_rng([180000, seed])
    good = fx.make_episode(fx.basic_schema(), 6, 1)["observation/image"][3]
    for k, (_, bad) in enumerate(jpeg_variants(good, rng, cuts=4, flips=6)):
        def plant(e: int, ep: dict[str, object], bad: bytes = bad, step: int = k % 6) -> None:
            if e == 1:
                ep["observation/image"][step] = bad  # type: ignore[index]  # nested test data

        src = fx.write_rlds(tmp_path / f"src{k}", files=1, per_file=2, steps=(6,), mutate=plant)
        args = ["rlds", str(src.root), "--embodiment", "demo", "--source-fps", "10"]
        if decodes(bad):
            expect_accepted("rlds jpeg", args, tmp_path / "out")
        else:
            expect_refused("rlds jpeg", args, tmp_path / "out", src.files[0].name,
                           rf"episode \S+, frame {k % 6}, key 'steps/observation/image': record 1: undecodable")


# ------------------------------------------------------------------------------------------- MCAP


ROS2 = ["--state-topic", "/joint_states", "--action-topic", "/joint_commands",
        "--image-topics", "front=/cam_front/image_raw/compressed,/cam_wrist/image_raw",
        "--instruction-topic", "/instruction", "--embodiment", "arm", "--fps", "10", "--horizon", "3"]


def _chunk_data_spans(path: Path) -> list[tuple[int, int]]:
    """(start, end) of each chunk's record data, from the summary's chunk indexes."""
    from mcap.reader import make_reader

    with path.open("rb") as fh:
        summary = make_reader(fh).get_summary()
    assert summary is not None
    return [(c.chunk_start_offset + c.chunk_length - c.compressed_size, c.chunk_start_offset + c.chunk_length)
            for c in summary.chunk_indexes]


@SEEDS
def test_mcap(tmp_path: Path, seed: int) -> None:
    from tests.fixtures import mcap as fx

    rng = np.random.default_rng([1800000, seed])
    for k, bad_frame in enumerate(int(x) for x in rng.integers(0, 5, 4)):  # JPEG messages (of 5) cut in half
        src = fx.write_ros2(tmp_path / f"cut{k}" / "run.mcap", duration_ms=500, bad_front=(bad_frame,))
        expect_refused("mcap jpeg", ["mcap", str(src), *ROS2], tmp_path / "out", "run.mcap",
                       r"episode run, frame \d+, key '/cam_front/image_raw/compressed': .*undecodable image")
    for compression in ("none", "zstd"):
        clean = fx.write_ros2(tmp_path / compression / "run.mcap", duration_ms=500, compression=compression)
        data = clean.read_bytes()
        spans = _chunk_data_spans(clean)
        for j in range(12 if compression == "none" else 6):
            start, end = spans[j % len(spans)]
            flipped = bytearray(data)
            flipped[int(rng.integers(start, end))] ^= 1 << int(rng.integers(0, 8))
            src = tmp_path / f"flip-{compression}-{j}" / "run.mcap"
            src.parent.mkdir()
            src.write_bytes(bytes(flipped))
            expect_refused("mcap chunk flip", ["mcap", str(src), *ROS2], tmp_path / "out", "run.mcap",
                           r"(episode run: )?unreadable, truncated or corrupt MCAP file "
                           r"\((CRCValidationError|ZstdError)")
