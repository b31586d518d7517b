"""Shared benchmark machinery: fresh-process variants, barrier starts, medians, PSS memory, result JSON.

Every measured variant runs in a FRESH Python process (the benchmark script itself, re-run with
`--variant NAME`), so no variant inherits warm caches, imported modules or allocator state from
another. A variant process does its set-up (imports, opening files, loading inputs), prints `READY`,
and waits for a line on stdin; the parent starts the clock of all processes of a group at once. A
group of N processes (e.g. the floor as 2 plain processes, each doing half) is timed from the
earliest start to the latest end on the system-wide monotonic clock, so N processes are measured
exactly like one process that uses N cores.

Runs are interleaved by round (floor, variant A, variant B, floor, ...), so a burst of load from
elsewhere on the machine hits all variants alike; each variant's figure is the median of its rounds.
Memory is PSS (proportional set size) from /proc/<pid>/smaps_rollup: shared pages (torch, numpy,
memory-mapped files) are split between the processes sharing them, so the PSS of a process tree sums
to what the tree really costs, and DataLoader workers are counted without double counting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
READY = "READY"
PACKAGES = ("cotrain", "numpy", "pillow", "av", "torch", "webdataset", "datasets", "pyarrow", "mcap",
            "mcap-ros2-support", "protobuf")


def import_fixtures() -> None:
    """Make `tests.fixtures.*` importable (the benchmarks write their data with the test fixture writers)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# --- memory -----------------------------------------------------------------------------------------


def pss_bytes(pid: int | str = "self") -> int:
    """PSS of one process in bytes (0 if it has exited)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def descendants(pid: int) -> list[int]:
    """All living descendants of `pid` (children of every thread, recursively)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for tid in tasks:
            try:
                kids = Path(f"/proc/{parent}/task/{tid}/children").read_text().split()
            except FileNotFoundError:
                continue
            for kid in map(int, kids):
                if kid not in out:
                    out.append(kid)
                    todo.append(kid)
    return out


def tree_pss_bytes() -> int:
    """PSS of this process plus all its descendants (DataLoader workers, process pools)."""
    me = os.getpid()
    return pss_bytes(me) + sum(pss_bytes(p) for p in descendants(me))


class PeakMemory:
    """Peak PSS of this process tree, sampled by a background thread every `interval_s` (and on demand).

    A thread rather than calls from the measured loop, so worker pools that the measured code starts
    and stops internally are seen too, and the loop itself is not slowed by /proc reads.
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s, self.peak = interval_s, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> int:
        now = tree_pss_bytes()
        self.peak = max(self.peak, now)
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakMemory:
        self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


# --- machine ----------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine_info() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        from PIL import features

        turbo = bool(features.check_feature("libjpeg_turbo"))
    except Exception:  # noqa: BLE001 - informational only
        turbo = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    import cotrain

    return {
        "git_commit": commit,
        "cotrain_module": str(Path(cotrain.__file__).parent),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "pillow_libjpeg_turbo": turbo,
        "packages": versions,
    }


# --- the variant side -------------------------------------------------------------------------------


def _live_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_seconds() -> float:
    """User + system CPU time of this process, its reaped children and its living descendants
    (DataLoader workers and pools are still alive when the clock stops)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = sum(_live_cpu_seconds(p) for p in descendants(os.getpid()))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime + live


class Clock:
    """Wall time on the system-wide monotonic clock (comparable across processes) and CPU time.

    CPU time is reported beside wall time because the benchmark machine may be shared: wall-clock
    rates absorb other people's load, CPU-time rates much less so.
    """

    def __init__(self) -> None:
        self.start, self.cpu0 = time.monotonic(), cpu_seconds()

    def stop(self) -> dict[str, float]:
        return {"start": self.start, "end": time.monotonic(), "cpu_seconds": round(cpu_seconds() - self.cpu0, 4)}


def wait_for_go() -> Clock:
    """Tell the parent set-up is done, block until it says go, then start the clock."""
    print(READY, flush=True)
    sys.stdin.readline()
    return Clock()


def write_child_result(path: str | Path, result: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(result))


