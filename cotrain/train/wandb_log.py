"""Weights & Biases as a metrics sink: the same scalars TensorBoard gets, plus the run's configuration.

`wandb` is an optional extra (`pip install 'cotrain[wandb]'`), imported only when `--wandb` is on.
Rank 0 opens one W&B run whose files live in `RUN/wandb/` (so `wandb sync RUN/wandb/offline-run-*`
uploads an offline run later). Attached at start: the config (the resolved TrainConfig, ModelConfig
and mixture spec) and, as run files, the mixture YAML as it was, `train_config.json`,
`model_config.json` and `norm_stats.json`.

The W&B run id is written to `RUN/wandb_run.json` *before* `wandb.init`, so a resumed run (even
one killed during start-up) logs into the same W&B run. A resume starts again at the checkpoint's
step, which can be before steps W&B already holds; those steps are not re-sent (W&B drops
non-increasing steps with a warning), and since resume is exact the values it holds are the same.
"""

from __future__ import annotations

import json
import secrets
import shutil
import string
from pathlib import Path
from typing import Any

from cotrain.errors import ConfigError
from cotrain.train.compat import write_json
from cotrain.train.setup import Run

__all__ = ["RUN_ID_FILE", "WandbSink", "open_wandb", "require_wandb"]

RUN_ID_FILE = "wandb_run.json"
_ATTACHED = ("train_config.json", "model_config.json", "norm_stats.json")


def require_wandb() -> Any:
    """The `wandb` module, or a one-line ConfigError naming the extra that provides it."""
    try:
        import wandb
    except ImportError:
        raise ConfigError("--wandb needs the wandb package: pip install 'cotrain[wandb]' "
                          "(or leave --wandb off)") from None
    return wandb


def _run_id(run_dir: Path) -> str:
    path = run_dir / RUN_ID_FILE
    if path.is_file():
        return str(json.loads(path.read_text(encoding="utf-8"))["id"])
    # An identifier, not data: unique per run by design, so no seeded generator. W&B's own ids are
    # 8 characters of [a-z0-9] (its generator is internal API).
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    write_json(path, {"id": run_id})
    return run_id


class WandbSink:
    """Logs each row's scalars with `step=` the optimiser step (see module docstring)."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self._next = int(run.step)  # W&B's next step: > 0 when it resumed a run that already has history

    def write(self, scalars: list[tuple[str, float]], step: int) -> None:
        if step < self._next:
            return
        self.run.log(dict(scalars), step=step)
        self._next = step + 1

    def close(self) -> None:
        self.run.finish()


def open_wandb(run: Run) -> WandbSink:
    """Start (or resume) the W&B run of the run directory and attach the run's configuration (rank 0 only)."""
    wandb = require_wandb()
    cfg, run_dir = run.cfg, run.run_dir
    config = {"train": cfg.model_dump(mode="json"), "model": run.model_cfg.model_dump(mode="json"),
              "mixture": run.mixture.spec.model_dump(mode="json")}
    wb = wandb.init(
        project=cfg.wandb.project, entity=cfg.wandb.entity, name=cfg.wandb.run_name or run_dir.resolve().name,
        group=cfg.wandb.group, tags=list(cfg.wandb.tags) or None, id=_run_id(run_dir), resume="allow",
        mode=cfg.wandb.mode, dir=str(run_dir), config=config, allow_val_change=True,
        # console="off": W&B would otherwise wrap stdout/stderr (the progress bar, `--json` output).
        settings=wandb.Settings(console="off", init_timeout=120),
    )
    files = Path(wb.dir)
    shutil.copyfile(cfg.mixture, files / "mixture.yaml")  # a copy: the YAML may be edited after the run
    for name in _ATTACHED:
        shutil.copyfile(run_dir / name, files / name)
    for name in ("mixture.yaml", *_ATTACHED):
        wb.save(str(files / name), base_path=str(files), policy="now")
    return WandbSink(wb)
