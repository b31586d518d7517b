"""Loader throughput, mixing accuracy and memory of cotrain's MixtureLoader against peers and the decode floor.

All variants read the same 3 sources (see loader_pipelines.py) and decode every sample the same way
(letterbox_jpeg per camera, cotrain's decode_npy per .npy, JSON and text):
  (a) `wds`        raw webdataset pipeline over ONE source (target), no mixing
  (b) `mixture`    cotrain MixtureLoader over the 3-source mixture (batch 32, weights 0.5/0.3/0.2)
  (c) `randommix`  webdataset RandomMix over the 3 sources
  (d) `hf`         HF datasets interleave_datasets over the same samples exported as parquet
  (e) `floor`      the decoding alone, of samples already in memory, in the order (b) plans them
Each runs with plain iteration (`-w0`, torch DataLoader with num_workers 0) and with 2 DataLoader
workers (`-w2`); the floor's 2-worker counterpart is 2 plain processes, each decoding half
(`floor-x2`). Every run first takes `warmup_batches` batches untimed (worker start-up, first opens),
then times the next `timed` samples. Ratios are to the floor of the same worker count; each round
runs floor, mixture-w0, floor-x2, mixture-w2, then the peers, so that each MixtureLoader run can
be divided by the floor run just before it (`paired_ratio_to_floor`, what the targets check).
`interleaved-w0` runs the floor and (b) in one process, alternating 10 batches of each, so that
both are timed at the same machine speed (`run_interleaved`); its ratio is checked too.

For the mixing variants (b, c, d) the realised source proportions of the timed samples are compared
with the target weights: the largest error overall, and in the worst window of `window` consecutive
samples (every start position). A long run of (b) with 2 workers (200,000 samples) reports peak PSS
and PSS growth between 10% and 100% of the run.

    python benchmarks/loader_bench.py            # full size (about 10 minutes on 2 cores)
    python benchmarks/loader_bench.py --quick    # tiny (smoke test)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from common import (  # noqa: E402
    Clock,
    PeakMemory,
    Variant,
    machine_info,
    median_of,
    median_rate,
    parse_with_variant_args,
    ratio,
    run_group,
    run_rounds,
    tree_pss_bytes,
    wait_for_go,
    write_child_result,
    write_results,
)

SIZES: dict[str, dict[str, Any]] = {
    "full": {"samples": 2000, "per_shard": 250, "side": 224, "timed": 4800, "warmup_batches": 4, "window": 1000,
             "long": 200_000, "parquet_files": 4},
    "quick": {"samples": 96, "per_shard": 24, "side": 32, "timed": 256, "warmup_batches": 2, "window": 100,
              "long": 2_000, "parquet_files": 4},
}
TARGETS = {"mixture_w0_ratio": 0.85, "mixture_w2_ratio": 0.7, "worst_window_error": 0.005, "memory_growth": 0.05}
FRAMEWORKS = ("wds", "mixture", "randommix", "hf")
MIXING = ("mixture", "randommix", "hf")


def proportion_errors(sources: Sequence[int], window: int) -> dict[str, float]:
    """Largest |realised - target| share over all sources: overall, and over every window of `window`."""
    import loader_pipelines as lp

    onehot = np.eye(len(lp.WEIGHTS))[np.asarray(sources, int)]
    weights = np.asarray(lp.WEIGHTS)
    overall = float(np.abs(onehot.mean(0) - weights).max())
    cum = np.concatenate([np.zeros((1, len(weights))), np.cumsum(onehot, 0)])
    windows = (cum[window:] - cum[:-window]) / window
    # Windows that start at a batch boundary and span whole batches (the mixture is exact per batch,
    # its slots are shuffled inside a batch): 1,024 samples for a window of 1,000 and batch 32.
    span = -(-window // lp.BATCH) * lp.BATCH
    aligned = (cum[span::lp.BATCH] - cum[: len(cum) - span: lp.BATCH]) / span
    return {"overall_error": round(overall, 6), "worst_window_error": round(float(np.abs(windows - weights).max()), 6),
            "window": window, "worst_aligned_window_error": round(float(np.abs(aligned - weights).max()), 6),
            "aligned_window": span, "samples": len(sources)}


# --- variant processes ------------------------------------------------------------------------------


def _framework_batches(kind: str, root: Path, side: int, workers: int) -> Iterator[dict[str, Any]]:
    import loader_pipelines as lp
    from torch.utils.data import DataLoader

    if kind == "mixture":
        return iter(lp.mixture_loader(root, workers))
    dataset = {"wds": lambda: lp.wds_source(root, 0, side), "randommix": lambda: lp.SeededRandomMix(root, side),
               "hf": lambda: lp.hf_mixture(root, side)}[kind]()
    loader = DataLoader(dataset, batch_size=lp.BATCH, num_workers=workers, collate_fn=lp.stack_collate,
                        prefetch_factor=2 if workers else None)
    return iter(loader)


def run_framework(kind: str, workers: int, root: Path, size: dict[str, Any], long: bool) -> dict[str, Any]:
    """Warm up, then time `timed` samples (or the long run), recording the source of every sample."""
    total = size["long"] if long else size["timed"]
    wait_for_go()  # the clock that counts starts after the warm-up below
    sources: list[int] = []
    marks: dict[str, int] = {}
    with PeakMemory(interval_s=1.0 if long else 0.5) as peak:
        batches = _framework_batches(kind, root, size["side"], workers)
        for _ in range(size["warmup_batches"]):
            next(batches)
        clock = Clock()
        while len(sources) < total:
            sources.extend(next(batches)["source"].tolist())
            if long and "pss_10pct" not in marks and len(sources) >= total // 10:
                marks["pss_10pct"] = tree_pss_bytes()
        timing = clock.stop()
        if long:
            marks["pss_100pct"] = tree_pss_bytes()
        close_error = _close(batches)
        del batches
    out: dict[str, Any] = {"samples": len(sources), **timing, "peak_pss_bytes": peak.peak, **marks}
    if close_error:
        out["close_error"] = close_error
    if kind in MIXING:
        out["proportions"] = proportion_errors(sources, size["window"])
        out["realised"] = [round(float(v), 6) for v in np.bincount(sources, minlength=3) / len(sources)]
    return out


def _close(batches: Any) -> str | None:
    """Stop the DataLoader workers now, outside the timed span. Before commit 07a7aa4 leaving a
    MixtureLoader early could raise "worker killed by signal: Aborted" here; it is recorded, not
    fatal, so that older versions can be measured too (--baseline)."""
    close = getattr(batches, "close", None) or getattr(batches, "_shutdown_workers", None)
    try:
        if close is not None:
            close()
    except RuntimeError as exc:
        return str(exc)
    return None


def run_floor(root: Path, size: dict[str, Any], part: int, parts: int) -> dict[str, Any]:
    import loader_pipelines as lp

    steps = size["timed"] // lp.BATCH
    sequence = lp.plan_sequence(root, size["warmup_batches"], steps)[part::parts]
    raw = lp.load_raw(root, sequence)
    side = size["side"]
    clock = wait_for_go()
    with PeakMemory(interval_s=0.5) as peak:
        for key in sequence:
            lp.decode_raw(raw[key], side)
    return {"samples": len(sequence), **clock.stop(), "peak_pss_bytes": peak.peak}


def run_interleaved(root: Path, size: dict[str, Any]) -> dict[str, Any]:
    """The floor and the 1-process MixtureLoader alternating in ONE process, a few batches at a time
    over the same planned samples, each chunk timed on its own (wall and CPU).

    Why: identical decoding runs at two speeds in different fresh processes on the reference VM
    (README, "Reading the numbers"), so a fresh-process floor run and the loader run after it may
    not share a speed. Chunks of about 1 s that alternate share it; the median over chunks of
    floor time / loader time is the ratio of the two at one machine speed."""
    import loader_pipelines as lp

    batches = size["timed"] // lp.BATCH
    chunk_batches = max(1, min(10, batches // 8))  # 10 batches (~1 s) at full size, at least 8 chunks
    sequence = lp.plan_sequence(root, size["warmup_batches"], batches)
    raw = lp.load_raw(root, sequence)
    side, per = size["side"], chunk_batches * lp.BATCH
    for key in sequence[:per]:  # the floor's warm-up: one chunk, untimed (the loader's: warmup_batches)
        lp.decode_raw(raw[key], side)
    loader = iter(lp.mixture_loader(root, 0))
    for _ in range(size["warmup_batches"]):
        next(loader)
    clock = wait_for_go()
    chunks = []
    for start in range(0, len(sequence) - per + 1, per):
        floor = Clock()
        for key in sequence[start: start + per]:
            lp.decode_raw(raw[key], side)
        floor_t = floor.stop()
        mixture = Clock()
        for _ in range(chunk_batches):
            next(loader)
        mix_t = mixture.stop()
        chunks.append({"floor_s": round(floor_t["end"] - floor_t["start"], 5), "floor_cpu_s": floor_t["cpu_seconds"],
                       "mixture_s": round(mix_t["end"] - mix_t["start"], 5), "mixture_cpu_s": mix_t["cpu_seconds"]})
    ratios = [c["floor_s"] / c["mixture_s"] for c in chunks]
    return {"samples": len(chunks) * per, **clock.stop(), "chunk_samples": per, "chunks": chunks,
            "ratio": round(float(np.median(ratios)), 4),
            "floor_rate": round(per / float(np.median([c["floor_s"] for c in chunks])), 2),
            "mixture_rate": round(per / float(np.median([c["mixture_s"] for c in chunks])), 2)}


def run_variant(args: argparse.Namespace) -> None:
    import loader_pipelines  # noqa: F401 - imports (torch, webdataset) before any clock starts

    root, size = Path(args.data), SIZES[args.size]
    if args.variant == "floor":
        result = run_floor(root, size, args.part, args.parts)
    elif args.variant == "interleaved-w0":
        result = run_interleaved(root, size)
    else:
        kind, _, workers = args.variant.partition("-w")
        long = workers.endswith("-long")
        result = run_framework(kind, int(workers.removesuffix("-long")), root, size, long)
    write_child_result(args.result, result)


# --- parent -----------------------------------------------------------------------------------------


def variants(only: str | None = None, baseline: str | None = None) -> list[Variant]:
    """In round order: each floor right before the MixtureLoader run it is paired with (see `summarise`)."""
    floor, floor_x2 = (
        Variant("floor", items_key="samples"),
        Variant("floor", parts=2, items_key="samples", label="floor-x2"),
    )
    out = [floor, Variant("mixture-w0", items_key="samples"), floor_x2, Variant("mixture-w2", items_key="samples"),
           Variant("interleaved-w0", items_key="samples")]
    for kind in [k for k in FRAMEWORKS if k != "mixture"]:
        out += [Variant(f"{kind}-w0", items_key="samples"), Variant(f"{kind}-w2", items_key="samples")]
    keep = {"floor", "floor-x2", "interleaved-w0", *only.split(",")} if only else None
    out = [v for v in out if keep is None or v.key in keep]
    if baseline:  # the MixtureLoader variants of this run again, importing cotrain from an earlier checkout
        out += [Variant(v.name, items_key="samples", label=f"{v.key}@baseline", env=(("PYTHONPATH", baseline),))
                for v in list(out) if v.key.startswith(("mixture-", "interleaved-"))]
    return out


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per variant: medians over rounds, and ratios to the floor of the same worker count.

    `ratio_to_floor` divides the medians. `paired_ratio_to_floor` is the median over rounds of
    rate / the floor's rate in the same round; for the MixtureLoader runs, which directly follow
    their floor, it is the less noisy figure on a shared machine (speed drifted by up to 30% between
    runs a minute apart), so the targets use it.
    """
    floors = {"w0": runs["floor"], "w2": runs["floor-x2"]}
    cpu_floor = median_rate(runs["floor"], "cpu_rate")
    table: dict[str, Any] = {}
    for key, rs in runs.items():
        if key.startswith("interleaved-"):
            table[key] = interleaved_row(rs)
            continue
        w = "w2" if "-w2" in key or key.endswith("-x2") else "w0"
        paired = [r["rate"] / f["rate"] for r, f in zip(rs, floors[w])]
        row = {"samples_per_s": median_rate(rs), "ratio_to_floor": ratio(median_rate(rs), median_rate(floors[w])),
               "paired_ratio_to_floor": round(float(np.median(paired)), 4),
               "samples_per_cpu_s": median_rate(rs, "cpu_rate"),
               "cpu_ratio_to_floor": ratio(median_rate(rs, "cpu_rate"), cpu_floor),
               "peak_pss_mib": round(median_of(rs, "peak_pss_bytes") / 2**20, 1)}
        if "proportions" in rs[0]:
            row["overall_error"] = max(r["proportions"]["overall_error"] for r in rs)
            row["worst_window_error"] = max(r["proportions"]["worst_window_error"] for r in rs)
            row["worst_aligned_window_error"] = max(r["proportions"]["worst_aligned_window_error"] for r in rs)
        table[key] = row
    return table


