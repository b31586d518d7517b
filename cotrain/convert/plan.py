"""The shard plan and the output directory's work state.

Shards hold whole units, consecutive in unit order, closed once they reach `shard_size` estimated
samples. The plan is a pure function of the unit list and the options, so every worker, every part of
a job array and every resumed run agrees on it; it is stored in `OUT/.cotrain-work/plan.json` and a
resumed run with different arguments is refused instead of mixing two conversions.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cotrain.atomic import TMP_SUFFIX, write_text_atomic, writing
from cotrain.convert.spec import Unit
from cotrain.convert.workfiles import PlanDoc, finished_matches, load_plan
from cotrain.dataset.manifest import MANIFEST_NAME
from cotrain.dataset.shard_index import index_name
from cotrain.errors import ConfigError, DataError

WORK_DIR = ".cotrain-work"
_SMALL_FILE = 1 << 20  # files up to 1 MiB enter the fingerprint by content, larger ones by size


def plan_shards(units: Sequence[Unit], shard_size: int) -> list[list[int]]:
    """Group consecutive unit indices into shards of about `shard_size` estimated samples."""
    shards: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for unit in units:
        current.append(unit.index)
        filled += max(unit.est_samples, 1)
        if filled >= shard_size:
            shards.append(current)
            current, filled = [], 0
    if current:
        shards.append(current)
    return shards


def fingerprint_source(src: Path) -> str:
    """sha256 over relative paths and sizes of every file, plus contents of small files.

    Paths are relative and times are left out, so a copy of the same data has the same fingerprint.
    """
    digest = hashlib.sha256()
    files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
    for path in files:
        rel = path.name if path == src else path.relative_to(src).as_posix()
        size = path.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        if size <= _SMALL_FILE:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@dataclass(frozen=True)
class WorkDir:
    """Paths inside `OUT/.cotrain-work`: per-unit results and per-shard sidecars."""

    root: Path

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    def unit(self, index: int, suffix: str) -> Path:
        return self.root / "units" / f"u{index:08d}{suffix}"

    def shard(self, name: str, suffix: str) -> Path:
        return self.root / "shards" / f"{name}{suffix}"

    def make(self) -> None:
        (self.root / "units").mkdir(parents=True, exist_ok=True)
        (self.root / "shards").mkdir(parents=True, exist_ok=True)


def _is_ours(path: Path) -> bool:
    name = path.name.removesuffix(TMP_SUFFIX)  # a writer killed mid-write leaves NAME.tmp
    return name in (WORK_DIR, MANIFEST_NAME) or (name.startswith("shard-") and ".tar" in name)


def prepare_out(out: Path, plan_doc: PlanDoc, *, overwrite: bool) -> tuple[WorkDir, bool]:
    """Check OUT can receive this conversion; returns the work dir and whether it is already complete.

    Refuses (ConfigError) to write into a directory holding anything cotrain did not write, and to
    continue a conversion made with other arguments unless `overwrite` is set. A complete conversion
    whose run was killed before it removed its work folder gets that cleanup finished here.
    """
    work = WorkDir(out / WORK_DIR)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a directory")
    foreign = sorted(p.name for p in out.iterdir() if not _is_ours(p)) if out.is_dir() else []
    if foreign:
        raise ConfigError(
            f"output {out} holds files cotrain did not write ({', '.join(foreign[:3])}); choose an empty or new folder"
        )
    manifest = out / MANIFEST_NAME
    if manifest.is_file() and not overwrite:
        if finished_matches(manifest, plan_doc):
            _finish_cleanup(out)
            return work, True
        raise ConfigError(
            f"{out} already holds a conversion made with other arguments or source; pass --overwrite to replace it"
        )
    if work.plan.is_file() and not overwrite:
        if load_plan(work.plan) != plan_doc:
            raise ConfigError(
                f"{out} holds an unfinished conversion with other arguments or source; pass --overwrite to start over"
            )
    if overwrite:
        remove_outputs(out)
    with writing(work.root):
        work.make()
    if not work.plan.is_file():
        write_text_atomic(work.plan, json.dumps(plan_doc, sort_keys=True, indent=1))
    return work, False


def _finish_cleanup(out: Path) -> None:
    """Remove what a finished conversion no longer needs: its work folder and stray temporary files.

    The manifest is written last, so once it is in place everything else here is complete; a run
    killed between writing it and this cleanup left these behind.
    """
    if (out / WORK_DIR).exists():
        shutil.rmtree(out / WORK_DIR)
    for path in out.glob("*" + TMP_SUFFIX):
        if path.is_symlink() or not path.is_dir():
            path.unlink()


def remove_outputs(out: Path, shard_names: Sequence[str] | None = None) -> None:
    """Remove what cotrain wrote in OUT: all of it, or only the named shards (and their temp files)."""
    if not out.is_dir():
        return
    if shard_names is not None:
        for name in shard_names:
            for path in (out / name, out / (name + TMP_SUFFIX), out / index_name(name),
                         out / (index_name(name) + TMP_SUFFIX)):
                path.unlink(missing_ok=True)
        return
    for path in out.iterdir():
        if not _is_ours(path):
            continue
        if path.is_dir() and not path.is_symlink():  # the work folder, or a damaged one of our names
            shutil.rmtree(path)
        else:
            path.unlink()


def read_plan(out: Path) -> PlanDoc:
    """The plan of the unfinished conversion in `out`."""
    work = WorkDir(out / WORK_DIR)
    if not work.plan.is_file():
        raise DataError(out, "no unfinished conversion here (no .cotrain-work/plan.json)")
    return load_plan(work.plan)
