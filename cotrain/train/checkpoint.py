"""Atomic checkpoints: model and optimizer as safetensors, everything else as JSON. No pickle.

Layout of `RUN/checkpoints/step_00001000/`:

    model.safetensors              full (unsharded) weights, names as in VLA.state_dict()
    optimizer.safetensors          AdamW moments/steps, keys "<param name>::<exp_avg|exp_avg_sq|step>"
    optimizer.json                 param groups (hyper-parameters and parameter names)
    trainer_state.json             step, world size, global batch, training seconds so far
    loader_rank<r>.json            each rank's MixtureLoader.state_dict()
    rng_rank<r>.safetensors        each rank's torch RNG state (CPU, and CUDA when used)
    model_config.json train_config.json norm_stats.json tokenizer.json   copied from the run

Ranks write into `.tmp_step_...`; after a barrier rank 0 renames it to its final name (one atomic
`rename`), then rewrites `LATEST` atomically and prunes old checkpoints. A run killed at any
moment leaves either the previous checkpoint or the new one, never a partial one under a final name;
a write that fails (full disk, quota) removes the temporary folder and stops with one line naming the
file.
Model and optimizer state go through torch.distributed.checkpoint's state-dict API with
`full_state_dict`, so DDP, FSDP2 and single-process runs write the same files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, cast

import torch

from cotrain.atomic import WriteError, errno_of, write_error, write_text_atomic, writing
from cotrain.dist import DistInfo
from cotrain.errors import ConfigError, DataError

__all__ = ["latest_checkpoint", "load_checkpoint", "load_model_weights", "save_checkpoint"]

CHECKPOINTS = "checkpoints"
LATEST = "LATEST"
ASSETS = ("model_config.json", "train_config.json", "norm_stats.json", "tokenizer.json")
_HINT = "free some space and continue with --resume (earlier checkpoints are intact)"
STEP_DIR = re.compile(r"step_(\d{8})")


def _options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def _barrier(info: DistInfo) -> None:
    if info.is_distributed:
        import torch.distributed as dist

        dist.barrier()


def step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step_{step:08d}"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint named by LATEST (or, if that file is gone, the highest complete step directory).

    LATEST must name a `step_NNNNNNNN` directory of this run's own `checkpoints/` folder: a value that
    is not JSON, or that points elsewhere (another run's folder, through `..` or a symlink), is a
    DataError rather than a resume from someone else's weights."""
    root = Path(run_dir) / CHECKPOINTS
    latest = root / LATEST
    if latest.is_file():
        name = read_json(latest).get("dir")
        if not isinstance(name, str) or not STEP_DIR.fullmatch(name):
            raise DataError(latest, f"'dir' is {name!r}; expected a checkpoint folder name like 'step_00001000' "
                                    f"(delete LATEST to resume from the newest complete checkpoint)")
        path = root / name
        if path.is_symlink() or (path.exists() and path.resolve().parent != root.resolve()):
            raise DataError(latest, f"names {name!r}, which is a link out of {root}; a run resumes only from "
                                    f"its own checkpoints")
        if path.is_dir():
            return path
    steps = sorted(p for p in root.glob("step_*") if STEP_DIR.fullmatch(p.name) and not p.is_symlink()
                   and (p / "trainer_state.json").is_file()) if root.is_dir() else []
    return steps[-1] if steps else None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a run or checkpoint; a missing, unreadable or non-object file is a DataError."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "missing (an incomplete or damaged checkpoint?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not readable JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(path, f"expected a JSON object, got {type(raw).__name__}")
    return raw


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file; missing or damaged (truncated, not safetensors) is a one-line DataError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise DataError(path, "missing (an incomplete or damaged checkpoint?)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(path, f"unreadable safetensors file ({exc}); the checkpoint is damaged") from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=meta)
    except SafetensorError as exc:  # its I/O errors arrive as text ("... (os error 28)")
        code = errno_of(str(exc))
        if code is None:
            raise
        raise write_error(path, OSError(code, os.strerror(code)), _HINT) from None
    with writing(path, _HINT), open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _optimizer_files(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    # DCP types the result as a union over every value kind; this reads its `state` and `param_groups`.
    osd = cast("dict[str, Any]", get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True)))
    tensors = {f"{name}::{key}": torch.as_tensor(value) for name, st in osd.get("state", {}).items()
               for key, value in st.items()}
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in osd.get("param_groups", [])]
    return tensors, {"param_groups": groups}


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    loader_state: dict[str, Any], info: DistInfo, keep: int, extra: dict[str, Any]) -> Path:
    """Write the checkpoint of `step` (all ranks call this; `model` is the unwrapped module).

    A write that fails (a full disk, say) raises WriteError naming the file, after removing the
    temporary folder: the previous checkpoint and LATEST stay as they were.
    """
    final, tmp = step_dir(run_dir, step), run_dir / CHECKPOINTS / f".tmp_step_{step:08d}"
    if info.is_main:
        if tmp.is_symlink():  # never write (or rmtree) through a link left at our temporary name
            tmp.unlink()
        shutil.rmtree(tmp, ignore_errors=True)
        with writing(tmp, _HINT):
            tmp.mkdir(parents=True)
    _barrier(info)
    try:
        _write_files(run_dir, tmp, step, model, optimizer, loader_state, info, extra)
    except WriteError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _barrier(info)
    if info.is_main:
        _commit(run_dir, tmp, final, keep)
    _barrier(info)
    return final


