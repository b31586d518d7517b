"""CPU cost of one training step of the study's preset, by variant, measured in one process.

    python benchmarks/sim_step_bench.py                    # tiny-conv, batch 32, 1 thread
    python benchmarks/sim_step_bench.py --preset tiny --steps 40

Inputs have the study's shapes (one 64 x 64 camera, a ~25-token instruction padded to the batch,
a 16 x 4 action chunk, a 4-d state). Variants run in alternating blocks so load on a shared
machine falls on all of them alike; the medians of per-step wall times are compared with the
first variant (the trainer's plain fp32 eager step) as the reference. A cProfile of the reference
step says where the time goes. Results go to benchmarks/results/sim_step_bench-<time>.json.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, write_results  # noqa: E402


def build(preset: str, batch: int) -> tuple[Any, Any, torch.Tensor, torch.Tensor]:
    from cotrain.model.config import get_preset, with_overrides
    from cotrain.model.factory import build_vla
    from cotrain.model.inputs import ModelInputs
    from cotrain.model.text import build_byte_tokenizer

    cfg = with_overrides(get_preset(preset), horizon=16, action_dim=4, state_dim=4, image_size=64, max_cameras=1)
    model, _ = build_vla(cfg, seed=0, tokenizer=build_byte_tokenizer())
    g = torch.Generator().manual_seed(0)
    text = 26
    inputs = ModelInputs(
        images=torch.randint(0, 256, (batch, 1, 3, 64, 64), generator=g, dtype=torch.uint8),
        camera_mask=torch.ones(batch, 1, dtype=torch.bool),
        text_ids=torch.randint(3, 200, (batch, text), generator=g),
        text_valid=torch.ones(batch, text, dtype=torch.bool),
        text_kind=torch.zeros(batch, text, dtype=torch.int64), state=torch.randn(batch, 4, generator=g),
        state_valid=torch.ones(batch, dtype=torch.bool), actions=torch.randn(batch, 16, 4, generator=g),
        actions_valid=torch.ones(batch, 16, dtype=torch.bool), action_mask=torch.ones(batch, 4, dtype=torch.bool))
    noise = torch.randn(batch, 16, 4, generator=g)
    t = torch.rand(batch, generator=g)
    return model, inputs, noise, t


def step_fn(model: Any, inputs: Any, noise: torch.Tensor, t: torch.Tensor, variant: str) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=variant != "no-foreach")
    forward = torch.compile(model) if variant == "compile" else model

    def step() -> None:
        torch.set_flush_denormal(variant == "flush-denormal")
        if variant == "bf16-autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                terms = forward(inputs, noise, t)
        else:
            terms = forward(inputs, noise, t)
        loss = terms["flow"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def profile_top(step: Callable[[], None], rows: int = 12) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(5):
        step()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(rows)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny-conv")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant and block")
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default="fp32,bf16-autocast,flush-denormal,compile",
                    help="comma list of: fp32 (the reference), bf16-autocast, flush-denormal, no-foreach, compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    steps, warmup = {}, {}
    for v in variants:
        model, inputs, noise, t = build(args.preset, args.batch)
        steps[v] = step_fn(model, inputs, noise, t, v)
        start = time.perf_counter()
        for _ in range(3):  # warm-up (and compilation)
            steps[v]()
        warmup[v] = time.perf_counter() - start
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.blocks):
        for v in variants:
            for _ in range(args.steps):
                start = time.perf_counter()
                steps[v]()
                times[v].append(time.perf_counter() - start)
    ref = statistics.median(times[variants[0]])
    result = {"preset": args.preset, "batch": args.batch, "threads": args.threads, "machine": machine_info(),
              "median_step_s": {v: statistics.median(x) for v, x in times.items()},
              "ratio_to_reference": {v: statistics.median(x) / ref for v, x in times.items()},
              "warmup_s_3_steps": warmup,
              "profile_reference": profile_top(steps[variants[0]])}
    for v in variants:
        print(f"{v:>16}: {result['median_step_s'][v] * 1000:7.1f} ms/step  ({result['ratio_to_reference'][v]:.2f}x)"
              f"  first 3 steps {warmup[v]:.1f} s")
    print(result["profile_reference"])
    print("wrote", write_results("sim_step_bench", result, result.pop("machine")))


if __name__ == "__main__":
    main()
