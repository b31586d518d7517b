"""Trainer throughput: samples/s, data-wait fraction, step time, tokens/s, MFU and `predict` latency.

Data: cotrain shards written by the test fixture writer (the real shard format, read by the real
MixtureLoader: random access, JPEG decode, letterbox, normalisation): a 3-camera robot source and an
image-caption source, 70/30.

    python benchmarks/train_bench.py --cpu            # tiny preset, 64 px, CPU: workers 0 and 2
    python benchmarks/train_bench.py --gpu            # paligemma-random (3B-sized) bf16, 224 px, on a GPU
    python benchmarks/train_bench.py --gpu --quick    # small preset instead (smoke test of the GPU path)

The GPU run trains `--steps` steps (the first `--warmup` excluded from the medians; MFU counts
6 x parameters x tokens per stream plus attention, against the device's dense bf16 peak), then
times `Policy.predict` (one observation, bf16 weights, cached prefix, 10 Euler steps). Issue targets
on a GPU: data wait < 5% of step time, MFU > 40%, predict faster than pi0's ~73-75 ms on an RTX 4090.
Results go to benchmarks/results/train_bench-<time>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import import_fixtures, machine_info, write_results  # noqa: E402

import_fixtures()


def write_data(root: Path, side: int, samples: int, cameras: int, horizon: int, batch: int) -> Path:
    from cotrain.dataset import keys
    from tests.fixtures.cotrain_data import write_dataset

    cams = ("front", "wrist", "top")[:cameras]
    write_dataset(root / "robot", samples=samples, per_shard=200, state_dim=8, action_dim=7, horizon=horizon,
                  cameras=cams, image_hw=(side * 3 // 4, side))
    write_dataset(root / "vl", samples=samples, per_shard=200, modality=keys.VISION_LANGUAGE, cameras=("image",),
                  image_hw=(side, side))
    mix = root / "mix.yaml"
    mix.write_text(
        f"name: bench\nseed: 0\nbatch_size: {batch}\nimage_size: {side}\nsources:\n  robot: {{path: robot}}\n"
        f"  vl: {{path: vl}}\nphases:\n  - {{name: p, steps: 100000, weights: {{robot: 0.7, vl: 0.3}}}}\n"
    )
    return mix


def summarise(rows: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    timed = rows[warmup:]

    def med(key: str) -> float | None:
        values = [r[key] for r in timed if r.get(key) is not None]
        return statistics.median(values) if values else None

    return {"steps_timed": len(timed), "step_time_s": med("step_time_s"), "samples_per_s": med("samples_per_s"),
            "tokens_per_s": med("tokens_per_s"), "data_wait": med("data_wait"), "mfu": med("mfu"),
            "final_loss": rows[-1]["loss"]}


def run_train(mix: Path, out: Path, preset: str, steps: int, workers: int, **extra: Any) -> list[dict[str, Any]]:
    from cotrain.train.config import TrainConfig
    from cotrain.train.loop import train

    cfg = TrainConfig(mixture=str(mix), model=preset, steps=steps, out=str(out), num_workers=workers,
                      checkpoints=False, tensorboard=False, progress=False, warmup_steps=10, lr=1e-4, **extra)
    return train(cfg).history


def predict_latency(mix: Path, preset: str, device: str, calls: int, extra: dict[str, Any]) -> dict[str, Any]:
    """Median latency of Policy.predict for one 3-camera observation (random-init weights, bf16 on GPU)."""
    import torch

    from cotrain.eval.policy import LoadedRun, Policy
    from cotrain.mix.resolve import load_mixture
    from cotrain.model.factory import build_vla, load_tokenizer_for
    from cotrain.model.text import TextLayout
    from cotrain.train.compat import norm_stats_record, resolve_model_config
    from cotrain.train.config import TrainConfig

    mixture = load_mixture(mix)
    cfg = resolve_model_config(TrainConfig(mixture=str(mix), model=preset, steps=1, out="-", **extra), mixture)
    tokenizer = load_tokenizer_for(cfg, None)
    model, cfg = build_vla(cfg, seed=0, tokenizer=tokenizer)
    dtype = torch.bfloat16 if device == "cuda" else None
    inv_freq = model.rotary.inv_freq.clone()
    model.to(device=device, dtype=dtype).eval()
    model.rotary.inv_freq = inv_freq.to(device)
    vocab = int(cfg.backbone_config["text_config"]["vocab_size"])  # type: ignore[index]  # backbone_config is a nested dict
    layout = TextLayout(tokenizer, vocab, cfg.action_vocab_size, cfg.action_token_skip, cfg.max_text_tokens)
    policy = Policy(LoadedRun(Path("-"), 0, model, cfg, layout, norm_stats_record(mixture), torch.device(device)))
    side = int(cfg.image_size)  # type: ignore[arg-type]  # model config sizes are int | None until resolved
    rng = np.random.default_rng(0)
    cams = mixture.sources[0].manifest.cameras
    images = {c: rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for c in cams}
    state = np.zeros(len(mixture.sources[0].manifest.state_names))
    times = []
    for i in range(calls + 3):
        t0 = time.perf_counter()
        policy.predict(images, state, "pick the orange cube and place it in the box", "robot", seed=i, steps=10)
        if i >= 3:  # the first calls pay for kernel selection and allocator growth
            times.append(time.perf_counter() - t0)
    return {"calls": calls, "flow_steps": 10, "cameras": len(cams), "median_ms": 1000 * statistics.median(times),
            "p90_ms": 1000 * float(np.percentile(times, 90)), "dtype": str(dtype or "float32")}


def cpu_bench(steps: int, work: Path) -> dict[str, Any]:
    mix = write_data(work / "data", side=64, samples=400, cameras=2, horizon=8, batch=16)
    out: dict[str, Any] = {"preset": "tiny", "image_size": 64, "batch_size": 16}
    for workers in (0, 2):
        rows = run_train(mix, work / f"run-w{workers}", "tiny", steps, workers)
        out[f"workers_{workers}"] = summarise(rows, warmup=5)
    out["predict"] = predict_latency(mix, "tiny", "cpu", 20, {})
    return out


def gpu_bench(steps: int, warmup: int, quick: bool, batch: int, workers: int, work: Path) -> dict[str, Any]:
    preset = "small" if quick else "paligemma-random"
    extra = {"horizon": 16, "action_dim": 7, "state_dim": 8} if quick else {}
    mix = write_data(work / "data", side=224, samples=2000, cameras=3, horizon=50, batch=batch)
    rows = run_train(mix, work / "run", preset, steps, workers, activation_checkpointing=False, **extra)
    return {"preset": preset, "batch_size": batch, "workers": workers, **summarise(rows, warmup),
            "predict": predict_latency(mix, preset, "cuda", 30, extra)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="tiny preset on CPU")
    parser.add_argument("--gpu", action="store_true", help="3B-sized preset in bf16 on a GPU")
    parser.add_argument("--quick", action="store_true", help="GPU: small preset instead of the 3B-sized one")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: 40 CPU, 30 GPU)")
    parser.add_argument("--warmup", type=int, default=5, help="GPU: steps left out of the medians")
    parser.add_argument("--batch", type=int, default=16, help="GPU: global batch size (32 needs activation "
                        "checkpointing on 141 GB)")
    parser.add_argument("--workers", type=int, default=8, help="GPU: DataLoader workers")
    parser.add_argument("--out", default=None, help="result JSON path")
    args = parser.parse_args()
    if not (args.cpu or args.gpu):
        parser.error("choose --cpu and/or --gpu")
    machine = machine_info()
    doc: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.cpu:
            doc["cpu"] = cpu_bench(args.steps or 40, Path(tmp) / "cpu")
        if args.gpu:
            import torch

            if not torch.cuda.is_available():
                parser.error("--gpu: no CUDA device")
            machine["gpu"] = torch.cuda.get_device_name()
            doc["gpu"] = gpu_bench(
                args.steps or 30, args.warmup, args.quick, args.batch, args.workers, Path(tmp) / "gpu"
            )
    print(write_results("train_bench", doc, machine, args.out))
    import json

    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