# --- the parent side --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One measured configuration: `parts` processes of the script with `--variant name` + args.

    Each process gets `--part i --parts n` and does its share; `items_key` names the result field
    counted (frames, samples), summed over the processes.
    """

    name: str
    args: Sequence[str] = ()
    parts: int = 1
    items_key: str = "items"
    label: str | None = None  # the key of its results (default: name), to run one variant in several ways
    env: tuple[tuple[str, str], ...] = ()  # extra environment, e.g. PYTHONPATH of an earlier checkout

    @property
    def key(self) -> str:
        return self.label or self.name


def run_group(script: Path, variant: Variant, common_args: Sequence[str], workdir: Path,
              timeout_s: float = 900) -> dict[str, Any]:
    """Run one variant once (its `parts` processes started together); returns the merged result."""
    procs, paths = [], []
    for part in range(variant.parts):
        path = workdir / f"result-{variant.name}-{part}-{time.monotonic_ns()}.json"
        cmd = [sys.executable, str(script), "--variant", variant.name, "--part", str(part),
               "--parts", str(variant.parts), "--result", str(path), *common_args, *variant.args]
        env = {**os.environ, **dict(variant.env)}
        procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                      env=env))
        paths.append(path)
    try:
        for proc in procs:
            _await_ready(proc, variant.name)
        for proc in procs:  # start everyone's clock together
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            proc.wait(timeout=timeout_s)
            if proc.returncode != 0:
                raise RuntimeError(f"variant {variant.name} exited with {proc.returncode}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    results = [json.loads(p.read_text()) for p in paths]
    for p in paths:
        p.unlink()
    return merge_parts(results, variant.items_key)


def _await_ready(proc: subprocess.Popen[str], name: str) -> None:
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"variant {name} exited during set-up (code {proc.wait()})")
        if line.strip() == READY:
            return
        sys.stderr.write(f"  [{name}] {line}")


def merge_parts(results: Sequence[Mapping[str, Any]], items_key: str) -> dict[str, Any]:
    """One run of a variant from its processes: items summed, time from first start to last end."""
    start = min(r["start"] for r in results)
    end = max(r["end"] for r in results)
    items = sum(r[items_key] for r in results)
    cpu = sum(r["cpu_seconds"] for r in results)
    merged: dict[str, Any] = {items_key: items, "seconds": round(end - start, 4),
                              "rate": round(items / (end - start), 2) if end > start else None,
                              "cpu_seconds": round(cpu, 4), "cpu_rate": round(items / cpu, 2) if cpu > 0 else None}
    if len(results) == 1:
        merged.update({k: v for k, v in results[0].items() if k not in ("start", "end", "cpu_seconds", items_key)})
    else:
        merged["parts"] = [{k: v for k, v in r.items() if k not in ("start", "end")} for r in results]
        peaks = [r.get("peak_pss_bytes") for r in results]
        if all(p is not None for p in peaks):
            merged["peak_pss_bytes"] = sum(peaks)  # processes run together, so their peaks (nearly) coincide
    return merged


def run_rounds(script: Path, variants: Sequence[Variant], common_args: Sequence[str], workdir: Path,
               repeats: int = 3, log: Callable[[str], None] = print) -> dict[str, list[dict[str, Any]]]:
    """`repeats` rounds, each running every variant once in a fresh process group, in variant order."""
    runs: dict[str, list[dict[str, Any]]] = {v.key: [] for v in variants}
    for r in range(repeats):
        for v in variants:
            res = run_group(script, v, common_args, workdir)
            runs[v.key].append(res)
            log(f"round {r + 1}/{repeats} {v.key:<28} {res['rate']:>10} /s  ({res['seconds']:.2f} s wall, "
                f"{res['cpu_seconds']:.2f} s cpu)")
    return runs


def median_rate(runs: Sequence[Mapping[str, Any]], key: str = "rate") -> float:
    return float(statistics.median(r[key] for r in runs))


def median_of(runs: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return float(statistics.median(values)) if values else None


def ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 4) if num is not None and den else None


def write_results(name: str, doc: Mapping[str, Any], machine: Mapping[str, Any], out: str | Path | None = None) -> Path:
    """Write the result document (with `machine_info()` taken at the start) to `out` or
    benchmarks/results/<name>-<time>.json."""
    doc = {"benchmark": name, "machine": dict(machine), **doc}
    doc["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    if out is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        out = RESULTS_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def parse_with_variant_args(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Add the hidden options a benchmark passes to its own variant processes, parse, fill defaults."""
    p.add_argument("--variant", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--size", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--parts", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.size = args.size or ("quick" if args.quick else "full")
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args
