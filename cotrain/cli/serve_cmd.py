"""`cotrain serve RUN_DIR`: a websocket policy server speaking openpi's protocol (docs/serving.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from cotrain.cli.options import build_model
from cotrain.errors import ConfigError


def serve_cmd(
    run_dir: Path = typer.Argument(..., help="Run directory (its latest checkpoint) or one checkpoint directory."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0: any free port; the bound one is printed)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    dtype: str = typer.Option("float32", "--dtype", help="Weight dtype: float32, bfloat16 or float16."),
    obs_map: Path | None = typer.Option(None, "--obs-map", help="YAML mapping observation keys to cameras, "
                                           "state and prompt (default: openpi's common keys)."),
    embodiment: str | None = typer.Option(None, "--embodiment", help="Training source or embodiment to drive "
                                             "(default: the run's only one with actions)."),
    max_batch: int = typer.Option(8, "--max-batch", help="Most concurrent requests run as one forward pass."),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", help="Longest a request waits for others."),
    seed: int = typer.Option(0, "--seed", help="Noise seed of requests that send none."),
    flow_steps: int | None = typer.Option(None, "--flow-steps", help="Euler steps (default: the model's)."),
) -> None:
    """Serve a trained run to openpi clients (`openpi_client.websocket_client_policy.WebsocketClientPolicy`)."""
    import logging

    logging.getLogger("websockets").setLevel(logging.WARNING)  # its per-connection lines repeat ours
    try:
        from cotrain.serve.batching import BatchConfig
        from cotrain.serve.obs_map import ObsMapSpec, load_obs_map
        from cotrain.serve.server import ServeConfig, build_server, serve_forever
    except ImportError as exc:
        raise ConfigError(f"cotrain serve needs the serve extra ({exc}): pip install 'cotrain[serve]'") from None

    batch = build_model(BatchConfig, {"max_batch": max_batch, "batch_wait_ms": batch_wait_ms})
    cfg = build_model(ServeConfig, {"host": host, "port": port, "device": device, "dtype": dtype, "seed": seed,
                                    "flow_steps": flow_steps, "batch": batch})
    if not run_dir.exists():
        raise ConfigError(f"run directory {run_dir} not found")
    server = build_server(run_dir, cfg, load_obs_map(obs_map) if obs_map else ObsMapSpec(), embodiment)
    meta = server.metadata()
    typer.echo(f"{run_dir} (step {meta['step']}) drives {meta['source']!r}: actions [{meta['action_horizon']}, "
               f"{meta['action_dim']}]; observation keys {meta['observation_keys']}", err=True)
    try:
        serve_forever(server, lambda h, p: typer.echo(f"serving on ws://{h}:{p} (Ctrl-C to stop)", err=True))
    except KeyboardInterrupt:  # the way a server is stopped, not a failure (nothing to resume)
        pass
    typer.echo("stopped", err=True)
