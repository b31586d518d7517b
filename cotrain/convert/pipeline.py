"""Run a conversion: plan shards, convert units (in parallel), assemble shards, finalise the manifest.

Guarantees (tested in tests/unit/convert/test_pipeline.py):
- deterministic: shard bytes and manifest depend only on the source and the recorded options;
- atomic: shards and sidecars appear under their final names only when complete;
- resumable: a killed run, run again, reuses finished shards and units and ends with the same bytes;
- parallel: `workers`, parts of a job array and the Ray backend all produce the same output;
- clean failure: a bad-input error removes what this run wrote, so nothing partial is left behind.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cotrain import __version__
from cotrain.atomic import WriteError, atomic_open, write_text_atomic
from cotrain.convert.backend import run_tasks
from cotrain.convert.finalize import finalize
from cotrain.convert.plan import WorkDir, fingerprint_source, plan_shards, prepare_out, remove_outputs
from cotrain.convert.spec import CONVERTERS, Converter, ConvertOptions, RunOptions, Unit
from cotrain.convert.unit_task import clear_unit, unit_result, unit_task
from cotrain.convert.workfiles import PlanDoc, ShardRecord, UnitResult, WorkFileError, load_shard_record
from cotrain.dataset.shards import concat_tars, shard_name
from cotrain.errors import ConfigError, CotrainError, DataError
from cotrain.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class ConvertReport:
    """What a conversion (or one part of it) did."""

    out: str
    converter: str
    shards_total: int
    shards_written: int = 0
    shards_reused: int = 0
    samples: int = 0
    episodes: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    finalized: bool = False
    already_done: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def convert(converter: str, src: str | Path, out: str | Path, options: ConvertOptions,
            run: RunOptions | None = None) -> ConvertReport:
    """Convert `src` with the named converter into a sharded dataset at `out`."""
    run = run or RunOptions()
    conv = CONVERTERS.get(converter)
    src, out = Path(src), Path(out)
    if not src.exists():
        raise DataError(src, "source not found")
    if run.part >= run.num_parts:
        raise ConfigError(
            f"--part {run.part} is out of range for --num-parts {run.num_parts} (valid: 0..{run.num_parts - 1})"
        )
    units = conv.list_units(src, options)
    if not units:
        raise DataError(src, f"no episodes or records found for converter {converter!r}")
    if [u.index for u in units] != list(range(len(units))):
        raise RuntimeError(f"converter {converter!r} returned unit indices out of order")
    plan = plan_shards(units, options.shard_size)
    info = conv.describe(src, options, units)
    plan_doc = PlanDoc(
        converter=converter,
        name=options.name or (src.resolve().stem if src.is_file() else src.resolve().name),
        info=json.loads(json.dumps(asdict(info))),
        arguments=options.model_dump(mode="json"),
        fingerprint=fingerprint_source(src),
        cotrain_version=__version__,
        shards=plan,
    )
    created = not out.exists()
    work, done = prepare_out(out, plan_doc, overwrite=run.overwrite)
    report = ConvertReport(str(out), converter, shards_total=len(plan))
    if done:
        report.already_done = report.finalized = True
        return report
    mine = [s for s in range(len(plan)) if s % run.num_parts == run.part]
    started = time.perf_counter()
    try:
        _convert_shards(conv, src, out, work, units, plan, mine, options, run, report)
        if run.num_parts == 1:
            finalize(out)
            report.finalized = True
    except (WriteError, WorkFileError):
        raise  # no room, or a damaged work file: keep the finished units and shards for the re-run
    except CotrainError:
        _clean_failed(out, work, plan, mine, created=created, whole=run.num_parts == 1)
        raise
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _shard_done(out: Path, work: WorkDir, name: str) -> ShardRecord | None:
    side = work.shard(name, ".json")
    if not side.is_file() or not (out / name).is_file():
        return None
    entry = load_shard_record(side, name)
    return entry if (out / name).stat().st_size == entry["bytes"] else None


def _convert_shards(conv: Converter, src: Path, out: Path, work: WorkDir, units: Sequence[Unit],
                    plan: list[list[int]], mine: list[int], options: ConvertOptions, run: RunOptions,
                    report: ConvertReport) -> None:
    todo: dict[int, set[int]] = {}
    results: dict[int, UnitResult] = {}
    for s in mine:
        entry = _shard_done(out, work, shard_name(s))
        if entry is not None:
            report.shards_reused += 1
            _count(report, entry)
            continue
        todo[s] = set()
        for u in plan[s]:
            res = unit_result(work, u)
            if res is None:
                clear_unit(work, u)
                todo[s].add(u)
            else:
                results[u] = res
    owner = {u: s for s in todo for u in plan[s]}
    tasks = [unit_task(conv.name, src, options.model_dump(mode="json"), units[u], work)
             for s in sorted(todo) for u in sorted(todo[s])]
    with Progress(total=sum(units[u].est_samples for s in todo for u in plan[s]), label=f"convert {conv.name}",
                  enabled=run.progress) as bar:
        for s in [s for s in todo if not todo[s]]:  # all units finished before an interruption
            _count(report, _assemble(out, work, s, plan[s], results))
            bar.advance(sum(units[u].est_samples for u in plan[s]))
        for res in run_tasks(tasks, workers=run.workers, backend=run.backend, decode_threads=run.decode_threads):
            results[res["index"]] = res
            s = owner[res["index"]]
            todo[s].discard(res["index"])
            bar.advance(units[res["index"]].est_samples)
            if not todo[s]:
                _count(report, _assemble(out, work, s, plan[s], results))
                report.shards_written += 1


def _count(report: ConvertReport, entry: ShardRecord) -> None:
    report.samples += entry["samples"]
    report.episodes += entry["episodes"]
    report.bytes += entry["bytes"]
    report.skipped.extend(entry["skipped"])


def _assemble(out: Path, work: WorkDir, s: int, members: list[int], results: dict[int, UnitResult]) -> ShardRecord:
    """Concatenate the shard's unit tars in unit order into the final shard, then write its sidecars.

    Unit tars are copied byte for byte, and the shard is hashed while it is written: assembly costs
    one sequential copy per byte, plus one header scan for the member index (~25 us a sample).
    """
    from cotrain.dataset.norm_stats import load_lowdim, save_lowdim
    from cotrain.dataset.shard_index import write_index

    name = shard_name(s)
    kept = [u for u in members if not results[u]["skipped"]]
    with atomic_open(out / name) as fh:
        size, sha = concat_tars([(work.unit(u, ".tar"), results[u]["data_bytes"]) for u in kept], fh)
    write_index(out / name)  # readers then skip the header scan (shardindex.py)
    lowdim = [ep for u in kept if work.unit(u, ".npz").is_file() for ep in load_lowdim(work.unit(u, ".npz"))]
    if lowdim:
        with atomic_open(work.shard(name, ".npz")) as fh:
            save_lowdim(fh, lowdim)
    skipped = [results[u] for u in members if results[u]["skipped"]]
    entry = ShardRecord(
        name=name,
        samples=sum(results[u]["samples"] for u in members),
        episodes=sum(results[u]["episodes"] for u in members),
        bytes=size,
        sha256=sha,
        skipped=[r["skipped"] for r in skipped if r["skipped"]],
        skipped_ids=[r["id"] for r in skipped],
    )
    write_text_atomic(work.shard(name, ".json"), json.dumps(entry, sort_keys=True))
    for u in members:
        clear_unit(work, u)
    return entry


def _clean_failed(
    out: Path, work: WorkDir, plan: list[list[int]], mine: list[int], *, created: bool, whole: bool
) -> None:
    """After a bad-input error: remove this run's shards, unit files and (if whole) the work dir."""
    if whole:
        remove_outputs(out)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        return
    remove_outputs(out, [shard_name(s) for s in mine])
    for s in mine:
        for suffix in (".json", ".npz"):
            work.shard(shard_name(s), suffix).unlink(missing_ok=True)
        for u in plan[s]:
            clear_unit(work, u)