def interleaved_row(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of the in-process alternation (`run_interleaved`)."""
    cpu = [sum(c["floor_cpu_s"] for c in r["chunks"]) / sum(c["mixture_cpu_s"] for c in r["chunks"]) for r in runs]
    return {"ratio_to_floor": round(float(np.median([r["ratio"] for r in runs])), 4),
            "round_ratios": [r["ratio"] for r in runs],
            "cpu_ratio_to_floor": round(float(np.median(cpu)), 4),
            "samples_per_s": median_rate(runs, "mixture_rate"), "floor_samples_per_s": median_rate(runs, "floor_rate")}


def check_targets(table: dict[str, Any], long_run: dict[str, Any] | None) -> dict[str, Any] | None:
    if long_run is None or any(v.key not in table for v in variants()):
        return None  # a partial run (--only / --no-long) checks nothing
    b0, b2 = table["mixture-w0"], table["mixture-w2"]
    faster = {f"{k}-{w}": b["samples_per_s"] > table[f"{k}-{w}"]["samples_per_s"]
              for k in ("wds", "randommix", "hf") for w, b in (("w0", b0), ("w2", b2))}
    worst = max(b0["worst_window_error"], b2["worst_window_error"], long_run["proportions"]["worst_window_error"])
    return {
        "mixture_w0_ratio": {"value": b0["paired_ratio_to_floor"], "target": ">= 0.85",
                             "met": b0["paired_ratio_to_floor"] >= 0.85},
        "mixture_w0_interleaved_ratio": {"value": table["interleaved-w0"]["ratio_to_floor"], "target": ">= 0.85",
                                         "met": table["interleaved-w0"]["ratio_to_floor"] >= 0.85},
        "mixture_w2_ratio": {"value": b2["paired_ratio_to_floor"], "target": ">= 0.7",
                             "met": b2["paired_ratio_to_floor"] >= 0.7},
        "mixture_faster_than": {"value": faster, "met": all(faster.values())},
        "worst_window_error": {"value": worst, "target": "< 0.005", "met": worst < 0.005},
        "memory_growth": {"value": long_run["pss_growth"], "target": "< 0.05", "met": long_run["pss_growth"] < 0.05},
    }


def long_run_summary(res: dict[str, Any]) -> dict[str, Any]:
    growth = (res["pss_100pct"] - res["pss_10pct"]) / res["pss_10pct"]
    return {"samples": res["samples"], "seconds": res["seconds"], "samples_per_s": res["rate"],
            "pss_10pct_mib": round(res["pss_10pct"] / 2**20, 1), "pss_100pct_mib": round(res["pss_100pct"] / 2**20, 1),
            "peak_pss_mib": round(res["peak_pss_bytes"] / 2**20, 1), "pss_growth": round(growth, 4),
            "proportions": res["proportions"], "realised": res["realised"]}


def baseline_summary(path: str, table: dict[str, Any], long_run: dict[str, Any] | None,
                     base_long: dict[str, Any] | None) -> dict[str, Any]:
    """This checkout's MixtureLoader against an earlier one, measured in the same rounds."""
    import subprocess

    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=path).stdout.strip()
    out: dict[str, Any] = {"path": path, "git_commit": commit or None}
    for w in [w for w in ("w0", "w2") if f"mixture-{w}@baseline" in table]:  # --only may leave one out
        new, old = table[f"mixture-{w}"], table[f"mixture-{w}@baseline"]
        out[f"mixture_{w}_speedup"] = ratio(new["samples_per_s"], old["samples_per_s"])
        out[f"mixture_{w}_cpu_speedup"] = ratio(new["samples_per_cpu_s"], old["samples_per_cpu_s"])
    if "interleaved-w0@baseline" in table:
        out["interleaved_w0_ratio"] = {"new": table["interleaved-w0"]["ratio_to_floor"],
                                       "baseline": table["interleaved-w0@baseline"]["ratio_to_floor"]}
    if long_run and base_long:
        out["long_run"] = base_long
        out["long_run_speedup"] = ratio(long_run["samples_per_s"], base_long["samples_per_s"])
    return out


