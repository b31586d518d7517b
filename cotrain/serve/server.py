"""A websocket policy server that speaks openpi's protocol, so `openpi_client`'s `WebsocketClientPolicy` connects.

The protocol, as openpi's `WebsocketPolicyServer` and openpi-client 0.1.2 implement it: on connect
the server sends one msgpack-numpy frame of metadata; then each binary frame from the client is an
observation dict, answered by one binary frame `{"actions": float32 [H, Da], "server_timing": ...}`.
On an error the server sends a *text* frame (openpi sends a traceback; we send the one-line error,
which the client raises as `RuntimeError("Error in inference server:\\n...")`) and closes the
connection: code 1003 (unsupported data) for a bad observation, 1011 (internal error) for a bug,
whose traceback stays in the server's log. `GET /healthz` answers 200 like openpi's server.

Actions are in the embodiment's units (denormalised with the run's stats), exactly what
`Policy.predict` returns for the same observation and noise seed. Concurrent requests are batched
(batching.py); observation keys are mapped per embodiment (obs_map.py).
"""

from __future__ import annotations

import asyncio
import http
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import websockets
from pydantic import BaseModel, ConfigDict, Field
from websockets.asyncio.server import Request, Response, ServerConnection
from websockets.frames import CloseCode

from cotrain.errors import ConfigError, CotrainError, DataError
from cotrain.eval.policy import Observation, Policy
from cotrain.serve.batching import BatchConfig, Batcher
from cotrain.serve.codec import MAX_MESSAGE_BYTES, pack, unpack
from cotrain.serve.obs_map import ObservationMap, ObsMapSpec, bind_obs_map

__all__ = ["PolicyServer", "ServeConfig", "build_server", "running_server", "serve_forever"]

log = logging.getLogger(__name__)



class ServeConfig(BaseModel):
    """Where and how to serve; `batch` groups concurrent requests (BatchConfig)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Interface to listen on (0.0.0.0: every interface).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0: any free port).")
    device: str = Field("cpu", description="Torch device of the model: cpu, cuda, cuda:N.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weight dtype.")
    seed: int = Field(0, ge=0, description="Noise seed of requests that send none (as Policy.predict's seed).")
    flow_steps: int | None = Field(None, ge=1, description="Euler steps (default: the model's).")
    batch: BatchConfig = BatchConfig()


class PolicyServer:
    """Serves one embodiment of a loaded `Policy` (see module docstring); `serve()` runs until `shutdown()`."""

    def __init__(self, policy: Policy, obs_map: ObservationMap, cfg: ServeConfig = ServeConfig()) -> None:  # noqa: B008  (a frozen config: immutable)
        self.policy, self.obs_map, self.cfg = policy, obs_map, cfg
        self.batcher = Batcher(self._predict_batch, cfg.batch)
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def metadata(self) -> dict[str, Any]:
        """Sent to every client on connect: what the server drives and which keys it reads."""
        run, source = self.policy.run, self.policy.run.norm["sources"][self.obs_map.source]
        # names, not paths: a server on 0.0.0.0 need not tell the network its file system
        return {"server": "cotrain", "run": run.checkpoint.parent.parent.name, "checkpoint": run.checkpoint.name,
                "step": run.step,
                "source": self.obs_map.source, "embodiment": self.obs_map.embodiment,
                "action_horizon": run.cfg.horizon,
                "action_dim": len(source["action_names"]), "action_names": list(source["action_names"]),
                "state_names": list(source["state_names"]), "image_size": run.cfg.image_size,
                "observation_keys": self.obs_map.describe(), "max_batch": self.cfg.batch.max_batch}

    def _predict_batch(self, observations: Sequence[Observation]) -> list[np.ndarray]:
        return self.policy.predict_batch(observations, steps=self.cfg.flow_steps)

    async def serve(self, ready: Callable[[str, int], None] | None = None) -> None:
        """Listen on cfg.host:cfg.port until `shutdown()`; `ready(host, port)` is called once bound."""
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self.batcher.start()
        try:
            try:
                listening = await websockets.serve(self._handle, self.cfg.host, self.cfg.port, compression=None,
                                                   max_size=MAX_MESSAGE_BYTES, process_request=_health_check)
            except OSError as exc:
                raise ConfigError(f"cannot listen on {self.cfg.host}:{self.cfg.port}: {exc.strerror or exc}") from None
            async with listening as server:
                self.port = int(next(iter(server.sockets)).getsockname()[1])
                log.debug("serving %s (step %d, %s) on ws://%s:%d", self.policy.run.checkpoint, self.policy.run.step,
                          self.obs_map.source, self.cfg.host, self.port)
                if ready is not None:
                    ready(self.cfg.host, self.port)
                await self._stop.wait()
        finally:
            await self.batcher.stop()

    def shutdown(self) -> None:
        """Stop `serve()`; safe to call from any thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def _handle(self, ws: ServerConnection) -> None:
        log.info("connection from %s", ws.remote_address)
        self.batcher.connected += 1
        try:
            await ws.send(pack(self.metadata()))
            async for message in ws:
                await ws.send(pack(await self._reply(message)))
        except websockets.ConnectionClosed:
            pass
        except CotrainError as exc:
            log.warning("request from %s refused: %s", ws.remote_address, exc)
            await _report(ws, str(exc), CloseCode.UNSUPPORTED_DATA)
        except Exception as exc:  # noqa: BLE001  (a bug: the client hears of it, the log keeps the traceback)
            log.exception("request from %s failed", ws.remote_address)
            await _report(ws, f"internal server error: {type(exc).__name__}: {exc}", CloseCode.INTERNAL_ERROR)
        finally:
            self.batcher.connected -= 1
        log.info("connection from %s closed", ws.remote_address)

    async def _reply(self, message: str | bytes) -> dict[str, Any]:
        if isinstance(message, str):
            raise DataError("message", "expected a binary msgpack-numpy frame, got a text frame")
        observation = self.obs_map.observation(unpack(message))
        start = time.perf_counter()
        actions = await self.batcher.submit(observation)
        return {"actions": np.asarray(actions, np.float32),
                "server_timing": {"infer_ms": (time.perf_counter() - start) * 1000}}


