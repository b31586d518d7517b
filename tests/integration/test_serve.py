"""`cotrain serve` against the real openpi client (openpi-client 0.1.2 from PyPI) on 127.0.0.1.

A tiny run is trained once per module; servers run in a thread on a free port (port 0).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import websockets
import yaml
from openpi_client import msgpack_numpy
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.sync.client import connect

from cotrain.dataset import keys
from cotrain.errors import ConfigError, DataError
from cotrain.eval.policy import Observation, Policy
from cotrain.serve.batching import BatchConfig
from cotrain.serve.codec import pack, unpack
from cotrain.serve.obs_map import ObsMapSpec, load_obs_map
from cotrain.serve.server import ServeConfig, build_server, running_server
from cotrain.train.config import TrainConfig
from cotrain.train.loop import train
from tests.fixtures.cotrain_data import write_dataset
from tests.helpers import ROOT
from tests.unit.train.test_train import FAST, write_mix

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("serve")
    write_dataset(root / "robot", samples=40, state_dim=4, action_dim=3, horizon=4, cameras=("front", "wrist"))
    write_dataset(root / "other", samples=24, state_dim=2, action_dim=2, horizon=3, tag=2, embodiment="arm2")
    write_dataset(root / "vl", samples=24, modality=keys.VISION_LANGUAGE, cameras=("image",))
    # the simulator's arm (camera `top`, state [4], actions [4]) for the closed-loop `sim eval --server` test
    write_dataset(root / "sim_arm", samples=24, state_dim=4, action_dim=4, horizon=4, cameras=("top",),
                  embodiment="sim_arm", tag=3)
    sources = {"robot": {"path": "robot"}, "other": {"path": "other"}, "vl": {"path": "vl"},
               "sim_arm": {"path": "sim_arm"}}
    mix = write_mix(root, sources=sources,
                    phases=[{"name": "a", "steps": 100, "weights": {"robot": 1, "other": 1, "vl": 1, "sim_arm": 1}}])
    train(TrainConfig(mixture=str(mix), model="tiny", steps=3, out=str(root / "run"), save_every=3, **FAST))
    torch.set_num_threads(threads)
    return root / "run"


@pytest.fixture(scope="module")
def policy(run_dir: Path) -> Policy:
    return Policy.load(run_dir)


def _obs(i: int, prompt: str = "pick up the cube", seed: int | None = None) -> dict[str, Any]:
    """An openpi-style observation for embodiment 'robot' (cameras front, wrist; state [4])."""
    rng = np.random.default_rng(i)
    obs = {"observation/image": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
           "observation/wrist_image": rng.integers(0, 256, (24, 24, 3), dtype=np.uint8),
           "observation/state": rng.normal(size=4).astype(np.float32), "prompt": prompt}
    return obs if seed is None else {**obs, "noise_seed": seed}


def _predict(policy: Policy, obs: dict[str, Any], seed: int = 0) -> np.ndarray:
    images = {"front": obs["observation/image"], "wrist": obs["observation/wrist_image"]}
    return policy.predict(images, obs["observation/state"], obs["prompt"], "robot", seed=seed)


def _server(run_dir: Path, embodiment: str = "robot", obs_map: ObsMapSpec = ObsMapSpec(), **cfg: Any) -> Any:  # noqa: B008  (a frozen config: immutable)
    return build_server(run_dir, ServeConfig(port=0, **cfg), obs_map, embodiment)


def test_codec_speaks_openpi_msgpack_numpy_and_never_unpickles() -> None:
    msg = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.int64(7), "s": "text", "n": [1, 2.5]}
    theirs = msgpack_numpy.unpackb(pack(msg))
    np.testing.assert_array_equal(theirs["a"], msg["a"])
    assert theirs["a"].dtype == np.float32 and theirs["b"] == 7 and theirs["s"] == "text"
    ours = unpack(msgpack_numpy.packb(msg))
    np.testing.assert_array_equal(ours["a"], msg["a"])
    assert ours["b"].dtype == np.int64 and ours["n"] == [1, 2.5]
    with pytest.raises(TypeError, match="dtype object"):
        pack({"x": np.array([{}], dtype=object)})
    forged = msgpack.packb({"x": {b"__ndarray__": True, b"data": b"\x80\x04N.", b"dtype": "|O", b"shape": [1]}})
    with pytest.raises(DataError, match=r"^message: array dtype object is not allowed"):
        unpack(forged)
    short = msgpack.packb({"x": {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "<f4", b"shape": [3]}})
    with pytest.raises(DataError, match=r"array data \(8 bytes\) does not fit shape \[3\] of float32"):
        unpack(short)
    with pytest.raises(DataError, match="not a msgpack-numpy frame"):
        unpack(b"\xc1garbage")


def test_predict_batch_equals_per_observation_predict(policy: Policy) -> None:
    observations = []
    for i, prompt in enumerate(["pick", "push the red block to the left edge", "place it"]):
        obs = _obs(i, prompt)
        images = {"front": obs["observation/image"], "wrist": obs["observation/wrist_image"]}
        observations.append(Observation(images, obs["observation/state"], prompt, "robot", seed=10 + i))
    observations.append(Observation([np.zeros((8, 8, 3), np.uint8)], [0.5, -1.0], "go", "other", seed=3))
    batched = policy.predict_batch(observations)
    assert [c.shape for c in batched] == [(4, 3), (4, 3), (4, 3), (4, 2)]
    for obs, chunk in zip(observations, batched):
        alone = policy.predict(obs.images, obs.state, obs.instruction, obs.embodiment, seed=obs.seed)
        np.testing.assert_allclose(chunk, alone, rtol=1e-5, atol=1e-5)
    # a batch of one is exactly `predict`, and another seed gives another chunk
    assert np.array_equal(policy.predict_batch(observations[:1])[0], _predict(policy, _obs(0, "pick"), seed=10))
    assert not np.allclose(batched[0], _predict(policy, _obs(0, "pick"), seed=11))
    assert policy.predict_batch([]) == []


def test_openpi_client_gets_metadata_and_actions_in_robot_units(run_dir: Path, policy: Policy) -> None:
    with running_server(_server(run_dir, seed=5)) as port:
        client = WebsocketClientPolicy("127.0.0.1", port)
        meta = client.get_server_metadata()
        assert meta["server"] == "cotrain" and meta["source"] == "robot" and meta["embodiment"] == "bot"
        assert (meta["action_horizon"], meta["action_dim"], meta["step"]) == (4, 3, 3)
        assert (meta["run"], meta["checkpoint"]) == ("run", "step_00000003")
        assert meta["action_names"] == ["a0", "a1", "a2"] and meta["state_names"] == ["s0", "s1", "s2", "s3"]
        assert meta["observation_keys"] == {"cameras": {"front": "observation/image",
                                                        "wrist": "observation/wrist_image"},
                                            "state": "observation/state", "prompt": "prompt", "seed": "noise_seed"}
        out = client.infer(_obs(1, seed=7))
        assert out["actions"].dtype == np.float32 and out["actions"].shape == (4, 3)
        assert np.array_equal(out["actions"], _predict(policy, _obs(1), seed=7))
        # no seed in the observation: the server's --seed (5); actions are denormalised, like predict's
        assert np.array_equal(client.infer(_obs(2))["actions"], _predict(policy, _obs(2), seed=5))
        # channels-first and [0, 1] float images, as openpi's ALOHA and some LIBERO clients send them
        obs = _obs(3, seed=1)
        chw = {**obs, "observation/image": np.moveaxis(obs["observation/image"], -1, 0),
               "observation/wrist_image": obs["observation/wrist_image"].astype(np.float32) / 255}
        assert np.array_equal(client.infer(chw)["actions"], _predict(policy, obs, seed=1))


@pytest.mark.parametrize(("change", "error"), [
    ({"observation/state": None}, "observation, key 'observation/state': missing (state of 'robot'); the observation "
                                  "has keys: noise_seed, observation/image, observation/wrist_image, prompt"),
    ({"observation/state": np.zeros((2, 2))}, "observation, key 'observation/state': expected the state as 4 "
                                              "numbers [4]; got float64 [2, 2]"),
    ({"observation/image": np.zeros((8, 8), np.uint8)}, "observation, key 'observation/image': expected an image, "
                                                        "uint8 [H, W, 3] or [3, H, W] (or floats in [0, 1]); got "
                                                        "uint8 [8, 8]"),
    ({"observation/wrist_image": np.full((4, 4, 3), 2.0)}, "observation, key 'observation/wrist_image': image of "
                                                          "dtype float64 must be uint8, or floats in [0, 1]"),
    ({"prompt": 3}, "observation, key 'prompt': expected the prompt as a string; got int"),
    ({"noise_seed": -1}, "observation, key 'noise_seed': expected the noise seed as an int in [0, 2**63); got -1"),
])
def test_bad_observation_is_reported_to_the_client_then_closed(run_dir: Path, change: dict[str, Any],
                                                               error: str) -> None:
    obs = {k: v for k, v in {**_obs(0, seed=1), **change}.items() if v is not None}
    with running_server(_server(run_dir)) as port:
        client = WebsocketClientPolicy("127.0.0.1", port)
        with pytest.raises(RuntimeError) as info:
            client.infer(obs)
        assert str(info.value) == f"Error in inference server:\n{error}"
        with pytest.raises(websockets.ConnectionClosed):
            client.infer(_obs(0))
        # the server itself keeps serving
        assert WebsocketClientPolicy("127.0.0.1", port).infer(_obs(0))["actions"].shape == (4, 3)


def test_protocol_errors_send_text_then_close_with_a_code(run_dir: Path) -> None:
    with running_server(_server(run_dir)) as port:
        for frame, message in [(b"\xc1", "message: not a msgpack-numpy frame"),
                               (pack([1, 2]), "observation: expected a map of keys to values, got list"),
                               ("hello", "message: expected a binary msgpack-numpy frame, got a text frame")]:
            with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
                unpack(ws.recv(10))
                ws.send(frame)
                reply = ws.recv(10)
                assert isinstance(reply, str) and reply.startswith(message) and "\n" not in reply
                with pytest.raises(websockets.ConnectionClosedError) as closed:
                    ws.recv(10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200


def test_a_server_bug_is_reported_in_one_line_with_code_1011(run_dir: Path) -> None:
    server = _server(run_dir)

    def broken(observations: Any, steps: Any = None) -> Any:
        raise ValueError("boom")

    server.policy.predict_batch = broken  # type: ignore[method-assign]  # patched to simulate a failing policy
    with running_server(server) as port:
        with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
            unpack(ws.recv(10))
            ws.send(pack(_obs(0)))
            assert ws.recv(10) == "internal server error: ValueError: boom"
            with pytest.raises(websockets.ConnectionClosedError) as closed:
                ws.recv(10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011


def test_concurrent_clients_are_batched_into_one_forward_pass(run_dir: Path, policy: Policy) -> None:
    server = _server(run_dir, batch=BatchConfig(max_batch=4, batch_wait_ms=30_000))
    with running_server(server) as port:
        clients = [WebsocketClientPolicy("127.0.0.1", port) for _ in range(4)]
        prompts = ["pick", "push the blue one", "place", "pick up the green cylinder"]
        results: dict[int, np.ndarray] = {}
        start = threading.Barrier(4)

        def ask(i: int) -> None:
            start.wait()
            results[i] = clients[i].infer(_obs(i, prompts[i], seed=i))["actions"]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert server.batcher.stats.passes == 1 and server.batcher.stats.sizes == {4: 1}
        for i in range(4):
            np.testing.assert_allclose(results[i], _predict(policy, _obs(i, prompts[i]), seed=i), rtol=1e-5, atol=1e-5)
    # a lone client never waits for company (a 60 s wait would time the join out)
    server = _server(run_dir, batch=BatchConfig(max_batch=8, batch_wait_ms=60_000))
    with running_server(server) as port:
        lone = threading.Thread(target=WebsocketClientPolicy("127.0.0.1", port).infer, args=(_obs(0),))
        lone.start()
        lone.join(30)
        assert not lone.is_alive() and server.batcher.stats.sizes == {1: 1}
    # the wait is bounded: with another client connected but silent, a request goes alone after 50 ms
    server = _server(run_dir, batch=BatchConfig(max_batch=8, batch_wait_ms=50))
    with running_server(server) as port:
        _silent, client = WebsocketClientPolicy("127.0.0.1", port), WebsocketClientPolicy("127.0.0.1", port)
        assert client.infer(_obs(0))["actions"].shape == (4, 3)
        assert server.batcher.stats.sizes == {1: 1} and server.batcher.connected == 2


def test_obs_map_yaml_renames_keys_per_embodiment(run_dir: Path, policy: Policy, tmp_path: Path) -> None:
    path = tmp_path / "aloha.yaml"
    path.write_text(yaml.safe_dump({"embodiment": "other", "cameras": ["cam_high"], "state": "qpos",
                                    "prompt": "task", "default_prompt": "go", "seed": None}))
    image, state = np.full((16, 16, 3), 90, np.uint8), np.array([0.25, -0.5])
    with running_server(_server(run_dir, embodiment=None, obs_map=load_obs_map(path))) as port:
        client = WebsocketClientPolicy("127.0.0.1", port)
        meta = client.get_server_metadata()
        assert meta["source"] == "other" and meta["observation_keys"]["cameras"] == {"front": "cam_high"}
        out = client.infer({"cam_high": image, "qpos": state, "noise_seed": 9})  # seed key off: server seed 0
        assert np.array_equal(out["actions"], policy.predict([image], state, "go", "other", seed=0))
        assert out["actions"].shape == (4, 2)
    bad = tmp_path / "bad.yaml"
    for doc, error in [({"camera": ["x"]}, f"--obs-map {bad}: camera: unknown field (did you mean 'cameras'?)"),
                       ({"cameras": {"top": "x"}}, "obs map cameras: 'top' is not a camera of 'robot'; cameras: "
                                                   "front, wrist"),
                       ({"cameras": ["a", "b", "c"]}, "obs map cameras: 3 keys, but 'robot' has 2 camera"),
                       ({"embodiment": "arm2"}, "--embodiment 'robot' and the obs map's embodiment 'arm2' differ")]:
        bad.write_text(yaml.safe_dump(doc))
        with pytest.raises(ConfigError, match=re.escape(error)):
            _server(run_dir, obs_map=load_obs_map(bad))
    with pytest.raises(ConfigError, match="several sources with actions .*other, robot, sim_arm.*--embodiment"):
        _server(run_dir, embodiment=None)
    with pytest.raises(ConfigError, match=re.escape("--device 'gpu': not a torch device (cpu, cuda, cuda:N)")):
        _server(run_dir, device="gpu")
    with pytest.raises(ConfigError, match=re.escape("--device 'cuda:99': ")):  # no CUDA here, or not 100 GPUs
        _server(run_dir, device="cuda:99")


def test_sim_eval_through_the_server_equals_in_process(run_dir: Path) -> None:
    from typer.testing import CliRunner

    from cotrain.cli.app import app
    from cotrain.lab.sim.evaluate import EvalConfig, evaluate_policy, load_run_policy, served_policy

    cfg = EvalConfig(episodes=2, splits=("seen", "unseen"), image_size=32)
    local = evaluate_policy(load_run_policy(run_dir, "sim_arm"), cfg)
    with running_server(_server(run_dir, embodiment="sim_arm")) as port:
        args = ["sim", "eval", "--server", f"ws://127.0.0.1:{port}", "--episodes", "2", "--splits", "seen,unseen",
                "--image-size", "32", "--json"]
        proc = CliRunner().invoke(app, args)
        assert proc.exit_code == 0, proc.output
        served = json.loads(proc.output)
        assert served["policy"] == f"ws://127.0.0.1:{port}"
    assert served["episodes"] == local["episodes"] and served["overall"] == local["overall"]
    assert sum(r["steps"] for r in local["episodes"]) > 2 * cfg.replan_steps  # several chunks per episode
    with running_server(_server(run_dir, embodiment="robot")) as port:
        with pytest.raises(ConfigError, match="drives 'robot' \\(embodiment 'bot'\\), not --embodiment 'sim_arm'"):
            evaluate_policy(served_policy(f"ws://127.0.0.1:{port}", "sim_arm"), cfg)
    with pytest.raises(ConfigError, match="--server ws://127.0.0.1:1: cannot connect to a policy server"):
        served_policy("ws://127.0.0.1:1", "sim_arm")


@pytest.mark.slow
def test_cli_serves_until_interrupted(run_dir: Path, policy: Policy) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "cotrain", "serve", str(run_dir), "--port", "0",
                             "--embodiment", "robot"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stderr is not None
        line = ""
        while "serving on ws://" not in line:
            line = proc.stderr.readline()
            assert line, "the server exited before listening"
        url = line.split("serving on ")[1].split()[0]
        out = WebsocketClientPolicy(url).infer(_obs(4))
        assert np.array_equal(out["actions"], _predict(policy, _obs(4)))
        proc.send_signal(signal.SIGTERM)  # as service managers stop it; Ctrl-C (SIGINT) also exits 0
        assert proc.wait(60) == 0 and proc.stderr.read().strip().endswith("stopped")
    finally:
        proc.kill()
        proc.wait()
    bad = subprocess.run([sys.executable, "-m", "cotrain", "serve", str(run_dir), "--max-batch", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: --max-batch 0: Input should be greater")


@pytest.mark.slow
def test_serve_bench_quick_writes_consistent_results(tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_bench.py"), "--quick", "--rounds", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "serve_bench" and doc["client"] == "openpi_client.WebsocketClientPolicy"
    results, base = doc["results"], doc["results"]["in_process_predict"]
    assert set(results) == {"in_process_predict", "in_process_predict_batch_8", "batched_clients_1",
                            "batched_clients_8", "unbatched_clients_1", "unbatched_clients_8"}
    for key, r in results.items():
        assert r["requests"] == 24 and 0 < r["p50_ms"] <= r["p99_ms"] and r["throughput_per_s"] > 0, key
        if key != "in_process_predict":
            assert doc["ratios"][key]["throughput_vs_predict"] == pytest.approx(
                r["throughput_per_s"] / base["throughput_per_s"], rel=1e-2)
    assert results["batched_clients_8"]["server_cpu_ms_per_request"] > 0
