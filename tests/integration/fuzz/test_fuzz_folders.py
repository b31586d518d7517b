"""Fuzz the folders cotrain writes and reads back: conversion work files, manifests, a full disk, damaged .npy.

Each case starts from a real conversion (ALOHA HDF5 fixtures) in one of its stages, damages one file
in one of several ways, runs the real CLI entry point (`cotrain.cli.app.main`, in this process so
the ~100 cases stay fast) and checks the promise for expected errors: no traceback; either a
non-zero exit with exactly one `error:` line that names the damaged file (or its folder), or a
recovery whose output equals an undamaged conversion byte for byte; never a temporary file left,
never a changed dataset after an error. A damage cotrain recovers from must recover exactly:
exit 0 with other bytes would be silent acceptance, and fails the case.

The conversion stages: `unfinished` (plan and unit results, killed before its first shard),
`parts` (both parts of `--num-parts 2` done, before `merge-manifests`), `finished`, and `stale`
(finished, but killed before its work folder was removed). The full disk is Linux's /dev/full
behind the temporary name of one file, so the kernel fails that write with ENOSPC.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cotrain.cli.app import main
from cotrain.convert import finalize as finalize_module
from cotrain.convert import pipeline as pipeline_module
from cotrain.convert.pipeline import convert
from cotrain.convert.spec import RobotOptions, RunOptions
from cotrain.dataset.shards import index_shard
from tests.fixtures.aloha import write_aloha
from tests.helpers import tree_digest

CONVERT = ["--embodiment", "aloha", "--shard-size", "30"]


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str
    traceback: str | None


def cli(*args: str) -> Outcome:
    """`cotrain ARGS` through the real entry point; an exception escaping it is a traceback."""
    out, err, tb, code = io.StringIO(), io.StringIO(), None, 0
    argv, sys.argv = sys.argv, ["cotrain", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception:  # noqa: BLE001 (exactly what the promise rules out)
        tb, code = traceback.format_exc(), -1
    finally:
        sys.argv = argv
    return Outcome(code, out.getvalue(), err.getvalue(), tb)


def assert_one_line_error(got: Outcome, names: Path | str) -> str:
    assert got.traceback is None, got.traceback
    assert got.code == 1, (got.code, got.stderr)
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), got.stderr
    assert str(names) in lines[0], (names, lines[0])
    assert "allow_pickle" not in lines[0] and "Traceback" not in lines[0]
    return lines[0]


def no_temp_files(folder: Path) -> None:
    assert not [p for p in folder.rglob("*.tmp")], "a temporary file was left"


# ---------------------------------------------------------------------------------------------------
# The stages of a conversion folder, made once and copied per case.


@dataclass(frozen=True)
class Stages:
    src: Path
    reference: Path  # an undamaged, finished conversion
    folders: dict[str, Path]


def _opts() -> RobotOptions:
    return RobotOptions(embodiment="aloha", shard_size=30)


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stages]:
    root = tmp_path_factory.mktemp("fuzz-folders")
    src = write_aloha(root / "raw", episodes=5, frames=16)
    convert("aloha", src, root / "finished", _opts())
    for part in range(2):
        convert("aloha", src, root / "parts", _opts(), RunOptions(num_parts=2, part=part))
    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the process dies here, as under kill -9: nothing is cleaned

    for stage, where, name in ((root / "unfinished", pipeline_module, "_assemble"),  # units done, no shard
                               (root / "stale", finalize_module.shutil, "rmtree")):  # manifest in place
        with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
            mp.setattr(where, name, killed)
            convert("aloha", src, stage, _opts())
    folders = {name: root / name for name in ("finished", "parts", "unfinished", "stale")}
    assert (folders["unfinished"] / ".cotrain-work/units/u00000000.json").is_file()
    assert (folders["stale"] / "manifest.json").is_file() and (folders["stale"] / ".cotrain-work").is_dir()
    yield Stages(src, root / "finished", folders)


def _copy(stages: Stages, stage: str, dst: Path) -> Path:
    shutil.copytree(stages.folders[stage], dst, symlinks=True)
    return dst


# ---------------------------------------------------------------------------------------------------
# JSON damage: every way a file can stop being the file cotrain wrote.


def _drop_first_key(data: bytes) -> bytes:
    doc = json.loads(data)
    doc.pop(sorted(doc)[0])
    return json.dumps(doc).encode()


def _first_int_to_text(data: bytes) -> bytes:
    doc = json.loads(data)
    key = next(k for k in sorted(doc) if isinstance(doc[k], int) and not isinstance(doc[k], bool)) \
        if any(isinstance(v, int) for v in doc.values()) else sorted(doc)[0]
    doc[key] = "x"
    return json.dumps(doc).encode()


JSON_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda d: b"",
    "truncated": lambda d: d[: len(d) // 2],
    "binary": lambda d: bytes(range(256)) * 4,
    "not-utf8": lambda d: b'{"name": "\xff\xfe"}',
    "list": lambda d: b"[]",
    "null": lambda d: b"null",
    "missing-field": _drop_first_key,
    "wrong-type-field": _first_int_to_text,
}

# (stage, damaged file, command): the command a user runs next on that folder.
JSON_TARGETS = [
    ("unfinished", ".cotrain-work/plan.json", "convert"),
    ("unfinished", ".cotrain-work/units/u00000000.json", "convert"),
    ("parts", ".cotrain-work/plan.json", "merge"),
    ("parts", ".cotrain-work/shards/shard-000000.tar.json", "merge"),
    ("parts", ".cotrain-work/shards/shard-000000.tar.json", "convert-part0"),
    ("finished", "manifest.json", "convert"),
    ("stale", "manifest.json", "convert"),
    ("stale", ".cotrain-work/plan.json", "convert"),  # the rest: a finished run's leftovers, removed
]


def _command(kind: str, stages: Stages, out: Path) -> list[str]:
    if kind == "merge":
        return ["merge-manifests", str(out)]
    part = ["--num-parts", "2", "--part", "0"] if kind == "convert-part0" else []
    return ["convert", "aloha", str(stages.src), str(out), *CONVERT, *part]


def _json_cases() -> list[tuple[str, str, str, str]]:
    return [(*t, d) for t in JSON_TARGETS for d in JSON_DAMAGE] + [
        ("unfinished", ".cotrain-work/units/u00000000.json", "convert", "other-unit"),
        ("parts", ".cotrain-work/shards/shard-000000.tar.json", "merge", "other-shard"),
        ("unfinished", ".cotrain-work/units/u00000000.json", "convert", "directory"),
        ("unfinished", ".cotrain-work/plan.json", "convert", "directory"),
    ]


def _damage(out: Path, rel: str, damage: str) -> None:
    path = out / rel
    if damage == "directory":
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.mkdir()
        (path / "junk").write_text("x")
    elif damage == "other-unit":
        shutil.copy(out / ".cotrain-work/units/u00000001.json", path)
    elif damage == "other-shard":
        shutil.copy(out / ".cotrain-work/shards/shard-000002.tar.json", path)
    else:
        path.write_bytes(JSON_DAMAGE[damage](path.read_bytes()))


@pytest.mark.parametrize(("stage", "rel", "command", "damage"), _json_cases(),
                         ids=lambda v: str(v).replace(".cotrain-work/", "").replace("/", "-"))
def test_damaged_conversion_folder(stages: Stages, tmp_path: Path, stage: str, rel: str, command: str,
                                   damage: str) -> None:
    out = _copy(stages, stage, tmp_path / "out")
    _damage(out, rel, damage)
    before = tree_digest(out)
    got = cli(*_command(command, stages, out))
    assert got.traceback is None, got.traceback
    no_temp_files(out)
    if stage == "stale" and rel != "manifest.json":  # the manifest is intact: finishing the cleanup is right
        assert got.code == 0, got.stderr
        assert tree_digest(out) == tree_digest(stages.reference)
        return
    if got.code == 0:  # recovered (a unit that is not a file is redone): only with the exact bytes
        assert command == "convert" and tree_digest(out) == tree_digest(stages.reference), "silently accepted"
        return
    assert_one_line_error(got, out / rel)
    assert tree_digest(out) == before, "an error changed the folder"
    if damage == "truncated":  # the advice in the message works, and ends with the same bytes
        advice = "--overwrite" if rel == "manifest.json" else "remove"
        assert advice in got.stderr
        if advice == "remove":
            shutil.rmtree(out / ".cotrain-work")
        rerun = ["convert", "aloha", str(stages.src), str(out), *CONVERT] + (["--overwrite"] * (advice != "remove"))
        assert cli(*rerun).code == 0
        assert tree_digest(out) == tree_digest(stages.reference)


# ---------------------------------------------------------------------------------------------------
# A full disk at each write of a conversion: the kernel's ENOSPC from /dev/full.

FULL_AT = [
    ".cotrain-work/plan.json.tmp",
    "shard-000001.tar.tmp",
    "shard-000001.tar.idx.json.tmp",
    ".cotrain-work/shards/shard-000001.tar.json.tmp",
    ".cotrain-work/shards/shard-000002.tar.npz.tmp",
    "manifest.json.tmp",
]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux /dev/full")
@pytest.mark.parametrize("tmp_name", FULL_AT)
@pytest.mark.parametrize("stage", ["new", "unfinished"])
def test_full_disk_at_each_write(stages: Stages, tmp_path: Path, tmp_name: str, stage: str) -> None:
    out = tmp_path / "out" if stage == "new" else _copy(stages, stage, tmp_path / "out")
    if tmp_name.startswith(".cotrain-work/plan") and stage == "unfinished":
        (out / ".cotrain-work/plan.json").unlink()  # a plan written by a run that died before it
    (out / tmp_name).parent.mkdir(parents=True, exist_ok=True)
    (out / tmp_name).symlink_to("/dev/full")
    args = ["convert", "aloha", str(stages.src), str(out), *CONVERT]
    line = assert_one_line_error(cli(*args), f"cannot write {out / tmp_name.removesuffix('.tmp')}: the disk is full")
    assert "(ENOSPC)" in line and "run the same command again" in line
    no_temp_files(out)
    assert not (out / "manifest.json").exists()
    assert cli(*args).code == 0  # space freed (the temp name is an ordinary file again)
    assert tree_digest(out) == tree_digest(stages.reference)


# ---------------------------------------------------------------------------------------------------
# Damaged .npy members inside a converted shard (same size, so the tar and its index stay intact).


def _header_edit(data: bytes, edit: Callable[[str], str]) -> bytes:
    length = int.from_bytes(data[8:10], "little")
    header = data[10:10 + length].decode("latin1")
    new = edit(header.rstrip("\n ")).ljust(length - 1) + "\n"
    assert len(new) == length
    return data[:10] + new.encode("latin1") + data[10 + length:]


NPY_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "magic": lambda d: b"GARBAG" + d[6:],
    "zeros": lambda d: bytes(len(d)),
    "header-length": lambda d: d[:8] + b"\xff\xff" + d[10:],
    "header-keys": lambda d: d.replace(b"'descr'", b"'DESCR'", 1),
    "object-dtype": lambda d: _header_edit(d, lambda h: h.replace(h[h.index("'descr'"):h.index(", 'fortran")],
                                                                  "'descr': '|O'")),
    "shape-grows": lambda d: _header_edit(d, lambda h: h.replace("'shape': (", "'shape': (9", 1)),
    "shape-shrinks": lambda d: _header_edit(d, lambda h: h.replace("'shape': (", "'shape': (0, ", 1)),
}
MEMBERS = ["state.npy", "actions.npy", "actions_valid.npy"]


def _damage_members(dataset: Path, member: str, damage: str) -> None:
    for shard in sorted(dataset.glob("shard-*.tar")):
        data = bytearray(shard.read_bytes())
        for _key, spans in index_shard(shard):
            span = spans[member]
            old = bytes(data[span.offset: span.offset + span.size])
            new = NPY_DAMAGE[damage](old)
            assert len(new) == len(old) and new != old
            data[span.offset: span.offset + span.size] = new
        shard.write_bytes(bytes(data))


def _write_mix(dataset: Path) -> Path:
    doc = {"name": "fuzz", "seed": 0, "batch_size": 2, "image_size": 32, "sources": {"aloha": {"path": str(dataset)}},
           "phases": [{"name": "a", "steps": 10, "weights": {"aloha": 1.0}}]}
    path = dataset.parent / "mix.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("damage", list(NPY_DAMAGE))
@pytest.mark.parametrize("member", MEMBERS)
def test_damaged_npy_member(stages: Stages, tmp_path: Path, member: str, damage: str) -> None:
    dataset = shutil.copytree(stages.reference, tmp_path / "ds")
    _damage_members(dataset, member, damage)
    png = tmp_path / "preview.png"
    line = assert_one_line_error(cli("preview", str(dataset), "--out", str(png)), dataset / "shard-0000")
    assert f"member {member}: " in line and "sample 0000" in line
    assert not png.exists() and not list(tmp_path.glob("*.tmp"))
    checked = cli("validate", str(dataset))
    assert checked.traceback is None and checked.code == 1
    problems = [ln for ln in checked.stdout.splitlines() + checked.stderr.splitlines() if f"{member}" in ln]
    assert problems and "allow_pickle" not in checked.stdout + checked.stderr
    if member == "state.npy":  # the trainer reads the same members; one member is enough to show its message
        run = tmp_path / "run"
        got = cli("train", str(_write_mix(dataset)), "--steps", "1", "--out", str(run), "--set", "progress=false",
                  "--set", "tensorboard=false")
        line = assert_one_line_error(got, dataset)
        assert f"member {member}: " in line
        assert not list(run.glob("checkpoints/step_*"))

