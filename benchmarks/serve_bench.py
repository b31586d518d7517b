"""Policy-server latency and throughput against in-process `Policy.predict`, same run, same observations.

A tiny-preset run (64 px, 2 cameras, horizon 8; 2 training steps: weights do not change the cost)
is served by `cotrain serve` in a subprocess, on CPU, and asked by openpi-client's
`WebsocketClientPolicy` (cotrain's own `PolicyClient` if openpi-client is not installed) from 1 and
8 client threads, each sending openpi-style observations (two 224x224 uint8 images, state [8],
prompt) one after another. Two servers: batched (`--max-batch 8 --batch-wait-ms 5`) and unbatched
(`--max-batch 1`). The reference, measured in this process in the same run: `Policy.predict` on
the same observations one at a time, and `Policy.predict_batch` on 8 at a time (the ceiling of a
batched server). Every process uses `--threads` torch threads (default 1: the machine is shared).

    python benchmarks/serve_bench.py            # 240 requests per setting, 5 interleaved rounds
    python benchmarks/serve_bench.py --quick    # 48 requests per setting, 2 rounds

Latency is per request as the client sees it (send to reply); throughput is requests answered per
second of wall time; CPU time per request adds the client process's and the server's (from /proc),
which shared-machine load distorts much less than wall time. Rounds run every setting in turn
(in-process, then each server at 1 and 8 clients), so load from elsewhere hits all alike. Ratios
compare each figure with in-process `predict` from the same run.
Results go to benchmarks/results/serve_bench-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, import_fixtures, machine_info, write_results  # noqa: E402

import_fixtures()

PROMPT = "pick the orange cube and place it in the box"
Ask = Callable[[dict[str, Any]], Any]


def train_tiny_run(work: Path) -> Path:
    from cotrain.train.config import TrainConfig
    from cotrain.train.loop import train
    from tests.fixtures.cotrain_data import write_dataset

    write_dataset(work / "robot", samples=64, per_shard=64, state_dim=8, action_dim=7, horizon=8,
                  cameras=("front", "wrist"), image_hw=(48, 64))
    mix = work / "mix.yaml"
    mix.write_text("name: bench\nseed: 0\nbatch_size: 4\nimage_size: 64\nsources:\n  robot: {path: robot}\n"
                   "phases:\n  - {name: p, steps: 100, weights: {robot: 1}}\n")
    train(TrainConfig(mixture=str(mix), model="tiny", steps=2, out=str(work / "run"), save_every=2, progress=False,
                      tensorboard=False, warmup_steps=1))
    return work / "run"


def observations(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    return [{"observation/image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
             "observation/wrist_image": rng.integers(0, 256, (224, 224, 3), dtype=np.uint8),
             "observation/state": rng.normal(size=8).astype(np.float32), "prompt": PROMPT} for _ in range(n)]


class Tally:
    """Latencies, wall time and CPU time of one setting, summed over the interleaved rounds."""

    def __init__(self) -> None:
        self.latencies_s: list[float] = []
        self.wall_s = self.client_cpu_s = self.server_cpu_s = 0.0
        self.requests = 0

    def summary(self) -> dict[str, Any]:
        ms = 1000 * np.asarray(self.latencies_s)
        out = {"requests": self.requests, "p50_ms": round(float(np.percentile(ms, 50)), 3),
               "p99_ms": round(float(np.percentile(ms, 99)), 3), "mean_ms": round(float(ms.mean()), 3),
               "throughput_per_s": round(self.requests / self.wall_s, 2),
               "cpu_ms_per_request": round(1000 * (self.client_cpu_s + self.server_cpu_s) / self.requests, 3)}
        if self.server_cpu_s:
            out["server_cpu_ms_per_request"] = round(1000 * self.server_cpu_s / self.requests, 3)
        return out


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def concurrent(asks: list[Ask], obs: list[dict[str, Any]], tally: Tally, server_pid: int | None) -> None:
    """Each of `asks` (one per client thread) sends its share of `obs` back to back; the wall clock
    runs from the common start to the last reply."""
    lock, barrier = threading.Lock(), threading.Barrier(len(asks) + 1)

    def work(ask: Ask, share: list[dict[str, Any]]) -> None:
        barrier.wait()
        mine = []
        for o in share:
            t0 = time.perf_counter()
            out = ask(o)
            mine.append(time.perf_counter() - t0)
            if np.asarray(out["actions"]).shape != (8, 7):
                raise RuntimeError(f"unexpected actions {np.asarray(out['actions']).shape}")
        with lock:
            tally.latencies_s.extend(mine)

    threads = [threading.Thread(target=work, args=(ask, obs[i::len(asks)])) for i, ask in enumerate(asks)]
    for t in threads:
        t.start()
    cpu0, srv0 = time.process_time(), process_cpu_s(server_pid) if server_pid else 0.0
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    tally.wall_s += time.perf_counter() - start
    tally.client_cpu_s += time.process_time() - cpu0
    tally.server_cpu_s += (process_cpu_s(server_pid) - srv0) if server_pid else 0.0
    tally.requests += len(obs)


def in_process_asks(run_dir: Path) -> tuple[Ask, Callable[[list[dict[str, Any]]], Any]]:
    """(predict one observation, predict_batch a list) on a Policy loaded in this process."""
    from cotrain.eval.policy import Observation, Policy

    policy = Policy.load(run_dir)

    def convert(o: dict[str, Any]) -> Observation:
        return Observation({"front": o["observation/image"], "wrist": o["observation/wrist_image"]},
                           o["observation/state"], o["prompt"], "robot")

    def one(o: dict[str, Any]) -> dict[str, Any]:
        images = {"front": o["observation/image"], "wrist": o["observation/wrist_image"]}
        return {"actions": policy.predict(images, o["observation/state"], o["prompt"], "robot")}

    return one, lambda batch: policy.predict_batch([convert(o) for o in batch])


def batches_of_8(predict_batch: Callable[[list[dict[str, Any]]], Any], obs: list[dict[str, Any]],
                 tally: Tally) -> None:
    cpu0, start = time.process_time(), time.perf_counter()
    for i in range(0, len(obs) - 7, 8):
        t0 = time.perf_counter()
        predict_batch(obs[i:i + 8])
        tally.latencies_s.append(time.perf_counter() - t0)
        tally.requests += 8
    tally.wall_s += time.perf_counter() - start
    tally.client_cpu_s += time.process_time() - cpu0


class Clients:
    """`count` open connections to a server, each as an `ask(observation) -> reply`; closed on exit.

    Connections live only while their setting is measured: an idle connected client makes the
    batcher wait `--batch-wait-ms` for it, which is not what a lone client sees.
    """

    def __init__(self, url: str, count: int) -> None:
        try:
            from openpi_client.websocket_client_policy import WebsocketClientPolicy

            self.clients: list[Any] = [WebsocketClientPolicy(url) for _ in range(count)]
        except ImportError:
            from cotrain.serve.client import PolicyClient

            self.clients = [PolicyClient(url) for _ in range(count)]
        self.asks: list[Ask] = [c.infer for c in self.clients]

    def __enter__(self) -> list[Ask]:
        return self.asks

    def __exit__(self, *exc: object) -> None:
        for c in self.clients:  # openpi-client 0.1.2 has no close(); its connection is `_ws`
            (c.close if hasattr(c, "close") else c._ws.close)()


def client_name() -> str:
    try:
        import openpi_client  # noqa: F401
    except ImportError:
        return "cotrain.serve.client.PolicyClient"
    return "openpi_client.WebsocketClientPolicy"


def start_server(run_dir: Path, threads: int, *flags: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "cotrain", "serve", str(run_dir), "--port", "0", *flags],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "serving on ws://" in line:
            # keep reading its log, so a full pipe never blocks the server
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, line.split("serving on ")[1].split()[0]
    raise RuntimeError(f"cotrain serve exited with {proc.wait()} before listening")


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(60)


SERVERS = {"batched": ("--max-batch", "8", "--batch-wait-ms", "5"), "unbatched": ("--max-batch", "1")}


def measure(run_dir: Path, obs: list[dict[str, Any]], rounds: int, threads: int) -> dict[str, Tally]:
    """Every setting once per round, interleaved, each round on its own slice of `obs`."""
    one, batch = in_process_asks(run_dir)
    procs = {name: start_server(run_dir, threads, *flags) for name, flags in SERVERS.items()}
    settings = [(name, c) for name in procs for c in (1, 8)]
    tallies = {key: Tally() for key in ["in_process_predict", "in_process_predict_batch_8",
                                        *(f"{n}_clients_{c}" for n, c in settings)]}
    try:
        for o in obs[:3]:  # warm-up: kernels, allocator
            one(o)
        size = len(obs) // rounds
        for r in range(rounds):
            part = obs[r * size:(r + 1) * size]
            concurrent([one], part, tallies["in_process_predict"], None)
            batches_of_8(batch, part, tallies["in_process_predict_batch_8"])
            for name, c in settings:
                proc, url = procs[name]
                with Clients(url, c) as asks:
                    for ask in asks:  # a connection's first request is not timed
                        ask(obs[0])
                    concurrent(asks, part, tallies[f"{name}_clients_{c}"], proc.pid)
    finally:
        for proc, _ in procs.values():
            stop_server(proc)
    return tallies


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="48 requests per setting instead of 240")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5; quick 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every process")
    parser.add_argument("--out", default=None, help="result JSON path")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rounds = args.rounds or (2 if args.quick else 5)
    n = rounds * (24 if args.quick else 48)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="serve_bench-") as tmp:
        results = {k: t.summary() for k, t in measure(train_tiny_run(Path(tmp)), observations(n), rounds,
                                                      args.threads).items()}
    base = results["in_process_predict"]
    ratios = {key: {"p50_latency_vs_predict": round(r["p50_ms"] / base["p50_ms"], 3),
                    "p99_latency_vs_predict": round(r["p99_ms"] / base["p99_ms"], 3),
                    "throughput_vs_predict": round(r["throughput_per_s"] / base["throughput_per_s"], 3),
                    "cpu_per_request_vs_predict": round(r["cpu_ms_per_request"] / base["cpu_ms_per_request"], 3)}
              for key, r in results.items() if key != "in_process_predict"}
    doc = {"size": "quick" if args.quick else "full", "preset": "tiny", "device": "cpu", "torch_threads": args.threads,
           "client": client_name(), "servers": {k: list(v) for k, v in SERVERS.items()}, "rounds": rounds,
           "image_hw": [224, 224], "cameras": 2, "model_image_size": 64, "horizon": 8, "results": results,
           "ratios": ratios, "note": "predict_batch_8 latency is per batch of 8"}
    print(f"results: {write_results('serve_bench', doc, machine, args.out)}")
    for key, r in results.items():
        print(f"{key:28s} p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms  {r['throughput_per_s']:7.2f}/s  "
              f"cpu {r['cpu_ms_per_request']:7.2f} ms/req")


if __name__ == "__main__":
    main()
