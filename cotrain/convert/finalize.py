"""Finish a conversion: check every planned shard is present, compute stats, write the manifest.

Used at the end of a single-part conversion and by `cotrain merge-manifests` after the parts of a
job array have all run. The work directory is removed only after the manifest is in place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from cotrain.atomic import write_text_atomic
from cotrain.convert.plan import WORK_DIR, WorkDir, read_plan
from cotrain.convert.workfiles import load_shard_record, manifest_header
from cotrain.dataset.manifest import MANIFEST_NAME, Manifest, ShardEntry, SkippedEpisode
from cotrain.dataset.norm_stats import compute_norm_stats, load_lowdim
from cotrain.dataset.shards import shard_name
from cotrain.errors import DataError


def finalize(out: str | Path) -> Manifest:
    """Write `OUT/manifest.json` from the shard sidecars of a complete plan; returns the manifest."""
    out = Path(out)
    plan = read_plan(out)
    work = WorkDir(out / WORK_DIR)
    names = [shard_name(s) for s in range(len(plan["shards"]))]
    missing = [n for n in names if not work.shard(n, ".json").is_file() or not (out / n).is_file()]
    if missing:
        raise DataError(out, f"{len(missing)} of {len(names)} shards are not converted yet (first: {missing[0]}); "
                             "run the remaining parts, then merge again")
    entries = [load_shard_record(work.shard(n, ".json"), n) for n in names]
    lowdim = []
    for n in names:
        if work.shard(n, ".npz").is_file():
            lowdim.extend(load_lowdim(work.shard(n, ".npz")))
    horizon = plan["info"].get("horizon") or 1
    manifest = Manifest.model_validate({
        **manifest_header(plan),
        "num_episodes": sum(e["episodes"] for e in entries),
        "num_samples": sum(e["samples"] for e in entries),
        "shards": [ShardEntry(name=e["name"], samples=e["samples"], bytes=e["bytes"], sha256=e["sha256"],
                              episodes=e["episodes"]) for e in entries],
        "skipped_episodes": [SkippedEpisode(episode=str(i), reason=r) for e in entries
                             for i, r in zip(e["skipped_ids"], e["skipped"])],
        "stats": compute_norm_stats(lowdim, horizon),
    })
    write_text_atomic(out / MANIFEST_NAME, manifest.dumps())
    shutil.rmtree(out / WORK_DIR)
    return manifest