def prepare(root: Path, size: dict[str, Any]) -> None:
    import loader_pipelines as lp

    t0 = time.monotonic()
    lp.write_sources(root, size["samples"], size["per_shard"], size["side"])
    lp.write_mixture(root, size["side"])
    lp.export_parquet(root, size["parquet_files"])
    print(f"wrote 3 sources x {size['samples']} samples (+ parquet) in {time.monotonic() - t0:.1f} s", flush=True)


def run_parent(args: argparse.Namespace) -> Path:
    machine = machine_info()
    size = SIZES[args.size]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cotrain-loader-bench-"))
    root = workdir / "data"
    try:
        if not (root / "mixture.yaml").exists():
            prepare(root, size)
        common_args = ["--data", str(root), "--size", args.size]
        runs = run_rounds(Path(__file__), variants(args.only, args.baseline), common_args, workdir,
                          repeats=args.repeats)
        long_run = base_long = None
        if not args.no_long:
            long_run = long_run_summary(run_group(Path(__file__), Variant("mixture-w2-long", items_key="samples"),
                                                  common_args, workdir))
            print(f"long run: {long_run}", flush=True)
            if args.baseline:
                base = Variant("mixture-w2-long", items_key="samples", env=(("PYTHONPATH", args.baseline),))
                base_long = long_run_summary(run_group(Path(__file__), base, common_args, workdir))
                print(f"long run (baseline): {base_long}", flush=True)
        table = summarise(runs)
        targets = check_targets(table, long_run)
        doc = {"size": args.size, "config": {**size, "batch_size": 32, "weights": [0.5, 0.3, 0.2],
                                             "repeats": args.repeats},
               "summary": table, "long_run": long_run, "targets": targets, "runs": runs}
        if args.baseline:
            doc["baseline"] = baseline_summary(args.baseline, table, long_run, base_long)
        for key, row in table.items():
            print(f"{key:<14} {row}", flush=True)
        return write_results("loader", doc, machine, args.out)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny data and one round (smoke test)")
    p.add_argument("--repeats", type=int, default=None, help="rounds per variant (default 3; 1 with --quick)")
    p.add_argument("--out", default=None, help="result JSON path (default benchmarks/results/loader-<time>.json)")
    p.add_argument("--workdir", default=None, help="keep the data here (default: a temp dir, removed)")
    p.add_argument("--only", default=None, help="comma list of variants besides the floors and interleaved-w0 "
                                                 "(always run), e.g. mixture-w0 (no targets)")
    p.add_argument("--no-long", action="store_true", help="skip the long memory run (no targets)")
    p.add_argument("--baseline", default=None, help="also run the MixtureLoader variants with cotrain imported "
                                                     "from this earlier checkout (e.g. a git worktree), same rounds")
    return parse_with_variant_args(p, argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.variant:
        run_variant(args)
    else:
        print(f"results: {run_parent(args)}")


if __name__ == "__main__":
    main()
