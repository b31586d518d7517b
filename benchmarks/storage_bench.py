"""Bytes moved per sample from object storage: the old read path against the current one, same run.

A 224 px robot dataset (two cameras, textured frames so JPEG sizes are like real ones) is uploaded to
moto's S3 server on 127.0.0.1 (tests/fixtures/s3server.py), which counts every byte it sends per
request, headers included. Then the same seeded random sample indices are read two ways, each with a
fresh s3fs file system (no shared cache):

- `open_seek_read` (cotrain before this benchmark): one `fs.open(shard)` per shard, kept open, then
  `seek(start)` + `read(size)` per sample, with the back end's default cache (s3fs: "readahead",
  50 MiB blocks), so a read can fetch up to the end of the shard.
- `cat_file_range` (cotrain.dataset.storage.RangeReader, what the loader uses): `cat_file(path, start,
  end)`, one ranged GET for exactly the sample's bytes.

Both first load each touched shard's member index from its `.idx.json` sidecar (reported as
`index_bytes`, the same for both). Per path the document gives requests, bytes moved for the samples,
bytes per sample, and `bytes_per_sample / sample_bytes` (the samples' own spans in their shards; 1.0
is the floor). Wall times are informational (a local server, a shared machine).

    .venv/bin/python benchmarks/storage_bench.py            # 2 shards x 1,000 samples, 20 reads
    .venv/bin/python benchmarks/storage_bench.py --quick    # 2 x 60, 10 reads
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import import_fixtures, machine_info, write_results  # noqa: E402

ReadFn = Callable[[str, int, int], bytes]


def _spans(root: Path, manifest: Any, indices: Sequence[int]) -> list[tuple[str, int, int]]:
    """(shard, start, end) of each sample, from the local copy's member indices."""
    from cotrain.dataset.shard_index import ShardIndex
    from cotrain.dataset.shards import index_shard

    bounds = np.cumsum([s.samples for s in manifest.shards])
    cache: dict[str, ShardIndex] = {}
    out = []
    for i in indices:
        s = int(np.searchsorted(bounds, i, side="right"))
        name = manifest.shards[s].name
        index = cache.setdefault(name, ShardIndex.from_rows(index_shard(root / name)))
        _, _, start, end = index.members(i - (int(bounds[s - 1]) if s else 0))
        out.append((name, start, end))
    return out


def _open_seek_read(fs: Any, root: str) -> ReadFn:
    handles: dict[str, Any] = {}

    def read(name: str, offset: int, size: int) -> bytes:
        fh = handles.get(name)
        if fh is None:
            fh = handles[name] = fs.open(f"{root}/{name}", "rb")
        fh.seek(offset)
        return fh.read(size)

    return read


def _measure(server: Any, read: ReadFn, spans: list[tuple[str, int, int]], expect: list[bytes]) -> dict[str, Any]:
    server.reset()
    start = time.perf_counter()
    for (name, lo, hi), want in zip(spans, expect):
        if read(name, lo, hi - lo) != want:
            raise SystemExit(f"{name} [{lo}, {hi}): read returned other bytes than the local shard holds")
    wall = time.perf_counter() - start
    requests = list(server.requests)
    moved = sum(r.bytes_sent for r in requests)
    sample_bytes = sum(hi - lo for _, lo, hi in spans)
    return {"requests": len(requests), "bytes_moved": moved, "bytes_per_sample": round(moved / len(spans)),
            "ratio_to_sample_bytes": round(moved / sample_bytes, 3), "wall_s": round(wall, 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import_fixtures()
    import s3fs

    from cotrain.dataset.shard_index import index_name
    from cotrain.dataset.storage import RangeReader, StorageOptions, read_manifest
    from tests.fixtures.cotrain_data import write_dataset
    from tests.fixtures.s3server import S3Server

    with tempfile.TemporaryDirectory() as tmp, S3Server() as server:
        root = write_dataset(Path(tmp) / "robot", samples=args.shards * args.per_shard, per_shard=args.per_shard,
                             image_hw=(224, 224), cameras=("front", "wrist"), textured=True)
        url = server.upload(root, "s3://bench/robot")
        manifest = read_manifest(root)
        rng = np.random.default_rng(args.seed)
        indices = [int(i) for i in rng.choice(manifest.num_samples, size=args.reads, replace=False)]
        spans = _spans(root, manifest, indices)
        expect = [(root / name).read_bytes()[lo:hi] for name, lo, hi in spans]
        touched = sorted({name for name, _, _ in spans})
        index_bytes = sum((root / index_name(n)).stat().st_size for n in touched)

        fs_old = s3fs.S3FileSystem(endpoint_url=server.endpoint, skip_instance_cache=True)
        old = _measure(server, _open_seek_read(fs_old, "bench/robot"), spans, expect)
        new_reader = RangeReader(url, StorageOptions(endpoint_url=server.endpoint))
        new = _measure(server, new_reader.read, spans, expect)
        sample_bytes = sum(hi - lo for _, lo, hi in spans)
        return {
            "dataset": {"samples": manifest.num_samples, "shards": len(manifest.shards), "image_px": 224,
                        "cameras": 2, "shard_bytes_mean": round(np.mean([s.bytes for s in manifest.shards]))},
            "reads": args.reads, "seed": args.seed, "indices": indices, "shards_touched": len(touched),
            "sample_bytes_total": sample_bytes, "sample_bytes_mean": round(sample_bytes / len(spans)),
            "index_bytes": index_bytes,
            "paths": {"open_seek_read": old, "cat_file_range": new},
            "old_over_new_bytes": round(old["bytes_moved"] / new["bytes_moved"], 2),
        }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (what a smoke test runs)")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--per-shard", type=int, default=None,
                   help="samples per shard (default 1000, the converters' default; --quick 60)")
    p.add_argument("--reads", type=int, default=None, help="random samples read (default 20; --quick 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="result file (default benchmarks/results/storage-<time>.json)")
    args = p.parse_args(argv)
    args.per_shard = args.per_shard or (60 if args.quick else 1000)
    args.reads = args.reads or (10 if args.quick else 20)
    machine = machine_info()
    doc = run(args)
    doc["size"] = "quick" if args.quick else "full"
    for name, body in doc["paths"].items():
        print(f"{name:>15}: {body['requests']:4d} requests, {body['bytes_per_sample']:>12,} bytes/sample, "
              f"{body['ratio_to_sample_bytes']:>8.2f}x the sample's {doc['sample_bytes_mean']:,} bytes")
    print(f"results: {write_results('storage', doc, machine, args.out)}")


if __name__ == "__main__":
    sys.exit(main())