async def _report(ws: ServerConnection, message: str, code: CloseCode) -> None:
    """The protocol's error path: a text frame with the message, then close."""
    try:
        await ws.send(message)
        await ws.close(code=code, reason="error reported in the previous frame")
    except websockets.ConnectionClosed:
        pass


def _health_check(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None


def build_server(run_dir: str | Path, cfg: ServeConfig = ServeConfig(), obs_map: ObsMapSpec = ObsMapSpec(),  # noqa: B008  (a frozen config: immutable)
                 embodiment: str | None = None) -> PolicyServer:
    """Load a run (or checkpoint) directory and bind the observation map (errors before anything listens)."""
    dtype = None if cfg.dtype == "float32" else getattr(torch, cfg.dtype)
    policy = Policy.load(run_dir, _device(cfg.device), dtype)
    return PolicyServer(policy, bind_obs_map(obs_map, policy.run.norm, embodiment=embodiment,
                                             default_seed=cfg.seed), cfg)


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: not a torch device (cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r}: this torch sees no CUDA device; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def serve_forever(server: PolicyServer, ready: Callable[[str, int], None] | None = None) -> None:
    """Run `server` in this (main) thread until Ctrl-C (KeyboardInterrupt) or SIGTERM (a clean return)."""

    async def main() -> None:
        # SIGTERM is how service managers and `docker stop` ask a server to stop
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.shutdown)
        await server.serve(ready)

    asyncio.run(main())


@contextmanager
def running_server(server: PolicyServer, timeout_s: float = 60.0) -> Iterator[int]:
    """Serve in a background thread (tests, benchmarks, notebooks); yields the bound port, stops on exit."""
    bound = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(server.serve(lambda host, port: bound.set()))
        except BaseException as exc:  # noqa: BLE001  (handed to the caller's thread)
            failure.append(exc)
            bound.set()

    thread = threading.Thread(target=main, name="cotrain-serve", daemon=True)
    thread.start()
    if not bound.wait(timeout_s) or failure:
        server.shutdown()
        raise failure[0] if failure else TimeoutError(f"server did not start within {timeout_s} s")
    try:
        assert server.port is not None
        yield server.port
    finally:
        server.shutdown()
        thread.join(timeout_s)