def _write_files(run_dir: Path, tmp: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 loader_state: dict[str, Any], info: DistInfo, extra: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    write_text_atomic(tmp / f"loader_rank{info.rank}.json", json.dumps(loader_state, sort_keys=True), _HINT)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    _save_tensors(tmp / f"rng_rank{info.rank}.safetensors", rng)
    # Collective under FSDP; with cpu_offload every value is a plain tensor.
    weights = cast("dict[str, torch.Tensor]", get_model_state_dict(model, options=_options(cpu_offload=True)))
    opt_tensors, opt_meta = _optimizer_files(model, optimizer)
    if info.is_main:
        _save_tensors(tmp / "model.safetensors", weights, {"format": "pt", "step": str(step)})
        _save_tensors(tmp / "optimizer.safetensors", opt_tensors)
        write_text_atomic(tmp / "optimizer.json", json.dumps(opt_meta, sort_keys=True), _HINT)
        state = {"step": step, "world_size": info.world_size, **extra}
        write_text_atomic(tmp / "trainer_state.json", json.dumps(state, indent=1, sort_keys=True), _HINT)
        for name in ASSETS:
            if (run_dir / name).is_file():
                with writing(tmp / name, _HINT):
                    shutil.copy2(run_dir / name, tmp / name)


def _commit(run_dir: Path, tmp: Path, final: Path, keep: int) -> None:
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again (e.g. a resumed run that ends where it resumed)
        trash = final.with_name(final.name + ".old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        shutil.rmtree(trash)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    write_text_atomic(final.parent / LATEST, json.dumps({"dir": final.name}) + "\n", _HINT)
    done = sorted(p for p in final.parent.glob("step_*") if p.is_dir() and not p.name.endswith(".old"))
    for old in done[: max(0, len(done) - keep)]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)


def load_model_weights(path: Path, model: torch.nn.Module) -> None:
    """Load `path/model.safetensors` into `model` (strict; every rank reads the full file)."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    file = path / "model.safetensors"
    if not file.is_file():
        raise ConfigError(f"{path}: no model.safetensors (not a cotrain checkpoint?)")
    try:
        result = set_model_state_dict(model, _load_tensors(file), options=_options(strict=False))  # type: ignore[arg-type]  # dict is invariant; DCP's value type is a union with Tensor
    except RuntimeError as exc:  # shape mismatches
        detail = next((line.strip() for line in str(exc).splitlines() if "mismatch" in line), str(exc))
        raise ConfigError(f"{file}: weights do not match the model ({detail}); was it trained with another "
                          f"preset, LoRA rank or size?") from None
    missing = [k for k in result.missing_keys if "rotary" not in k]
    if missing or result.unexpected_keys:
        bad = (missing or result.unexpected_keys)[0]
        raise ConfigError(f"{file}: weights do not match the model ({'missing' if missing else 'unexpected'} "
                          f"{bad!r}); was it trained with another preset, LoRA rank or size?")


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    info: DistInfo) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG; returns trainer state + this rank's loader state.

    Every file is checked before the model or optimizer is touched; a missing, truncated or non-JSON
    file is a DataError naming it."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    trainer = read_json(path / "trainer_state.json")
    step = trainer.get("step")
    named = STEP_DIR.fullmatch(path.name)
    if not isinstance(step, int) or isinstance(step, bool) or (named and int(named.group(1)) != step):
        raise DataError(path / "trainer_state.json", f"'step' is {step!r}, but the folder is {path.name}")
    loader_file = path / f"loader_rank{info.rank}.json"
    if not loader_file.is_file():  # a different world size: every rank's plan position is the same
        loader_file = path / "loader_rank0.json"
    trainer["loader"] = read_json(loader_file)
    tensors = _load_tensors(path / "optimizer.safetensors")
    meta = read_json(path / "optimizer.json")
    rng_file = path / f"rng_rank{info.rank}.safetensors"
    rng = _load_tensors(rng_file) if rng_file.is_file() else {}
    load_model_weights(path, model)
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, stat = key.rpartition("::")
        state.setdefault(name, {})[stat] = value
    try:
        groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
        set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups},  # type: ignore[dict-item]  # dict is invariant; DCP's value type is a union with Tensor
                                 options=_options())
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise DataError(path / "optimizer.json", f"optimizer state does not fit the model ({exc!r})") from None
    if "cpu" in rng:
        torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    return trainer
