"""Closed-loop evaluation of a trained run: episodes in lockstep against one at a time, in one process.

    python benchmarks/sim_eval_bench.py RUN_DIR                       # 96 pick episodes, replanning every 4
    python benchmarks/sim_eval_bench.py RUN_DIR --episodes 192 --batch 64 --rounds 3

Both paths evaluate the same episodes (`cotrain sim eval RUN_DIR --batch B` against `--batch 1`);
rounds alternate them so load from elsewhere falls on both. The reference is the one-at-a-time
path; the document gives the median wall time of each, their ratio, how many episode records are
identical (the batched kernels may round differently) and the successes of each. Results go to
benchmarks/results/sim_eval_bench-<time>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, write_results  # noqa: E402


def evaluate(run: Path, batch: int, args: argparse.Namespace) -> tuple[float, dict[str, Any]]:
    from cotrain.lab.sim.evaluate import EvalConfig, evaluate_policy, load_run_policy

    cfg = EvalConfig(episodes=args.episodes, verbs=tuple(args.verbs.split(",")), replan_steps=args.replan_steps,
                     image_size=args.image_size, seed=0)
    policy = load_run_policy(run, args.embodiment, batch)
    start = time.perf_counter()
    result = evaluate_policy(policy, cfg, name=str(run))
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a trained run directory that drives the simulator")
    ap.add_argument("--episodes", type=int, default=96)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--replan-steps", type=int, default=4)
    ap.add_argument("--verbs", default="pick")
    ap.add_argument("--embodiment", default="target", help="source or embodiment name the run was trained on")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_info()
    times: dict[str, list[float]] = {"one_at_a_time": [], "lockstep": []}
    results: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for name, batch in (("one_at_a_time", 1), ("lockstep", args.batch)):
            seconds, results[name] = evaluate(args.run, batch, args)
            times[name].append(seconds)
    ref, lock = results["one_at_a_time"]["episodes"], results["lockstep"]["episodes"]
    median = {name: statistics.median(x) for name, x in times.items()}
    doc = {"run": str(args.run), "episodes": args.episodes, "batch": args.batch, "replan_steps": args.replan_steps,
           "threads": args.threads, "seconds": times, "median_s": median,
           "ratio_to_reference": median["lockstep"] / median["one_at_a_time"],
           "identical_records": sum(a == b for a, b in zip(ref, lock, strict=True)),
           "successes": {name: r["overall"]["successes"] for name, r in results.items()}}
    path = write_results("sim_eval_bench", doc, machine, args.out)
    print(f"one at a time {median['one_at_a_time']:.1f} s, lockstep (batch {args.batch}) {median['lockstep']:.1f} s "
          f"({doc['ratio_to_reference']:.2f}x); {doc['identical_records']}/{args.episodes} records identical; "
          f"successes {doc['successes']}; {path}")


if __name__ == "__main__":
    main()
