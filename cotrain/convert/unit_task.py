"""Convert one unit inside a worker: samples into a unit tar, per-frame arrays into an npz.

Runs in the parent (1 worker), a spawned process, or a Ray task; it receives a `UnitTask` of plain
values (the unit's `ref` is JSON-like) and looks the converter up by name, so no converter object or
open file crosses process boundaries. A unit is complete when its result JSON exists; it is written
last, atomically.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from cotrain.atomic import TMP_SUFFIX, atomic_open, write_text_atomic
from cotrain.convert.plan import WorkDir
from cotrain.convert.spec import CONVERTERS, Unit
from cotrain.convert.workfiles import UnitResult, load_unit_result
from cotrain.dataset.norm_stats import EpisodeLowdim, save_lowdim
from cotrain.dataset.shards import ShardWriter
from cotrain.errors import DataError


class FileSink:
    """UnitSink writing samples keyed `<unit index>_<position>` into an open ShardWriter."""

    def __init__(self, writer: ShardWriter, unit: Unit) -> None:
        self._writer = writer
        self._unit = unit
        self.samples = 0
        self.episodes: list[EpisodeLowdim] = []
        self.num_episodes = 0

    def add(self, members: Mapping[str, bytes]) -> None:
        self._writer.write(f"{self._unit.index:06d}_{self.samples:06d}", members)
        self.samples += 1

    def add_episode(self, lowdim: EpisodeLowdim | None) -> None:
        self.num_episodes += 1
        if lowdim is not None:
            self.episodes.append(lowdim)


def unit_result(work: WorkDir, index: int) -> UnitResult | None:
    """The unit's recorded result, or None when it has not finished."""
    path = work.unit(index, ".json")
    return load_unit_result(path, index) if path.is_file() else None


class UnitTask(NamedTuple):
    """One unit to convert, as sent to a worker (pickled to spawned processes and Ray tasks)."""

    converter: str  # registry name, looked up in the worker
    src: str
    options: dict[str, Any]  # the converter's options as JSON (`model_dump(mode="json")`)
    unit: Unit
    work_root: str


def run_unit(task: UnitTask) -> UnitResult:
    """Convert one unit; returns its result (also stored as JSON). Raises DataError unless skipping."""
    conv = CONVERTERS.get(task.converter)
    opts = conv.options.model_validate(task.options)
    u, src = task.unit, task.src
    work = WorkDir(Path(task.work_root))
    tar_path, npz_path = work.unit(u.index, ".tar"), work.unit(u.index, ".npz")
    result = UnitResult(index=u.index, id=u.id, samples=0, episodes=0, skipped=None)
    try:
        with atomic_open(tar_path) as fh, ShardWriter(fh) as writer:
            sink = FileSink(writer, u)
            conv.convert_unit(Path(src), opts, u, sink)
            data_bytes = writer.data_bytes
        if sink.episodes:
            with atomic_open(npz_path) as fh:
                save_lowdim(fh, sink.episodes)
        result["samples"], result["episodes"], result["data_bytes"] = sink.samples, sink.num_episodes, data_bytes
    except DataError as exc:
        err = exc.located(episode=u.id)
        tar_path.unlink(missing_ok=True)
        npz_path.unlink(missing_ok=True)
        if opts.on_bad_episode != "skip":
            raise err from None
        result["skipped"] = err.render()
    write_text_atomic(work.unit(u.index, ".json"), json.dumps(result, sort_keys=True))
    return result


def unit_task(converter: str, src: Path, options: dict[str, Any], unit: Unit, work: WorkDir) -> UnitTask:
    """The picklable arguments of `run_unit` for one unit."""
    return UnitTask(converter, str(src), options, unit, str(work.root))


def clear_unit(work: WorkDir, index: int) -> None:
    """Remove a unit's outputs and temporary files (before it is converted again)."""
    for suffix in (".tar", ".npz", ".json"):
        for path in (work.unit(index, suffix), work.unit(index, suffix + TMP_SUFFIX)):
            if path.is_dir() and not path.is_symlink():  # not ours: a damaged work folder
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
