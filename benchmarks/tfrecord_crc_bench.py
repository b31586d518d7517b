"""TFRecord CRC-32C: `google_crc32c` (what cotrain_converters/rlds/tfrecord.py uses) against the alternatives, same run.

Writes an RLDS-like TFRecord folder (tests/fixtures/rlds.py: one tf.train.Example per episode, two
224 x 224 noisy-JPEG cameras per step, so records are MB-sized like Open-X episodes) and measures, in
rounds that interleave the variants (figures are medians of the rounds):

- `crc_*`: CRC throughput over every record payload, MB/s: `google_crc32c` C extension, its
  pure-Python fallback (on the first MB only: it is slow), and `zlib.crc32` (a C CRC-32, the
  reference for "a native CRC" on this machine).
- `read_*`: `iter_records` over the folder (framing, both CRCs per record, payload copies), MB/s, for
  the current module, and with `--baseline-rev REV` for cotrain_converters/rlds/tfrecord.py as it was at git REV
  (read with `git show`; its numpy lane-parallel CRC is forced, as it ran without optional packages).

    .venv/bin/python benchmarks/tfrecord_crc_bench.py --baseline-rev 66d6422   # ~1 min on 2 cores
    .venv/bin/python benchmarks/tfrecord_crc_bench.py --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, import_fixtures, machine_info, ratio, write_results  # noqa: E402


def _write_data(root: Path, episodes: int, steps: int) -> list[Path]:
    import_fixtures()
    import numpy as np
    from PIL import Image

    from tests.fixtures.rlds import basic_schema, write_rlds

    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)) for _ in range(8)]
    jpegs = []
    for im in frames:
        path = root / "frame.jpg"
        im.save(path, quality=90)
        jpegs.append(path.read_bytes())

    def cameras(e: int, ep: dict[str, Any]) -> None:
        for key in ("observation/image", "observation/wrist_image"):
            ep[key] = [jpegs[(e + t) % len(jpegs)] for t in range(len(ep[key]))]

    fixture = write_rlds(root, name="bench_rlds", files=2, per_file=episodes // 2, steps=(steps,),
                         schema=basic_schema(224, 224), mutate=cameras)
    return fixture.files


def _module_at(rev: str) -> ModuleType:
    """cotrain_converters/rlds/tfrecord.py as committed at `rev`, with its numpy CRC path forced."""
    source = subprocess.run(["git", "show", f"{rev}:cotrain_converters/rlds/tfrecord.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "tfrecord_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("tfrecord_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    module._native = lambda: None  # type: ignore[attr-defined]  # as without google_crc32c / crc32c
    return module


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _drain(records: Iterator[bytes]) -> None:
    for _ in records:
        pass


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2 episodes x 10 steps, 2 rounds")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--baseline-rev", default=None,
                   help="git revision whose cotrain_converters/rlds/tfrecord.py to compare")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    machine = machine_info()
    import google_crc32c
    from google_crc32c import python as crc_python

    from cotrain_converters.rlds import tfrecord

    episodes, steps, repeats = (2, 10, 2) if args.quick else (8, 100, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        files = _write_data(Path(tmp), episodes, steps)
        payloads = [rec for f in files for rec in tfrecord.iter_records(f)]
        total = sum(len(x) for x in payloads)
        first_mb = payloads[0][: 1 << 20]
        variants: dict[str, tuple[Callable[[], Any], int]] = {
            "crc_google_crc32c": (lambda: [google_crc32c.value(x) for x in payloads], total),
            "crc_google_crc32c_python": (lambda: crc_python.value(first_mb), len(first_mb)),
            "crc_zlib_crc32": (lambda: [zlib.crc32(x) for x in payloads], total),
            "read_current": (lambda: [_drain(tfrecord.iter_records(f)) for f in files], total),
        }
        if args.baseline_rev:
            old = _module_at(args.baseline_rev)
            variants["read_baseline"] = (lambda: [_drain(old.iter_records(f)) for f in files], total)
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeats):
            for name, (fn, _) in variants.items():
                seconds[name].append(_timed(fn))
    rates = {name: round(variants[name][1] / statistics.median(s) / 1e6, 2) for name, s in seconds.items()}
    doc = {
        "size": "quick" if args.quick else "full",
        "records": len(payloads),
        "payload_bytes": total,
        "mean_record_bytes": total // len(payloads),
        "repeats": repeats,
        "baseline_rev": args.baseline_rev,
        "google_crc32c_implementation": google_crc32c.implementation,
        "mb_per_s": rates,
        "ratios": {
            "google_crc32c_vs_zlib": ratio(rates["crc_google_crc32c"], rates["crc_zlib_crc32"]),
            "google_crc32c_vs_its_python": ratio(rates["crc_google_crc32c"], rates["crc_google_crc32c_python"]),
            "read_current_vs_baseline": ratio(rates["read_current"], rates.get("read_baseline")),
        },
    }
    path = write_results("tfrecord-crc", doc, machine, args.out)
    print(f"results: {path}")
    for name, rate in rates.items():
        print(f"  {name:28s} {rate:10.2f} MB/s")


if __name__ == "__main__":
    main()
