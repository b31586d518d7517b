"""CPU cost of the loader's per-sample checks (tar header identity, state/action shape and finiteness).

One process, one MixtureLoader over the loader benchmark's 3 sources (224 px, one camera, batch 32):
blocks of 10 batches alternate between the checks on and the checks replaced by no-ops, so both are
timed at the same machine speed; the figure is the median CPU time per sample of each, and their
ratio. (A fresh-process comparison against an older checkout is too noisy on a shared machine for a
difference of a few percent.)

    python benchmarks/sample_checks_bench.py [--samples 600] [--rounds 12]
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
from common import machine_info, write_results  # noqa: E402
from loader_pipelines import BATCH, write_mixture, write_sources  # noqa: E402


def _unchecked(self: Any, sample: Any, member: str, ndim: int, dims: Any) -> Any:
    value = sample.get(member)
    return None if value is None else np.asarray(value)


def measure(mixture: Path, rounds: int, batches: int = 10) -> dict[str, Any]:
    from cotrain.dataset import reader
    from cotrain.mix import transform
    from cotrain.mix.loader import MixtureLoader
    from cotrain.mix.resolve import load_mixture

    checks = (reader._check_headers, transform.SampleTransform._checked)
    off = (lambda *args: None, _unchecked)
    batch_iter = iter(MixtureLoader(load_mixture(mixture), rank=0, world_size=1, num_workers=0))
    for _ in range(5):  # first opens and indices
        next(batch_iter)
    times: dict[str, list[float]] = {"on": [], "off": []}
    for r in range(rounds):
        for mode in ("on", "off") if r % 2 else ("off", "on"):
            reader._check_headers, transform.SampleTransform._checked = checks if mode == "on" else off
            start = time.process_time()
            for _ in range(batches):
                next(batch_iter)
            times[mode].append((time.process_time() - start) / (batches * BATCH) * 1e6)
    reader._check_headers, transform.SampleTransform._checked = checks
    on, off_us = statistics.median(times["on"]), statistics.median(times["off"])
    return {"cpu_us_per_sample_checks_on": round(on, 1), "cpu_us_per_sample_checks_off": round(off_us, 1),
            "ratio_on_to_off": round(on / off_us, 4), "rounds": times}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=600, help="samples per source")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_sources(root, args.samples, 200, 224)
        doc = measure(write_mixture(root, 224), args.rounds)
    print({k: v for k, v in doc.items() if k != "rounds"})
    print(f"results: {write_results('sample-checks', doc, machine_info(), args.out)}")


if __name__ == "__main__":
    main()
